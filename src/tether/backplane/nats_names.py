"""The NATS backplane's URL and names: what `nats://` means, and how tether's names (rooms,
paths, node ids, connection ids: any text) become NATS subject tokens, KV keys and stream
names, which cannot hold spaces, `.`, `*` or `>`.

A name becomes one **token**: its UTF-8 in base64url without padding (`A-Z a-z 0-9 - _`,
valid in a subject and in a KV key), and `=` for the empty name (no base64 text is `=`).
Tokens are collision-free and read back exactly (`name_of`); a token that is not the
encoding of a name reads back as None. A stream name (used as a directory name by the
server) holds a hash of the room instead, so that its length does not depend on the room's:
`<prefix>-kept-<32 hex digits of SHA-256>`.

Imports nothing of nats-py: the URL is checked before the engine's package is loaded.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import re
from dataclasses import dataclass
from urllib.parse import unquote, unquote_plus

from .topic import Topic, TopicKind

__all__ = ["NatsUrl", "parse_url", "token", "name_of", "Names"]

#: tether's own options in the URL's query string
OPTIONS = ("prefix", "heartbeat", "probe")
#: the longest subject or KV key tether sends: the server's control line (4096 bytes by
#: default) also holds the command, a reply subject and sizes
MAX_SUBJECT = 3000
_PREFIX = re.compile(r"[A-Za-z0-9_-]{1,64}")
_HOST_PORT = re.compile(r"(\[[0-9A-Fa-f:.]+\]|[^\[\]:/@,]+)(?::(\d{1,5}))?")


@dataclass(frozen=True)
class NatsUrl:
    """A `nats://` URL read: the servers (`nats://host:port` each), the credentials, tether's
    options."""

    servers: tuple[str, ...]
    user: str | None
    password: str | None
    prefix: str
    heartbeat: float
    probe: float

    def redacted(self) -> str:
        """The servers, for a log (never the password)."""
        return ",".join(self.servers)


def parse_url(url: str) -> NatsUrl:
    """`nats://[user[:password]@]host[:port][,host[:port]...][/][?prefix=&heartbeat=&probe=]`
    read; ValueError naming what is wrong (another scheme, no host, a bad port, a path, an
    unknown option, a prefix that is not 1-64 of `A-Za-z0-9_-`, a heartbeat or probe that is
    not a positive number of seconds). The port defaults to 4222."""
    scheme, sep, rest = url.partition("://")
    if not sep or scheme.lower() != "nats":
        raise ValueError(f"backplane {_redact(url)!r}: not a nats:// URL")
    rest = rest.partition("#")[0]
    rest, _, query = rest.partition("?")
    netloc, _, path = rest.partition("/")
    if path:
        raise ValueError(f"backplane {_redact(url)!r}: a NATS URL has no path ({'/' + path!r})")
    userinfo, at, hosts = netloc.rpartition("@")
    user = password = None
    if at:
        name, colon, secret = userinfo.partition(":")
        user, password = unquote(name), (unquote(secret) if colon else None)
    servers = []
    for part in hosts.split(","):
        match = _HOST_PORT.fullmatch(part)
        if not part or match is None:
            raise ValueError(f"backplane {_redact(url)!r}: {part!r} is not host[:port]")
        port = int(match.group(2) or 4222)
        if not 0 < port < 65536:
            raise ValueError(f"backplane {_redact(url)!r}: port {port} out of range")
        servers.append(f"nats://{match.group(1)}:{port}")
    options: dict[str, str] = {}
    for field in query.split("&") if query else []:
        key, _, value = field.partition("=")
        key = unquote_plus(key)
        if key not in OPTIONS:
            raise ValueError(f"backplane {_redact(url)!r}: unknown option {key!r} (tether's NATS options: "
                             f"{', '.join(OPTIONS)})")
        options[key] = unquote_plus(value)
    prefix = options.get("prefix", "tether")
    if not _PREFIX.fullmatch(prefix):
        raise ValueError(f"backplane {_redact(url)!r}: prefix {prefix!r} must be 1 to 64 of A-Z a-z 0-9 _ - "
                         "(it names subjects, streams and a KV bucket)")
    return NatsUrl(tuple(servers), user, password, prefix, _seconds(url, options, "heartbeat", 5.0),
                   _seconds(url, options, "probe", 1.0))


def _seconds(url: str, options: dict[str, str], name: str, default: float) -> float:
    text = options.get(name)
    if text is None:
        return default
    try:
        value = float(text)
    except ValueError:
        value = float("nan")
    if not value > 0 or value == float("inf"):
        raise ValueError(f"backplane {_redact(url)!r}: {name}={text!r} is not a positive number of seconds")
    return value


def _redact(url: str) -> str:
    return re.sub(r"(://[^/?#@:]*):[^/?#@]*@", r"\1:***@", url)


def token(name: str) -> str:
    """`name` as one subject token / KV key part (see the module doc)."""
    return base64.urlsafe_b64encode(name.encode("utf-8")).rstrip(b"=").decode("ascii") or "="


def name_of(text: str) -> str | None:
    """The name whose token `text` is, or None when it is no token."""
    if text == "=":
        return ""
    if not text or len(text) % 4 == 1 or not re.fullmatch(r"[A-Za-z0-9_-]+", text):
        return None
    try:
        name = base64.urlsafe_b64decode(text + "=" * (-len(text) % 4)).decode("utf-8")
    except (binascii.Error, UnicodeDecodeError):
        return None
    return name if token(name) == text else None  # one token per name: no second spelling


_KINDS = {kind.value: kind for kind in TopicKind}


class Names:
    """The subjects, KV keys and stream names of one cluster (`prefix`):

        <prefix>.<kind>.<token>              a topic's subject (kind: path, room, node, kept)
        <prefix>.kept-in.<token>.<epoch>     what a history room's publishes are sent to (its stream's subject)
        <prefix>-kept-<hash>                 a history room's stream
        KV bucket <prefix>:
          node.<node hex>                    "<heartbeat ms> <connections>" of a live node
          presence.<room token>.<node hex>.<connection id token>   the member's info (JSON)
          janitor.<node hex>                 who cleans up after a dead node
          sweep.<period>                     who sweeps idle history rooms in a period
    """

    def __init__(self, prefix: str) -> None:
        self.prefix = prefix
        self.bucket = prefix

    def subject(self, topic: Topic) -> str:
        return f"{self.prefix}.{topic.kind}.{token(topic.name)}"

    def topic(self, subject: str) -> Topic | None:
        parts = subject.split(".")
        if len(parts) != 3 or parts[0] != self.prefix or parts[1] not in _KINDS:
            return None
        name = name_of(parts[2])
        return None if name is None else Topic(_KINDS[parts[1]], name)

    def kept_in(self, room: str, epoch: str) -> str:
        return f"{self.prefix}.kept-in.{token(room)}.{epoch}"

    def stream(self, room: str) -> str:
        return f"{self.prefix}-kept-{hashlib.sha256(room.encode('utf-8')).hexdigest()[:32]}"

    def is_stream(self, name: str) -> bool:
        return name.startswith(f"{self.prefix}-kept-")

    @staticmethod
    def node_key(node: str) -> str:
        return f"node.{node}"

    @staticmethod
    def presence_key(room: str, node: str, connection_id: str) -> str:
        return f"presence.{token(room)}.{node}.{token(connection_id)}"

    @staticmethod
    def presence_of_room(room: str) -> str:
        return f"presence.{token(room)}.*.*"

    @staticmethod
    def presence_of_node(node: str) -> str:
        return f"presence.*.{node}.*"

    @staticmethod
    def janitor_key(node: str) -> str:
        return f"janitor.{node}"

    @staticmethod
    def read_presence_key(key: str) -> tuple[str, str, str] | None:
        """(room, node, connection id) of a presence key, or None."""
        parts = key.split(".")
        if len(parts) != 4 or parts[0] != "presence":
            return None
        room, connection_id = name_of(parts[1]), name_of(parts[3])
        if room is None or connection_id is None:
            return None
        return room, parts[2], connection_id

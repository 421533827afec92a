"""The Redis Sentinel backplane: the Redis backplane on the master a Sentinel group names.

    redis+sentinel://[user:password@]host1[:port1],host2[:port2],.../<service>[/<db>][?options]

The hosts are sentinels (port 26379 when none is given), `<service>` the name they monitor
the master by (`sentinel monitor <service> ...`), `<db>` the master's database (0 by default).
`user:password@` is the master's (and its replicas'); the sentinels are asked without
credentials unless `?sentinel_password=` (and `?sentinel_username=`) say otherwise. tether's
own `?prefix=`, `?heartbeat=` and `?probe=` are the Redis backplane's; any other option is
redis-py's, for the master's connections. A malformed URL is a ValueError at construction.

Everything else is `tether.backplane.redis.RedisBackplane`: channels, keys, scripts, the two
supervised connections, DOWN/UP, `lost` and `outages`, the WARNINGs, the rewrite of this node's
presence and count and `resumed()` after an outage. What differs is where a connection goes:

- each connection (the subscriber's, the writer's) asks every sentinel at once for the
  master (`SENTINEL MASTER <service>`; one silent 0.1 s after another answered is passed
  over), trusts only an answer that sees it up (not s_down, not o_down), tries the answers
  newest first (highest `config-epoch`: a sentinel that has not heard of the latest failover
  yet is outvoted), and uses a master only once it says it IS one (`ROLE`): a demoted old
  master is never used; and the backplane is not UP while its two connections are on two servers;
- when the master is killed, the connections fail, the backplane is DOWN, and each retry
  (backoff capped at 1 s) asks the sentinels again: the new master is found as soon as one
  sentinel that answers has promoted it;
- a watcher subscribes to a sentinel's `+switch-master` (each sentinel in turn when one
  fails): when the master of `<service>` moves, the connections still on another server are
  closed at once, an outage like any other, and reconnect to the new master; without it, an
  old master that is demoted rather than killed (`SENTINEL FAILOVER`) would be written to
  until Sentinel reconfigures it, some 10 s later, and what was written meanwhile is lost;
- a READONLY reply (a write to a server that is a replica now) is an outage too: the batch
  it was in is lost, the connections reconnect to the master.

Replication is asynchronous: a master killed before its replicas had the last writes loses
them. For a history room that is the tail of its stream: the new master numbers the next
message from where its copy ends, and the hub reports a loss when offsets go back
(docs/scaling.md).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from contextvars import ContextVar
from dataclasses import dataclass
from typing import Any
from urllib.parse import unquote

import redis.asyncio as redis_asyncio
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import ReadOnlyError, RedisError

from ..tasks import close_quietly
from .base import MembersGone, Receive, Snapshot
from .redis import RedisBackplane, _redacted, _split_url

__all__ = ["SentinelBackplane", "SentinelUrl", "parse_sentinel_url"]

logger = logging.getLogger("tether.backplane")

SENTINEL_PORT = 26379
_ASK_TIMEOUT = 1.0    # s: a sentinel's answer (all are asked at once)
_ASK_GRACE = 0.1      # s: how much longer the others are waited for once one answered
_ROLE_TIMEOUT = 2.0   # s: a master's answer to ROLE, once connected
_WATCH_TICK = 1.0     # s: how often the watcher looks at its subscription
_WATCH_SILENCE = 5.0  # s: a sentinel silent this long is pinged, and left if still silent as long again
_SWITCH = "+switch-master"
_CREDENTIALS = ("sentinel_username", "sentinel_password")
#: which connection the running task makes: "subscriber" or "publisher" (RedisBackplane's parts)
_PART: ContextVar[str] = ContextVar("tether_sentinel_part", default="")


@dataclass(frozen=True)
class SentinelUrl:
    """A `redis+sentinel://` URL, taken apart (without tether's own options)."""

    sentinels: tuple[tuple[str, int], ...]
    service: str
    db: int
    userinfo: str          # `user:password` as written (percent-encoded), "" for none: the master's
    query: str             # redis-py's options for the master's connections, as written
    sentinel_username: str | None
    sentinel_password: str | None

    def master_url(self, host: str, port: int) -> str:
        """The redis:// URL of the master at host:port, with its credentials and options."""
        address = f"[{host}]" if ":" in host else host
        userinfo = f"{self.userinfo}@" if self.userinfo else ""
        return f"redis://{userinfo}{address}:{port}/{self.db}" + (f"?{self.query}" if self.query else "")


def _port(text: str, url: str) -> int:
    if not text.isdigit() or not 0 < int(text) < 65536:
        raise ValueError(f"backplane {url}: bad sentinel port {text!r} (a number from 1 to 65535)")
    return int(text)


def _sentinel(address: str, url: str) -> tuple[str, int]:
    """(host, port) of one `host[:port]` or `[v6]:port` of the host list."""
    if address.startswith("["):
        host, bracket, rest = address[1:].partition("]")
        if not bracket or not host or (rest and not rest.startswith(":")):
            raise ValueError(f"backplane {url}: bad sentinel address {address!r}")
        return host, _port(rest[1:], url) if rest else SENTINEL_PORT
    host, colon, port = address.partition(":")
    if not host:
        raise ValueError(f"backplane {url}: a sentinel address with no host ({address!r})")
    return host, _port(port, url) if colon else SENTINEL_PORT


def parse_sentinel_url(url: str) -> SentinelUrl:
    """`url` (`redis+sentinel://...` without tether's options, see the module doc) taken
    apart; ValueError naming what is wrong (no sentinel, no service, a bad port or db)."""
    shown = _redacted(url)
    url, credentials = _split_url(url.partition("#")[0], _CREDENTIALS)
    scheme, separator, rest = url.partition("://")
    if scheme.lower() != "redis+sentinel" or not separator:
        raise ValueError(f"backplane {shown}: not a redis+sentinel:// URL")
    rest, _, query = rest.partition("?")
    authority, _, path = rest.partition("/")
    userinfo, _, hosts = authority.rpartition("@")
    if not hosts:
        raise ValueError(f"backplane {shown}: no sentinel host (redis+sentinel://host:26379,.../<service>)")
    sentinels = tuple(_sentinel(address, shown) for address in hosts.split(","))
    service, _, db = path.partition("/")
    if not service:
        raise ValueError(f"backplane {shown}: no service name (redis+sentinel://host:26379,.../<service>)")
    db = db.rstrip("/")
    if db and not db.isdigit():
        raise ValueError(f"backplane {shown}: bad database {db!r} after the service name (a number, e.g. /0)")
    return SentinelUrl(sentinels, unquote(service), int(db or 0), userinfo, query,
                       credentials.get("sentinel_username"), credentials.get("sentinel_password"))


class SentinelBackplane(RedisBackplane):
    """A node of a cluster whose nodes share the master of a Sentinel group (see the module doc)."""

    def __init__(self, node: bytes, url: str) -> None:
        super().__init__(node, url)
        self.target = parse_sentinel_url(self.url)
        # What logs show: the URL without the sentinels' credentials (and the master's redacted).
        base, _, _ = self.url.partition("?")
        self.url = base + (f"?{self.target.query}" if self.target.query else "")
        self._sentinels: list[redis_asyncio.Redis] = []
        # part ("subscriber", "publisher") -> its latest client and the server it is on
        self._parts: dict[str, tuple[redis_asyncio.Redis, tuple[str, int]]] = {}
        self._master: tuple[str, int] | None = None
        self._stale: set[str] = set()  # parts on a server they must leave (see _leave)
        self._closing: set[asyncio.Task[None]] = set()

    # -- lifecycle ---------------------------------------------------------------------------
    async def start(self, receive: Receive, members_gone: MembersGone, snapshot: Snapshot) -> None:
        options: dict[str, Any] = {"socket_timeout": _ASK_TIMEOUT, "socket_connect_timeout": _ASK_TIMEOUT,
                                   "retry": Retry(NoBackoff(), 0), "username": self.target.sentinel_username,
                                   "password": self.target.sentinel_password}
        self._sentinels = [redis_asyncio.Redis(host=host, port=port, **options)
                           for host, port in self.target.sentinels]
        watcher = asyncio.get_running_loop().create_task(self._supervise(self._watch, "Sentinel watcher"))
        try:
            await super().start(receive, members_gone, snapshot)
        finally:
            self._tasks.append(watcher)  # stop() cancels it with the others

    async def stop(self) -> None:
        await super().stop()
        for sentinel in self._sentinels:
            await close_quietly(sentinel.aclose())

    async def _listen(self) -> None:
        _PART.set("subscriber")
        await super()._listen()

    async def _write(self) -> None:
        _PART.set("publisher")
        await super()._write()

    # -- finding the master ------------------------------------------------------------------
    async def _client(self) -> redis_asyncio.Redis:
        """A client of the master (see the module doc); RedisConnectionError naming what each
        sentinel and candidate said when there is none to use now."""
        candidates, errors = await self._ask_sentinels()
        for host, port in candidates:
            client = self._client_of(self.target.master_url(host, port))
            try:
                role = await asyncio.wait_for(client.role(), _ROLE_TIMEOUT)
                if role[0] == b"master":
                    if errors:
                        logger.debug("tether backplane: the master of %r found past: %s", self.target.service,
                                     "; ".join(errors))
                    self._using(client, (host, port))
                    return client
                errors.append(f"{host}:{port} is a {role[0].decode()}, not a master")
            except (RedisError, OSError, TimeoutError) as exc:
                errors.append(f"{host}:{port}: {type(exc).__name__}: {exc}")
            await close_quietly(client.aclose())
        raise RedisConnectionError(f"no master of {self.target.service!r} to use: " + "; ".join(errors))

    async def _ask_sentinels(self) -> tuple[list[tuple[str, int]], list[str]]:
        """The master addresses the sentinels report up, newest config epoch first (then in the
        order of the URL), and what the others said. Once one has answered so, the silent ones get `_ASK_GRACE` more (a
        host that is down, often the master's own, would otherwise cost every attempt
        `_ASK_TIMEOUT`)."""
        service = self.target.service
        asks: dict[asyncio.Future[Any], tuple[int, tuple[str, int]]] = {
            asyncio.ensure_future(asyncio.wait_for(sentinel.sentinel_master(service), _ASK_TIMEOUT)): (rank, address)
            for rank, (sentinel, address) in enumerate(zip(self._sentinels, self.target.sentinels, strict=True))}
        found: dict[tuple[str, int], tuple[int, int]] = {}  # master -> (-config epoch, rank of the sentinel)
        errors = []
        pending: set[asyncio.Future[Any]] = set(asks)
        while pending:
            done, pending = await asyncio.wait(pending, timeout=_ASK_GRACE if found else None,
                                               return_when=asyncio.FIRST_COMPLETED)
            if not done:
                break
            for ask in done:
                rank, (host, port) = asks[ask]
                reply = None if ask.cancelled() else ask.exception() or ask.result()
                if not isinstance(reply, dict):  # an exception (redis-py parses an answer into a dict)
                    errors.append(f"sentinel {host}:{port}: {type(reply).__name__}: {reply}")
                elif not reply["is_master"] or reply["is_sdown"] or reply["is_odown"]:
                    errors.append(f"sentinel {host}:{port} sees the master {reply['ip']}:{reply['port']} as "
                                  f"{reply['flags']}")
                else:
                    address = (reply["ip"], int(reply["port"]))
                    found[address] = min(found.get(address, (0, rank)), (-int(reply.get("config-epoch", 0)), rank))
        for ask in pending:
            _, (host, port) = asks[ask]
            ask.cancel()
            errors.append(f"sentinel {host}:{port}: no answer within {_ASK_GRACE} s of another's")
        return sorted(found, key=found.__getitem__), errors

    def _using(self, client: redis_asyncio.Redis, address: tuple[str, int]) -> None:
        """The running part's new client is on the master at `address`: the other part leaves
        any other server first (it would be UP with one connection on a server that no longer
        is, or soon will not be, the master)."""
        self._parts[_PART.get()] = (client, address)
        self._stale.discard(_PART.get())
        if address != self._master:
            logger.info("tether backplane: the master of %r is %s:%d", self.target.service, *address)
            self._master = address
        self._leave(address)

    # -- following a switch at once --------------------------------------------------------------
    async def _watch(self) -> None:
        """Listen to each sentinel in turn for `+switch-master` (a sentinel that fails or goes
        silent is left for the next one, after a pause)."""
        while True:
            for sentinel, (host, port) in zip(self._sentinels, self.target.sentinels, strict=True):
                try:
                    await self._follow(sentinel)
                except (RedisError, OSError, TimeoutError) as exc:
                    logger.debug("tether backplane: watching sentinel %s:%d failed: %s", host, port, exc)
                await asyncio.sleep(_WATCH_TICK)

    async def _follow(self, sentinel: redis_asyncio.Redis) -> None:
        pubsub = sentinel.pubsub()
        loop = asyncio.get_running_loop()
        try:
            await pubsub.subscribe(_SWITCH)
            heard, pinged = loop.time(), False
            while True:
                message = await pubsub.get_message(timeout=_WATCH_TICK)
                now = loop.time()
                if message is not None:
                    heard, pinged = now, False
                    if message["type"] == "message":
                        self._switched(message["data"].decode())
                elif now - heard > 2 * _WATCH_SILENCE:
                    raise TimeoutError(f"the sentinel has said nothing for {2 * _WATCH_SILENCE:.0f} s")
                elif now - heard > _WATCH_SILENCE and not pinged:
                    await pubsub.ping()
                    pinged = True
        finally:
            await close_quietly(pubsub.aclose())

    def _switched(self, announcement: str) -> None:
        """`<service> <old ip> <old port> <new ip> <new port>`: leave any other server than
        the new master."""
        service, *addresses = announcement.split()
        if service != self.target.service or len(addresses) != 4:
            return
        new = (addresses[2], int(addresses[3]))
        logger.info("tether backplane: Sentinel moved the master of %r to %s:%d", service, *new)
        self._leave(new)

    def _leave(self, master: tuple[str, int] | None) -> None:
        """Leave every server but `master` (None: every server): each part connected elsewhere
        is stale until it reconnects (`_using`), the backplane is not UP meanwhile, and its
        connection is closed. The subscriber is down at once (its reader sees the closed
        connection); the publisher is sent a PING once its connection is closed, which fails
        and makes it reconnect (marked down while idle, it would never wake to do so)."""
        for part, (client, address) in list(self._parts.items()):
            if address == master:
                continue
            del self._parts[part]
            self._stale.add(part)
            if part == "subscriber" and self._sub_up:
                self._went_down(part, f"{part}: the master is no longer {address[0]}:{address[1]}")
            closing = self._loop.create_task(self._close(client, part))
            self._closing.add(closing)
            closing.add_done_callback(self._closing.discard)

    async def _close(self, client: redis_asyncio.Redis, part: str) -> None:
        with contextlib.suppress(Exception):
            await client.connection_pool.disconnect()
        if part == "publisher":
            self._check_writer()  # fails on the closed connection: the writer reconnects

    def _maybe_up(self) -> None:
        if not self._stale:  # else a part is still connected to a server that is not the master
            super()._maybe_up()

    # -- a write refused by a replica -------------------------------------------------------------
    def _check_replies(self, replies: list[Any]) -> None:
        """A READONLY reply: the server is a replica now (demoted), an outage (see the module
        doc) whose cause the WARNING names; the subscriber leaves that server too."""
        refused = next((reply for reply in replies if isinstance(reply, ReadOnlyError)), None)
        if refused is not None:
            why = f"the server is no longer the master (READONLY: {refused})"
            self._parts.pop("publisher", None)
            self._went_down("publisher", f"publisher: {why}")
            self._leave(None)
            raise RedisConnectionError(why)

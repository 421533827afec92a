"""The WebSocket opening handshake (RFC 6455 section 4), sans-I/O.

Functions take the request's method and a mapping of lower-case header names to values
(repeated headers joined with ", ") and either return what the server needs or raise
`HandshakeError` carrying the HTTP status, a message naming the broken rule, and the
headers that response must carry.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import os
from collections.abc import Mapping, Sequence
from urllib.parse import urlsplit

from .errors import HandshakeError

__all__ = [
    "HandshakeError", "accept_key", "is_upgrade_request", "validate_upgrade",
    "header_tokens", "select_subprotocol", "origin_allowed", "accept_headers",
    "new_client_key", "validate_accept",
]

_GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"
_DEFAULT_PORTS = {"http": "80", "ws": "80", "https": "443", "wss": "443"}


def accept_key(key: str) -> str:
    """The Sec-WebSocket-Accept value for a client's Sec-WebSocket-Key."""
    return base64.b64encode(hashlib.sha1(key.encode("ascii") + _GUID).digest()).decode("ascii")


def header_tokens(value: str | None) -> list[str]:
    """Split a comma-separated header value into stripped, non-empty tokens."""
    if not value:
        return []
    return [token.strip() for token in value.split(",") if token.strip()]


def is_upgrade_request(headers: Mapping[str, str]) -> bool:
    """True when the request asks to become a WebSocket (`Upgrade: websocket`)."""
    return "websocket" in (token.lower() for token in header_tokens(headers.get("upgrade")))


def validate_upgrade(method: str, headers: Mapping[str, str]) -> str:
    """Check an upgrade request against RFC 6455 4.2.1 and return its Sec-WebSocket-Key.

    400 for a malformed request (not GET, no Host, no `Connection: upgrade`, no
    `Sec-WebSocket-Version`, a key that is not 16 base64-encoded bytes); 426 with
    `Sec-WebSocket-Version: 13` for a version other than 13 (RFC 6455 4.2.2).
    """
    if method != "GET":
        raise HandshakeError(400, f"WebSocket upgrade must use GET, not {method}")
    if not headers.get("host"):
        raise HandshakeError(400, "WebSocket upgrade without a Host header")
    if "upgrade" not in (token.lower() for token in header_tokens(headers.get("connection"))):
        raise HandshakeError(400, "WebSocket upgrade without 'Connection: Upgrade'")
    version = headers.get("sec-websocket-version")
    if version is None:  # a required field missing: malformed (4.2.1 item 6), not another version
        raise HandshakeError(400, "WebSocket upgrade without a Sec-WebSocket-Version header")
    if version != "13":
        raise HandshakeError(
            426, f"unsupported Sec-WebSocket-Version {version!r}; this server speaks 13",
            [("Sec-WebSocket-Version", "13")])
    key = headers.get("sec-websocket-key")
    if key is None:
        raise HandshakeError(400, "WebSocket upgrade without a Sec-WebSocket-Key header")
    try:
        raw = base64.b64decode(key.encode("ascii"), validate=True)
    except (binascii.Error, UnicodeEncodeError):
        raw = b""
    if len(raw) != 16:
        raise HandshakeError(400, "Sec-WebSocket-Key is not 16 bytes encoded in base64")
    return key


def select_subprotocol(offered: Sequence[str], supported: Sequence[str]) -> str | None:
    """The first of `supported` (the server's preference order) that the client offered."""
    for candidate in supported:
        if candidate in offered:
            return candidate
    return None


def _origin_netloc(origin: str) -> str:
    parts = urlsplit(origin)
    host = (parts.hostname or "").lower()
    port = str(parts.port) if parts.port else ""
    if port and port == _DEFAULT_PORTS.get(parts.scheme.lower()):
        port = ""
    if ":" in host:
        host = f"[{host}]"
    return f"{host}:{port}" if port else host


def _host_netloc(host: str, scheme: str) -> str:
    host = host.strip().lower()
    default = ":" + _DEFAULT_PORTS.get(scheme, "80")
    return host[: -len(default)] if host.endswith(default) else host


def origin_allowed(origin: str | None, host: str | None, allowed: Sequence[str]) -> bool:
    """Whether a handshake's Origin may connect.

    No Origin header (a non-browser client) is allowed. A browser's Origin is allowed when it
    names the same host and port as the Host header, or appears in `allowed` (compared as
    written, e.g. "https://app.example.com"); `"*"` in `allowed` allows every origin.
    """
    if origin is None or "*" in allowed:
        return True
    if origin in allowed or origin.rstrip("/") in allowed:
        return True
    if origin == "null" or not host:
        return False
    try:
        scheme = urlsplit(origin).scheme.lower()
        return _origin_netloc(origin) == _host_netloc(host, scheme)
    except ValueError:
        return False


def accept_headers(key: str, subprotocol: str | None = None) -> list[tuple[str, str]]:
    """The headers of a 101 response accepting `key`, with the chosen subprotocol if any."""
    headers = [
        ("Upgrade", "websocket"),
        ("Connection", "Upgrade"),
        ("Sec-WebSocket-Accept", accept_key(key)),
    ]
    if subprotocol:
        headers.append(("Sec-WebSocket-Protocol", subprotocol))
    return headers


# -- the client side ------------------------------------------------------------------------------
def new_client_key() -> str:
    """A fresh Sec-WebSocket-Key: 16 random bytes in base64 (RFC 6455 4.1)."""
    return base64.b64encode(os.urandom(16)).decode("ascii")


def validate_accept(status: int, headers: Mapping[str, str], key: str, offered: Sequence[str],
                    extensions_offered: bool = False) -> str | None:
    """Check a server's answer to a client's upgrade request with `key` (RFC 6455 4.1, the
    client's rules) and return the subprotocol it selected (None for none). HandshakeError,
    with the status the server answered, for anything but a 101 that accepts this key and
    selects nothing the client did not offer: no subprotocol it did not offer, and no
    extension unless `extensions_offered` (the caller then checks what was agreed)."""
    if status != 101:
        raise HandshakeError(status, f"the server answered {status} instead of 101 Switching Protocols")
    if "websocket" not in (token.lower() for token in header_tokens(headers.get("upgrade"))):
        raise HandshakeError(status, "the 101 response has no 'Upgrade: websocket'")
    if "upgrade" not in (token.lower() for token in header_tokens(headers.get("connection"))):
        raise HandshakeError(status, "the 101 response has no 'Connection: Upgrade'")
    if headers.get("sec-websocket-accept") != accept_key(key):
        raise HandshakeError(status, "the 101 response's Sec-WebSocket-Accept does not match the key")
    if headers.get("sec-websocket-extensions") and not extensions_offered:
        raise HandshakeError(status, "the 101 response names an extension, and none was offered")
    subprotocol = headers.get("sec-websocket-protocol") or None
    if subprotocol is not None and subprotocol not in offered:
        raise HandshakeError(status, f"the server selected subprotocol {subprotocol!r}, which was not offered")
    return subprotocol

"""HTTP/1.1 responses as bytes, for the native server's two protocols (HTTP and WebSocket)."""

from __future__ import annotations

from http import HTTPStatus

from ..http import splitting_header

__all__ = ["http_response"]


def http_response(status: int, headers: list[tuple[str, str]], body: bytes = b"") -> bytes:
    """Serialize an HTTP/1.1 response head (and body). ValueError, naming the header, when a
    header name or value holds a CR, LF or NUL: written as it is, it would end the head early
    and let what follows pose as headers or a body of its own (response splitting)."""
    try:
        reason = HTTPStatus(status).phrase
    except ValueError:
        reason = "Unknown"
    lines = [f"HTTP/1.1 {status} {reason}"] + [f"{name}: {value}" for name, value in headers]
    flat = "".join(lines)  # three memchr scans of this cost less than counting separators
    if "\r" in flat or "\n" in flat or "\0" in flat:
        raise ValueError(f"response header {splitting_header(headers)!r} holds a CR, LF or NUL (it would split "
                         "the response)")
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + body

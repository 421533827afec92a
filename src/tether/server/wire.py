"""HTTP/1.1 responses as bytes, for the native server's two protocols (HTTP and WebSocket)."""

from __future__ import annotations

from http import HTTPStatus

__all__ = ["http_response"]


def http_response(status: int, headers: list[tuple[str, str]], body: bytes = b"") -> bytes:
    """Serialize an HTTP/1.1 response head (and body)."""
    try:
        reason = HTTPStatus(status).phrase
    except ValueError:
        reason = "Unknown"
    lines = [f"HTTP/1.1 {status} {reason}"] + [f"{name}: {value}" for name, value in headers]
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + body

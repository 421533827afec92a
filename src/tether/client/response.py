"""Reading an HTTP response with httptools, for tether's clients (the asyncio client's
handshake, the TestClient's requests)."""

from __future__ import annotations

__all__ = ["ResponseReader"]


class ResponseReader:
    """The callbacks of an `httptools.HttpResponseParser`, collecting one response: its
    `headers` (name, value pairs as sent), `body`, and whether the head (`head_complete`) and
    the whole message (`complete`) have arrived."""

    def __init__(self) -> None:
        self.headers: list[tuple[str, str]] = []
        self.body = bytearray()
        self.head_complete = False
        self.complete = False

    def on_header(self, name: bytes, value: bytes) -> None:
        self.headers.append((name.decode("latin-1"), value.decode("latin-1")))

    def on_headers_complete(self) -> None:
        self.head_complete = True

    def on_body(self, body: bytes) -> None:
        self.body += body

    def on_message_complete(self) -> None:
        self.complete = True

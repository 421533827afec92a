"""A deliberately minimal blocking WebSocket client over a raw socket, for sending bytes
that no well-behaved client library would send (bad frames, bad handshakes)."""

from __future__ import annotations

import base64
import os
import socket

from tether.protocol import OP_CLOSE, FrameParser, encode_frame, parse_close_payload


def http_exchange(port: int, request: bytes, timeout: float = 5) -> tuple[int, dict[str, str], bytes]:
    """Send raw request bytes; return (status, lower-case headers, body) of the response."""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
        sock.sendall(request)
        data = b""
        while b"\r\n\r\n" not in data:
            chunk = sock.recv(65536)
            if not chunk:
                break
            data += chunk
        head, _, body = data.partition(b"\r\n\r\n")
        lines = head.decode("latin-1").split("\r\n")
        status = int(lines[0].split()[1])
        headers = {}
        for line in lines[1:]:
            name, _, value = line.partition(":")
            headers[name.strip().lower()] = value.strip()
        length = int(headers.get("content-length", "0"))
        while len(body) < length:
            chunk = sock.recv(65536)
            if not chunk:
                break
            body += chunk
        return status, headers, body


def upgrade_request(path: str = "/", extra: str = "", key: str | None = None, host: str = "127.0.0.1",
                    version: str = "13", method: str = "GET") -> bytes:
    key = key if key is not None else base64.b64encode(os.urandom(16)).decode()
    lines = [f"{method} {path} HTTP/1.1", f"Host: {host}", "Upgrade: websocket", "Connection: Upgrade",
             f"Sec-WebSocket-Key: {key}", f"Sec-WebSocket-Version: {version}"]
    return ("\r\n".join(lines) + "\r\n" + extra + "\r\n").encode()


class RawWebSocket:
    """Handshake, then send arbitrary frames and read the server's frames."""

    def __init__(self, port: int, path: str = "/", timeout: float = 5, sock: socket.socket | None = None) -> None:
        """`sock`: an unconnected socket to use (e.g. netutil.small_rcvbuf_socket()), set up
        before it connects; its own timeout then applies."""
        if sock is None:
            self.sock = socket.create_connection(("127.0.0.1", port), timeout=timeout)
        else:
            sock.connect(("127.0.0.1", port))
            self.sock = sock
        self.sock.sendall(upgrade_request(path))
        data = b""
        while b"\r\n\r\n" not in data:
            chunk = self.sock.recv(4096)
            assert chunk, "connection closed during the handshake"
            data += chunk
        head, _, rest = data.partition(b"\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 101"), head
        self.parser = FrameParser(max_message_size=1 << 30, require_mask=False)
        self.events: list = self.parser.feed(rest) if rest else []

    def send_raw(self, data: bytes) -> None:
        self.sock.sendall(data)

    def send_frame(self, opcode: int, payload: bytes, fin: bool = True, mask: bool = True) -> None:
        self.sock.sendall(encode_frame(opcode, payload, fin=fin, mask=os.urandom(4) if mask else None))

    def next_event(self) -> tuple:
        """The next (kind, value) from the server; ('eof', None) when the TCP connection ended."""
        while not self.events:
            chunk = self.sock.recv(65536)
            if not chunk:
                return ("eof", None)
            self.events.extend(self.parser.feed(chunk))
        return self.events.pop(0)

    def expect_close(self) -> tuple[int, str]:
        """Skip data frames until the server's close frame; return its (code, reason)."""
        while True:
            kind, value = self.next_event()
            if kind == OP_CLOSE:
                return value
            if kind == "eof":
                raise AssertionError("connection ended without a close frame")

    def close(self) -> None:
        self.sock.close()


__all__ = ["RawWebSocket", "http_exchange", "upgrade_request", "parse_close_payload"]

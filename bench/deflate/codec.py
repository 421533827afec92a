"""What bench/deflate.py's load generator puts on the wire and checks: the 1 KiB JSON messages,
masked client frames compressed per RFC 7692, the upgrade request with a browser-like offer,
the validation of the 101 response, and inflation of the server's messages. Stdlib only."""
from __future__ import annotations

import base64
import hashlib
import json
import random
import zlib

GUID = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"
TAIL = b"\x00\x00\xff\xff"
#: What Chromium and Firefox send.
OFFER = "permessage-deflate; client_max_window_bits"
#: The client's compression window: its output is valid for any client_max_window_bits >= 9.
CLIENT_WBITS = 9
N_MESSAGES, MSG_SIZE = 64, 1024
_PARAMS = ("server_no_context_takeover", "client_no_context_takeover", "server_max_window_bits",
           "client_max_window_bits")


def make_messages(n: int = N_MESSAGES, size: int = MSG_SIZE, seed: int = 9) -> list[bytes]:
    """n distinct JSON texts of exactly `size` bytes: a dashboard tick with a list of quotes,
    padded with a note field. Each compresses on its own to about a third of its size."""
    rnd = random.Random(seed)
    symbols = ["AAPL", "MSFT", "GOOG", "AMZN", "NVDA", "META", "TSLA", "ORCL", "INTC", "AMD", "IBM", "CSCO"]
    out = []
    for i in range(n):
        quotes: list[dict] = []
        body = {"type": "tick", "seq": i, "ts": 1795000000000 + i * 250, "quotes": quotes, "note": ""}
        while True:
            quotes.append({"symbol": rnd.choice(symbols), "price": round(rnd.uniform(10, 900), 2),
                           "change": round(rnd.uniform(-5, 5), 3), "volume": rnd.randrange(1000, 5000000),
                           "exchange": rnd.choice(["NASDAQ", "NYSE"])})
            if len(json.dumps(body, separators=(",", ":"))) > size - 40:
                quotes.pop()
                break
        body["note"] = "x" * (size - len(json.dumps(body, separators=(",", ":"))))
        data = json.dumps(body, separators=(",", ":")).encode()
        assert len(data) == size, len(data)
        out.append(data)
    return out


def compress_message(data: bytes, wbits: int = CLIENT_WBITS) -> bytes:
    """One message compressed on its own (no context), without the 00 00 ff ff tail (7.2.1)."""
    c = zlib.compressobj(6, zlib.DEFLATED, -wbits)
    out = c.compress(data) + c.flush(zlib.Z_SYNC_FLUSH)
    assert out.endswith(TAIL)
    return out[:-4]


def mask(payload: bytes, key: bytes) -> bytes:
    n = len(payload)
    if not n:
        return b""
    k = (key * (n // 4 + 1))[:n]
    return (int.from_bytes(payload, "big") ^ int.from_bytes(k, "big")).to_bytes(n, "big")


def client_frame(opcode: int, payload: bytes, rsv1: bool, rnd: random.Random) -> bytes:
    """A masked, final client frame (RSV1 set when `rsv1`: the payload is compressed)."""
    key = bytes(rnd.randrange(256) for _ in range(4))
    b0 = 0x80 | (0x40 if rsv1 else 0) | opcode
    n = len(payload)
    if n < 126:
        head = bytes((b0, 0x80 | n))
    elif n < 65536:
        head = bytes((b0, 0x80 | 126)) + n.to_bytes(2, "big")
    else:
        head = bytes((b0, 0x80 | 127)) + n.to_bytes(8, "big")
    return head + key + mask(payload, key)


def new_key(rnd: random.Random) -> str:
    return base64.b64encode(bytes(rnd.randrange(256) for _ in range(16))).decode()


def handshake_request(path: str, port: int, key: str, deflate: bool) -> bytes:
    """The upgrade request, with the browser's deflate offer when `deflate`."""
    lines = [f"GET {path} HTTP/1.1", f"Host: 127.0.0.1:{port}", "Upgrade: websocket", "Connection: Upgrade",
             f"Sec-WebSocket-Key: {key}", "Sec-WebSocket-Version: 13", f"Origin: http://127.0.0.1:{port}"]
    if deflate:
        lines.append("Sec-WebSocket-Extensions: " + OFFER)
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


def check_response(head: bytes, key: str, deflate: bool) -> dict:
    """Validate a 101 response head; returns the negotiated deflate parameters plus "header"
    ({} without deflate). ValueError when the upgrade failed, the accept key is wrong, deflate
    was offered and not accepted (or accepted unoffered), or the response is not a valid
    permessage-deflate acceptance of the offer."""
    lines = head.decode("latin-1").split("\r\n")
    if not lines[0].startswith("HTTP/1.1 101"):
        raise ValueError(f"upgrade refused: {lines[0]!r}")
    headers: dict[str, str] = {}
    for line in lines[1:]:
        if ":" in line:
            k, _, v = line.partition(":")
            k = k.strip().lower()
            headers[k] = headers[k] + ", " + v.strip() if k in headers else v.strip()
    accept = base64.b64encode(hashlib.sha1((key + GUID).encode()).digest()).decode()
    if headers.get("sec-websocket-accept") != accept:
        raise ValueError("bad Sec-WebSocket-Accept")
    ext = headers.get("sec-websocket-extensions")
    if not deflate:
        if ext:
            raise ValueError(f"extension accepted without an offer: {ext!r}")
        return {}
    if not ext:
        raise ValueError("permessage-deflate offered and not accepted")
    parts = [p.strip() for p in ext.split(";")]
    if parts[0] != "permessage-deflate" or "," in ext:
        raise ValueError(f"unexpected Sec-WebSocket-Extensions: {ext!r}")
    params: dict = {"header": ext}
    for p in parts[1:]:
        name, _, value = p.partition("=")
        name = name.strip()
        if name not in _PARAMS or name in params:
            raise ValueError(f"unknown or repeated extension parameter in {ext!r}")
        params[name] = int(value.strip().strip('"')) if value else True
    if params.get("client_max_window_bits", 15) < CLIENT_WBITS:
        raise ValueError(f"client_max_window_bits below {CLIENT_WBITS}: {ext!r}")
    return params


class Inflater:
    """One connection's decompression of the server's messages. The context is kept across
    messages, which also reads a server without context takeover (its messages are
    independent); a message that ends with a final deflate block starts the next afresh."""

    def __init__(self) -> None:
        self._d = zlib.decompressobj(-15)

    def message(self, payload: bytes, compressed: bool) -> bytes:
        if not compressed:
            return payload
        out = self._d.decompress(payload + TAIL)
        if self._d.eof:
            self._d = zlib.decompressobj(-15)
        return out

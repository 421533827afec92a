"""Write the seed corpus: `python fuzz/make_seeds.py` (re)creates fuzz/corpus/TARGET/seed-*.

Each seed is a small input in the target's format (see the fuzz_*.py docstrings) reaching
one documented outcome: every event kind and close code of the frame parser, every status of
the handshake validator, and the HTTP path's answers (200, 400, 404, 405, 413, 426, 431, 101
and the frames after it). Seeds are committed; libFuzzer starts from them and mutates.
Files other than seed-* in a corpus directory (inputs added by hand) are left alone.
"""

from __future__ import annotations

import pathlib
import struct
import zlib

from tether.protocol import OP_BINARY, OP_CLOSE, OP_CONTINUATION, OP_PING, OP_PONG, OP_TEXT, encode_frame

HERE = pathlib.Path(__file__).resolve().parent
MASK = b"\x37\xfa\x21\x3d"
RSV1 = 0x40
KEY = "dGhlIHNhbXBsZSBub25jZQ=="


def masked(opcode: int, payload: bytes, fin: bool = True) -> bytes:
    return encode_frame(opcode, payload, fin=fin, mask=MASK)


def deflated(payload: bytes) -> bytes:
    """`payload` compressed as one permessage-deflate message (RFC 7692 7.2.1: raw deflate,
    flushed, without the final 0x00 0x00 0xff 0xff)."""
    compressor = zlib.compressobj(wbits=-15)
    data = compressor.compress(payload) + compressor.flush(zlib.Z_SYNC_FLUSH)
    return data[:-4]


def raw_header(b0: int, length: int, mask: bool = True) -> bytes:
    """A frame header written by hand (any bits, any length encoding)."""
    bit = 0x80 if mask else 0
    if length < 126:
        head = bytes((b0, bit | length))
    elif length < 65536:
        head = struct.pack("!BBH", b0, bit | 126, length)
    else:
        head = struct.pack("!BBQ", b0, bit | 127, length)
    return head + (MASK if mask else b"")


def frame_seeds() -> dict[str, bytes]:
    """Raw mode: config 0x00 (masks required, 1 MiB), split seed 7 unless said otherwise."""
    close = masked(OP_CLOSE, (1000).to_bytes(2, "big") + b"bye")
    seeds = {
        "text": masked(OP_TEXT, b"hello"),
        "binary": masked(OP_BINARY, bytes(range(256))),
        "ping-pong": masked(OP_PING, b"p") + masked(OP_PONG, b""),
        "close": close,
        "close-empty": masked(OP_CLOSE, b""),
        "fragmented-text": (masked(OP_TEXT, "h\u00e9".encode()[:2], fin=False) + masked(OP_PING, b"x")
                            + masked(OP_CONTINUATION, "h\u00e9".encode()[2:] + "\u20ac".encode())),
        "fragmented-binary": masked(OP_BINARY, b"a", fin=False) + masked(OP_CONTINUATION, b"", fin=False)
        + masked(OP_CONTINUATION, b"b"),
        "length-16": masked(OP_BINARY, b"m" * 300),
        "length-64": raw_header(0x82, 70000) + b"\x00" * 64,  # announced, not all sent
        "unmasked": encode_frame(OP_TEXT, b"no mask"),
        "reserved-bits": raw_header(0xC1, 1) + b"x",
        "reserved-opcode": raw_header(0x83, 0),
        "reserved-control": raw_header(0x8B, 0),
        "control-fragmented": raw_header(0x09, 0),
        "control-too-long": raw_header(0x89, 126) + b"\x00" * 126,
        "length-high-bit": bytes((0x82, 0xFF)) + b"\x80" + b"\x00" * 7 + MASK,
        "continuation-alone": masked(OP_CONTINUATION, b"x"),
        "new-message-in-fragments": masked(OP_TEXT, b"a", fin=False) + masked(OP_TEXT, b"b"),
        "bad-utf8": masked(OP_TEXT, b"\xff\xfe"),
        "bad-utf8-across-fragments": masked(OP_TEXT, b"\xe2\x82", fin=False) + masked(OP_CONTINUATION, b"A"),
        "bad-close-code": masked(OP_CLOSE, (999).to_bytes(2, "big")),
        "close-one-byte": masked(OP_CLOSE, b"\x03"),
        "close-bad-reason": masked(OP_CLOSE, (1000).to_bytes(2, "big") + b"\xc3"),
        "after-close": close + masked(OP_TEXT, b"ignored"),
        "messages-then-error": masked(OP_TEXT, b"one") + masked(OP_BINARY, b"two") + raw_header(0x83, 0),
    }
    out = {f"raw-{name}": b"\x00\x07" + stream for name, stream in seeds.items()}
    # The same streams under other settings: small limits (1009), unmasked frames allowed,
    # other split points, a small frame budget.
    out["raw-too-big-16"] = b"\x04\x07" + masked(OP_TEXT, b"x" * 17)  # max_message_size 16
    out["raw-too-big-fragments"] = b"\x04\x07" + masked(OP_BINARY, b"x" * 10, fin=False) + masked(
        OP_CONTINUATION, b"y" * 10)
    out["raw-unmasked-allowed"] = b"\x01\x07" + encode_frame(OP_TEXT, b"plain") + masked(OP_BINARY, b"m")
    out["raw-byte-at-a-time"] = b"\x00\x00" + seeds["fragmented-text"] + close
    out["raw-budget-1"] = b"\x20\x05" + masked(OP_PING, b"") * 5 + masked(OP_TEXT, b"end")
    out["raw-empty-continuations"] = b"\x40\x09" + masked(OP_TEXT, b"", fin=False) + masked(
        OP_CONTINUATION, b"", fin=False) * 40 + masked(OP_CONTINUATION, b"z")
    # Program mode (bit 4): messages as op, length, payload (see fuzz_frames._program).
    out["program-mixed"] = (b"\x10\x03" + b"\x00\x05hello" + b"\x01\x03abc" + b"\x02\x01p" + b"\x03\x00"
                            + b"\x19\x06" + "h\u00e9\u20ac".encode() + b"\x29\x04data" + b"\x04\x05\x03\xe8bye")
    out["program-too-big"] = b"\x16\x01" + b"\x00\x01X" + b"\x01\x7e" + b"Y" * 126  # max 125: 1009
    out["program-long"] = b"\x1a\x02" + b"\x41\x08longlong"  # 251 * 8 bytes, max 1024: 1009
    out["program-unmasked"] = b"\x11\x04" + b"\x01\x02hi" + b"\x04\x02\x0f\xa0"
    # permessage-deflate (seed bit 7; bit 6 keeps the client's context; bits 0-2 its window - 8).
    out["program-deflate"] = (b"\x10\x83" + b"\xb4\x1b" + "d\u00e9flate ".encode() * 3 + b"\x83\x06abcabc"
                              + b"\x00\x05plain" + b"\x82\x00")
    out["program-deflate-context"] = b"\x10\xc7" + b"\x83\x10" + b"0123456789abcdef" + b"\x83\x10" + b"0123456789abcdef"
    out["program-deflate-bomb"] = b"\x16\x80" + b"\xc3\x01a"  # 251 bytes inflated, max 125: 1009
    out["raw-deflate-garbage"] = b"\x00\x80" + masked(OP_TEXT | RSV1, b"\xff\xff\xff")
    out["raw-deflate-rsv1-on-control"] = b"\x00\x80" + masked(OP_PING | RSV1, b"")
    out["raw-deflate-rsv1-on-continuation"] = b"\x00\x80" + masked(OP_BINARY, b"a", fin=False) + masked(
        OP_CONTINUATION | RSV1, b"b")
    return out


def handshake_seeds() -> dict[str, bytes]:
    good = ["GET", "host: example.com", "upgrade: websocket", "connection: Upgrade",
            f"sec-websocket-key: {KEY}", "sec-websocket-version: 13"]

    def request(lines: list[str], utf8: bool = False) -> bytes:
        return (b"\x01" if utf8 else b"\x00") + "\n".join(lines).encode("utf-8" if utf8 else "latin-1")

    def without(name: str) -> list[str]:
        return [line for line in good if not line.startswith(name)]

    return {
        "valid": request(good),
        "valid-subprotocols": request([*good, "sec-websocket-protocol: chat, superchat", "~superchat,chat"]),
        "valid-origin": request([*good, "origin: http://example.com", "~https://app.example.com"]),
        "origin-other": request([*good, "origin: https://evil.example:8443"]),
        "origin-ipv6": request([*good[:1], "host: [::1]:8080", *good[2:], "origin: http://[::1]:8080"]),
        "origin-bad-port": request([*good, "origin: http://example.com:99999"]),
        "origin-null": request([*good, "origin: null"]),
        "post": request(["POST", *good[1:]]),
        "no-host": request(without("host")),
        "no-connection": request(without("connection")),
        "connection-list": request([*without("connection"), "connection: keep-alive, Upgrade"]),
        "version-8": request([*without("sec-websocket-version"), "sec-websocket-version: 8"]),
        "no-version": request(without("sec-websocket-version")),
        "no-key": request(without("sec-websocket-key")),
        "short-key": request([*without("sec-websocket-key"), "sec-websocket-key: c2hvcnQ="]),
        "bad-base64": request([*without("sec-websocket-key"), "sec-websocket-key: !!!!notbase64!!!!!!!!!=="]),
        "unicode-key": request([*without("sec-websocket-key"), "sec-websocket-key: d\u00e9GhlIHNhbXBsZSBub25jZQ=="],
                               utf8=True),
        "repeated-headers": request([*good, "upgrade: h2c", "connection: close"]),
        "deflate": request([*good, "sec-websocket-extensions: permessage-deflate; client_max_window_bits"]),
        "deflate-offers": request([*good, "sec-websocket-extensions: permessage-deflate; server_max_window_bits=10;"
                                   ' client_no_context_takeover, permessage-deflate; client_max_window_bits="12"',
                                   "sec-websocket-extensions: x-webkit-deflate-frame"]),
        "deflate-declined": request([*good, "sec-websocket-extensions: permessage-deflate; server_max_window_bits=16,"
                                     " permessage-deflate; foo, permessage-deflate; server_no_context_takeover=1"]),
        "deflate-malformed": request([*good, 'sec-websocket-extensions: permessage-deflate; a="b\\"c']),
    }


def http_seeds() -> dict[str, bytes]:
    """Mode 0x00 (reading client, one burst), split seed 9, unless said otherwise."""
    upgrade = (f"GET /ws HTTP/1.1\r\nHost: fuzz\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
               f"Sec-WebSocket-Key: {KEY}\r\nSec-WebSocket-Version: 13\r\n").encode()
    frames = (masked(OP_TEXT, b"hello") + masked(OP_PING, b"p") + masked(OP_BINARY, b"\x00\x01")
              + masked(OP_TEXT, b"a", fin=False) + masked(OP_CONTINUATION, b"b"))
    close = masked(OP_CLOSE, (1000).to_bytes(2, "big"))
    offer = b"Sec-WebSocket-Extensions: permessage-deflate; client_max_window_bits\r\n"

    seeds = {
        "get": b"GET / HTTP/1.1\r\nHost: fuzz\r\n\r\n",
        "get-params": b"GET /items/5?detail=true HTTP/1.1\r\nHost: fuzz\r\n\r\n",
        "bad-param": b"GET /items/abc?detail=maybe HTTP/1.1\r\nHost: fuzz\r\n\r\n",
        "head": b"HEAD / HTTP/1.1\r\nHost: fuzz\r\n\r\n",
        "http10": b"GET / HTTP/1.0\r\n\r\n",
        "close": b"GET / HTTP/1.1\r\nHost: fuzz\r\nConnection: close\r\n\r\nGET / HTTP/1.1\r\n\r\n",
        "pipelined": b"GET / HTTP/1.1\r\nHost: fuzz\r\n\r\n" * 3 + b"GET /big HTTP/1.1\r\nHost: fuzz\r\n\r\n",
        "pipelined-many": b"GET /items/1 HTTP/1.1\r\n\r\n" * 20,
        "post": b"POST /echo HTTP/1.1\r\nHost: fuzz\r\nContent-Length: 5\r\n\r\nhello",
        "post-chunked": b"POST /echo HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n3\r\nabc\r\n0\r\n\r\n",
        "body-too-big": b"POST /echo HTTP/1.1\r\nContent-Length: 4000\r\n\r\n" + b"b" * 2100,
        "headers-too-big": b"GET / HTTP/1.1\r\n" + b"X-Pad: " + b"p" * 1100 + b"\r\n\r\n",
        "url-too-long": b"GET /" + b"u" * 1100 + b" HTTP/1.1\r\n\r\n",
        "not-found": b"GET /nowhere HTTP/1.1\r\n\r\n",
        "wrong-method": b"DELETE / HTTP/1.1\r\n\r\n",
        "plain-to-ws": b"GET /ws HTTP/1.1\r\nHost: fuzz\r\n\r\n",
        "malformed": b"GET / HTTP/1.1\r\nHost fuzz\r\n\r\n",
        "garbage": b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03",
        "stream": b"GET /stream HTTP/1.1\r\nHost: fuzz\r\n\r\n",
        "ws": upgrade + b"\r\n" + frames + close,
        "ws-subprotocol": upgrade + b"Sec-WebSocket-Protocol: chat\r\n\r\n" + masked(OP_TEXT, b"hi"),
        "ws-too-big": upgrade + b"\r\n" + masked(OP_BINARY, b"z" * 600),
        "ws-protocol-error": upgrade + b"\r\n" + masked(OP_TEXT, b"ok") + raw_header(0x83, 0),
        "ws-unmasked": upgrade + b"\r\n" + encode_frame(OP_TEXT, b"plain"),
        "ws-flood": upgrade + b"\r\n" + masked(OP_TEXT, b"m" * 100) * 30,
        "ws-bad-key": upgrade.replace(KEY.encode(), b"short") + b"\r\n",
        "ws-version": upgrade.replace(b"Version: 13", b"Version: 8") + b"\r\n",
        "ws-not-found": upgrade.replace(b"/ws ", b"/nowhere ") + b"\r\n",
        "ws-origin": upgrade + b"Origin: https://elsewhere.example\r\n\r\n",
        "ws-deflate": upgrade + offer + b"\r\n" + masked(OP_TEXT | RSV1, deflated(b"hello " * 40))
        + masked(OP_TEXT, b"plain"),
        "ws-deflate-fragmented": upgrade + offer + b"\r\n"
        + masked(OP_TEXT | RSV1, deflated(b"part " * 60)[:10], fin=False)
        + masked(OP_CONTINUATION, deflated(b"part " * 60)[10:]),
        "ws-deflate-too-big": upgrade + offer + b"\r\n" + masked(OP_BINARY | RSV1, deflated(b"z" * 5000)),
        "get-then-upgrade": b"GET / HTTP/1.1\r\nHost: fuzz\r\n\r\n" + upgrade + b"\r\n" + masked(OP_TEXT, b"x"),
    }
    out = {name: b"\x00\x09" + data for name, data in seeds.items()}
    out["slow-reader-big"] = b"\x01\x09" + seeds["pipelined"]
    out["slow-reader-ws"] = b"\x01\x09" + seeds["ws-flood"]
    out["eof-after-request"] = b"\x02\x09" + seeds["get-params"]
    out["eof-after-ws"] = b"\x02\x09" + seeds["ws"][:-len(close)]
    out["trickle"] = b"\x04\x00" + seeds["post"]
    out["trickle-ws"] = b"\x04\x03" + seeds["ws"]
    return out


def main() -> None:
    for target, seeds in (("frames", frame_seeds()), ("handshake", handshake_seeds()), ("http", http_seeds())):
        directory = HERE / "corpus" / target
        directory.mkdir(parents=True, exist_ok=True)
        for old in directory.glob("seed-*"):
            old.unlink()
        for name, data in seeds.items():
            (directory / f"seed-{name}").write_bytes(data)
        print(f"{directory.relative_to(HERE.parent)}: {len(seeds)} seeds")


if __name__ == "__main__":
    main()

"""RFC 6455 framing, sans-I/O: client bytes in, events out; server frames serialized.

`FrameParser.feed(data)` returns a list of `(kind, value)` events in arrival order (the
`FrameEvent` union, tagged by `kind`):

- `(OP_TEXT, str)` / `(OP_BINARY, bytes)`: one complete message (fragments reassembled);
- `(OP_PING, bytes)` / `(OP_PONG, bytes)`: control frames, possibly between fragments;
- `(OP_CLOSE, (code, reason))`: the peer's close frame (code 1005 when it carried none);
  the parser ignores anything after it;
- `(PROTOCOL_ERROR, ProtocolError)`: the stream broke a rule. It is always the last event:
  the parser is dead afterwards and the caller closes with `error.code`.

Events parsed before an error are still returned, so valid messages that share a TCP read
with a bad frame are not lost. Nothing but these events ever comes out of `feed`.
"""

from __future__ import annotations

import codecs
import struct
from typing import Any, Final, Literal

from .codes import (
    WS_1000_NORMAL_CLOSURE,
    WS_1002_PROTOCOL_ERROR,
    WS_1005_NO_STATUS_RCVD,
    WS_1007_INVALID_FRAME_PAYLOAD_DATA,
    WS_1009_MESSAGE_TOO_BIG,
)
from .errors import ProtocolError
from .masking import apply_mask

__all__ = [
    "OP_CONTINUATION", "OP_TEXT", "OP_BINARY", "OP_CLOSE", "OP_PING", "OP_PONG",
    "PROTOCOL_ERROR", "FrameEvent", "FrameParser", "encode_frame", "encode_close",
    "parse_close_payload", "is_valid_close_code", "message_too_big",
]

OP_CONTINUATION: Final = 0x0
OP_TEXT: Final = 0x1
OP_BINARY: Final = 0x2
OP_CLOSE: Final = 0x8
OP_PING: Final = 0x9
OP_PONG: Final = 0xA
PROTOCOL_ERROR: Final = -1

#: One event of `FrameParser.feed`: `(kind, value)`, the kind being OP_TEXT (1), OP_BINARY (2),
#: OP_PING (9), OP_PONG (10), OP_CLOSE (8) or PROTOCOL_ERROR (-1). A type checker narrows an
#: event on `event[0] == OP_TEXT`; after `kind, value = event` it cannot relate the two names.
FrameEvent = (
    tuple[Literal[1], str] | tuple[Literal[2], bytes] | tuple[Literal[9], bytes] | tuple[Literal[10], bytes]
    | tuple[Literal[8], tuple[int, str]] | tuple[Literal[-1], ProtocolError]
)

_DATA_OPCODES = (OP_CONTINUATION, OP_TEXT, OP_BINARY)
_CONTROL_OPCODES = (OP_CLOSE, OP_PING, OP_PONG)
_utf8_decoder = codecs.getincrementaldecoder("utf-8")


def is_valid_close_code(code: int) -> bool:
    """Codes a peer may put on the wire (RFC 6455 7.4, IANA registry, 3000-4999 private)."""
    return 1000 <= code <= 1003 or 1007 <= code <= 1014 or 3000 <= code <= 4999


def parse_close_payload(payload: bytes) -> tuple[int, str]:
    """Decode a close frame's body into (code, reason); an empty body means 1005."""
    if not payload:
        return WS_1005_NO_STATUS_RCVD, ""
    if len(payload) == 1:
        raise ProtocolError(WS_1002_PROTOCOL_ERROR, "close frame body of 1 byte (a code needs 2)")
    code = int.from_bytes(payload[:2], "big")
    if not is_valid_close_code(code):
        raise ProtocolError(WS_1002_PROTOCOL_ERROR, f"invalid close code {code}")
    try:
        reason = payload[2:].decode("utf-8")
    except UnicodeDecodeError:
        raise ProtocolError(WS_1007_INVALID_FRAME_PAYLOAD_DATA, "close reason is not valid UTF-8") from None
    return code, reason


def message_too_big(limit: int) -> ProtocolError:
    """The error for a message over `limit` bytes (close 1009): the one message-size rule,
    raised by the parser and by roads that receive whole messages (ASGI)."""
    return ProtocolError(WS_1009_MESSAGE_TOO_BIG, f"message over the {limit}-byte limit")


def encode_frame(opcode: int, payload: bytes, fin: bool = True, mask: bytes | None = None) -> bytes:
    """Serialize one frame. Server frames are unmasked; pass `mask` to build a client frame."""
    n = len(payload)
    b0 = opcode | 0x80 if fin else opcode
    mask_bit = 0x80 if mask is not None else 0
    if n < 126:
        header = bytes((b0, n | mask_bit))
    elif n < 65536:
        header = struct.pack("!BBH", b0, 126 | mask_bit, n)
    else:
        header = struct.pack("!BBQ", b0, 127 | mask_bit, n)
    if mask is not None:
        return header + mask + apply_mask(payload, mask)
    return header + payload


def encode_close(code: int | None = WS_1000_NORMAL_CLOSURE, reason: str = "", mask: bytes | None = None) -> bytes:
    """A close frame; `code=None` (or 1005) sends an empty body. The reason is cut to fit 125 bytes."""
    if code is None or code == WS_1005_NO_STATUS_RCVD:
        return encode_frame(OP_CLOSE, b"", mask=mask)
    body = reason.encode("utf-8")[:123]
    # Cutting may split a character: drop the partial tail so the reason stays valid UTF-8.
    body = body.decode("utf-8", "ignore").encode("utf-8")
    return encode_frame(OP_CLOSE, code.to_bytes(2, "big") + body, mask=mask)


class FrameParser:
    """Incremental parser for the frames a client sends to a server.

    `max_message_size` bounds a whole (reassembled) message; a frame announcing more fails
    with 1009 as soon as its header arrives. `require_mask` enforces RFC 6455 5.1 (a client
    frame without a mask fails with 1002).
    """

    def __init__(self, max_message_size: int = 1 << 20, require_mask: bool = True) -> None:
        self.max_message_size = max_message_size
        self.require_mask = require_mask
        self.finished = False  # a close frame or an error was seen; later bytes are ignored
        self._pending: list[bytes] = []
        self._pending_len = 0
        self._needed = 0
        self._frag_opcode: int | None = None
        self._frag_parts: list[Any] = []  # str pieces (already validated) of a text message, bytes of a binary one
        self._frag_size = 0
        self._decoder: codecs.IncrementalDecoder | None = None  # set while a fragmented text message is open

    def feed(self, data: bytes) -> list[FrameEvent]:
        """Parse `data` (any slice of the stream) and return the events it completes."""
        if self.finished:
            return []
        if self._pending:
            self._pending.append(data)
            self._pending_len += len(data)
            if self._pending_len < self._needed:
                return []
            data = b"".join(self._pending)
            self._pending = []
            self._pending_len = 0
        events: list[FrameEvent] = []
        try:
            pos = self._parse(data, events)
        except ProtocolError as exc:
            self.finished = True
            self._pending = []
            events.append((PROTOCOL_ERROR, exc))
            return events
        if pos < len(data) and not self.finished:
            rest = data[pos:]
            self._pending = [rest]
            self._pending_len = len(rest)
        return events

    def _parse(self, data: bytes, events: list[FrameEvent]) -> int:
        """Consume whole frames from `data`; return where the unparsed rest starts."""
        pos = 0
        end = len(data)
        self._needed = 2
        while end - pos >= 2:
            b0 = data[pos]
            b1 = data[pos + 1]
            opcode = b0 & 0x0F
            fin = b0 & 0x80
            if b0 & 0x70:
                raise ProtocolError(WS_1002_PROTOCOL_ERROR, "reserved bits set without a negotiated extension")
            masked = b1 & 0x80
            if self.require_mask and not masked:
                raise ProtocolError(WS_1002_PROTOCOL_ERROR, "client frame is not masked")
            length = b1 & 0x7F
            if opcode >= 8:
                if opcode not in _CONTROL_OPCODES:
                    raise ProtocolError(WS_1002_PROTOCOL_ERROR, f"reserved control opcode {opcode:#x}")
                if not fin:
                    raise ProtocolError(WS_1002_PROTOCOL_ERROR, "fragmented control frame")
                if length > 125:
                    raise ProtocolError(WS_1002_PROTOCOL_ERROR, "control frame payload over 125 bytes")
            elif opcode not in _DATA_OPCODES:
                raise ProtocolError(WS_1002_PROTOCOL_ERROR, f"reserved data opcode {opcode:#x}")
            head = 2
            if length == 126:
                if end - pos < 4:
                    self._needed = 4
                    break
                length = int.from_bytes(data[pos + 2:pos + 4], "big")
                head = 4
            elif length == 127:
                if end - pos < 10:
                    self._needed = 10
                    break
                length = int.from_bytes(data[pos + 2:pos + 10], "big")
                if length >> 63:
                    raise ProtocolError(WS_1002_PROTOCOL_ERROR, "64-bit payload length with the high bit set")
                head = 10
            if opcode < 8 and self._frag_size + length > self.max_message_size:
                raise message_too_big(self.max_message_size)
            frame_end = pos + head + (4 if masked else 0) + length
            if frame_end > end:
                self._needed = frame_end - pos
                break
            if masked:
                payload = apply_mask(data[pos + head + 4:frame_end], data[pos + head:pos + head + 4])
            else:
                payload = data[pos + head:frame_end]
            pos = frame_end
            if opcode >= 8:
                if opcode == OP_CLOSE:
                    events.append((OP_CLOSE, parse_close_payload(payload)))
                    self.finished = True
                    return end
                # opcode is OP_PING or OP_PONG (checked against _CONTROL_OPCODES above): mypy sees
                # an int, and narrowing it to the Literal would cost a comparison per frame.
                events.append((opcode, payload))  # type: ignore[arg-type]
            else:
                self._data_frame(opcode, fin, payload, events)
        return pos

    def _data_frame(self, opcode: int, fin: int, payload: bytes, events: list[FrameEvent]) -> None:
        if opcode == OP_CONTINUATION:
            if self._frag_opcode is None:
                raise ProtocolError(WS_1002_PROTOCOL_ERROR, "continuation frame without a message to continue")
            self._frag_size += len(payload)
            decoder = self._decoder
            if decoder is not None:
                self._frag_parts.append(_decode(decoder, payload, bool(fin)))
            else:
                self._frag_parts.append(payload)
            if fin:
                parts = self._frag_parts
                if self._frag_opcode == OP_TEXT:
                    events.append((OP_TEXT, "".join(parts)))
                else:
                    events.append((OP_BINARY, b"".join(parts)))
                self._frag_opcode = None
                self._frag_parts = []
                self._frag_size = 0
                self._decoder = None
            return
        if self._frag_opcode is not None:
            raise ProtocolError(WS_1002_PROTOCOL_ERROR, "new data frame while a fragmented message is in progress")
        if fin:
            if opcode == OP_TEXT:
                try:
                    events.append((OP_TEXT, payload.decode("utf-8")))
                except UnicodeDecodeError:
                    raise ProtocolError(WS_1007_INVALID_FRAME_PAYLOAD_DATA, "text message is not valid UTF-8") from None
            else:
                events.append((OP_BINARY, payload))
            return
        self._frag_opcode = opcode
        self._frag_size = len(payload)
        if opcode == OP_TEXT:
            decoder = self._decoder = _utf8_decoder("strict")
            self._frag_parts = [_decode(decoder, payload, False)]
        else:
            self._frag_parts = [payload]


def _decode(decoder: codecs.IncrementalDecoder, payload: bytes, final: bool) -> str:
    """Validate UTF-8 fragment by fragment, so an invalid sequence fails fast."""
    try:
        return decoder.decode(payload, final)
    except UnicodeDecodeError:
        raise ProtocolError(WS_1007_INVALID_FRAME_PAYLOAD_DATA, "text message is not valid UTF-8") from None

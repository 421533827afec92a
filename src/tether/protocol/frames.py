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
import sys
from typing import Final, Literal, NoReturn, Protocol

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
    "OP_CONTINUATION", "OP_TEXT", "OP_BINARY", "OP_CLOSE", "OP_PING", "OP_PONG", "RSV1",
    "PROTOCOL_ERROR", "FrameEvent", "FrameParser", "encode_frame", "encode_close",
    "parse_close_payload", "is_valid_close_code", "message_too_big", "MessageInflater",
]

OP_CONTINUATION: Final = 0x0
OP_TEXT: Final = 0x1
OP_BINARY: Final = 0x2
OP_CLOSE: Final = 0x8
OP_PING: Final = 0x9
OP_PONG: Final = 0xA
PROTOCOL_ERROR: Final = -1
#: The first header bit after FIN: `encode_frame(opcode | RSV1, ...)` marks a compressed
#: message (RFC 7692 6.1).
RSV1: Final = 0x40

#: One event of `FrameParser.feed`: `(kind, value)`, the kind being OP_TEXT (1), OP_BINARY (2),
#: OP_PING (9), OP_PONG (10), OP_CLOSE (8) or PROTOCOL_ERROR (-1). A type checker narrows an
#: event on `event[0] == OP_TEXT`; after `kind, value = event` it cannot relate the two names.
FrameEvent = (
    tuple[Literal[1], str] | tuple[Literal[2], bytes] | tuple[Literal[9], bytes] | tuple[Literal[10], bytes]
    | tuple[Literal[8], tuple[int, str]] | tuple[Literal[-1], ProtocolError]
)

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


class MessageInflater(Protocol):
    """Inflates compressed messages (permessage-deflate, `tether.protocol.deflate.Decompressor`)."""

    def decompress(self, data: bytes, limit: int) -> bytes:
        """Inflate a piece of the current message, stopping once the message as a whole
        (this piece and the ones before) has passed `limit` bytes: it returns at most
        `limit` + 1 bytes in all, and the parser refuses it then (1009)."""

    def end_message(self, limit: int) -> bytes:
        """The current message is complete: inflate its tail (bounded the same way)."""

    def decompress_final(self, data: bytes, limit: int) -> bytes:
        """`decompress(data, limit) + end_message(limit)`: a message in one frame."""


class FrameParser:
    """Incremental parser for the frames a client sends to a server.

    - `max_message_size` bounds a whole message (reassembled and, if compressed, inflated);
      a frame announcing more fails with 1009 as soon as its header arrives.
    - `require_mask` enforces RFC 6455 5.1 for a server (a client frame without a mask fails
      with 1002); `reject_mask` the same rule for a client (a server frame with a mask fails
      with 1002). Neither: both are read.
    - `inflater`, when permessage-deflate was negotiated, inflates messages whose first frame
      has RSV1 set (RFC 7692 6.1); without one, RSV1 is a protocol error (1002).
    - `max_frames` (a server's choice; unbounded when None): `feed` parses at most this many
      frames, so one connection's flood of tiny frames cannot hold the event loop. When it
      stops early, `backlog` is True: the rest is kept, and `feed(b"")` continues.

    Payloads are consumed as they arrive: a data frame split over several reads is not
    re-parsed, its bytes are checked at once (UTF-8 of text fails with 1007 as soon as the
    invalid byte arrives, RFC 6455 8.1), and a message's pieces are coalesced into one buffer
    whatever the number of fragments (empty or one-byte fragments cost no memory per fragment).
    """

    def __init__(self, max_message_size: int = 1 << 20, require_mask: bool = True,
                 inflater: MessageInflater | None = None, max_frames: int | None = None,
                 reject_mask: bool = False) -> None:
        if require_mask and reject_mask:
            raise ValueError("a frame parser cannot both require and reject masks")
        self.max_message_size = max_message_size
        # The mask bit every frame must have (0x80 or 0), or -1 when either is read.
        self._mask_bit = 0x80 if require_mask else 0 if reject_mask else -1
        self.inflater = inflater
        self.max_frames = sys.maxsize if max_frames is None else max_frames
        self.finished = False  # a close frame or an error was seen; later bytes are ignored
        self.backlog = False   # the last feed stopped at max_frames with input left
        self._pending: list[bytes] = []
        self._pending_len = 0
        self._needed = 0
        # The data frame whose payload is still arriving (None between frames).
        self._frame_left = 0
        self._frame_mask: bytes | None = None
        self._frame_fin = 0
        # The message being assembled from fragments or partial frames (None between them).
        self._message_opcode: int | None = None
        self._message = bytearray()
        self._compressed = False
        self._decoder: codecs.IncrementalDecoder | None = None  # validates a text message as it arrives

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
            pos = self._continue_frame(data, events) if self._frame_left else 0
            pos = self._parse(data, pos, events)
        except ProtocolError as exc:
            self.finished = True
            self._pending = []
            self.backlog = False
            events.append((PROTOCOL_ERROR, exc))
            return events
        if pos < len(data) and not self.finished:
            rest = data[pos:]
            self._pending = [rest]
            self._pending_len = len(rest)
        return events

    def _parse(self, data: bytes, pos: int, events: list[FrameEvent]) -> int:
        """Consume frames from `data` at `pos`; return where the unparsed rest starts."""
        end = len(data)
        self._needed = 2
        self.backlog = False
        budget = self.max_frames
        mask_bit = self._mask_bit
        while end - pos >= 2:
            if not budget:
                self._needed = 0
                self.backlog = True
                break
            budget -= 1
            b0 = data[pos]
            b1 = data[pos + 1]
            opcode = b0 & 0x0F
            fin = b0 & 0x80
            compressed = False
            if b0 & 0x70:
                compressed = self._check_reserved_bits(b0, opcode)
            masked = b1 & 0x80
            if masked != mask_bit and mask_bit >= 0:
                raise ProtocolError(WS_1002_PROTOCOL_ERROR,
                                    "client frame is not masked" if masked == 0 else "server frame is masked")
            length = b1 & 0x7F
            if opcode >= 8:
                if opcode not in _CONTROL_OPCODES:
                    raise ProtocolError(WS_1002_PROTOCOL_ERROR, f"reserved control opcode {opcode:#x}")
                if not fin:
                    raise ProtocolError(WS_1002_PROTOCOL_ERROR, "fragmented control frame")
                if length > 125:
                    raise ProtocolError(WS_1002_PROTOCOL_ERROR, "control frame payload over 125 bytes")
            elif opcode > 2:
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
            if opcode < 8 and len(self._message) + length > self.max_message_size and not (
                    compressed or self._compressed):
                raise message_too_big(self.max_message_size)
            payload_start = pos + head + (4 if masked else 0)
            frame_end = payload_start + length
            if frame_end > end:
                if opcode >= 8 or payload_start > end:
                    self._needed = frame_end - pos if opcode >= 8 else payload_start - pos
                    break
                # A data frame whose header is here and whose payload is still arriving:
                # take what came, and the rest as it comes (_continue_frame).
                mask = data[payload_start - 4:payload_start] if masked else None
                self._start_frame(opcode, compressed)
                self._frame_left = frame_end - end
                self._frame_fin = fin
                self._frame_mask = mask
                if end > payload_start:
                    self._take_payload(data[payload_start:end], events)
                return end
            if masked:
                payload = apply_mask(data[payload_start:frame_end], data[payload_start - 4:payload_start])
            else:
                payload = data[payload_start:frame_end]
            pos = frame_end
            if opcode >= 8:
                if opcode == OP_CLOSE:
                    events.append((OP_CLOSE, parse_close_payload(payload)))
                    self.finished = True
                    return end
                # opcode is OP_PING or OP_PONG (checked against _CONTROL_OPCODES above): mypy sees
                # an int, and narrowing it to the Literal would cost a comparison per frame.
                events.append((opcode, payload))  # type: ignore[arg-type]
            elif fin and opcode and not compressed and self._message_opcode is None:
                # The common case: a whole message in one frame, here in full.
                if opcode == OP_TEXT:
                    try:
                        events.append((OP_TEXT, payload.decode("utf-8")))
                    except UnicodeDecodeError:
                        raise ProtocolError(WS_1007_INVALID_FRAME_PAYLOAD_DATA,
                                            "text message is not valid UTF-8") from None
                else:
                    events.append((OP_BINARY, payload))
            elif fin and compressed and self._message_opcode is None:
                events.append(self._inflated_message(opcode, payload))
            else:
                self._start_frame(opcode, compressed)
                self._take_payload(payload, events)
                if fin:
                    self._end_message(events)
        return pos

    def _inflated_message(self, opcode: int, payload: bytes) -> FrameEvent:
        """A compressed message in one frame, here in full (the common compressed case)."""
        assert self.inflater is not None  # a compressed message needs one (_check_reserved_bits)
        data = self.inflater.decompress_final(payload, self.max_message_size)
        if len(data) > self.max_message_size:
            self._inflated_too_big(data, _utf8_decoder("strict") if opcode == OP_TEXT else None)
        if opcode == OP_BINARY:
            return (OP_BINARY, data)
        try:
            return (OP_TEXT, data.decode("utf-8"))
        except UnicodeDecodeError:
            raise ProtocolError(WS_1007_INVALID_FRAME_PAYLOAD_DATA, "text message is not valid UTF-8") from None

    def _check_reserved_bits(self, b0: int, opcode: int) -> bool:
        """RSV1 marks the first frame of a compressed message (RFC 7692 6.1), allowed only
        when an inflater was negotiated, never on control or continuation frames; RSV2 and
        RSV3 have no meaning here (RFC 6455 5.2). Returns True for a compressed message."""
        if b0 & 0x30 or self.inflater is None:
            raise ProtocolError(WS_1002_PROTOCOL_ERROR, "reserved bits set without a negotiated extension")
        if opcode >= 8:
            raise ProtocolError(WS_1002_PROTOCOL_ERROR, "RSV1 on a control frame (RFC 7692 6.1)")
        if opcode == OP_CONTINUATION:
            raise ProtocolError(WS_1002_PROTOCOL_ERROR, "RSV1 on a continuation frame (RFC 7692 6.1)")
        return True

    def _start_frame(self, opcode: int, compressed: bool) -> None:
        """A data frame begins: open a message (first frame) or continue the open one."""
        if opcode == OP_CONTINUATION:
            if self._message_opcode is None:
                raise ProtocolError(WS_1002_PROTOCOL_ERROR, "continuation frame without a message to continue")
            return
        if self._message_opcode is not None:
            raise ProtocolError(WS_1002_PROTOCOL_ERROR, "new data frame while a fragmented message is in progress")
        self._message_opcode = opcode
        self._compressed = compressed
        if opcode == OP_TEXT:
            self._decoder = _utf8_decoder("strict")

    def _continue_frame(self, data: bytes, events: list[FrameEvent]) -> int:
        """Take the next part of the payload of the frame in progress; return its end."""
        n = min(self._frame_left, len(data))
        self._frame_left -= n
        self._take_payload(data[:n] if n < len(data) else data, events)
        if not self._frame_left and self._frame_fin:
            self._end_message(events)
        return n

    def _take_payload(self, piece: bytes, events: list[FrameEvent]) -> None:
        """Add a piece of the open message: unmask it (the frame's mask, turned to where the
        piece starts), inflate it when compressed, check its UTF-8, and append it."""
        mask = self._frame_mask
        if mask is not None and self._frame_left:
            # Only a frame still arriving has a stored mask; its next piece starts this many
            # bytes further into the 4-byte mask cycle.
            piece = apply_mask(piece, mask)
            shift = len(piece) & 3
            self._frame_mask = mask[shift:] + mask[:shift]
        elif mask is not None:
            piece = apply_mask(piece, mask)
            self._frame_mask = None
        if self._compressed:
            assert self.inflater is not None  # a compressed message needs one (_check_reserved_bits)
            piece = self.inflater.decompress(piece, self.max_message_size)  # it counts the message's size
            if len(self._message) + len(piece) > self.max_message_size:
                self._inflated_too_big(piece, self._decoder)
        if self._decoder is not None:
            _validate(self._decoder, piece, False)
        self._message += piece

    def _inflated_too_big(self, piece: bytes, decoder: codecs.IncrementalDecoder | None) -> NoReturn:
        """The open message (`_message`, empty for a message in one frame) inflated past
        max_message_size with `piece`: 1009, unless a text message's UTF-8 fails within the
        limit first (1007). The message's first fault decides, wherever the stream was cut
        (the inflater returns every byte up to one past the limit)."""
        if decoder is not None:
            _validate(decoder, piece[:self.max_message_size - len(self._message)], False)
        raise message_too_big(self.max_message_size)

    def _end_message(self, events: list[FrameEvent]) -> None:
        """The open message's final frame is complete: emit it and reset."""
        message = self._message
        if self._compressed:
            assert self.inflater is not None
            tail = self.inflater.end_message(self.max_message_size)
            if len(message) + len(tail) > self.max_message_size:
                self._inflated_too_big(tail, self._decoder)
            if tail:
                if self._decoder is not None:
                    _validate(self._decoder, tail, False)
                message += tail
        if self._message_opcode == OP_TEXT:
            assert self._decoder is not None
            _validate(self._decoder, b"", True)
            events.append((OP_TEXT, message.decode("utf-8")))
        else:
            events.append((OP_BINARY, bytes(message)))
        self._message = bytearray()
        self._message_opcode = None
        self._compressed = False
        self._decoder = None


def _validate(decoder: codecs.IncrementalDecoder, piece: bytes | bytearray, final: bool) -> None:
    """Check UTF-8 piece by piece, so an invalid sequence fails as soon as it arrives."""
    try:
        decoder.decode(piece, final)
    except UnicodeDecodeError:
        raise ProtocolError(WS_1007_INVALID_FRAME_PAYLOAD_DATA, "text message is not valid UTF-8") from None

"""permessage-deflate (RFC 7692), sans-I/O: negotiation, and compression of whole messages.

- `DeflateOptions` is what the server is willing to do (the `permessage_deflate` setting).
- `negotiate(offers, options)` reads a request's Sec-WebSocket-Extensions and returns the
  `DeflateParams` of the first acceptable permessage-deflate offer (RFC 7692 section 7.1), or
  None: the connection then runs uncompressed. `DeflateParams.header()` is the response value.
- `Compressor.compress(payload)` turns one outgoing message into the payload of a frame with
  RSV1 set; `Decompressor` inflates one connection's incoming messages, bounded by a size limit.

Framing (RSV1 on the first frame only, never on control frames) is the frame layer's job.

Two zlib facts shape the code:
- zlib refuses a raw deflate window of 8 bits (256 bytes) and its compressor silently uses 9
  bits for the zlib format ("until 256-byte window bug fixed", deflate.c). But zlib's deflate
  never emits a match farther back than the window size minus MIN_LOOKAHEAD (262 bytes):
  MAX_DIST in deflate.h, that is 250 bytes for a 9-bit window. Output of a 9-bit compressor is
  therefore valid for a peer whose inflater has a 256-byte window, so
  `server_max_window_bits=8` is accepted and served by a 9-bit compressor
  (tests/test_protocol_deflate.py checks that with an inflater that enforces 256 bytes).
  Inflating with an 8-bit window is supported by zlib and used as negotiated.
- Resetting the compression context after each message (`server_no_context_takeover`) uses
  `Z_FULL_FLUSH` on one long-lived compressor, which clears the match history, rather than a
  new compressor per message. Measured with timeit (zlib 1.2.13, level 6, 64 distinct 1 KiB
  JSON messages): 19-22 us of CPU per message against 65-68 us for a new compressobj, which
  allocates 256 KiB each time.
"""

from __future__ import annotations

import re
import sys
import zlib
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from typing import Any

from .codes import WS_1007_INVALID_FRAME_PAYLOAD_DATA
from .errors import HandshakeError, ProtocolError
from .frames import RSV1, encode_frame

__all__ = [
    "DeflateOptions", "DeflateParams", "negotiate", "parse_extensions", "Compressor", "Decompressor",
    "FrameCompressor", "SharedFrameCompressor", "CompressorPool", "client_params",
]

EXTENSION_NAME = "permessage-deflate"
#: What a sync flush ends with, removed by the sender and appended by the receiver (7.2.1, 7.2.2).
_TAIL = b"\x00\x00\xff\xff"
_OFFER_PARAMS = frozenset(
    ("server_no_context_takeover", "client_no_context_takeover", "server_max_window_bits", "client_max_window_bits"))
#: A window-bits value: a decimal integer 8..15 without leading zeros (7.1.2.1, 7.1.2.2).
_WINDOW_BITS = re.compile(r"[89]|1[0-5]")
_TOKEN = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")  # RFC 7230 3.2.6 tchar
_QUOTED = re.compile(r'"((?:[^"\\]|\\.)*)"')
_QUOTED_PAIR = re.compile(r"\\(.)")


def _check_bool(name: str, value: object) -> None:
    if not isinstance(value, bool):
        raise ValueError(f"permessage_deflate: {name} must be True or False, got {value!r}")


def _check_int(name: str, value: object, low: int, high: int | None) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < low or (high is not None and value > high):
        bounds = f"{low}..{high}" if high is not None else f"an integer >= {low}"
        raise ValueError(f"permessage_deflate: {name} must be {bounds}, got {value!r}")


@dataclass(frozen=True)
class DeflateOptions:
    """What the server is willing to negotiate (the `permessage_deflate` setting).

    - `server_no_context_takeover` (default True): the server forgets its compression history
      after each message and says so in every response (RFC 7692 7.1.1.1 lets it). Costs some
      ratio on streams of similar messages; buys one shared compressor per set of parameters,
      so a broadcast is compressed once, and no compressor per connection.
    - `client_no_context_takeover` (default True): the client must do the same (7.1.1.2), so
      the server keeps no inflate window for an idle connection.
    - `server_max_window_bits` (8..15, default 15): the largest LZ77 window the server uses; a
      client's smaller `server_max_window_bits` is honoured. 8 is served by a 9-bit zlib
      compressor whose matches stay within 250 bytes (see the module docstring).
    - `client_max_window_bits` (8..15, default 15): the window asked of clients that offer
      `client_max_window_bits` (7.1.2.2). A client that does not offer it keeps 15 bits: the
      offer is still accepted (Firefox sends a bare `permessage-deflate`). Telling a client 8
      makes some clients fail the handshake (websockets' client refuses 8).
    - `memory_level` (1..9, default 8): zlib's memLevel, the compressor's hash and buffer size.
    - `compression_level` (-1..9, default 6, zlib's default and what websockets and ws use):
      level 1 costs 5-20 % less CPU on 1 KiB JSON and 3x less on 16 KiB (40 vs 129 us) for
      4 % (1 KiB) to 19 % (16 KiB) more bytes (timeit, zlib 1.2.13).
    - `threshold` (bytes, default 128): messages shorter than this are sent uncompressed (the
      RFC lets every message choose); below it the deflate framing costs about what it saves.
    """

    server_no_context_takeover: bool = True
    client_no_context_takeover: bool = True
    server_max_window_bits: int = 15
    client_max_window_bits: int = 15
    memory_level: int = 8
    compression_level: int = 6
    threshold: int = 128

    def __post_init__(self) -> None:
        _check_bool("server_no_context_takeover", self.server_no_context_takeover)
        _check_bool("client_no_context_takeover", self.client_no_context_takeover)
        _check_int("server_max_window_bits", self.server_max_window_bits, 8, 15)
        _check_int("client_max_window_bits", self.client_max_window_bits, 8, 15)
        _check_int("memory_level", self.memory_level, 1, 9)
        _check_int("compression_level", self.compression_level, -1, 9)
        _check_int("threshold", self.threshold, 0, None)

    @classmethod
    def from_setting(cls, value: bool | Mapping[str, Any]) -> DeflateOptions | None:
        """The options a `permessage_deflate` setting means: False -> None (compression off),
        True -> the defaults, a mapping -> these fields (the others default). ValueError names
        an unknown key or a bad value."""
        if value is False:
            return None
        if value is True:
            return cls()
        if isinstance(value, Mapping):
            known = [f.name for f in fields(cls)]
            for key in value:
                if key not in known:
                    raise ValueError(f"permessage_deflate: unknown option {key!r}; the options are {', '.join(known)}")
            return cls(**value)
        raise ValueError(f"permessage_deflate must be True, False or a mapping of options, got {value!r}")


@dataclass(frozen=True)
class DeflateParams:
    """What was negotiated for one connection (the "agreed parameters" of RFC 7692 7.1).

    Window bits are 8..15; `client_max_window_bits` is below 15 only when the client offered
    that parameter. `server_max_window_bits_requested` records that the offer named
    `server_max_window_bits`, which the response must then carry (7.1.2.1) even at 15; it
    only shapes `header()` and takes no part in equality or hashing, so params that compress
    alike compare equal.
    """

    server_no_context_takeover: bool
    client_no_context_takeover: bool
    server_max_window_bits: int
    client_max_window_bits: int
    server_max_window_bits_requested: bool = field(default=False, compare=False)

    def header(self) -> str:
        """The Sec-WebSocket-Extensions value of the server's response."""
        parts = [EXTENSION_NAME]
        if self.server_no_context_takeover:
            parts.append("server_no_context_takeover")
        if self.client_no_context_takeover:
            parts.append("client_no_context_takeover")
        if self.server_max_window_bits < 15 or self.server_max_window_bits_requested:
            parts.append(f"server_max_window_bits={self.server_max_window_bits}")
        if self.client_max_window_bits < 15:
            parts.append(f"client_max_window_bits={self.client_max_window_bits}")
        return "; ".join(parts)

    def mirrored(self) -> DeflateParams:
        """The same agreement seen from the client: `Decompressor(params.mirrored())` inflates
        what the server sends and `Compressor(params.mirrored(), ...)` compresses for it."""
        return DeflateParams(
            server_no_context_takeover=self.client_no_context_takeover,
            client_no_context_takeover=self.server_no_context_takeover,
            server_max_window_bits=self.client_max_window_bits,
            client_max_window_bits=self.server_max_window_bits)

    @property
    def compression_key(self) -> tuple[int, bool]:
        """What `Compressor` output depends on besides the server's options: connections
        whose keys are equal can be sent the same compressed bytes when the key's second
        item (`server_no_context_takeover`) is True. Windows 8 and 9 share a key (both are
        served by a 9-bit compressor)."""
        return max(self.server_max_window_bits, 9), self.server_no_context_takeover


def _malformed(header: str, pos: int, expected: str) -> HandshakeError:
    # RFC 6455 4.2.1: a handshake violating the ABNF of its components (section 9.1 for this
    # header) is answered with an error such as 400 Bad Request.
    return HandshakeError(400, f"malformed Sec-WebSocket-Extensions header: expected {expected} "
                               f"at position {pos} of {header!r}")


def _skip_ows(header: str, pos: int) -> int:
    end = len(header)
    while pos < end and header[pos] in " \t":
        pos += 1
    return pos


def _token(header: str, pos: int, what: str) -> tuple[str, int]:
    match = _TOKEN.match(header, pos)
    if match is None:
        raise _malformed(header, pos, what)
    return match.group(), match.end()


def _param_value(header: str, pos: int) -> tuple[str, int]:
    if pos < len(header) and header[pos] == '"':
        match = _QUOTED.match(header, pos)
        if match is None:
            raise _malformed(header, pos, "a closed quoted-string")
        value = _QUOTED_PAIR.sub(r"\1", match.group(1))
        if _TOKEN.fullmatch(value) is None:  # RFC 6455 9.1: unquoted, it must be a token
            raise _malformed(header, pos, "a quoted token")
        return value, match.end()
    return _token(header, pos, "a parameter value")


def parse_extensions(header: str) -> list[tuple[str, list[tuple[str, str | None]]]]:
    """Parse a Sec-WebSocket-Extensions value (RFC 6455 9.1) into `(name, [(param, value)])`
    in order, names and parameter names lower-cased, a value None when the parameter has none
    and unquoted when it was quoted. Empty list elements are skipped (RFC 7230 7). A value
    that breaks the grammar raises HandshakeError(400) naming the position."""
    result: list[tuple[str, list[tuple[str, str | None]]]] = []
    end = len(header)
    pos = 0
    while pos < end:
        pos = _skip_ows(header, pos)
        if pos == end:
            break
        if header[pos] == ",":
            pos += 1
            continue
        name, pos = _token(header, pos, "an extension name")
        params: list[tuple[str, str | None]] = []
        pos = _skip_ows(header, pos)
        while pos < end and header[pos] == ";":
            pos = _skip_ows(header, pos + 1)
            key, pos = _token(header, pos, "a parameter name")
            pos = _skip_ows(header, pos)
            value: str | None = None
            if pos < end and header[pos] == "=":
                pos = _skip_ows(header, pos + 1)
                value, pos = _param_value(header, pos)
                pos = _skip_ows(header, pos)
            params.append((key.lower(), value))
        if pos < end:
            if header[pos] != ",":
                raise _malformed(header, pos, "',' or ';'")
            pos += 1
        result.append((name.lower(), params))
    return result


def _accept(offer: list[tuple[str, str | None]], options: DeflateOptions) -> DeflateParams | str:
    """The params accepting one permessage-deflate offer, or why it is declined (RFC 7692 5.1:
    an unknown parameter, a repeated one, or an invalid value declines the offer)."""
    seen: dict[str, str | None] = {}
    for key, value in offer:
        if key not in _OFFER_PARAMS:
            return f"unknown parameter {key!r}"
        if key in seen:
            return f"parameter {key} given twice"
        seen[key] = value
    for key in ("server_no_context_takeover", "client_no_context_takeover"):
        if seen.get(key) is not None:
            return f"{key} takes no value, got {seen[key]!r}"
    server_bits = options.server_max_window_bits
    requested = "server_max_window_bits" in seen
    if requested:
        value = seen["server_max_window_bits"]
        if value is None or _WINDOW_BITS.fullmatch(value) is None:
            return f"server_max_window_bits must be 8..15, got {value!r}"
        # 7.1.2.1: accepting means answering with the same or a smaller value.
        server_bits = min(server_bits, int(value))
    client_bits = 15  # 7.1.2.2: a client that did not offer the parameter may use 15 bits
    if "client_max_window_bits" in seen:
        value = seen["client_max_window_bits"]
        if value is not None and _WINDOW_BITS.fullmatch(value) is None:
            return f"client_max_window_bits must be empty or 8..15, got {value!r}"
        client_bits = min(options.client_max_window_bits, 15 if value is None else int(value))
    return DeflateParams(
        # 7.1.1.1: honoured when asked, and the server may add it unasked.
        server_no_context_takeover=options.server_no_context_takeover or "server_no_context_takeover" in seen,
        # 7.1.1.2: the server may always add it; a client that offers it promises it anyway,
        # and saying so lets the server drop its inflate window between messages.
        client_no_context_takeover=options.client_no_context_takeover or "client_no_context_takeover" in seen,
        server_max_window_bits=server_bits,
        client_max_window_bits=client_bits,
        server_max_window_bits_requested=requested,
    )


def negotiate(offers: str | None, options: DeflateOptions, declined: list[str] | None = None) -> DeflateParams | None:
    """The parameters of the first acceptable permessage-deflate offer in `offers` (the
    request's Sec-WebSocket-Extensions, several header lines joined by ", "), or None when
    there is none: the connection proceeds uncompressed (RFC 6455 9.1 lets the server pick
    one offer). Offers with an unknown or repeated parameter or an invalid value are declined
    (skipped, RFC 7692 5.1); a reason per declined offer is appended to `declined` if given.
    A header that breaks the RFC 6455 9.1 grammar raises HandshakeError(400)."""
    if not offers:
        return None
    for name, offer in parse_extensions(offers):
        if name != EXTENSION_NAME:
            continue
        accepted = _accept(offer, options)
        if isinstance(accepted, DeflateParams):
            return accepted
        if declined is not None:
            declined.append(f"permessage-deflate offer declined: {accepted}")
    return None


class Compressor:
    """Compresses whole outgoing messages for connections with these params.

    With `params.server_no_context_takeover` every message is compressed independently of
    the ones before, so one instance serves every connection with the same
    `params.compression_key`, and identical bytes may go to all of them. Otherwise the
    instance carries one connection's history: use one per connection, and send every result
    (dropping one would desynchronise the peer's window).
    """

    def __init__(self, params: DeflateParams, options: DeflateOptions) -> None:
        self.params = params
        #: Payloads shorter than this are better sent uncompressed (RSV1 clear); the caller decides.
        self.threshold = options.threshold
        self._flush_mode = zlib.Z_FULL_FLUSH if params.server_no_context_takeover else zlib.Z_SYNC_FLUSH
        self._deflater = zlib.compressobj(
            options.compression_level, zlib.DEFLATED, -max(params.server_max_window_bits, 9), options.memory_level)

    def compress(self, payload: bytes | bytearray | memoryview) -> bytes:
        """One message's payload -> the payload of its frame(s) (RFC 7692 7.2.1): deflate, a
        sync flush (a full flush, which also forgets the history, under no context takeover),
        the trailing 00 00 ff ff removed. An empty payload gives b"\\x00" (7.2.3.6). With no
        context takeover the caller may send the original instead when the result is not
        shorter."""
        deflater = self._deflater
        data = deflater.compress(payload) + deflater.flush(self._flush_mode)
        if data[-4:] != _TAIL:  # a zlib flush always ends so; anything else would corrupt the stream
            raise RuntimeError("zlib flush did not end with an empty stored block")
        return data[:-4]


class Decompressor:
    """Inflates the compressed messages of one connection (RFC 7692 7.2.2).

    Feed each compressed message's frame payloads to `decompress` (split anywhere), then call
    `end_message` (or feed the last piece with `decompress_final`). Every call takes the
    message size `limit`: once the message has inflated to more than `limit` bytes nothing
    more is inflated, so a message returns at most `limit` + 1 bytes in all (zlib is told to
    stop there; the peak is about twice that, for a moment, while Python joins zlib's output
    blocks into one bytes object). The caller refuses such a message (1009, see
    `FrameParser`), after checking the bytes within the limit: a text message whose invalid
    UTF-8 comes first is a 1007 however its frames were cut. Corrupt data raises
    ProtocolError 1007, the code ws (Node) uses for it: the framing was valid, the payload
    data was not (RFC 6455 7.4.1); websockets says 1002. After either the instance is unusable.

    With `params.client_no_context_takeover` the zlib object lives only while a message is
    being inflated, so an idle connection holds none; otherwise it keeps the client's window
    (about 7 KiB of state and 2**client_max_window_bits bytes).
    """

    def __init__(self, params: DeflateParams) -> None:
        self.params = params
        self._wbits = -params.client_max_window_bits
        self._reset = params.client_no_context_takeover
        self._inflater: zlib._Decompress | None = None
        self._size = 0  # bytes this message has inflated to so far
        self._fed = False  # the current inflater got data of this message: the tail must follow

    def decompress(self, data: bytes | bytearray | memoryview, limit: int) -> bytes:
        """A piece of the current message's compressed payload -> what it inflates to so far."""
        if not data:
            return b""
        self._fed = True
        return self._inflate(data, limit)

    def end_message(self, limit: int) -> bytes:
        """The message's last frame was fed: inflate the 00 00 ff ff tail, return the rest of
        the message, and start the next one (with an empty window under client no context
        takeover). A message whose compressed payload was empty is an empty message; its
        tail is not fed, since 00 00 ff ff alone would leave the inflater inside a block."""
        out = self._inflate(_TAIL, limit) if self._fed else b""
        self._size = 0
        self._fed = False
        if self._reset:
            self._inflater = None
        return out

    def decompress_final(self, data: bytes | bytearray | memoryview, limit: int) -> bytes:
        """`decompress(data, limit) + end_message(limit)`, with one zlib call for a short
        `data` (the tail is appended to a copy): for the final frame of a message (most
        messages are one frame)."""
        if len(data) > 4096:  # copying costs more than a second call
            out = self.decompress(data, limit)
            return out + self.end_message(limit)
        if data:
            self._fed = True
            out = self._inflate(bytes(data) + _TAIL, limit, tail=True)
            self._fed = False
            self._size = 0
            if self._reset:
                self._inflater = None
            return out
        return self.end_message(limit)

    def _inflate(self, data: bytes | bytearray | memoryview, limit: int, tail: bool = False) -> bytes:
        inflater = self._inflater
        if inflater is None:
            inflater = self._inflater = zlib.decompressobj(self._wbits)
        out = self._bounded(inflater, data, limit)
        if inflater.eof:
            return self._after_final_block(out, limit, tail)
        return out

    def _bounded(self, inflater: zlib._Decompress, data: bytes | bytearray | memoryview, limit: int) -> bytes:
        """Inflate `data` into this message, up to one byte past `limit` in all (then it is
        too big, and nothing more is inflated); corrupt data is 1007. zlib stops short of
        max_length only when the input ran out, so within the limit nothing is left pending."""
        room = limit - self._size
        if room < 0:
            return b""  # too big already (and a max_length of 0 would mean no bound)
        try:
            out = inflater.decompress(data, min(room + 1, sys.maxsize))
        except zlib.error as exc:
            raise ProtocolError(WS_1007_INVALID_FRAME_PAYLOAD_DATA, f"invalid compressed data: {exc}") from None
        self._size += len(out)
        return out

    def _after_final_block(self, out: bytes, limit: int, tail: bool) -> bytes:
        """A block with BFINAL set ended zlib's stream (RFC 7692 7.2.3.4 allows it): what
        follows is inflated by a fresh inflater with an empty window, as Chromium and WebKit
        do (inflateReset on Z_STREAM_END); zlib cannot carry the window over. `tail`: the
        data ended with the appended 00 00 ff ff, which is not fed when it is all that is
        left (the RFC's sender adds a 0x00 after the final block for it; one that does not
        would otherwise leave the inflater inside a block)."""
        pieces = [out]
        inflater = self._inflater
        while inflater is not None and inflater.eof:
            rest = inflater.unused_data
            if tail and rest == _TAIL:
                rest = b""
            inflater = self._inflater = zlib.decompressobj(self._wbits)
            self._fed = bool(rest)
            if not rest or self._size > limit:
                break
            pieces.append(self._bounded(inflater, rest, limit))
        return b"".join(pieces)


def client_params(response: str) -> DeflateParams:
    """What a server's Sec-WebSocket-Extensions response agreed (the client side of the
    handshake, as the TestClient needs it). HandshakeError when it is not one valid
    permessage-deflate agreement (RFC 7692 7.1: a client fails the connection then)."""
    extensions = parse_extensions(response)
    if len(extensions) != 1 or extensions[0][0] != EXTENSION_NAME:
        raise HandshakeError(400, f"unexpected Sec-WebSocket-Extensions in the response: {response!r}")
    values = dict(extensions[0][1])
    bits: list[int] = []
    for key in ("server_max_window_bits", "client_max_window_bits"):
        value = values.get(key)
        if value is not None and _WINDOW_BITS.fullmatch(value) is None:
            raise HandshakeError(400, f"invalid {key} in the response: {value!r}")
        bits.append(15 if value is None else int(value))
    return DeflateParams(
        server_no_context_takeover="server_no_context_takeover" in values,
        client_no_context_takeover="client_no_context_takeover" in values,
        server_max_window_bits=bits[0], client_max_window_bits=bits[1])


class FrameCompressor:
    """Turns one connection's outgoing messages into frames, compressed from the options'
    `threshold` up (smaller ones go out plain: RFC 7692 lets every message choose)."""

    __slots__ = ("_compress", "_threshold")

    def __init__(self, params: DeflateParams, options: DeflateOptions) -> None:
        self._compress = Compressor(params, options).compress
        self._threshold = options.threshold

    def frame(self, opcode: int, payload: bytes) -> bytes:
        """The frame for one message (RSV1 set when compressed)."""
        if len(payload) < self._threshold:
            return encode_frame(opcode, payload)
        return encode_frame(opcode | RSV1, self._compress(payload))


class SharedFrameCompressor(FrameCompressor):
    """A `FrameCompressor` without context (`server_no_context_takeover`), shared by every
    connection whose parameters compress alike: the same payload object sent again (to the
    next receiver of a broadcast) gets the frame already made, so a broadcast is compressed
    once. (Bytes are immutable and the last payload is kept alive here: identity means the
    same content.)"""

    __slots__ = ("_last_payload", "_last_opcode", "_last_frame")

    def __init__(self, params: DeflateParams, options: DeflateOptions) -> None:
        super().__init__(params, options)
        self._last_payload: bytes | None = None
        self._last_opcode = -1
        self._last_frame = b""

    def frame(self, opcode: int, payload: bytes) -> bytes:
        if payload is self._last_payload and opcode == self._last_opcode:
            return self._last_frame
        frame = FrameCompressor.frame(self, opcode, payload)
        self._last_payload, self._last_opcode, self._last_frame = payload, opcode, frame
        return frame


class CompressorPool:
    """A server's frame compressors: one shared per `compression_key` under no context
    takeover, one per connection otherwise."""

    def __init__(self, options: DeflateOptions) -> None:
        self.options = options
        self._shared: dict[tuple[int, bool], SharedFrameCompressor] = {}

    def for_connection(self, params: DeflateParams) -> FrameCompressor:
        """The compressor a connection with `params` sends through."""
        if not params.server_no_context_takeover:
            return FrameCompressor(params, self.options)
        shared = self._shared.get(params.compression_key)
        if shared is None:
            shared = self._shared[params.compression_key] = SharedFrameCompressor(params, self.options)
        return shared

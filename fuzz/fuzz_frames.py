"""Fuzz target: the WebSocket frame parser (`tether.protocol.FrameParser`).

`check(data)` runs one input and raises (AssertionError, or whatever the parser raised) when
the outcome is not one the parser documents. The input is

    byte 0   configuration: bit 0 set = unmasked frames allowed (require_mask=False);
             bits 1-3 pick max_message_size from SIZES; bit 4 set = "program" mode (below);
             bits 5-7 pick max_frames from FRAME_BUDGETS when the parser has that keyword
    byte 1   seed of the split points (and of the masks in program mode); bit 7 set =
             permessage-deflate negotiated (an inflater; bit 6 set = the client keeps its
             context between messages, bits 0-2 = client_max_window_bits - 8)
    rest     raw mode: the byte stream a client sends;
             program mode: a list of messages to encode as valid frames (see `program`)

Raw mode feeds the stream whole and cut at pseudo-random points, and requires the same
events both ways (an incremental parser must not depend on where TCP cut the stream; the
one exception is a compressed message both corrupt and too big, see `corrupt_or_too_big`), each
event of the documented kinds and shapes (module docstring of tether/protocol/frames.py):
messages never over max_message_size, control payloads at most 125 bytes, close codes valid,
an error or a close only as the last event and the parser finished after it. Program mode
encodes messages with `encode_frame` (compressed with the client's `Compressor` when deflate
is on and the message asks) and requires exactly those messages back, with 1009 at the frame
that takes a message over the limit. Both modes check the C unmasking against the
pure-Python one on the input's bytes.

Which unmasking the parser uses is chosen when tether.protocol.masking is imported:
TETHER_PURE_PYTHON=1 in the environment selects the pure-Python fallback (`run.py --pure`).
"""

from __future__ import annotations

import importlib
import inspect
import random
import reprlib
from types import ModuleType

from pieces import cut  # fuzz/ is on sys.path: run.py and the tests put it there

from tether.protocol import (
    OP_BINARY,
    OP_CLOSE,
    OP_CONTINUATION,
    OP_PING,
    OP_PONG,
    OP_TEXT,
    PROTOCOL_ERROR,
    FrameParser,
    ProtocolError,
    apply_mask,
    encode_close,
    encode_frame,
    is_valid_close_code,
    pure_apply_mask,
)

SIZES = (1 << 20, 1, 16, 125, 126, 1024, 65535, 65536)
FRAME_BUDGETS = (None, 1, 2, 3, 8, 64, 1024, None)  # None: the parser's default
ERROR_CODES = {1002, 1007, 1009}  # what a client's bytes can be refused with
MAX_PROGRAM = 70_000  # bytes of frames a program may make: past 64 KiB (64-bit lengths), no more
MAX_LEN = 8192  # libFuzzer's -max_len for this target

RSV1 = 0x40  # RFC 7692: set on the first frame of a compressed message

_PARAMS = inspect.signature(FrameParser).parameters
_HAS_BUDGET = "max_frames" in _PARAMS
deflate: ModuleType | None = None
if "inflater" in _PARAMS:
    try:
        deflate = importlib.import_module("tether.protocol.deflate")
    except ImportError:  # the parser has the hook, the tree has no permessage-deflate yet
        deflate = None


def deflate_params(seed: int) -> object | None:
    """The permessage-deflate agreement an input's seed byte asks for (None: not negotiated)."""
    if deflate is None or not seed & 0x80:
        return None
    return deflate.DeflateParams(server_no_context_takeover=True, client_no_context_takeover=not seed & 0x40,
                                 server_max_window_bits=15, client_max_window_bits=8 + (seed & 7))


_repr = reprlib.Repr()
_repr.maxstring = _repr.maxother = 80
_repr.maxlist = 12


def differ(got: list[tuple[int, object]], expected: list[tuple[int, object]]) -> str:
    """Where two event lists part, briefly (messages may be 64 KiB long)."""
    pairs = zip(got, expected, strict=False)
    index = next((i for i, (a, b) in enumerate(pairs) if a != b), min(len(got), len(expected)))
    return (f"{len(got)} events against {len(expected)}, first difference at event {index}: "
            f"{_repr.repr(got[index:index + 1])} against {_repr.repr(expected[index:index + 1])}")


def make_parser(config: int, seed: int = 0) -> FrameParser:
    """The parser an input's configuration and seed bytes ask for."""
    require_mask = not config & 1
    size = SIZES[(config >> 1) & 7]
    budget = FRAME_BUDGETS[config >> 5]
    kwargs = {}
    if _HAS_BUDGET and budget is not None:
        kwargs["max_frames"] = budget
    params = deflate_params(seed)
    if params is not None:
        assert deflate is not None
        kwargs["inflater"] = deflate.Decompressor(params)
    return FrameParser(size, require_mask, **kwargs)


def feed(parser: FrameParser, data: bytes, events: list[object]) -> None:
    """Feed `data` and collect its events; a parser that stopped at its frame budget with
    input left (`backlog`) is fed b"" until it has parsed all of it."""
    events.extend(parser.feed(data))
    for _ in range(MAX_PROGRAM + MAX_LEN):  # a frame is 2 bytes at least: more feeds mean no progress
        if not getattr(parser, "backlog", False):
            return
        events.extend(parser.feed(b""))
    raise AssertionError("the parser's backlog does not shrink: feed(b'') makes no progress")


def normalize(event: object) -> tuple[int, object]:
    """An event as a comparable value (an error compares by its close code)."""
    assert isinstance(event, tuple) and len(event) == 2, f"an event is a (kind, value) pair, got {event!r}"
    kind, value = event
    if kind == PROTOCOL_ERROR:
        return kind, value.code
    return kind, value


def check_events(events: list[object], parser: FrameParser, limit: int, fed: int | None) -> None:
    """The documented shapes of events, and the invariants that hold for any input; `fed`
    bounds the payload bytes out (None when messages may inflate)."""
    total = 0
    for index, event in enumerate(events):
        assert isinstance(event, tuple) and len(event) == 2, f"an event is a (kind, value) pair, got {event!r}"
        kind, value = event
        last = index == len(events) - 1
        if kind == OP_TEXT:
            assert type(value) is str, f"text message of type {type(value)}"
            size = len(value.encode("utf-8"))
            assert size <= limit, f"text message of {size} bytes over max_message_size={limit}"
            total += size
        elif kind == OP_BINARY:
            assert type(value) is bytes, f"binary message of type {type(value)}"
            assert len(value) <= limit, f"binary message of {len(value)} bytes over max_message_size={limit}"
            total += len(value)
        elif kind in (OP_PING, OP_PONG):
            assert type(value) is bytes, f"control payload of type {type(value)}"
            assert len(value) <= 125, f"control payload of {len(value)} bytes"
            total += len(value)
        elif kind == OP_CLOSE:
            assert last, "events after a close"
            code, reason = value
            assert type(code) is int and type(reason) is str, f"close value {value!r}"
            assert (code == 1005 and reason == "") or is_valid_close_code(code), f"close code {code}"
            assert len(reason.encode("utf-8")) <= 123, "close reason over 123 bytes"
        elif kind == PROTOCOL_ERROR:
            assert last, "events after a protocol error"
            assert isinstance(value, ProtocolError), f"error value {value!r}"
            assert value.code in ERROR_CODES, f"protocol error with close code {value.code}"
            assert isinstance(value.reason, str) and value.reason, "protocol error without a reason"
        else:
            raise AssertionError(f"event of unknown kind {kind!r}")
    assert fed is None or total <= fed, f"{total} payload bytes out of {fed} bytes in"
    ended = bool(events) and events[-1][0] in (OP_CLOSE, PROTOCOL_ERROR)
    assert parser.finished == ended, f"finished={parser.finished} after events ending {_repr.repr(events[-1:])}"
    if ended:
        assert parser.feed(b"\x81\x80\x00\x00\x00\x00") == [], "events after the parser finished"


def check_masking(data: bytes) -> None:
    """The C unmasking (when built) gives what the pure-Python one gives."""
    if len(data) >= 4:
        mask, payload = data[:4], data[4:]
        assert apply_mask(payload, mask) == pure_apply_mask(payload, mask), "C and Python unmasking differ"


def parse_both_ways(config: int, seed: int, stream: bytes) -> list[tuple[int, object]]:
    """Feed `stream` whole and in pieces; check both outcomes and that they agree."""
    limit = SIZES[(config >> 1) & 7]
    fed = None if deflate_params(seed) is not None else len(stream)
    whole_parser = make_parser(config, seed)
    whole: list[object] = []
    feed(whole_parser, stream, whole)
    check_events(whole, whole_parser, limit, fed)
    split_parser = make_parser(config, seed)
    split: list[object] = []
    for piece in cut(stream, seed):
        feed(split_parser, piece, split)
    check_events(split, split_parser, limit, fed)
    expected = [normalize(event) for event in whole]
    got = [normalize(event) for event in split]
    if got != expected and corrupt_or_too_big(whole, split):
        return expected
    assert got == expected, f"cut at other points, the same stream gave other events: {differ(got, expected)}"
    return expected


def corrupt_or_too_big(whole: list[object], split: list[object]) -> bool:
    """The one outcome that depends on the cuts, by zlib's design: a compressed message both
    corrupt and too big. Inflating stops one byte past the limit; given more of the input at
    once, zlib decodes a length and distance ahead of the output it may still write, so it
    may find the corruption before the limit (1007), or stop at the limit first (1009). The
    events before it must agree."""
    if len(whole) != len(split) or whole[:-1] != split[:-1]:
        return False
    errors = [event[1] for event in (whole[-1], split[-1])
              if isinstance(event, tuple) and event[0] == PROTOCOL_ERROR and isinstance(event[1], ProtocolError)]
    reasons = {error.code: error.reason for error in errors}
    return set(reasons) == {1007, 1009} and reasons[1007].startswith("invalid compressed data")


def program(config: int, seed: int, data: bytes) -> tuple[bytes, list[tuple[int, object]]]:
    """Encode the messages `data` describes; return the stream and the events it must give.

    Each message is an op byte then a length byte then up to that many payload bytes:
    op % 5 picks text, binary, ping, pong or close (which ends the program); bits 3-4 the
    number of fragments - 1; bit 5 a ping between fragments; bit 6 a length 251 times the
    length byte (the payload repeats the bytes given); bit 7, when deflate is on, compresses
    the message (RSV1 on its first frame). Messages stop at MAX_PROGRAM bytes. Text payloads
    are made valid UTF-8 and cut into fragments at any byte, inside characters too.
    """
    rng = random.Random(seed)
    params = deflate_params(seed)
    compressor = None
    if params is not None:
        assert deflate is not None
        compressor = deflate.Compressor(params.mirrored(), deflate.DeflateOptions())
    require_mask = not config & 1
    limit = SIZES[(config >> 1) & 7]
    stream = bytearray()
    expected: list[tuple[int, object]] = []
    pos = 0

    def frame(opcode: int, payload: bytes, fin: bool = True) -> None:
        mask = rng.randbytes(4) if require_mask or rng.random() < 0.5 else None
        stream.extend(encode_frame(opcode, payload, fin=fin, mask=mask))

    while pos + 2 <= len(data) and len(stream) < MAX_PROGRAM:
        op, length = data[pos], data[pos + 1]
        pos += 2
        raw = data[pos:pos + length]
        pos += len(raw)
        kind = op % 5
        if kind in (2, 3):
            payload = raw[:125]
            frame(OP_PING if kind == 2 else OP_PONG, payload)
            expected.append((OP_PING if kind == 2 else OP_PONG, payload))
            continue
        if kind == 4:
            code = int.from_bytes((raw[:2] or b"\x03\xe8").ljust(2, b"\x00"), "big")
            code = code if is_valid_close_code(code) else 1000
            reason = raw[2:].decode("utf-8", "replace")
            close = encode_close(code, reason)
            frame(OP_CLOSE, close[2:])
            expected.append((OP_CLOSE, (code, close[4:].decode("utf-8"))))
            return bytes(stream), expected
        if op & 0x40 and raw:
            raw = (raw * (251 * length // len(raw) + 1))[:251 * length]
        text = kind == 0
        payload = raw.decode("utf-8", "replace").encode("utf-8") if text else raw
        opcode = OP_TEXT if text else OP_BINARY
        count = ((op >> 3) & 3) + 1
        wire = payload
        if compressor is not None and op & 0x80:
            wire = compressor.compress(payload)
            opcode |= RSV1
        bounds = sorted(rng.randint(0, len(wire)) for _ in range(count - 1))
        parts = [wire[a:b] for a, b in zip([0, *bounds], [*bounds, len(wire)], strict=True)]
        if wire is not payload and len(payload) > limit:
            # Inflated past the limit somewhere in these frames: 1009, and nothing after it.
            for index, part in enumerate(parts):
                frame(OP_CONTINUATION if index else opcode, part, fin=index == count - 1)
            expected.append((PROTOCOL_ERROR, 1009))
            return bytes(stream), expected
        size = 0
        for index, part in enumerate(parts):
            size += len(part)
            if size > limit and wire is payload:
                expected.append((PROTOCOL_ERROR, 1009))
                frame(OP_CONTINUATION if index else opcode, part, fin=index == count - 1)
                return bytes(stream), expected
            frame(OP_CONTINUATION if index else opcode, part, fin=index == count - 1)
            if op & 0x20 and index < count - 1:
                frame(OP_PING, b"between")
                expected.append((OP_PING, b"between"))
        expected.append((OP_TEXT, payload.decode("utf-8")) if text else (OP_BINARY, payload))
    return bytes(stream), expected


def check(data: bytes) -> None:
    """One fuzz input (see the module docstring)."""
    if len(data) < 2:
        return
    config, seed, rest = data[0], data[1], data[2:]
    check_masking(rest)
    if config & 0x10:
        stream, expected = program(config, seed, rest)
        got = parse_both_ways(config, seed, stream)
        assert got == expected, f"valid frames gave other events than their messages: {differ(got, expected)}"
    else:
        parse_both_ways(config, seed, rest)

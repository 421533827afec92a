"""RFC 6455 framing rules, fed as bytes to the sans-I/O parser (no sockets)."""

from __future__ import annotations

import os
import struct

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

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
    encode_close,
    encode_frame,
    is_valid_close_code,
    masking,
    parse_close_payload,
    pure_apply_mask,
)

MASK = b"\x01\x02\x03\x04"


def client_frame(opcode: int, payload: bytes, fin: bool = True, mask: bytes | None = MASK) -> bytes:
    return encode_frame(opcode, payload, fin=fin, mask=mask)


def feed(data: bytes, **options) -> list:
    return FrameParser(**options).feed(data)


def error_of(events: list) -> ProtocolError:
    kind, value = events[-1]
    assert kind == PROTOCOL_ERROR, events
    return value


# -- masking (5.3) ----------------------------------------------------------------------
IMPLEMENTATIONS = [pure_apply_mask]
if masking.ACCELERATED:
    from tether.protocol._mask import apply_mask as c_apply_mask
    IMPLEMENTATIONS.append(c_apply_mask)


def test_the_c_accelerator_is_built_by_the_install():
    """The editable install compiles the extension: if this fails the wheel build lost it."""
    assert masking.ACCELERATED or os.environ.get("TETHER_PURE_PYTHON")


@pytest.mark.parametrize("apply_mask", IMPLEMENTATIONS)
@pytest.mark.parametrize("size", [0, 1, 3, 4, 5, 7, 8, 9, 63, 64, 125, 1000, 65537])
def test_masking_matches_the_rfc_definition(apply_mask, size):
    data = os.urandom(size)
    key = os.urandom(4)
    expected = bytes(b ^ key[i % 4] for i, b in enumerate(data))
    assert apply_mask(data, key) == expected
    assert apply_mask(expected, key) == data


@pytest.mark.parametrize("apply_mask", IMPLEMENTATIONS)
def test_masking_rejects_a_key_that_is_not_4_bytes(apply_mask):
    with pytest.raises(ValueError, match="4 bytes"):
        apply_mask(b"abc", b"12345")


# -- lengths (5.2) ----------------------------------------------------------------------
@pytest.mark.parametrize("size", [0, 125, 126, 65535, 65536, 200_000])
def test_7_16_and_64_bit_payload_lengths_round_trip(size):
    payload = os.urandom(size)
    frame = client_frame(OP_BINARY, payload)
    header_len = 2 if size < 126 else 4 if size < 65536 else 10
    assert len(frame) == header_len + 4 + size
    assert feed(frame) == [(OP_BINARY, payload)]


def test_server_frames_are_unmasked_with_minimal_length_encoding():
    assert encode_frame(OP_TEXT, b"hi") == b"\x81\x02hi"
    assert encode_frame(OP_BINARY, b"x" * 126)[:4] == b"\x82\x7e\x00\x7e"
    assert encode_frame(OP_BINARY, b"x" * 65536)[:10] == b"\x82\x7f" + struct.pack("!Q", 65536)


def test_64_bit_length_with_the_most_significant_bit_set_is_a_protocol_error():
    frame = b"\x82\xff" + struct.pack("!Q", 1 << 63) + MASK
    assert error_of(feed(frame)).code == 1002


def test_a_frame_split_at_every_byte_boundary_parses_the_same():
    frame = client_frame(OP_TEXT, "héllo wörld".encode()) + client_frame(OP_BINARY, b"\x00" * 300)
    parser = FrameParser()
    events = []
    for i in range(len(frame)):
        events += parser.feed(frame[i:i + 1])
    assert events == [(OP_TEXT, "héllo wörld"), (OP_BINARY, b"\x00" * 300)]


# -- masking requirement (5.1) ----------------------------------------------------------
def test_an_unmasked_client_frame_is_a_1002_protocol_error():
    error = error_of(feed(client_frame(OP_TEXT, b"hi", mask=None)))
    assert error.code == 1002 and "not masked" in error.reason


# -- reserved bits and opcodes (5.2) ----------------------------------------------------
@pytest.mark.parametrize("rsv", [0x40, 0x20, 0x10])
def test_reserved_bits_without_an_extension_are_a_protocol_error(rsv):
    frame = bytearray(client_frame(OP_TEXT, b"hi"))
    frame[0] |= rsv
    assert error_of(feed(bytes(frame))).code == 1002


@pytest.mark.parametrize("opcode", [3, 4, 5, 6, 7, 0xB, 0xC, 0xD, 0xE, 0xF])
def test_reserved_opcodes_are_a_protocol_error(opcode):
    assert error_of(feed(client_frame(opcode, b""))).code == 1002


# -- fragmentation (5.4) ----------------------------------------------------------------
def test_fragments_are_reassembled_into_one_message():
    data = (client_frame(OP_TEXT, b"Hel", fin=False) + client_frame(OP_CONTINUATION, b"lo, ", fin=False)
            + client_frame(OP_CONTINUATION, b"world"))
    assert feed(data) == [(OP_TEXT, "Hello, world")]


def test_control_frames_may_come_between_fragments():
    data = (client_frame(OP_BINARY, b"ab", fin=False) + client_frame(OP_PING, b"p")
            + client_frame(OP_CONTINUATION, b"cd", fin=False) + client_frame(OP_PONG, b"q")
            + client_frame(OP_CONTINUATION, b"ef"))
    assert feed(data) == [(OP_PING, b"p"), (OP_PONG, b"q"), (OP_BINARY, b"abcdef")]


def test_continuation_without_a_started_message_is_a_protocol_error():
    assert error_of(feed(client_frame(OP_CONTINUATION, b"x"))).code == 1002


def test_a_new_data_frame_inside_a_fragmented_message_is_a_protocol_error():
    data = client_frame(OP_TEXT, b"a", fin=False) + client_frame(OP_TEXT, b"b")
    assert "in progress" in error_of(feed(data)).reason


def test_fragmented_control_frames_are_a_protocol_error():
    assert error_of(feed(client_frame(OP_PING, b"x", fin=False))).code == 1002


def test_control_frame_payload_over_125_bytes_is_a_protocol_error():
    assert error_of(feed(client_frame(OP_PING, b"x" * 126))).code == 1002


def test_events_before_an_error_are_kept():
    data = client_frame(OP_TEXT, b"ok") + client_frame(OP_TEXT, b"bad", mask=None)
    events = feed(data)
    assert events[0] == (OP_TEXT, "ok") and events[1][0] == PROTOCOL_ERROR


def test_the_parser_is_dead_after_an_error():
    parser = FrameParser()
    parser.feed(client_frame(OP_CONTINUATION, b"x"))
    assert parser.feed(client_frame(OP_TEXT, b"later")) == []


# -- UTF-8 (8.1) ------------------------------------------------------------------------
def test_invalid_utf8_in_a_text_message_is_1007():
    assert error_of(feed(client_frame(OP_TEXT, b"\xff\xfe"))).code == 1007


def test_utf8_is_validated_across_fragment_boundaries():
    euro = "€".encode()  # three bytes, split over two fragments
    data = client_frame(OP_TEXT, euro[:1], fin=False) + client_frame(OP_CONTINUATION, euro[1:])
    assert feed(data) == [(OP_TEXT, "€")]


def test_invalid_utf8_fails_fast_on_the_fragment_that_breaks_it():
    parser = FrameParser()
    assert parser.feed(client_frame(OP_TEXT, b"ok", fin=False)) == []
    assert error_of(parser.feed(client_frame(OP_CONTINUATION, b"\xc0\xaf", fin=False))).code == 1007


def test_a_text_message_ending_inside_a_character_is_1007():
    data = client_frame(OP_TEXT, b"a", fin=False) + client_frame(OP_CONTINUATION, "€".encode()[:2])
    assert error_of(feed(data)).code == 1007


def test_binary_messages_are_not_utf8_checked():
    assert feed(client_frame(OP_BINARY, b"\xff")) == [(OP_BINARY, b"\xff")]


# -- message size limit ------------------------------------------------------------------
def test_a_frame_announcing_more_than_the_limit_fails_with_1009_from_its_header():
    header_only = b"\x82\xff" + struct.pack("!Q", 2 << 20) + MASK
    assert error_of(FrameParser(max_message_size=1 << 20).feed(header_only)).code == 1009


def test_fragments_adding_up_past_the_limit_fail_with_1009():
    parser = FrameParser(max_message_size=100)
    assert parser.feed(client_frame(OP_BINARY, b"x" * 60, fin=False)) == []
    assert error_of(parser.feed(client_frame(OP_CONTINUATION, b"x" * 60))).code == 1009


def test_a_message_exactly_at_the_limit_is_accepted():
    assert feed(client_frame(OP_BINARY, b"x" * 100), max_message_size=100) == [(OP_BINARY, b"x" * 100)]


# -- close frames (5.5.1, 7.4) -------------------------------------------------------------
def test_close_frame_with_code_and_reason():
    assert feed(client_frame(OP_CLOSE, b"\x03\xe8bye")) == [(OP_CLOSE, (1000, "bye"))]


def test_empty_close_frame_means_1005():
    assert feed(client_frame(OP_CLOSE, b"")) == [(OP_CLOSE, (1005, ""))]


def test_close_body_of_one_byte_is_a_protocol_error():
    assert error_of(feed(client_frame(OP_CLOSE, b"\x03"))).code == 1002


@pytest.mark.parametrize("code", [0, 999, 1004, 1005, 1006, 1015, 1016, 2000, 2999, 5000])
def test_invalid_close_codes_are_a_protocol_error(code):
    assert not is_valid_close_code(code)
    assert error_of(feed(client_frame(OP_CLOSE, code.to_bytes(2, "big")))).code == 1002


@pytest.mark.parametrize("code", [1000, 1001, 1002, 1003, 1007, 1008, 1009, 1010, 1011, 3000, 4999])
def test_valid_close_codes_are_accepted(code):
    assert parse_close_payload(code.to_bytes(2, "big")) == (code, "")


def test_close_reason_must_be_utf8():
    assert error_of(feed(client_frame(OP_CLOSE, b"\x03\xe8\xff"))).code == 1007


def test_nothing_after_a_close_frame_is_parsed():
    data = client_frame(OP_CLOSE, b"\x03\xe8") + client_frame(OP_TEXT, b"late")
    assert feed(data) == [(OP_CLOSE, (1000, ""))]


def test_encode_close_cuts_a_long_reason_without_breaking_utf8():
    frame = encode_close(1000, "é" * 100)
    assert len(frame) <= 2 + 125
    assert parse_close_payload(frame[2:])[1] == "é" * 61


def test_encode_close_with_no_status_sends_an_empty_body():
    assert encode_close(1005) == b"\x88\x00"


# -- properties ---------------------------------------------------------------------------
messages = st.one_of(st.tuples(st.just(OP_TEXT), st.text(max_size=300)),
                     st.tuples(st.just(OP_BINARY), st.binary(max_size=70000)))


@settings(max_examples=150, deadline=None)
@given(st.lists(messages, max_size=5), st.integers(min_value=1, max_value=70))
def test_serialize_then_parse_round_trips_any_messages_and_chunking(batch, chunk):
    wire = b""
    for opcode, value in batch:
        payload = value.encode() if opcode == OP_TEXT else value
        # Split each message into up to three fragments to exercise reassembly too.
        cut = [0, len(payload) // 3, 2 * len(payload) // 3, len(payload)]
        pieces = [payload[cut[i]:cut[i + 1]] for i in range(3)]
        wire += client_frame(opcode, pieces[0], fin=False, mask=os.urandom(4))
        wire += client_frame(OP_CONTINUATION, pieces[1], fin=False, mask=os.urandom(4))
        wire += client_frame(OP_CONTINUATION, pieces[2], mask=os.urandom(4))
    parser = FrameParser(max_message_size=1 << 20)
    events = []
    for i in range(0, len(wire), chunk):
        events += parser.feed(wire[i:i + chunk])
    assert events == list(batch)


@settings(max_examples=400, deadline=None)
@given(st.lists(st.binary(max_size=64), max_size=8))
def test_arbitrary_bytes_only_ever_yield_events_or_a_protocol_error(chunks):
    parser = FrameParser(max_message_size=4096)
    for chunk in chunks:
        events = parser.feed(chunk)  # must never raise
        for kind, value in events:
            assert kind in (OP_TEXT, OP_BINARY, OP_PING, OP_PONG, OP_CLOSE, PROTOCOL_ERROR)
            if kind == PROTOCOL_ERROR:
                assert isinstance(value, ProtocolError) and value.code in (1002, 1007, 1009)


# -- partial frames, coalescing, the per-feed frame budget -----------------------------------
def test_invalid_utf8_fails_fast_inside_a_frame_that_has_not_fully_arrived():
    # Autobahn 6.4.3/6.4.4: one text frame sent in chunks; the invalid bytes are in the second.
    valid = "κόσμε".encode()
    frame = client_frame(OP_TEXT, valid + b"\xf4\x90\x80\x80" + b"rest" * 10)
    header = 6  # 2 bytes + the mask
    parser = FrameParser()
    assert parser.feed(frame[:header + 4]) == []
    events = parser.feed(frame[header + 4:header + len(valid) + 4])
    assert error_of(events).code == 1007, "the invalid bytes arrived: fail now, not when the frame ends"


def test_a_frame_arriving_byte_by_byte_is_unmasked_across_the_mask_cycle():
    payload = os.urandom(1000)
    frame = client_frame(OP_BINARY, payload, mask=os.urandom(4))
    parser = FrameParser()
    events = []
    for i in range(0, len(frame), 7):
        events += parser.feed(frame[i:i + 7])
    assert events == [(OP_BINARY, payload)]


def test_a_utf8_character_split_between_reads_of_one_frame_is_valid():
    text = "é" * 50 + "😀" * 50
    frame = client_frame(OP_TEXT, text.encode())
    parser = FrameParser()
    events = []
    for i in range(0, len(frame), 3):  # every cut lands inside some character
        events += parser.feed(frame[i:i + 3])
    assert events == [(OP_TEXT, text)]


def test_a_frame_announcing_over_the_limit_with_a_partial_payload_fails_from_its_header():
    frame = client_frame(OP_BINARY, b"x" * 200)
    assert error_of(FrameParser(max_message_size=100).feed(frame[:20])).code == 1009


def test_empty_continuation_frames_cost_no_memory_per_fragment():
    parser = FrameParser()
    assert parser.feed(client_frame(OP_TEXT, b"start", fin=False)) == []
    empty = client_frame(OP_CONTINUATION, b"", fin=False)
    for _ in range(20):  # 20 x 1000 frames, each feed within the frame budget
        assert parser.feed(empty * 1000) == []
    assert len(parser._message) == 5  # noqa: SLF001 (the one buffer of the open message)
    assert parser.feed(client_frame(OP_CONTINUATION, b" end")) == [(OP_TEXT, "start end")]


def test_one_byte_fragments_are_coalesced_into_one_buffer():
    import tracemalloc
    size = 100_000
    wire = client_frame(OP_BINARY, b"a", fin=False) + client_frame(OP_CONTINUATION, b"b", fin=False) * (size - 2)
    parser = FrameParser(max_frames=size)
    tracemalloc.start()
    try:
        base = tracemalloc.get_traced_memory()[0]
        assert parser.feed(wire) == []
        held = tracemalloc.get_traced_memory()[0] - base
    finally:
        tracemalloc.stop()
    # One list slot and bytes object per fragment would be ~40+ bytes each (4 MB here);
    # coalesced, the message costs about its size.
    assert held < 4 * size, held
    events = parser.feed(client_frame(OP_CONTINUATION, b"z"))
    assert events == [(OP_BINARY, b"a" + b"b" * (size - 2) + b"z")]


def test_a_feed_parses_at_most_max_frames_and_continues_on_an_empty_feed():
    ping = client_frame(OP_PING, b"p")
    parser = FrameParser(max_frames=10)
    events = parser.feed(ping * 25 + client_frame(OP_TEXT, b"last"))
    assert len(events) == 10 and parser.backlog
    events = parser.feed(b"")
    assert len(events) == 10 and parser.backlog
    events = parser.feed(b"")
    assert events == [(OP_PING, b"p")] * 5 + [(OP_TEXT, "last")] and not parser.backlog


def test_input_arriving_during_a_backlog_is_parsed_after_it_in_order():
    parser = FrameParser(max_frames=2)
    events = parser.feed(client_frame(OP_TEXT, b"1") * 3)
    assert [v for _, v in events] == ["1", "1"] and parser.backlog
    events = parser.feed(client_frame(OP_TEXT, b"2"))
    assert [v for _, v in events] == ["1", "2"] and not parser.backlog


# -- RSV1: compressed messages (RFC 7692 6.1) --------------------------------------------
class ZlibInflater:
    """A minimal inflater, configured by hand as RFC 7692 describes (raw deflate + tail)."""

    def __init__(self) -> None:
        import zlib
        self._zlib = zlib
        self._inflate = zlib.decompressobj(-15)
        self.size = 0

    def decompress(self, data: bytes, limit: int) -> bytes:
        room = limit - self.size
        if room < 0:
            return b""  # the message is over the limit already: the parser refuses it
        out = self._inflate.decompress(data, room + 1)
        self.size += len(out)
        return out

    def end_message(self, limit: int) -> bytes:
        out = self.decompress(b"\x00\x00\xff\xff", limit)
        self._inflate = self._zlib.decompressobj(-15)
        self.size = 0
        return out

    def decompress_final(self, data: bytes, limit: int) -> bytes:
        return self.decompress(data, limit) + self.end_message(limit)


def deflate(payload: bytes) -> bytes:
    import zlib
    compressor = zlib.compressobj(wbits=-15)
    data = compressor.compress(payload) + compressor.flush(zlib.Z_SYNC_FLUSH)
    assert data.endswith(b"\x00\x00\xff\xff")
    return data[:-4]


def compressed_frame(opcode: int, payload: bytes, fin: bool = True) -> bytes:
    frame = bytearray(client_frame(opcode, payload, fin=fin))
    frame[0] |= 0x40
    return bytes(frame)


def test_rsv1_marks_a_compressed_message_when_an_inflater_was_negotiated():
    text = '{"price": 1.25, "symbol": "ABC"}' * 20
    events = feed(compressed_frame(OP_TEXT, deflate(text.encode())), inflater=ZlibInflater())
    assert events == [(OP_TEXT, text)]


def test_rsv1_only_on_the_first_fragment_and_the_message_is_inflated_whole():
    data = deflate(b"hello fragmented compressed world" * 10)
    wire = compressed_frame(OP_BINARY, data[:7], fin=False) + client_frame(OP_CONTINUATION, data[7:])
    assert feed(wire, inflater=ZlibInflater()) == [(OP_BINARY, b"hello fragmented compressed world" * 10)]


def test_rsv1_on_a_continuation_frame_is_1002():
    data = deflate(b"abc" * 10)
    wire = compressed_frame(OP_TEXT, data[:3], fin=False) + compressed_frame(OP_CONTINUATION, data[3:])
    assert error_of(feed(wire, inflater=ZlibInflater())).code == 1002


def test_rsv1_on_a_control_frame_is_1002():
    assert error_of(feed(compressed_frame(OP_PING, b""), inflater=ZlibInflater())).code == 1002


def test_rsv1_without_a_negotiated_extension_is_1002():
    assert error_of(feed(compressed_frame(OP_TEXT, deflate(b"abc")))).code == 1002


def test_uncompressed_messages_still_flow_on_a_deflate_connection():
    assert feed(client_frame(OP_TEXT, b"plain"), inflater=ZlibInflater()) == [(OP_TEXT, "plain")]


def test_invalid_utf8_inside_a_compressed_message_is_1007_as_soon_as_it_is_inflated():
    data = deflate(b"valid prefix " * 50 + b"\xff" + b"rest" * 1000)
    parser = FrameParser(inflater=ZlibInflater())
    frame = compressed_frame(OP_TEXT, data)
    events = parser.feed(frame[:len(frame) - 5])  # the last bytes not arrived yet
    assert error_of(events).code == 1007


def test_the_inflated_size_counts_against_max_message_size():
    data = deflate(b"\x00" * 100_000)
    assert len(data) < 1000
    events = feed(compressed_frame(OP_BINARY, data), inflater=ZlibInflater(), max_message_size=10_000)
    assert error_of(events).code == 1009


@pytest.mark.parametrize("bad_at, code", [(99, 1007), (100, 1009), (5000, 1009)])
def test_a_compressed_text_too_big_and_invalid_fails_by_its_first_fault_however_it_is_cut(bad_at, code):
    """Invalid UTF-8 within max_message_size (100) is the first fault: 1007; past it the size
    is: 1009. Cut anywhere, into frames or into reads, the same code (a fuzz finding: it
    depended on where the inflated pieces ended)."""
    text = bytearray(b"a" * 6000)
    text[bad_at] = 0xFF
    data = deflate(bytes(text))
    one_frame = compressed_frame(OP_TEXT, data)
    for cut in range(1, len(data)):
        fragments = compressed_frame(OP_TEXT, data[:cut], fin=False) + client_frame(OP_CONTINUATION, data[cut:])
        for wire in (one_frame, fragments):
            parser = FrameParser(max_message_size=100, inflater=ZlibInflater())
            events = parser.feed(wire[:cut + 6]) + parser.feed(wire[cut + 6:])
            assert error_of(events).code == code, (cut, wire is one_frame)


def test_the_inflated_size_limit_counts_the_whole_message_across_fragments():
    data = deflate(b"y" * 3000)
    wire = compressed_frame(OP_BINARY, data[:len(data) // 2], fin=False) + client_frame(OP_CONTINUATION, data[len(data) // 2:])
    assert feed(wire, inflater=ZlibInflater(), max_message_size=3000) == [(OP_BINARY, b"y" * 3000)]
    assert error_of(feed(wire, inflater=ZlibInflater(), max_message_size=2999)).code == 1009

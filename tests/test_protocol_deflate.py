"""permessage-deflate (RFC 7692), sans-I/O: one test per rule, named by section, plus round
trips, interop with hand-configured zlib and with websockets' extension, and a zip bomb."""

from __future__ import annotations

import json
import random
import time
import tracemalloc
import zlib

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from websockets.extensions.permessage_deflate import ClientPerMessageDeflateFactory, PerMessageDeflate
from websockets.frames import Frame, Opcode
from websockets.headers import build_extension, parse_extension

from tether.protocol import (
    Compressor,
    Decompressor,
    DeflateOptions,
    DeflateParams,
    HandshakeError,
    ProtocolError,
    negotiate,
    parse_extensions,
)

TAIL = b"\x00\x00\xff\xff"
BITS = range(8, 16)
BIG = 1 << 30  # a limit no test message reaches


def params(snct: bool = True, cnct: bool = True, sbits: int = 15, cbits: int = 15) -> DeflateParams:
    return DeflateParams(snct, cnct, sbits, cbits)


def mirror(p: DeflateParams) -> DeflateParams:
    """The same agreement seen from the client: its inflater uses the server's fields."""
    return DeflateParams(p.client_no_context_takeover, p.server_no_context_takeover,
                         p.client_max_window_bits, p.server_max_window_bits)


def json_message(seed: int, size: int = 1024) -> bytes:
    """Compressible JSON, as chat and dashboards send."""
    rng = random.Random(seed)
    words = "alpha beta gamma delta epsilon zeta theta kappa lambda sigma omega".split()
    items: list[dict[str, object]] = []
    while len(json.dumps(items)) < size:
        items.append({"id": rng.randrange(10**6), "user": rng.choice(words) + str(rng.randrange(100)),
                      "text": " ".join(rng.choice(words) for _ in range(5)), "read": rng.random() < 0.5})
    return json.dumps(items).encode()[:size]


def far_repeats(seed: int, size: int = 6000) -> bytes:
    """Data whose repeats sit 200 to 20000 bytes apart: matches near and beyond small windows."""
    rng = random.Random(seed)
    pool = [rng.randbytes(rng.randrange(20, 60)) for _ in range(8)]
    out = bytearray()
    while len(out) < size:
        out += rng.choice(pool) if rng.random() < 0.6 else rng.randbytes(rng.randrange(150, 300))
    return bytes(out[:size])


class HandClient:
    """A client's side configured by hand with Python's zlib, as RFC 7692 7.2 describes."""

    def __init__(self, p: DeflateParams) -> None:
        self.p = p
        # zlib refuses raw windowBits 8 for compression; 9 stays within 250 bytes (see module).
        self.deflater = zlib.compressobj(6, zlib.DEFLATED, -max(p.client_max_window_bits, 9))
        self.inflater = zlib.decompressobj(-p.server_max_window_bits)

    def compress(self, message: bytes) -> bytes:
        if self.p.client_no_context_takeover:
            self.deflater = zlib.compressobj(6, zlib.DEFLATED, -max(self.p.client_max_window_bits, 9))
        data = self.deflater.compress(message) + self.deflater.flush(zlib.Z_SYNC_FLUSH)
        assert data.endswith(TAIL)
        return data[:-4]

    def decompress(self, payload: bytes) -> bytes:
        if self.p.server_no_context_takeover:
            self.inflater = zlib.decompressobj(-self.p.server_max_window_bits)
        return strict_inflate(self.inflater, payload + TAIL)


def strict_inflate(inflater: zlib._Decompress, data: bytes) -> bytes:
    """Inflate one output byte per call: zlib then checks every match distance against the
    window it keeps (2**wbits bytes) instead of against a large output buffer, so a
    reference farther back than the negotiated window fails ("invalid distance too far back")."""
    out = bytearray()
    pending = data
    for _ in range(1032 * len(data) + 1024):  # deflate inflates at most ~1032:1
        chunk = inflater.decompress(pending, 1)
        out += chunk
        pending = inflater.unconsumed_tail
        if not chunk and not pending:
            return bytes(out)
    raise AssertionError("strict_inflate did not finish")


def inflate_in_pieces(d: Decompressor, payload: bytes, cuts: list[int], limit: int = BIG) -> bytes:
    points = sorted({min(max(c, 0), len(payload)) for c in cuts})
    pieces, start = [], 0
    for point in [*points, len(payload)]:
        pieces.append(payload[start:point])
        start = point
    return b"".join(d.decompress(piece, limit) for piece in pieces) + d.end_message(limit)


# -- the setting (DeflateOptions.from_setting) ------------------------------------------------
def test_setting_false_is_off_true_is_the_defaults_a_mapping_sets_fields():
    assert DeflateOptions.from_setting(False) is None
    assert DeflateOptions.from_setting(True) == DeflateOptions()
    options = DeflateOptions.from_setting({"server_max_window_bits": 10, "threshold": 0})
    assert options == DeflateOptions(server_max_window_bits=10, threshold=0)
    assert DeflateOptions().server_no_context_takeover and DeflateOptions().client_no_context_takeover


def test_setting_names_an_unknown_key():
    with pytest.raises(ValueError, match=r"permessage_deflate: unknown option 'window_bits'"):
        DeflateOptions.from_setting({"window_bits": 10})


@pytest.mark.parametrize(("key", "value", "message"), [
    ("server_max_window_bits", 20, "server_max_window_bits must be 8..15, got 20"),
    ("server_max_window_bits", 7, "server_max_window_bits must be 8..15, got 7"),
    ("client_max_window_bits", 16, "client_max_window_bits must be 8..15, got 16"),
    ("client_max_window_bits", True, "client_max_window_bits must be 8..15, got True"),
    ("memory_level", 0, "memory_level must be 1..9, got 0"),
    ("compression_level", 10, "compression_level must be -1..9, got 10"),
    ("threshold", -1, "threshold must be an integer >= 0, got -1"),
    ("threshold", "128", "threshold must be an integer >= 0, got '128'"),
    ("server_no_context_takeover", "yes", "server_no_context_takeover must be True or False, got 'yes'"),
    ("client_no_context_takeover", 1, "client_no_context_takeover must be True or False, got 1"),
])
def test_setting_names_a_bad_value(key, value, message):
    with pytest.raises(ValueError, match="permessage_deflate: " + message):
        DeflateOptions.from_setting({key: value})


@pytest.mark.parametrize("value", ["yes", 1, None, ["server_max_window_bits"]])
def test_setting_of_another_type_is_refused(value):
    with pytest.raises(ValueError, match="permessage_deflate must be True, False or a mapping"):
        DeflateOptions.from_setting(value)


# -- negotiation: RFC 7692 section 5 and RFC 6455 section 9.1 ---------------------------------
@pytest.mark.parametrize("header", [None, "", "x-webkit-deflate-frame", " , ,", "deflate-frame; x=1"])
def test_5_no_permessage_deflate_offer_means_no_compression(header):
    assert negotiate(header, DeflateOptions()) is None


def test_5_1_an_unknown_parameter_declines_the_offer():
    declined: list[str] = []
    assert negotiate("permessage-deflate; max_window_bits=10", DeflateOptions(), declined) is None
    assert declined == ["permessage-deflate offer declined: unknown parameter 'max_window_bits'"]


def test_5_1_a_repeated_parameter_declines_the_offer():
    declined: list[str] = []
    header = "permessage-deflate; server_max_window_bits=10; server_max_window_bits=10"
    assert negotiate(header, DeflateOptions(), declined) is None
    assert declined == ["permessage-deflate offer declined: parameter server_max_window_bits given twice"]
    assert negotiate("permessage-deflate; client_no_context_takeover; Client_No_Context_Takeover",
                     DeflateOptions()) is None


@pytest.mark.parametrize("param", [
    "server_max_window_bits", "server_max_window_bits=7", "server_max_window_bits=16",
    "server_max_window_bits=08", "server_max_window_bits=010", "server_max_window_bits=abc",
    'server_max_window_bits="1a"', "client_max_window_bits=7", "client_max_window_bits=16",
    "client_max_window_bits=09", "client_max_window_bits=x", "server_no_context_takeover=1",
    'client_no_context_takeover="true"',
])
def test_5_1_an_invalid_value_declines_the_offer(param):
    declined: list[str] = []
    assert negotiate(f"permessage-deflate; {param}", DeflateOptions(), declined) is None
    assert len(declined) == 1, declined


def test_5_1_declined_offers_are_skipped_and_the_next_acceptable_one_is_taken():
    header = ("x-webkit-deflate-frame, permessage-deflate; bogus, "
              "permessage-deflate; server_max_window_bits=99, "
              "permessage-deflate; server_max_window_bits=10; client_max_window_bits, "
              "permessage-deflate")
    declined: list[str] = []
    p = negotiate(header, DeflateOptions(server_no_context_takeover=False), declined)
    assert p == params(snct=False, sbits=10)
    assert len(declined) == 2
    assert p is not None
    assert p.header() == "permessage-deflate; client_no_context_takeover; server_max_window_bits=10"


def test_5_several_header_lines_joined_with_commas_are_several_offers():
    lines = ["permessage-deflate; server_max_window_bits=20", "permessage-deflate; client_max_window_bits=9"]
    p = negotiate(", ".join(lines), DeflateOptions())
    assert p == params(cbits=9)


def test_9_1_the_first_acceptable_offer_wins_even_if_a_later_one_compresses_better():
    p = negotiate("permessage-deflate; server_max_window_bits=9, permessage-deflate", DeflateOptions())
    assert p is not None and p.server_max_window_bits == 9


@pytest.mark.parametrize("header", [
    "permessage-deflate;",
    "permessage-deflate; ; server_no_context_takeover",
    "permessage-deflate; =10",
    "permessage-deflate; server_max_window_bits=",
    "permessage-deflate server_no_context_takeover",
    'permessage-deflate; server_max_window_bits="10',
    'permessage-deflate; server_max_window_bits="1 0"',
    'permessage-deflate; server_max_window_bits="" ',
    '"permessage-deflate"',
    "permessage-deflate; server_max_window_bits=10 11",
    "permessage-deflate/1",
    "permessage-deflate; client_max_window_bits=@",
])
def test_9_1_a_header_breaking_the_grammar_is_a_400(header):
    """RFC 6455 4.2.1: a handshake violating the ABNF of its parts gets 400 Bad Request."""
    with pytest.raises(HandshakeError) as caught:
        negotiate(header, DeflateOptions())
    assert caught.value.status == 400
    assert "Sec-WebSocket-Extensions" in caught.value.message and "position" in caught.value.message


def test_9_1_quoted_values_whitespace_and_case_are_accepted():
    header = '  Permessage-Deflate ;Server_Max_Window_Bits = "1\\0"\t;client_max_window_bits ,  x-other'
    assert parse_extensions(header) == [
        ("permessage-deflate", [("server_max_window_bits", "10"), ("client_max_window_bits", None)]),
        ("x-other", []),
    ]
    p = negotiate(header, DeflateOptions())
    assert p is not None and p.server_max_window_bits == 10 and p.server_max_window_bits_requested


# -- 7.1.1 context takeover -------------------------------------------------------------------
def test_7_1_1_1_server_no_context_takeover_in_offer_is_honoured():
    p = negotiate("permessage-deflate; server_no_context_takeover", DeflateOptions(server_no_context_takeover=False))
    assert p is not None and p.server_no_context_takeover
    assert "server_no_context_takeover" in p.header()
    # Honoured in the bytes too: the same message twice compresses to the same length.
    c = Compressor(p, DeflateOptions())
    message = json_message(1)
    assert len(c.compress(message)) == len(c.compress(message))


def test_7_1_1_1_the_server_declares_no_context_takeover_unasked_by_default():
    p = negotiate("permessage-deflate", DeflateOptions())
    assert p is not None and p.header() == "permessage-deflate; server_no_context_takeover; client_no_context_takeover"


def test_7_1_1_1_context_takeover_when_neither_side_forgoes_it():
    options = DeflateOptions(server_no_context_takeover=False, client_no_context_takeover=False)
    p = negotiate("permessage-deflate", options)
    assert p == params(snct=False, cnct=False)
    assert p is not None and p.header() == "permessage-deflate"
    c, client = Compressor(p, options), HandClient(p)
    message = json_message(2)
    first, second = c.compress(message), c.compress(message)
    assert len(second) < len(first) // 4  # the second refers to the first
    assert client.decompress(first) == message and client.decompress(second) == message


def test_7_1_1_1_without_context_takeover_each_message_stands_alone_so_one_compressor_serves_all():
    """A broadcast: one shared compressor's outputs, each inflated by a new strict inflater,
    which fails on any reference to an earlier message."""
    p = params(snct=True)
    c = Compressor(p, DeflateOptions())
    messages = [json_message(3), json_message(3), b"", json_message(4, 5000), json_message(3)]
    outputs = [c.compress(m) for m in messages]
    for message, out in zip(messages, outputs, strict=True):
        assert strict_inflate(zlib.decompressobj(-15), out + TAIL) == message
    assert outputs[0] == outputs[1] == outputs[4]  # identical bytes for identical messages


def test_7_1_1_2_client_no_context_takeover_is_added_when_the_client_offers_it():
    options = DeflateOptions(client_no_context_takeover=False)
    offered = negotiate("permessage-deflate; client_no_context_takeover", options)
    assert offered is not None and offered.client_no_context_takeover
    assert "client_no_context_takeover" in offered.header()
    not_offered = negotiate("permessage-deflate", options)
    assert not_offered is not None and not not_offered.client_no_context_takeover
    assert "client_no_context_takeover" not in not_offered.header()
    by_default = negotiate("permessage-deflate", DeflateOptions())
    assert by_default is not None and by_default.client_no_context_takeover


def test_7_1_1_2_with_client_no_context_takeover_the_inflater_forgets_each_message():
    """RFC 7692 7.2.3.2's second "Hello" refers to the first: fine with the client's
    context kept, an error (1007) once the server resets its window after each message."""
    hello, hello_again = bytes.fromhex("f248cdc9c90700"), bytes.fromhex("f200110000")
    kept = Decompressor(params(cnct=False))
    assert kept.decompress_final(hello, 100) == b"Hello"
    assert kept.decompress_final(hello_again, 100) == b"Hello"
    for final in (True, False):
        reset = Decompressor(params(cnct=True))
        assert reset.decompress_final(hello, 100) == b"Hello"
        with pytest.raises(ProtocolError) as caught:
            if final:
                reset.decompress_final(hello_again, 100)
            else:
                reset.decompress(hello_again, 100)
        assert caught.value.code == 1007
        reset = Decompressor(params(cnct=True))
        assert reset.decompress(hello, 100) + reset.end_message(100) == b"Hello"
        with pytest.raises(ProtocolError, match="close code 1007"):
            reset.decompress(hello_again, 100) + reset.end_message(100)


# -- 7.1.2 window bits ------------------------------------------------------------------------
@pytest.mark.parametrize("ours", BITS)
@pytest.mark.parametrize("offered", BITS)
def test_7_1_2_1_server_max_window_bits_in_offer_is_honoured(offered, ours):
    p = negotiate(f"permessage-deflate; server_max_window_bits={offered}",
                  DeflateOptions(server_max_window_bits=ours))
    assert p is not None and p.server_max_window_bits == min(offered, ours)
    # Accepting it means answering it, with the same or a smaller value, even at 15.
    assert f"server_max_window_bits={min(offered, ours)}" in p.header()


@pytest.mark.parametrize("ours", BITS)
def test_7_1_2_1_the_server_may_limit_its_window_unasked(ours):
    p = negotiate("permessage-deflate", DeflateOptions(server_max_window_bits=ours))
    assert p is not None and p.server_max_window_bits == ours
    assert ("server_max_window_bits" in p.header()) == (ours < 15)


def test_7_1_2_1_a_window_of_8_bits_never_reaches_back_more_than_256_bytes():
    """zlib cannot compress raw deflate with 8 bits; the 9-bit compressor used instead keeps
    every match within 250 bytes, which an inflater holding 256 bytes checks here, over
    messages with and without context takeover. The 15-bit control shows the check bites."""
    messages = [far_repeats(seed) for seed in range(6)]
    for snct in (True, False):
        c = Compressor(params(snct=snct, sbits=8), DeflateOptions(compression_level=9, memory_level=9))
        inflater = zlib.decompressobj(-8)
        for message in messages:
            if snct:
                inflater = zlib.decompressobj(-8)
            assert strict_inflate(inflater, c.compress(message) + TAIL) == message
    control = Compressor(params(sbits=15), DeflateOptions())
    with pytest.raises(zlib.error, match="too far back"):
        strict_inflate(zlib.decompressobj(-8), control.compress(messages[0]) + TAIL)


@pytest.mark.parametrize("ours", BITS)
def test_7_1_2_2_client_max_window_bits_without_a_value(ours):
    p = negotiate("permessage-deflate; client_max_window_bits", DeflateOptions(client_max_window_bits=ours))
    assert p is not None and p.client_max_window_bits == ours
    # 15 is what the client may use anyway: the response then omits the parameter.
    assert ("client_max_window_bits" in p.header()) == (ours < 15)
    if ours < 15:
        assert p.header().endswith(f"client_max_window_bits={ours}")


@pytest.mark.parametrize("ours", BITS)
@pytest.mark.parametrize("offered", BITS)
def test_7_1_2_2_client_max_window_bits_with_a_value(offered, ours):
    p = negotiate(f"permessage-deflate; client_max_window_bits={offered}", DeflateOptions(client_max_window_bits=ours))
    assert p is not None and p.client_max_window_bits == min(offered, ours)
    assert ("client_max_window_bits" in p.header()) == (min(offered, ours) < 15)


@pytest.mark.parametrize("ours", BITS)
def test_7_1_2_2_not_offered_means_never_in_the_response_and_a_15_bit_inflater(ours):
    p = negotiate("permessage-deflate", DeflateOptions(client_max_window_bits=ours))
    assert p is not None and p.client_max_window_bits == 15
    assert "client_max_window_bits" not in p.header()
    message = far_repeats(7, 40000)  # repeats up to ~20 KB apart: needs the 15-bit window
    client = zlib.compressobj(9, zlib.DEFLATED, -15)
    payload = (client.compress(message) + client.flush(zlib.Z_SYNC_FLUSH))[:-4]
    assert Decompressor(p).decompress_final(payload, BIG) == message


@pytest.mark.parametrize("client_bits", BITS)
@pytest.mark.parametrize("server_bits", BITS)
def test_every_window_bits_combination_negotiates_and_round_trips_within_its_windows(server_bits, client_bits):
    header = f"permessage-deflate; server_max_window_bits={server_bits}; client_max_window_bits={client_bits}"
    options = DeflateOptions(server_no_context_takeover=False, client_no_context_takeover=False)
    p = negotiate(header, options)
    assert p == params(False, False, server_bits, client_bits)
    assert p is not None
    server_c, server_d, client = Compressor(p, options), Decompressor(p), HandClient(p)
    for seed in range(2):
        message = far_repeats(seed, 3000)
        assert client.decompress(server_c.compress(message)) == message  # strict, server window
        assert server_d.decompress_final(client.compress(message), BIG) == message


def test_params_that_compress_alike_are_equal_and_hashable():
    asked = negotiate("permessage-deflate; server_max_window_bits=15", DeflateOptions())
    unasked = negotiate("permessage-deflate", DeflateOptions())
    assert asked is not None and unasked is not None
    assert asked == unasked and hash(asked) == hash(unasked) and len({asked, unasked}) == 1
    assert asked.header() != unasked.header()
    assert params(sbits=8).compression_key == params(sbits=9, cbits=10).compression_key == (9, True)
    assert params(snct=False).compression_key != params().compression_key


@pytest.mark.parametrize("client_kwargs", [
    {},
    {"client_max_window_bits": None},
    {"client_max_window_bits": 10},
    {"server_max_window_bits": 8},
    {"server_max_window_bits": 12, "client_max_window_bits": 9},
    {"server_no_context_takeover": True, "client_no_context_takeover": True},
    {"server_max_window_bits": 15, "client_max_window_bits": 15},
])
@pytest.mark.parametrize("options", [
    DeflateOptions(),
    DeflateOptions(server_no_context_takeover=False, client_no_context_takeover=False),
    DeflateOptions(server_max_window_bits=10, client_max_window_bits=11),
])
def test_the_response_satisfies_websockets_client_and_messages_flow_both_ways(client_kwargs, options):
    """Interop with a real client implementation (websockets' sans-I/O extension): it checks
    the response against its offer (RFC 7692 7.1) and then exchanges messages with us."""
    factory = ClientPerMessageDeflateFactory(**client_kwargs)
    offer = build_extension([(factory.name, list(factory.get_request_params()))])
    p = negotiate(offer, options)
    assert p is not None
    [(name, response_params)] = parse_extension(p.header())
    client = factory.process_response_params(response_params, [])
    compressor, decompressor = Compressor(p, options), Decompressor(p)
    for seed in range(3):
        message = json_message(seed, 2000)
        frame = client.decode(Frame(Opcode.BINARY, compressor.compress(message), rsv1=True))
        assert frame.data == message
        sent = client.encode(Frame(Opcode.BINARY, message))
        assert sent.rsv1
        assert decompressor.decompress_final(sent.data, BIG) == message


# -- 7.2.1 compression ------------------------------------------------------------------------
def test_7_2_3_1_hello_compresses_as_in_the_rfc_and_drops_the_tail():
    c = Compressor(params(snct=False), DeflateOptions())
    assert c.compress(b"Hello") == bytes.fromhex("f248cdc9c90700")
    assert c.compress(b"Hello") == bytes.fromhex("f200110000")  # 7.2.3.2: the window is shared


@pytest.mark.parametrize("snct", [True, False])
def test_7_2_3_6_an_empty_message_compresses_to_a_valid_payload(snct):
    p = params(snct=snct, cnct=snct)
    c = Compressor(p, DeflateOptions())
    d = Decompressor(mirror(p))
    hand = zlib.decompressobj(-15)
    for message in (b"", b"Hello", b"", b"", b"Hello"):
        payload = c.compress(message)
        if not message:
            assert payload == b"\x00"
        assert d.decompress_final(payload, BIG) == message
        if snct:
            hand = zlib.decompressobj(-15)
        assert strict_inflate(hand, payload + TAIL) == message


def test_the_threshold_is_told_to_the_caller():
    assert Compressor(params(), DeflateOptions(threshold=300)).threshold == 300
    assert Compressor(params(), DeflateOptions()).threshold == 128


# -- 7.2.2 decompression ----------------------------------------------------------------------
TWO_BLOCKS = bytes.fromhex("f24805000000ffffcac9c90700")


@pytest.mark.parametrize(("section", "pieces"), [
    ("7.2.3.1 one frame", [bytes.fromhex("f248cdc9c90700")]),
    ("7.2.3.1 two fragments", [bytes.fromhex("f248cd"), bytes.fromhex("c9c90700")]),
    ("7.2.3.3 no compression", [bytes.fromhex("000500faff48656c6c6f00")]),
    ("7.2.3.4 BFINAL set to 1", [bytes.fromhex("f348cdc9c9070000")]),
    ("7.2.3.5 two DEFLATE blocks", [TWO_BLOCKS]),
    ("7.2.3.5 fed one octet at a time", [bytes([octet]) for octet in TWO_BLOCKS]),
])
def test_7_2_2_the_rfc_examples_inflate_to_hello(section, pieces):
    for cnct in (True, False):
        d = Decompressor(params(cnct=cnct))
        for _ in range(2):  # and the inflater is still in step afterwards
            out = b"".join(d.decompress(piece, 100) for piece in pieces)
            assert out + d.end_message(100) == b"Hello", section


def test_7_2_2_an_empty_compressed_payload_is_an_empty_message_and_keeps_the_window():
    """00 00 ff ff alone would leave zlib inside a stored block; it is not fed."""
    d = Decompressor(params(cnct=False))
    assert d.decompress_final(bytes.fromhex("f248cdc9c90700"), 100) == b"Hello"
    assert d.decompress_final(b"", 100) == b""
    assert d.decompress(b"", 100) == b"" and d.end_message(100) == b""
    assert d.decompress_final(bytes.fromhex("f200110000"), 100) == b"Hello"


def test_7_2_3_4_a_final_block_without_the_trailing_octet_leaves_the_stream_usable():
    d = Decompressor(params(cnct=False))
    assert d.decompress(bytes.fromhex("f348cdc9c90700"), 100) + d.end_message(100) == b"Hello"
    assert d.decompress_final(bytes.fromhex("f348cdc9c90700"), 100) == b"Hello"
    assert d.decompress_final(bytes.fromhex("f248cdc9c90700"), 100) == b"Hello"


def test_7_2_3_4_many_final_blocks_in_one_message_are_inflated_in_a_loop():
    block = zlib.compressobj(6, zlib.DEFLATED, -15)
    one = block.compress(b"ab") + block.flush(zlib.Z_FINISH)
    d = Decompressor(params())
    assert d.decompress_final(one * 5000 + b"\x00", BIG) == b"ab" * 5000


@pytest.mark.parametrize("payload", [b"\xff\xff\xff\xff", b"\x07\x00", b"\x04\x00\x00\xff\xff\x00", b"\xf2\x00\x11"])
def test_corrupt_data_is_a_1007(payload):
    """b"\\xf2\\x00\\x11" refers back 5 bytes into an empty window."""
    d = Decompressor(params())
    with pytest.raises(ProtocolError) as caught:
        d.decompress_final(payload, 100)
    assert caught.value.code == 1007 and "invalid compressed data" in caught.value.reason


def test_the_limit_counts_the_whole_message_across_pieces_and_restarts_per_message():
    message = json_message(5, 3000)
    client = HandClient(params())
    payload = client.compress(message)
    d = Decompressor(params())
    assert inflate_in_pieces(d, payload, [10, 20, 500], limit=3000) == message
    assert inflate_in_pieces(d, payload, [1], limit=3000) == message  # the count restarted
    # One byte over: inflating stops there, and the bytes up to it are returned (for the
    # frame parser to check the UTF-8 within the limit before it refuses the message).
    assert inflate_in_pieces(Decompressor(params()), payload, [10, 20, 500], limit=2999) == message
    assert inflate_in_pieces(Decompressor(params()), payload, [10, 20, 500], limit=2000) == message[:2001]
    for limit, out in ((3000, message), (2999, message), (100, message[:101])):
        assert Decompressor(params()).decompress_final(payload, limit) == out


def _bomb_parts() -> tuple[bytes, bytes]:
    """1 GiB of zeros compressed is `first + again * 1023` (about 1 MiB), built without
    deflating 1 GiB: after a first MiB of zeros, a sync-flushed MiB of zeros refers only to
    zeros, so it can repeat."""
    c = zlib.compressobj(9, zlib.DEFLATED, -15)
    mib = bytes(1 << 20)
    first = c.compress(mib) + c.flush(zlib.Z_SYNC_FLUSH)
    again = c.compress(mib) + c.flush(zlib.Z_SYNC_FLUSH)
    return first, again


def _bomb_gib() -> bytes:
    first, again = _bomb_parts()
    return first + again * 1023


def test_a_zip_bomb_stops_one_byte_past_the_limit_with_bounded_memory():
    first, again = _bomb_parts()
    bomb = first + again * 1023
    assert len(bomb) < 1100 << 10
    # A real bomb: its first part and three repeats inflate to exactly 4 MiB of zeros.
    assert zlib.decompressobj(-15).decompress(first + again * 3) == bytes(4 << 20)
    limit = 1 << 20
    d = Decompressor(params())
    fed = 0
    tracemalloc.start()
    started = time.perf_counter()
    out = []
    try:
        for fed in range(0, len(bomb), 64 << 10):  # 64 KiB frames, each worth 64 MiB
            out.append(len(d.decompress(bomb[fed:fed + (64 << 10)], limit)))
        out.append(len(d.end_message(limit)))
        elapsed = time.perf_counter() - started
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert out[0] == limit + 1  # the first frame stops one byte past the limit
    assert not any(out[1:])  # and nothing more is inflated
    assert peak < 4 << 20, peak
    assert elapsed < 5.0  # generous: it is milliseconds


def test_a_zip_bomb_in_one_piece_costs_about_the_limit():
    bomb = _bomb_gib()
    for feed in ("decompress", "decompress_final"):
        d = Decompressor(params())
        tracemalloc.start()
        try:
            out = getattr(d, feed)(bomb, 1 << 20)
            _, peak = tracemalloc.get_traced_memory()
        finally:
            tracemalloc.stop()
        assert len(out) == (1 << 20) + 1, feed
        del out
        assert peak < 4 << 20, (feed, peak)


def test_an_idle_connection_with_client_no_context_takeover_holds_no_inflate_window():
    message = json_message(6, 4000)
    payload = HandClient(params()).compress(message)
    for cnct, most in ((True, 2048), (False, 30000)):
        d = Decompressor(params(cnct=cnct))
        tracemalloc.start()
        try:
            before, _ = tracemalloc.get_traced_memory()
            assert d.decompress_final(payload, BIG) == message
            after, _ = tracemalloc.get_traced_memory()
        finally:
            tracemalloc.stop()
        retained = after - before
        if cnct:
            assert retained < most, retained
        else:
            assert retained > most, retained  # the kept 32 KiB window: the measure works


# -- round trips (hypothesis) -----------------------------------------------------------------
PAYLOADS = st.one_of(
    st.binary(max_size=3000),
    st.text(alphabet="ab {}\":,xyz0123", max_size=4000).map(str.encode),
    st.integers(0, 10**6).map(lambda seed: json_message(seed, 1 + seed % 5000)),
)
PARAMS = st.builds(DeflateParams, st.booleans(), st.booleans(), st.integers(8, 15), st.integers(8, 15))


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(p=PARAMS, messages=st.lists(PAYLOADS, max_size=6), data=st.data())
def test_round_trip_server_to_client_any_params_any_messages_any_split(p, messages, data):
    options = DeflateOptions(compression_level=data.draw(st.integers(-1, 9)),
                             memory_level=data.draw(st.integers(1, 9)))
    c = Compressor(p, options)
    ours = Decompressor(mirror(p))
    hand = HandClient(p)
    for message in messages:
        payload = c.compress(message)
        cuts = data.draw(st.lists(st.integers(0, len(payload)), max_size=6))
        assert inflate_in_pieces(ours, payload, cuts) == message
        assert hand.decompress(payload) == message  # strict: within the server's window


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(p=PARAMS, messages=st.lists(PAYLOADS, max_size=6), data=st.data())
def test_round_trip_client_to_server_any_params_any_messages_any_split(p, messages, data):
    hand = HandClient(p)
    d = Decompressor(p)
    for message in messages:
        payload = hand.compress(message)
        cuts = data.draw(st.lists(st.integers(0, len(payload)), max_size=6))
        if data.draw(st.booleans()):
            assert inflate_in_pieces(d, payload, cuts) == message
        else:
            head = min(cuts, default=0)
            assert d.decompress(payload[:head], BIG) + d.decompress_final(payload[head:], BIG) == message


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(snct=st.booleans(), cnct=st.booleans(), sbits=st.integers(8, 15), cbits=st.integers(9, 15),
       messages=st.lists(PAYLOADS, min_size=1, max_size=5), fragment=st.integers(1, 700))
def test_round_trip_with_websockets_extension_including_fragmented_messages(snct, cnct, sbits, cbits, messages,
                                                                              fragment):
    """websockets compresses each fragment with a sync flush, keeping only the last frame's
    tail removed: those pieces are fed to `decompress` one frame at a time."""
    p = params(snct, cnct, sbits, cbits)
    client = PerMessageDeflate(remote_no_context_takeover=snct, local_no_context_takeover=cnct,
                               remote_max_window_bits=sbits, local_max_window_bits=cbits)
    c, d = Compressor(p, DeflateOptions()), Decompressor(p)
    for message in messages:
        received = client.decode(Frame(Opcode.BINARY, c.compress(message), rsv1=True), max_size=None)
        assert received.data == message
        chunks = [message[i:i + fragment] for i in range(0, len(message), fragment)] or [b""]
        frames = [client.encode(Frame(Opcode.BINARY if i == 0 else Opcode.CONT, chunk, fin=i == len(chunks) - 1))
                  for i, chunk in enumerate(chunks)]
        assert frames[0].rsv1 and not any(f.rsv1 for f in frames[1:])
        inflated = b"".join(d.decompress(f.data, BIG) for f in frames) + d.end_message(BIG)
        assert inflated == message


def test_an_unbounded_limit_is_accepted():
    # A client (the TestClient) inflates with limit=sys.maxsize: zlib's max_length is a C ssize_t.
    import sys
    params = DeflateParams(True, True, 15, 15)
    data = Compressor(params, DeflateOptions()).compress(b"hello" * 100)
    decompressor = Decompressor(params)
    assert decompressor.decompress(data, sys.maxsize) + decompressor.end_message(sys.maxsize) == b"hello" * 100
    assert Decompressor(params).decompress_final(data, sys.maxsize) == b"hello" * 100

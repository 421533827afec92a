"""The connection state machine (`tether.protocol.connection`), both sides, with no socket:
bytes go in one byte (or any slice) at a time, and the bytes each step returns are read back
with the other side's parser (or another `Connection`), as the roads use it."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tether.protocol import (
    OP_BINARY,
    OP_CLOSE,
    OP_PING,
    OP_PONG,
    OP_TEXT,
    PROTOCOL_ERROR,
    FrameEvent,
    FrameParser,
    encode_close,
    encode_frame,
)
from tether.protocol.connection import CLOSED, CLOSING, CONNECTING, OPEN, Connection, Side
from tether.protocol.deflate import Compressor, Decompressor, DeflateOptions, DeflateParams

MASK = b"\x01\x02\x03\x04"


def server() -> Connection:
    return Connection(Side.SERVER, FrameParser(1 << 20))


def client(compressor: Compressor | None = None, inflater: Decompressor | None = None) -> Connection:
    parser = FrameParser(1 << 20, require_mask=False, reject_mask=True, inflater=inflater)
    return Connection(Side.CLIENT, parser, compressor=compressor)


def opened(connection: Connection) -> Connection:
    assert connection.accept()
    return connection


def byte_by_byte(connection: Connection, data: bytes) -> list[FrameEvent]:
    events: list[FrameEvent] = []
    for i in range(len(data)):
        events += connection.receive_data(data[i:i + 1])
    return events


def is_masked(frame: bytes) -> bool:
    return bool(frame[1] & 0x80)


# -- the handshake ----------------------------------------------------------------------------
@pytest.mark.parametrize("side", list(Side))
def test_accept_opens_once_and_only_from_connecting(side: Side) -> None:
    connection = Connection(side)
    assert connection.state is CONNECTING and not connection.ended
    assert connection.accept() is True and connection.state is OPEN
    assert connection.accept() is False and connection.state is OPEN
    assert connection.refuse() is False and connection.state is OPEN


def test_a_refused_handshake_is_closed_by_the_server_with_1006_and_cannot_be_accepted() -> None:
    connection = server()
    assert connection.refuse() is True
    assert (connection.state, connection.close_code, connection.closed_by) == (CLOSED, 1006, "server")
    assert connection.accept() is False and connection.state is CLOSED
    assert connection.close(1000) is None and connection.ping() is None


def test_a_connection_without_a_parser_refuses_bytes_with_a_clear_error() -> None:
    with pytest.raises(TypeError, match="no frame parser"):
        Connection(Side.SERVER).receive_data(b"\x81\x80")


# -- bytes in, byte by byte ---------------------------------------------------------------------
def test_server_side_reads_masked_client_frames_fed_one_byte_at_a_time() -> None:
    data = (encode_frame(OP_TEXT, "héllo".encode(), mask=MASK) + encode_frame(OP_BINARY, b"\x00" * 300, mask=MASK)
            + encode_frame(OP_PING, b"p", mask=MASK))
    assert byte_by_byte(opened(server()), data) == [(OP_TEXT, "héllo"), (OP_BINARY, b"\x00" * 300), (OP_PING, b"p")]


def test_client_side_reads_unmasked_server_frames_fed_one_byte_at_a_time() -> None:
    data = encode_frame(OP_TEXT, b"hi") + encode_frame(OP_PONG, b"x") + encode_close(1001, "bye")
    assert byte_by_byte(opened(client()), data) == [(OP_TEXT, "hi"), (OP_PONG, b"x"), (OP_CLOSE, (1001, "bye"))]


def test_each_side_refuses_the_other_sides_masking_with_1002() -> None:
    [(kind, error)] = opened(client()).receive_data(encode_frame(OP_TEXT, b"x", mask=MASK))
    assert kind == PROTOCOL_ERROR and error.code == 1002 and "server frame is masked" in error.reason
    [(kind, error)] = opened(server()).receive_data(encode_frame(OP_TEXT, b"x"))
    assert kind == PROTOCOL_ERROR and error.code == 1002 and "client frame is not masked" in error.reason


def test_a_parser_cannot_both_require_and_reject_masks() -> None:
    with pytest.raises(ValueError):
        FrameParser(require_mask=True, reject_mask=True)


# -- pongs ----------------------------------------------------------------------------------------
def test_pong_echoes_the_ping_payload_unmasked_from_a_server_and_masked_from_a_client() -> None:
    pong = opened(server()).pong(b"abc")
    assert pong == encode_frame(OP_PONG, b"abc")
    pong = opened(client()).pong(b"abc")
    assert pong is not None and is_masked(pong)
    assert opened(server()).receive_data(pong) == [(OP_PONG, b"abc")]


@pytest.mark.parametrize("side", list(Side))
def test_no_pong_and_no_ping_unless_open(side: Side) -> None:
    connection = Connection(side)
    assert connection.pong(b"x") is None and connection.ping(b"x") is None  # CONNECTING
    connection.accept()
    connection.close(1000)
    assert connection.pong(b"x") is None and connection.ping(b"x") is None  # CLOSING


# -- closing --------------------------------------------------------------------------------------
def test_a_peer_close_is_echoed_with_its_code_and_ends_the_connection_by_the_peer() -> None:
    connection = opened(server())
    [(kind, (code, reason))] = connection.receive_data(encode_close(4001, "done", mask=MASK))
    assert kind == OP_CLOSE
    echo = connection.close_received(code, reason)
    assert echo == encode_close(4001, "")
    assert (connection.state, connection.close_code, connection.close_reason, connection.closed_by) == (
        CLOSED, 4001, "done", "client")
    assert connection.close_received(1000, "again") is None and connection.close_code == 4001


def test_a_peer_close_without_a_code_is_echoed_with_an_empty_body() -> None:
    connection = opened(client())
    assert connection.receive_data(encode_frame(OP_CLOSE, b"")) == [(OP_CLOSE, (1005, ""))]
    echo = connection.close_received(1005, "")
    assert echo is not None and is_masked(echo)
    assert opened(server()).receive_data(echo) == [(OP_CLOSE, (1005, ""))]
    assert (connection.close_code, connection.closed_by) == (1005, "server")


@pytest.mark.parametrize("side", list(Side))
def test_our_close_goes_open_closing_closed_and_keeps_our_code(side: Side) -> None:
    connection = opened(Connection(side))
    frame = connection.close(4000, "bye")
    assert frame is not None and is_masked(frame) == (side is Side.CLIENT)
    assert (connection.state, connection.close_code, connection.closed_by) == (CLOSING, 4000, side)
    assert connection.close(1000) is None  # once
    assert connection.close_received(4000, "") is None  # the answer: nothing to echo
    assert (connection.state, connection.close_code, connection.close_reason, connection.closed_by) == (
        CLOSED, 4000, "bye", side)


def test_failing_sends_the_code_and_blames_the_peer_and_never_overrides_an_earlier_end() -> None:
    connection = opened(server())
    frame = connection.fail(1002, "bad frame")
    assert frame == encode_close(1002, "bad frame")
    assert (connection.state, connection.close_code, connection.closed_by) == (CLOSING, 1002, "client")
    assert connection.fail(1011, "again") is None and connection.close_code == 1002
    connection.connection_lost()
    assert (connection.state, connection.close_code) == (CLOSED, 1002)


def test_failing_during_the_handshake_closes_without_a_frame() -> None:
    connection = client()
    assert connection.fail(1002, "bad 101") is None
    assert (connection.state, connection.close_code, connection.closed_by) == (CLOSED, 1002, "server")


def test_a_lost_transport_ends_an_open_connection_with_1006_by_the_peer() -> None:
    connection = opened(server())
    connection.connection_lost()
    assert (connection.state, connection.close_code, connection.close_reason, connection.closed_by) == (
        CLOSED, 1006, "connection lost", "client")
    assert connection.close(1000) is None and connection.pong(b"") is None


def test_a_lost_transport_after_our_close_keeps_our_close() -> None:
    connection = opened(client())
    connection.close(1001)
    connection.connection_lost()
    assert (connection.state, connection.close_code, connection.closed_by) == (CLOSED, 1001, "client")


# -- sending ----------------------------------------------------------------------------------------
def test_client_frames_get_a_fresh_mask_each_and_server_frames_none() -> None:
    c = opened(client())
    first, second = c.send(OP_TEXT, b"same"), c.send(OP_TEXT, b"same")
    assert is_masked(first) and is_masked(second)
    assert first != second  # two random masks (equal once in 2**32 runs)
    assert opened(server()).receive_data(first + second) == [(OP_TEXT, "same"), (OP_TEXT, "same")]
    assert opened(server()).send(OP_BINARY, b"\x01") == encode_frame(OP_BINARY, b"\x01")


def test_a_client_with_a_compressor_sends_rsv1_frames_the_server_inflates() -> None:
    params = DeflateParams(server_no_context_takeover=False, client_no_context_takeover=False,
                           server_max_window_bits=15, client_max_window_bits=15)
    c = opened(client(compressor=Compressor(params.mirrored(), DeflateOptions())))
    frame = c.send(OP_TEXT, b"a" * 1000)
    assert frame[0] & 0x40 and len(frame) < 100
    s = Connection(Side.SERVER, FrameParser(1 << 20, inflater=Decompressor(params)))
    s.accept()
    assert s.receive_data(frame) == [(OP_TEXT, "a" * 1000)]


# -- both sides together --------------------------------------------------------------------------
class Road:
    """Moves bytes between a Connection and its peer, answering as tether's roads do."""

    def __init__(self, connection: Connection) -> None:
        self.connection = connection
        self.received: list[str | bytes] = []
        self.out: list[bytes] = []

    def write(self, frame: bytes | None) -> None:
        if frame is not None:
            self.out.append(frame)

    def feed(self, data: bytes) -> None:
        for event in self.connection.receive_data(data):
            if event[0] == OP_TEXT or event[0] == OP_BINARY:
                self.received.append(event[1])
            elif event[0] == OP_PING:
                self.write(self.connection.pong(event[1]))
            elif event[0] == OP_CLOSE:
                self.write(self.connection.close_received(*event[1]))
            elif event[0] == PROTOCOL_ERROR:
                self.write(self.connection.fail(event[1].code, event[1].reason))

    def take(self) -> bytes:
        data, self.out = b"".join(self.out), []
        return data


def deliver(data: bytes, to: Road, cuts: list[int]) -> None:
    """Feed `data` to `to`, cut at `cuts` (offsets, any order, out of range ignored)."""
    start = 0
    for cut in sorted({c for c in cuts if 0 < c < len(data)}):
        to.feed(data[start:cut])
        start = cut
    to.feed(data[start:])


messages = st.lists(st.one_of(st.text(max_size=40), st.binary(max_size=300)), max_size=8)


@settings(max_examples=150, deadline=None)
@given(from_client=messages, from_server=messages, pings=st.lists(st.binary(max_size=125), max_size=3),
       closer=st.sampled_from(list(Side)), code=st.sampled_from([1000, 1001, 3000, 4999]),
       cuts=st.lists(st.integers(0, 4000), max_size=12))
def test_two_sides_exchange_messages_pings_and_a_close_handshake(
        from_client: list[str | bytes], from_server: list[str | bytes], pings: list[bytes],
        closer: Side, code: int, cuts: list[int]) -> None:
    server_road, client_road = Road(opened(server())), Road(opened(client()))
    roads = {Side.SERVER: server_road, Side.CLIENT: client_road}
    for road, sent in ((client_road, from_client), (server_road, from_server)):
        for message in sent:
            opcode = OP_TEXT if isinstance(message, str) else OP_BINARY
            road.write(road.connection.send(opcode, message.encode() if isinstance(message, str) else message))
    for payload in pings:
        client_road.write(client_road.connection.ping(payload))
    initiator = roads[closer]
    other = roads[Side.CLIENT if closer is Side.SERVER else Side.SERVER]
    initiator.write(initiator.connection.close(code, "bye"))
    # The initiator's bytes reach the other side, which answers (pongs, the close echo)...
    deliver(initiator.take(), other, cuts)
    deliver(other.take(), initiator, cuts)
    assert server_road.received == from_client and client_road.received == from_server
    for road in roads.values():
        assert road.connection.state is CLOSED
        assert (road.connection.close_code, road.connection.closed_by) == (code, closer)
    assert initiator.connection.close_reason == "bye"
    assert server_road.take() == client_road.take() == b""  # nothing after the close handshake

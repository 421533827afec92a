"""`tether.server.heads`: a request head is every byte from the end of the previous request
(or the connection's start) to the end of its header block, blank lines and whitespace
included, across reads, and passing `max_header_size` is refused with 431.

First `HeadMeter` alone, called as `HttpProtocol.data_received` and the parser's callbacks
call it (each step written out); then the limit through the native server: real sockets on
127.0.0.1, and the hand-fed protocol that cuts one stream at every offset.
"""

from __future__ import annotations

import asyncio
import socket

import pytest

from tether import App
from tether.server.heads import HeadMeter
from tether.server.http11 import HttpProtocol
from tether.server.serve import ServerState, new_event_loop

from .test_server_http11 import HandTransport, ok_app

GET = b"GET /x HTTP/1.1\r\nHost: x\r\n\r\n"
HOST = [("Host", "x")]


def parsed(meter: HeadMeter, headers: list[tuple[str, str]] = HOST, body: int = 0) -> None:
    """What the parser reports of one whole request, in its order."""
    meter.message_begun()
    meter.head_ended(headers)
    meter.message_ended(body)


# -- HeadMeter, step by step --------------------------------------------------------------------
def test_a_read_holding_one_head_is_fed_whole():
    meter = HeadMeter(100)
    assert meter.next_piece(GET, 0, len(GET), 0) == len(GET)
    assert not meter.over


def test_pipelined_heads_are_fed_one_a_piece_the_last_with_the_rest_of_the_read():
    data = GET * 3
    meter = HeadMeter(100)
    assert meter.next_piece(data, 0, len(data), 0) == len(GET)
    parsed(meter)
    assert meter.next_piece(data, len(GET), len(data), 0) == 2 * len(GET)
    parsed(meter)
    assert meter.next_piece(data, 2 * len(GET), len(data), 0) == len(data)
    assert not meter.over


def test_a_head_over_the_limit_is_cut_where_the_limit_is():
    """The parser is fed none of the excess: the piece ends at the limit, and `over` stays."""
    head = b"GET /x HTTP/1.1\r\nHost: x\r\nX-Pad: " + b"p" * 40 + b"\r\n\r\n"
    meter = HeadMeter(50)
    assert meter.next_piece(head, 0, len(head), 0) == 50
    assert meter.over
    parsed(meter)
    assert meter.over


def test_a_head_of_exactly_the_limit_passes_and_an_open_one_at_the_limit_does_not():
    assert not over_after(HeadMeter(len(GET)), [GET])
    assert over_after(HeadMeter(len(GET) - 1), [GET])
    # At the limit and not ended: the end can only come past it.
    assert over_after(HeadMeter(len(GET) - 1), [GET[:-1]])
    assert not over_after(HeadMeter(len(GET) - 1), [GET[:-2]])


def over_after(meter: HeadMeter, reads: list[bytes]) -> bool:
    """Feed a request's reads to `meter` as the protocol does, the parser reporting only its
    first byte (message_begun): whether it is `over` after the last read."""
    begun = False
    for data in reads:
        pos = 0
        while pos < len(data) and not meter.over:
            stop = meter.next_piece(data, pos, len(data), 0)
            if stop == pos:
                break
            if not begun and data[pos:stop].strip(b"\r\n"):
                meter.message_begun()
                begun = True
            meter.piece_fed(data, stop)
            pos = stop
    return meter.over


@pytest.mark.parametrize("cut", range(1, len(GET)))
def test_a_head_cut_across_reads_is_counted_whole(cut):
    """Its size adds up across reads, and an end split between them (the last 3 bytes of
    the reads before and the first of the next) is found: exactly at the limit it passes."""
    assert not over_after(HeadMeter(len(GET)), [GET[:cut], GET[cut:]])
    assert over_after(HeadMeter(len(GET) - 1), [GET[:cut], GET[cut:]])
    for second in range(cut + 1, len(GET)):  # three reads, the middle one as short as 1 byte
        reads = [GET[:cut], GET[cut:second], GET[second:]]
        assert not over_after(HeadMeter(len(GET)), reads), reads
        assert over_after(HeadMeter(len(GET) - 1), reads), reads


def test_a_head_end_split_across_reads_is_forgotten_once_found():
    """The read after the split end holds the next request too: it is measured from where
    the first ended, not found ended again at once (which cut a piece of no bytes)."""
    meter = HeadMeter(100)
    meter.next_piece(GET[:-1], 0, len(GET) - 1, 0)
    meter.message_begun()
    meter.piece_fed(GET[:-1], len(GET) - 1)
    data = GET[-1:] + GET
    assert meter.next_piece(data, 0, len(data), 0) == 1
    parsed(meter)
    assert meter.next_piece(data, 1, len(data), 0) == len(data)


def test_a_head_begun_after_another_in_the_same_read_keeps_its_last_bytes_for_the_next():
    """Its end may be split across this read and the next, as the first head's could: at
    exactly the limit it passes."""
    meter = HeadMeter(len(GET))
    data = GET + GET[:-1]  # ends in "\r\n\r"
    assert meter.next_piece(data, 0, len(data), 0) == len(data)  # no other head ends in it
    parsed(meter)
    meter.message_begun()
    meter.piece_fed(data, len(data))
    assert meter.next_piece(b"\n", 0, 1, 0) == 1
    assert not meter.over


def test_blank_lines_before_a_request_are_part_of_its_head():
    assert not over_after(HeadMeter(len(GET) + 4), [b"\r\n\r\n" + GET])
    assert over_after(HeadMeter(len(GET) + 3), [b"\r\n\r\n" + GET])
    assert over_after(HeadMeter(len(GET) + 3), [b"\r\n\r\n", GET])  # blank lines alone in a read


@pytest.mark.parametrize(("framing", "body"), [(("content-LENGTH", "5"), b"hello"),  # names in any case
                                              (("Transfer-Encoding", "chunked"), b"5\r\nhello\r\n0\r\n\r\n")])
def test_a_body_is_one_piece_to_its_end_or_if_chunked_to_the_end_of_the_read(framing, body):
    """Where a Content-Length body ends, the next head begins; a chunked body does not say."""
    post = b"POST /x HTTP/1.1\r\nHost: x\r\n%s: %s\r\n\r\n" % (framing[0].encode(), framing[1].encode())
    data = post + body + GET
    meter = HeadMeter(100)
    assert meter.next_piece(data, 0, len(data), 0) == len(post)
    meter.message_begun()
    meter.head_ended([("Host", "x"), framing])
    if framing[1] == "chunked":
        assert meter.next_piece(data, len(post), len(data), 0) == len(data)
        return
    assert meter.next_piece(data, len(post), len(data), 0) == len(post) + 5
    assert meter.next_piece(data, len(post) + 2, len(data), 2) == len(post) + 5  # 2 bytes of it fed already
    meter.message_ended(5)
    assert meter.next_piece(data, len(post) + 5, len(data), 0) == len(data)


def test_a_head_begun_at_the_end_of_a_read_counts_its_bytes_past_the_body_before_it():
    """The read holds a request with a 5-byte body and the first 20 bytes of the next head:
    those 20 count toward it (the body does not), and the rest is measured in the next read."""
    post = b"POST /x HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n\r\nhello"

    def over(begun: bytes, rest: bytes) -> bool:
        meter = HeadMeter(60)
        data = post + begun
        stop = meter.next_piece(data, 0, len(data), 0)
        assert stop == len(data)  # no other head ends in it: one piece
        parsed(meter, [("Content-Length", "5")], body=5)  # the parser reads the POST...
        meter.message_begun()  # ...and the next request's first bytes
        meter.piece_fed(data, stop)
        return meter.over or (bool(rest) and meter.next_piece(rest, 0, len(rest), 0) < len(rest)) or meter.over

    begun = b"GET /y HTTP/1.1\r\nX: "
    assert len(begun) == 20
    assert not over(begun, b"a" * 36 + b"\r\n\r\n")  # 20 + 40 bytes: at the limit
    assert over(begun, b"a" * 37 + b"\r\n\r\n")
    assert over(begun + b"a" * 40, b"")  # at the limit already, and not ended: over at once


def test_a_head_begun_where_a_chunked_body_ended_counts_what_the_parser_reported():
    """After a chunked body the meter cannot tell where the body ended: the head begun in the
    same read counts what the parser reported of it (`seen`), and the next read adds to it."""
    post = b"POST /x HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
    data = post + b"5\r\nhello\r\n0\r\n\r\n" + b"GET /yy"

    def over(rest: bytes) -> bool:
        meter = HeadMeter(100)
        meter.next_piece(data, 0, len(data), 0)
        meter.message_begun()
        meter.head_ended([("Transfer-Encoding", "chunked")])
        stop = meter.next_piece(data, len(post), len(data), 0)
        meter.message_ended(5)
        meter.message_begun()
        assert meter.seen(80)  # (as if the parser had reported that much of it)
        meter.piece_fed(data, stop)
        return meter.next_piece(rest, 0, len(rest), 0) < len(rest) or meter.over

    assert not over(b" HTTP/1.1\r\nX:aaa\r\n\r\n")  # 80 + 20
    assert over(b" HTTP/1.1\r\nX:aaaa\r\n\r\n")


def test_what_the_parser_reports_is_held_to_the_limit_less_the_least_head_frame():
    """`seen` sums the URL, names and values (plus 3 a header line): past the limit less 17
    bytes ("GET " + " HTTP/1.1\\r\\n" + the blank line) it cannot fit, and is refused."""
    meter = HeadMeter(100)
    meter.message_begun()
    assert meter.seen(50) and meter.seen(33)
    assert not meter.over
    assert not meter.seen(1)
    assert meter.over
    meter = HeadMeter(100)  # and it counts one request at a time
    meter.message_begun()
    assert meter.seen(83)
    meter.head_ended(HOST)
    meter.message_ended(0)
    meter.message_begun()
    assert meter.seen(83)
    assert not meter.over


def test_in_message_is_true_from_a_requests_first_byte_to_its_end():
    meter = HeadMeter(100)
    assert not meter.in_message
    meter.message_begun()
    assert meter.in_message
    meter.head_ended(HOST)
    assert meter.in_message
    meter.message_ended(0)
    assert not meter.in_message


# -- the limit through the native server ---------------------------------------------------------
def exchange(port: int, request: bytes) -> bytes:
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        try:
            sock.sendall(request)
        except (BrokenPipeError, ConnectionResetError):
            pass  # refused before all of it was read: the answer is still there
        data = b""
        try:
            while b"\r\n\r\n" not in data and (chunk := sock.recv(65536)):
                data += chunk
        except ConnectionResetError:
            pass
        return data


HEAD_180K = [
    b"GET /x HTTP/1.1\r\nHost: x\r\n" + b"a:\r\n" * 45000 + b"\r\n",
    b"GET /x HTTP/1.1\r\nHost: x\r\nX-Pad:" + b" " * 180_000 + b"v\r\n\r\n",
    b"GET /x" + b" " * 180_000 + b"HTTP/1.1\r\nHost: x\r\n\r\n",
    b"\r\n" * 90_000 + b"GET /x HTTP/1.1\r\nHost: x\r\n\r\n",
]


@pytest.mark.parametrize("request_bytes", HEAD_180K, ids=["tiny-headers", "whitespace", "request-line", "blank-lines"])
def test_a_180_kb_head_is_refused_with_431_under_a_64_kib_limit(serve_native, request_bytes):
    server = serve_native(ok_app())
    assert server.app.settings.max_header_size == 64 << 10
    answer = exchange(server.port, request_bytes)
    assert answer.startswith(b"HTTP/1.1 431"), answer[:40]


def head_of(size: int, path: str = "/x", extra: bytes = b"") -> bytes:
    """A GET head of exactly `size` bytes (its padding header sized to fit)."""
    start = f"GET {path} HTTP/1.1\r\nHost: x\r\n".encode() + extra + b"X-Pad: "
    return start + b"p" * (size - len(start) - 4) + b"\r\n\r\n"


def test_malformed_heads_past_the_limit_are_400_not_431(serve_native):
    """The parser sees the head up to the limit before the 431: what is malformed there
    (bare LF line ends, refused by the parser) is answered as malformed."""
    server = serve_native(ok_app(max_header_size=1000))
    assert exchange(server.port, b"GET /x HTTP/1.1\nHost: a\n\n" * 60).startswith(b"HTTP/1.1 400")
    assert exchange(server.port, b"GET /x HTTP/1.1\r\nHost: a\r\nX: " + b"v" * 2000).startswith(b"HTTP/1.1 431")


def test_a_head_of_exactly_max_header_size_passes_and_one_byte_more_is_431(serve_native):
    server = serve_native(ok_app(max_header_size=2000))
    assert exchange(server.port, head_of(2000)).startswith(b"HTTP/1.1 200")
    assert exchange(server.port, head_of(2001)).startswith(b"HTTP/1.1 431")


def fed_in_two_reads(app: App, loop: asyncio.AbstractEventLoop, stream: bytes,
                     cut: int) -> tuple[HandTransport, HttpProtocol]:
    """A new connection of `app` that received `stream` in two reads, cut at `cut`."""
    transport = HandTransport()
    protocol = ServerState(app, loop).new_connection()
    protocol.connection_made(transport)
    protocol.data_received(stream[:cut])
    protocol.data_received(stream[cut:])
    return transport, protocol


def test_the_head_limit_holds_wherever_the_reads_split_pipelined_requests():
    """Pipelined requests whose heads are exactly at the limit, after a chunked body (with a
    head end in its data), with a Content-Length body, after a blank line, and none: all
    answered whatever the read boundaries; a head one byte over, after them, is refused."""
    limit = 300
    app = App(max_header_size=limit)

    @app.route("/x", methods=["GET", "POST"])
    async def x(request):  # async: answered on the loop, in a few turns
        return await request.body() or b"ok"

    def post_head(framing: bytes) -> bytes:
        start = b"POST /x HTTP/1.1\r\nHost: x\r\n" + framing + b"X-Pad: "
        return start + b"q" * (limit - len(start) - 4) + b"\r\n\r\n"

    stream = b"".join([
        post_head(b"Transfer-Encoding: chunked\r\n") + b"3\r\nabc\r\n4\r\n\r\n\r\n\r\n0\r\n\r\n",
        post_head(b"Content-Length: 5\r\n") + b"hello",
        b"\r\n" + head_of(limit - 2),  # a blank line before a request counts as its head
        head_of(limit),
    ])
    # One byte over, and written so that what the parser reports of it (URL, names, values,
    # the shortest punctuation) is its size: refused also where it is not measured from the
    # bytes (in the read where the chunked body ends).
    over = b"GET /x HTTP/1.1\r\nHost:x\r\nX-Pad:" + b"o" * (limit + 1 - 35) + b"\r\n\r\n"
    assert len(over) == limit + 1

    async def answered(transport: HandTransport, count: int) -> None:
        deadline = loop.time() + 10
        while bytes(transport.out).count(b"HTTP/1.1 ") < count and loop.time() < deadline:
            await asyncio.sleep(0)

    loop = new_event_loop()
    try:
        for tail, refused in ((b"", False), (over, True)):
            whole = stream + tail
            for cut in range(1, len(whole)):
                transport, protocol = fed_in_two_reads(app, loop, whole, cut)
                loop.run_until_complete(answered(transport, 4 + refused))
                out = bytes(transport.out)
                assert out.count(b"HTTP/1.1 200") == 4, (cut, refused, out)
                assert out.index(b"\r\n\r\nabc\r\n\r\n") < out.index(b"\r\n\r\nhello"), (cut, out)
                if refused:  # answered last, in order, then the connection closes
                    assert out.count(b"HTTP/1.1 431") == 1, (cut, out)
                    assert out.rindex(b"HTTP/1.1 ") == out.index(b"HTTP/1.1 431"), (cut, out)
                assert transport.closed == refused, cut
                protocol.connection_lost(None)
    finally:
        loop.close()


def test_blank_lines_that_end_a_read_count_toward_the_next_head():
    """Blank lines before a request are part of its head, also when a read ends inside them
    (right after the previous request): a head with them 1-3 bytes over the limit is refused
    wherever the reads are cut."""
    limit = 300
    app = App(max_header_size=limit)

    @app.get("/x")
    async def x():  # async: answered on the loop, in a few turns
        return "ok"

    async def settle() -> None:
        for _ in range(20):
            await asyncio.sleep(0)

    loop = new_event_loop()
    try:
        for over in (1, 2, 3):
            stream = head_of(100) + b"\r\n\r\n" + head_of(limit + over - 4)
            for cut in range(1, len(stream)):
                transport, protocol = fed_in_two_reads(app, loop, stream, cut)
                loop.run_until_complete(settle())
                out = bytes(transport.out)
                assert out.count(b"HTTP/1.1 200") == 1 and out.count(b"HTTP/1.1 431") == 1, (over, cut, out)
                protocol.connection_lost(None)
    finally:
        loop.close()

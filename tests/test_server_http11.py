"""Issue 11, the HTTP side of the native server: what one client can make it buffer or drop.

Real sockets on 127.0.0.1 against the native server (a server in this process, so its
transports' buffers can be read), plus one test that feeds the HTTP protocol by hand to
cut the bytes at every offset.
"""

from __future__ import annotations

import asyncio
import gc
import socket
import time
from typing import Any

import pytest

from tether import App, Request, Response
from tether.protocol import OP_TEXT, FrameParser, encode_frame
from tether.server.http11 import HttpProtocol
from tether.server.serve import ServerState, new_event_loop

from .apps import echo_app
from .netutil import (
    effective_rcvbuf,
    kernel_send_buffer_bound,
    read_to_eof,
    small_rcvbuf_socket,
    wait_until,
    wait_until_stable,
)
from .rawws import upgrade_request


def read_response(sock: socket.socket, buffered: bytes = b"") -> tuple[bytes, bytes, bytes]:
    """One Content-Length response from `sock` (after `buffered`): (head, body, what follows)."""
    data = buffered
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(65536)
        assert chunk, f"connection closed before a complete head: {data[:200]!r}"
        data += chunk
    head, _, rest = data.partition(b"\r\n\r\n")
    lengths = [int(line.split(b":")[1]) for line in head.split(b"\r\n") if line.lower().startswith(b"content-length:")]
    assert lengths, f"not a response with a Content-Length: {head!r}"
    length = lengths[0]
    while len(rest) < length:
        chunk = sock.recv(1 << 20)
        assert chunk, f"connection closed after {len(rest)} of {length} body bytes"
        rest += chunk
    return head, rest[:length], rest[length:]


def get(path: str) -> bytes:
    return f"GET {path} HTTP/1.1\r\nHost: x\r\n\r\n".encode()


# -- 4: pipelined responses count against the send bound ---------------------------------------
def test_pipelined_responses_a_client_does_not_read_are_not_all_buffered(serve_native):
    """Each response waits for the transport to drain before the next request is answered:
    with a client that reads nothing, the server holds about one response plus the
    transport's high-water mark, however many requests were pipelined."""
    size = 1 << 20
    body = b"b" * size
    app = App()

    @app.get("/big")
    def big():
        return Response(body, media_type="application/octet-stream")

    server = serve_native(app)
    sock = small_rcvbuf_socket(64 * 1024)
    # More than the kernels can absorb (the server's send buffer, the client's receive
    # buffer) twice over: without the bound, most of it stays in the server's buffer.
    count = 4 + 2 * (kernel_send_buffer_bound() + effective_rcvbuf(sock)) // size

    async def buffered() -> tuple[int, int]:
        state = server.server.state
        transports = [c.transport for c in state.connections if isinstance(c, HttpProtocol)]
        return (sum(t.get_write_buffer_size() for t in transports),
                max((t.get_write_buffer_limits()[1] for t in transports), default=0))

    sock.connect(("127.0.0.1", server.port))
    try:
        sock.sendall(get("/big") * count)
        wait_until(lambda: server.call(buffered())[0] > 0, timeout=20, message="a response buffered")
        held, high_water = wait_until_stable(lambda: server.call(buffered()), settle=0.5, timeout=30)
        assert 0 < held <= size + 4096 + high_water, (held, count)
        rest = b""
        for _ in range(count):  # and reading resumes: every response arrives, whole
            head, got, rest = read_response(sock, rest)
            assert head.startswith(b"HTTP/1.1 200") and got == body
    finally:
        sock.close()


# -- 6: a request followed by a half-close is still answered ------------------------------------
def test_requests_pipelined_in_one_read_wait_sixteen_at_most():
    """Thousands of tiny requests in one read, behind a handler that does not answer yet: at
    most 16 wait as requests (the rest of the read waits as bytes), and all are answered in
    order once the handler goes on."""
    app = App()
    go = asyncio.Event()

    @app.get("/n/{i}")
    async def n(i: int):
        await go.wait()
        return str(i)

    def requests_alive() -> int:
        gc.collect()
        return sum(type(o) is Request for o in gc.get_objects())

    count = 4000
    reads = b"".join(get(f"/n/{i}") for i in range(count))
    loop = new_event_loop()
    try:
        transport = _Transport()
        protocol = ServerState(app, loop).new_connection()
        protocol.connection_made(transport)
        before = requests_alive()
        protocol.data_received(reads)
        loop.run_until_complete(asyncio.sleep(0.05))
        waiting = requests_alive() - before
        assert waiting <= 16 + 2, f"{waiting} requests held for one read of {len(reads)} bytes"
        go.set()

        async def answered() -> None:
            while bytes(transport.out).count(b"HTTP/1.1 200") < count:
                await asyncio.sleep(0)

        loop.run_until_complete(asyncio.wait_for(answered(), 30))
        bodies = [part.partition(b"\r\n\r\n")[2] for part in bytes(transport.out).split(b"HTTP/1.1 200 OK")[1:]]
        assert bodies == [str(i).encode() for i in range(count)]
        protocol.connection_lost(None)
    finally:
        loop.close()


def half_close_app(**settings: Any) -> App:
    app = App(**settings)

    @app.get("/slow")
    async def slow():
        await asyncio.sleep(0.05)
        return "slow"

    @app.get("/sync")
    def sync():
        return "sync"

    return app


@pytest.mark.parametrize("path", ["/slow", "/sync"])
def test_a_request_then_shutdown_wr_gets_its_response_then_the_close(serve_native, path):
    """`nc -N`: the client sends its request and shuts down its write side. The response
    still comes (also when the handler awaits), then the server closes."""
    server = serve_native(half_close_app(keepalive_timeout=60))
    socks = [socket.create_connection(("127.0.0.1", server.port), timeout=10) for _ in range(20)]
    try:
        for sock in socks:
            sock.sendall(get(path))
            sock.shutdown(socket.SHUT_WR)
        for sock in socks:
            data = read_to_eof(sock)  # the server closes: no keep-alive wait of 60 s
            assert data.startswith(b"HTTP/1.1 200") and data.endswith(path[1:].encode()), data
            # (Whether the response says "Connection: close" depends on whether the EOF was
            # seen before it was written, a race with the handler; the close itself is what
            # matters, and read_to_eof returning before the socket timeout shows it.)
    finally:
        for sock in socks:
            sock.close()


def test_pipelined_requests_then_shutdown_wr_are_all_answered_in_order(serve_native):
    server = serve_native(half_close_app(keepalive_timeout=60))
    with socket.create_connection(("127.0.0.1", server.port), timeout=10) as sock:
        sock.sendall(get("/slow") + get("/sync") + get("/slow"))
        sock.shutdown(socket.SHUT_WR)
        data = read_to_eof(sock)
    assert data.count(b"HTTP/1.1 200") == 3
    assert data.index(b"\r\n\r\nslow") < data.index(b"\r\n\r\nsync") < data.rindex(b"\r\n\r\nslow")
    assert data.endswith(b"slow")


@pytest.mark.parametrize("sent", [b"", get("/sync"), b"GET /slow HTTP/1.1\r\nHost:"],
                         ids=["idle", "after-a-response", "mid-request"])
def test_eof_on_a_connection_with_nothing_to_answer_closes_it(serve_native, sent):
    server = serve_native(half_close_app(keepalive_timeout=60, handshake_timeout=60))
    with socket.create_connection(("127.0.0.1", server.port), timeout=10) as sock:
        if sent:
            sock.sendall(sent)
        if sent.endswith(b"\r\n\r\n"):
            read_response(sock)
        sock.shutdown(socket.SHUT_WR)
        assert read_to_eof(sock) == b""  # closed without waiting for a timeout


# -- 8: an upgrade pipelined behind HTTP requests waits for their responses ---------------------
def test_an_upgrade_pipelined_behind_a_get_waits_for_its_response_and_keeps_no_http_timer(serve_native):
    keepalive = 0.3
    app = echo_app(keepalive_timeout=keepalive)

    @app.get("/slow")
    async def slow():
        await asyncio.sleep(0.2)
        return "slow answer"

    server = serve_native(app)
    with socket.create_connection(("127.0.0.1", server.port), timeout=10) as sock:
        sock.sendall(get("/slow") + upgrade_request("/echo"))
        head, body, rest = read_response(sock)  # the HTTP response first, whole
        assert head.startswith(b"HTTP/1.1 200") and body == b"slow answer"
        while b"\r\n\r\n" not in rest:
            chunk = sock.recv(4096)
            assert chunk, "closed before the 101"
            rest += chunk
        switch, _, rest = rest.partition(b"\r\n\r\n")
        assert switch.startswith(b"HTTP/1.1 101"), switch
        parser = FrameParser(max_message_size=1 << 20, require_mask=False)
        events = parser.feed(rest) if rest else []
        # Echoes keep coming well past the keep-alive timeout of the first request.
        deadline = time.monotonic() + 5 * keepalive
        n = 0
        while time.monotonic() < deadline:
            n += 1
            sock.sendall(encode_frame(OP_TEXT, b"ping %d" % n, mask=b"abcd"))
            while not events:
                chunk = sock.recv(4096)
                assert chunk, f"the WebSocket was closed after {n - 1} echoes"
                events = parser.feed(chunk)
            assert events.pop(0) == (OP_TEXT, f"ping {n}")
            time.sleep(0.05)


def test_nothing_pipelined_after_an_upgrade_is_answered_before_it(serve_native):
    """An upgrade without `Connection: Upgrade` (httptools parses on past it; tether refuses
    it 400): the requests behind it in the same write are not answered first, and a second
    upgrade does not replace it."""
    server = serve_native(ok_app())
    no_connection = (b"GET /ws HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\n"
                     b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n")
    with socket.create_connection(("127.0.0.1", server.port), timeout=10) as sock:
        sock.sendall(no_connection + get("/x") + upgrade_request("/ws") + get("/x"))
        out = read_to_eof(sock)
    assert out.startswith(b"HTTP/1.1 400") and b"Connection: Upgrade" in out, out[:200]
    assert out.count(b"HTTP/1.1 ") == 1, out


def test_requests_pipelined_behind_an_upgrade_to_another_protocol_are_answered(serve_native):
    """`Upgrade: h2c` is not tether's: the request is answered as plain HTTP, and so are the
    ones written with it."""
    server = serve_native(ok_app())
    h2c = b"GET /x HTTP/1.1\r\nHost: x\r\nConnection: Upgrade, HTTP2-Settings\r\nUpgrade: h2c\r\nHTTP2-Settings: AAMAAABkAAQAAP__\r\n\r\n"
    with socket.create_connection(("127.0.0.1", server.port), timeout=10) as sock:
        sock.sendall(h2c + h2c + get("/x"))
        head, body, rest = read_response(sock)
        for _ in range(2):
            assert head.startswith(b"HTTP/1.1 200") and body == b"ok"
            head, body, rest = read_response(sock, rest)
        assert head.startswith(b"HTTP/1.1 200") and body == b"ok"


def test_a_request_still_arriving_behind_a_slow_one_keeps_its_own_deadline(serve_native):
    """When the responses in progress are written, the keep-alive timer is not armed over
    a request that has begun: it has handshake_timeout from its first byte."""
    app = App(keepalive_timeout=0.3, handshake_timeout=10)

    @app.get("/slow")
    async def slow():
        await asyncio.sleep(0.1)
        return "slow"

    @app.post("/echo")
    async def echo(request):
        return await request.body()

    server = serve_native(app)
    with socket.create_connection(("127.0.0.1", server.port), timeout=10) as sock:
        sock.sendall(get("/slow") + b"POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n\r\nhe")
        head, body, rest = read_response(sock)
        assert head.startswith(b"HTTP/1.1 200") and body == b"slow"
        time.sleep(1.0)  # past keepalive_timeout after /slow was answered, well within handshake_timeout
        sock.sendall(b"llo")
        head, body, _ = read_response(sock, rest)
        assert head.startswith(b"HTTP/1.1 200") and body == b"hello"


# -- 9: max_header_size counts the whole head --------------------------------------------------
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


def ok_app(**settings: Any) -> App:
    app = App(**settings)

    @app.get("/x")
    def x():
        return "ok"

    return app


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


class _Transport(asyncio.Transport):
    """Just enough of a socket transport for feeding `HttpProtocol` by hand."""

    def __init__(self) -> None:
        super().__init__({"peername": ("127.0.0.1", 1)})
        self.out = bytearray()
        self.closed = False

    def write(self, data: Any) -> None:
        self.out += data

    def close(self) -> None:
        self.closed = True

    def is_closing(self) -> bool:
        return self.closed

    def pause_reading(self) -> None:
        pass

    def resume_reading(self) -> None:
        pass


def fed_in_two_reads(app: App, loop: asyncio.AbstractEventLoop, stream: bytes,
                     cut: int) -> tuple[_Transport, HttpProtocol]:
    """A new connection of `app` that received `stream` in two reads, cut at `cut`."""
    transport = _Transport()
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

    async def answered(transport: _Transport, count: int) -> None:
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

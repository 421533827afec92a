"""`tether.server.http11` (issue 11, the HTTP side of the native server): what one client can
make it buffer or drop.

Real sockets on 127.0.0.1 against the native server (a server in this process, so its
transports' buffers can be read), plus one test that feeds the HTTP protocol by hand. The
head limit's tests are in test_server_heads.py.
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
        transport = HandTransport()
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


def ok_app(**settings: Any) -> App:
    app = App(**settings)

    @app.get("/x")
    def x():
        return "ok"

    return app


class HandTransport(asyncio.Transport):
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

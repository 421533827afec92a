"""`tether.server.http11`: the native server's HTTP/1.1 connection, phase by phase
(`tether.server.http11.Phase`): what it answers, in which order, what it buffers, and when
it closes or hands the connection to a WebSocket.

Real sockets on 127.0.0.1 against the native server (a server in this process, so its
transports' buffers and its connections' phases can be read), plus a few tests that feed
the protocol by hand (`HandTransport`): thousands of requests in one read, and an event
that no socket can produce twice. The head limit's own tests are in test_server_heads.py.
"""

from __future__ import annotations

import asyncio
import gc
import socket
import struct
import threading
import time
from typing import Any

import pytest

from tether import App, Request, Response
from tether.protocol import OP_TEXT, FrameParser, encode_frame
from tether.server.http11 import _TRANSITIONS, HttpProtocol, IllegalTransition, Phase
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


def ok_app(**settings: Any) -> App:
    app = App(**settings)

    @app.get("/x")
    def x():
        return "ok"

    return app


class Gate:
    """Holds the handler of `/gate` (`gated_app`) until the test opens it, from its thread."""

    def __init__(self) -> None:
        self.event = asyncio.Event()
        self.entered = threading.Event()  # a handler waits at the gate
        self.cancelled = threading.Event()  # a handler's wait was cancelled
        self.loop: asyncio.AbstractEventLoop | None = None

    async def wait(self) -> None:
        self.loop = asyncio.get_running_loop()
        self.entered.set()
        try:
            await self.event.wait()
        except asyncio.CancelledError:
            self.cancelled.set()
            raise

    def open(self) -> None:
        assert self.entered.wait(10), "no handler reached the gate"
        assert self.loop is not None
        self.loop.call_soon_threadsafe(self.event.set)


def gated_app(gate: Gate, **settings: Any) -> App:
    """`/gate` answers "through" once `gate` is open; `/x` answers "ok"; `/echo` is a WebSocket."""
    app = echo_app(**settings)

    @app.get("/gate")
    async def gated():
        await gate.wait()
        return "through"

    @app.route("/x", methods=["GET", "POST"])
    def x():
        return "ok"

    return app


def connection(server: Any, sock: socket.socket) -> HttpProtocol:
    """The server's HttpProtocol for the client socket `sock`, once the server has it."""
    port = sock.getsockname()[1]

    async def find() -> HttpProtocol | None:
        return next((c for c in server.server.state.connections
                     if isinstance(c, HttpProtocol) and c.client is not None and c.client[1] == port), None)

    return wait_until(lambda: server.call(find()), message="the server's side of the connection")


def phase_of(server: Any, protocol: HttpProtocol) -> Phase:
    async def read() -> Phase:
        return protocol.phase
    return server.call(read())


def wait_for_phase(server: Any, protocol: HttpProtocol, phase: Phase) -> None:
    wait_until(lambda: phase_of(server, protocol) is phase, message=f"phase {phase.name}")


def connect(server: Any) -> socket.socket:
    return socket.create_connection(("127.0.0.1", server.port), timeout=10)


# -- READING: requests are read and answered in order, kept alive ------------------------------
def test_a_connection_reads_and_answers_then_its_idle_keep_alive_ends_it(serve_native):
    server = serve_native(ok_app(keepalive_timeout=0.3))
    with connect(server) as sock:
        sock.sendall(get("/x"))
        head, body, rest = read_response(sock)
        assert head.startswith(b"HTTP/1.1 200") and b"connection: close" not in head.lower() and body == b"ok"
        protocol = connection(server, sock)
        assert phase_of(server, protocol) is Phase.READING
        sock.sendall(get("/x"))  # kept alive: the next request is answered
        head, body, rest = read_response(sock, rest)
        assert head.startswith(b"HTTP/1.1 200") and body == b"ok"
        assert read_to_eof(sock) == rest == b""  # then idle past keepalive_timeout: closed
    wait_for_phase(server, protocol, Phase.CLOSED)


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


# -- HALF_CLOSED: the client ended its sending side ----------------------------------------------
def half_close_app(**settings: Any) -> App:
    app = App(**settings)

    @app.get("/slow")
    async def slow():
        await asyncio.sleep(0.05)
        return "slow"

    @app.get("/sync")
    def sync():
        return "sync"

    @app.get("/n/{i}")
    async def n(i: int):
        return str(i)

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


def test_more_requests_than_may_wait_then_shutdown_wr_are_all_answered_in_order(serve_native):
    """40 requests and the EOF in one write: 16 wait as requests and the rest as bytes, with
    reading paused (so the EOF is read last); every one is answered, then the close."""
    server = serve_native(half_close_app(keepalive_timeout=60))
    with connect(server) as sock:
        sock.sendall(b"".join(get(f"/n/{i}") for i in range(40)))
        sock.shutdown(socket.SHUT_WR)
        data = read_to_eof(sock)
    bodies = [part.partition(b"\r\n\r\n")[2] for part in data.split(b"HTTP/1.1 200 OK")[1:]]
    assert bodies == [str(i).encode() for i in range(40)], data[-300:]


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


def test_a_half_close_behind_a_request_in_progress_is_half_closed_until_its_response(serve_native):
    """The client's EOF arrives while its request is answered: HALF_CLOSED, and the response
    says it is the last (Connection: close) before the server closes."""
    gate = Gate()
    server = serve_native(gated_app(gate, keepalive_timeout=60))
    with connect(server) as sock:
        sock.sendall(get("/gate"))
        protocol = connection(server, sock)
        assert gate.entered.wait(10)
        sock.shutdown(socket.SHUT_WR)
        wait_for_phase(server, protocol, Phase.HALF_CLOSED)
        gate.open()
        data = read_to_eof(sock)
    assert data.startswith(b"HTTP/1.1 200") and data.endswith(b"\r\n\r\nthrough"), data
    assert data.count(b"HTTP/1.1 ") == 1 and b"\r\nConnection: close\r\n" in data, data
    wait_for_phase(server, protocol, Phase.CLOSED)


# -- UPGRADING, UPGRADED: the hand-over to a WebSocket ------------------------------------------
NO_CONNECTION_UPGRADE = (b"GET /ws HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\n"
                         b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n")


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
    with socket.create_connection(("127.0.0.1", server.port), timeout=10) as sock:
        sock.sendall(NO_CONNECTION_UPGRADE + get("/x") + upgrade_request("/ws") + get("/x"))
        out = read_to_eof(sock)
    assert out.startswith(b"HTTP/1.1 400") and b"Connection: Upgrade" in out, out[:200]
    assert out.count(b"HTTP/1.1 ") == 1, out


def test_an_upgrade_behind_a_response_in_progress_is_upgrading_then_upgraded(serve_native):
    gate = Gate()
    server = serve_native(gated_app(gate))
    with connect(server) as sock:
        sock.sendall(get("/gate") + upgrade_request("/echo"))
        protocol = connection(server, sock)
        wait_for_phase(server, protocol, Phase.UPGRADING)
        gate.open()
        head, body, rest = read_response(sock)
        assert head.startswith(b"HTTP/1.1 200") and body == b"through"
        while b"\r\n\r\n" not in rest:
            rest += sock.recv(4096)
        assert rest.startswith(b"HTTP/1.1 101"), rest
        assert phase_of(server, protocol) is Phase.UPGRADED
        sock.sendall(encode_frame(OP_TEXT, b"hi", mask=b"abcd"))
        parser = FrameParser(max_message_size=1 << 20, require_mask=False)
        events = parser.feed(rest.partition(b"\r\n\r\n")[2])
        while not events:
            events = parser.feed(sock.recv(4096))
        assert events[0] == (OP_TEXT, "hi")


def test_a_malformed_request_behind_an_upgrade_httptools_parsed_on_past_is_the_refusal(serve_native):
    """UPGRADING -> REFUSING: httptools goes on parsing past an upgrade without `Connection:
    Upgrade`, and what it then finds malformed is the answer (the one answer)."""
    server = serve_native(ok_app())
    with connect(server) as sock:
        sock.sendall(NO_CONNECTION_UPGRADE + b"NOT HTTP AT ALL\r\n\r\n")
        out = read_to_eof(sock)
    assert out.startswith(b"HTTP/1.1 400") and b"malformed HTTP request" in out, out
    assert out.count(b"HTTP/1.1 ") == 1, out


# -- REFUSING: a refused request is answered after the responses before it, then the close ------
def test_a_refusal_behind_a_response_in_progress_waits_for_it_then_closes(serve_native):
    gate = Gate()
    server = serve_native(gated_app(gate))
    with connect(server) as sock:
        sock.sendall(get("/gate") + b"NOT HTTP AT ALL\r\n\r\n" + get("/x"))
        protocol = connection(server, sock)
        wait_for_phase(server, protocol, Phase.REFUSING)
        gate.open()
        out = read_to_eof(sock)
    assert out.startswith(b"HTTP/1.1 200") and out.count(b"HTTP/1.1 ") == 2, out
    assert out.index(b"\r\n\r\nthrough") < out.index(b"HTTP/1.1 400"), out
    wait_for_phase(server, protocol, Phase.CLOSED)


CHUNKED_20 = b"POST /x HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n14\r\n" + b"a" * 20 + b"\r\n0\r\n\r\n"


@pytest.mark.parametrize("behind", [b"NOT HTTP AT ALL\r\n\r\n", upgrade_request("/echo") + b"frames"],
                         ids=["malformed", "upgrade"])
def test_the_first_refusal_is_the_only_answer(serve_native, caplog, behind):
    """A body over max_body_size (413), with more in the same read: a malformed request, or an
    upgrade (after which the 413 was answered a second time, and logged twice)."""
    server = serve_native(gated_app(Gate(), max_body_size=10))
    with caplog.at_level("INFO", logger="tether.access"), connect(server) as sock:
        port = sock.getsockname()[1]
        sock.sendall(CHUNKED_20 + behind)
        out = read_to_eof(sock)
    assert out.startswith(b"HTTP/1.1 413") and out.count(b"HTTP/1.1 ") == 1, out
    assert [r.getMessage() for r in caplog.records if "refused" in r.getMessage()] == [
        f"127.0.0.1:{port} - refused 413: request body over 10 bytes"]


# -- CLOSING: the server shuts down ----------------------------------------------------------------
def shut_down(server: Any, *protocols: HttpProtocol) -> None:
    """What the server's shutdown does to each HTTP connection."""
    async def shutdown() -> None:
        for protocol in protocols:
            protocol.shutdown()
    server.call(shutdown())


def test_shutdown_closes_an_idle_connection_at_once_and_a_busy_one_after_its_response(serve_native):
    gate = Gate()
    server = serve_native(gated_app(gate, keepalive_timeout=60))
    with connect(server) as idle, connect(server) as busy:
        idle.sendall(get("/x"))
        read_response(idle)
        busy.sendall(get("/gate") + get("/x"))  # the second is never answered
        assert gate.entered.wait(10)
        idle_protocol, busy_protocol = connection(server, idle), connection(server, busy)
        shut_down(server, idle_protocol, busy_protocol)
        assert read_to_eof(idle) == b""
        assert phase_of(server, busy_protocol) is Phase.CLOSING
        gate.open()
        out = read_to_eof(busy)
    assert out.count(b"HTTP/1.1 ") == 1 and out.endswith(b"\r\n\r\nthrough"), out
    assert b"\r\nConnection: close\r\n" in out, out
    wait_for_phase(server, busy_protocol, Phase.CLOSED)


def test_shutdown_while_the_last_response_drains_closes_once_it_is_written(serve_native):
    """The response is written and waits for the client to read it (the send bound) when the
    server shuts down: once it is out, the connection closes (it was kept alive, idle)."""
    sock = small_rcvbuf_socket(64 * 1024)
    size = 2 * (kernel_send_buffer_bound() + effective_rcvbuf(sock))  # more than the kernels hold
    body = b"b" * size
    app = App(keepalive_timeout=60)

    @app.get("/big")
    def big():
        return Response(body, media_type="application/octet-stream")

    server = serve_native(app)

    async def buffered(protocol: HttpProtocol) -> int:
        assert protocol.transport is not None
        return protocol.transport.get_write_buffer_size()

    sock.connect(("127.0.0.1", server.port))
    try:
        sock.sendall(get("/big"))
        protocol = connection(server, sock)
        wait_until(lambda: server.call(buffered(protocol)) > 0, message="the response buffered")
        shut_down(server, protocol)
        head, got, rest = read_response(sock)
        assert head.startswith(b"HTTP/1.1 200") and got == body
        assert rest + read_to_eof(sock) == b""  # closed, not kept alive for 60 s
    finally:
        sock.close()
    wait_for_phase(server, protocol, Phase.CLOSED)


# -- CLOSED, and the table ---------------------------------------------------------------------------
def test_a_client_that_resets_while_answered_is_closed_and_its_answer_cancelled(serve_native):
    gate = Gate()
    server = serve_native(gated_app(gate))
    sock = connect(server)
    sock.sendall(get("/gate"))
    protocol = connection(server, sock)
    assert gate.entered.wait(10)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    sock.close()  # a reset
    wait_for_phase(server, protocol, Phase.CLOSED)
    assert gate.cancelled.wait(10)


def test_the_connection_lost_and_a_shutdown_have_a_move_in_every_phase():
    """asyncio may report the connection lost, and the server shut down, whatever the phase."""
    assert set(_TRANSITIONS) == set(Phase)
    for phase, moves in _TRANSITIONS.items():
        assert moves["close"] is Phase.CLOSED, phase
        assert "shutdown" in moves, phase


def test_an_event_the_phase_has_no_move_for_is_refused_loudly():
    """A transport that reports the client's EOF twice is a bug: IllegalTransition, and the
    phase stays as it was."""
    loop = new_event_loop()
    try:
        transport = HandTransport()
        protocol = ServerState(ok_app(), loop).new_connection()
        protocol.connection_made(transport)
        protocol.data_received(get("/x"))  # a request to answer: its task has not run yet
        assert protocol.eof_received() is True
        assert protocol.phase is Phase.HALF_CLOSED
        with pytest.raises(IllegalTransition, match="EOF in phase HALF_CLOSED"):
            protocol.eof_received()
        assert protocol.phase is Phase.HALF_CLOSED
        for _ in range(500):  # the answer's task runs on the loop: until it closed, at most 5 s
            loop.run_until_complete(asyncio.sleep(0.01))
            if transport.closed:
                break
        assert bytes(transport.out).startswith(b"HTTP/1.1 200") and transport.closed
        protocol.connection_lost(None)
        assert protocol.phase is Phase.CLOSED
    finally:
        loop.close()


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

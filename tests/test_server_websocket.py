"""The native server's WebSocket road: real sockets on 127.0.0.1, real clients."""

from __future__ import annotations

import asyncio
import os
import socket
import time

import pytest
from websockets.exceptions import ConnectionClosed, InvalidStatus
from websockets.sync.client import connect

from tether import App
from tether.protocol import OP_BINARY, OP_CLOSE, OP_PING, OP_PONG, OP_TEXT, encode_frame

from .apps import echo_app
from .netutil import effective_rcvbuf, kernel_send_buffer_bound, small_rcvbuf_socket, wait_until_stable
from .rawws import RawWebSocket, http_exchange, upgrade_request


def test_echo_text_binary_and_large_messages_with_a_real_client(serve_native):
    server = serve_native(echo_app())
    with connect(server.ws_url("/echo")) as ws:
        ws.send("hello")
        assert ws.recv() == "hello"
        ws.send(b"\x00\xff")
        assert ws.recv() == b"\x00\xff"
        big = "é" * 300_000  # 600 KB: 64-bit length, many TCP reads
        ws.send(big)
        assert ws.recv() == big


def test_fragmented_messages_from_a_real_client_are_reassembled(serve_native):
    server = serve_native(echo_app())
    with connect(server.ws_url("/echo")) as ws:
        ws.send(["frag", "mented ", "text"])  # websockets sends an iterable as fragments
        assert ws.recv() == "fragmented text"


def test_ping_is_answered_with_a_pong_carrying_the_same_payload(serve_native):
    server = serve_native(echo_app())
    raw = RawWebSocket(server.port, "/echo")
    raw.send_frame(OP_PING, b"are you there")
    assert raw.next_event() == (OP_PONG, b"are you there")


def test_client_close_code_is_echoed(serve_native):
    server = serve_native(echo_app())
    raw = RawWebSocket(server.port, "/echo")
    raw.send_frame(OP_CLOSE, (4000).to_bytes(2, "big") + b"bye")
    assert raw.expect_close()[0] == 4000
    assert raw.next_event() == ("eof", None)


@pytest.mark.parametrize("send, code", [
    (lambda raw: raw.send_frame(OP_TEXT, b"hi", mask=False), 1002),
    (lambda raw: raw.send_frame(OP_TEXT, b"\xff\xfe"), 1007),
    (lambda raw: raw.send_frame(OP_BINARY, b"x" * 2000), 1009),
    (lambda raw: raw.send_frame(0x3, b""), 1002),
    (lambda raw: raw.send_frame(OP_PING, b"x" * 126), 1002),
    (lambda raw: raw.send_frame(OP_CLOSE, (999).to_bytes(2, "big")), 1002),
])
def test_invalid_input_gets_its_close_code_and_other_connections_keep_working(serve_native, send, code):
    server = serve_native(echo_app(max_message_size=1000))
    with connect(server.ws_url("/echo")) as bystander:
        raw = RawWebSocket(server.port, "/echo")
        send(raw)
        assert raw.expect_close()[0] == code
        bystander.send("still here")
        assert bystander.recv() == "still here"


def test_a_handler_exception_closes_with_1011_and_is_logged(serve_native, caplog):
    app = App()

    @app.websocket("/boom")
    async def boom(websocket):
        await websocket.receive_text()
        raise RuntimeError("kaboom")

    server = serve_native(app)
    with connect(server.ws_url("/boom")) as ws:
        ws.send("go")
        with pytest.raises(ConnectionClosed) as info:
            ws.recv()
        assert info.value.rcvd.code == 1011
    assert any("kaboom" in (r.exc_text or "") or (r.exc_info and "kaboom" in str(r.exc_info[1]))
               for r in caplog.records)


@pytest.mark.parametrize("request_bytes, status, needle", [
    (upgrade_request("/echo", key="short"), 400, b"Sec-WebSocket-Key"),
    (upgrade_request("/echo", version="8"), 426, b"13"),
    (upgrade_request("/echo", method="POST"), 400, b"GET"),
    (upgrade_request("/nowhere"), 404, b"/nowhere"),
    (upgrade_request("/echo", extra="Origin: http://evil.example\r\n"), 403, b"origin"),
    (b"GET /echo HTTP/1.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Version: 13\r\n"
     b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n", 400, b"Host"),
    (b"GET /echo HTTP/1.1\r\nHost: x\r\n\r\n", 426, b"WebSocket"),
    # An upgrade with neither version nor key is malformed (400), not another version (426).
    (b"GET /echo HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n", 400,
     b"Sec-WebSocket-Version"),
    (b"NONSENSE\r\n\r\n", 400, b"malformed"),
])
def test_handshake_refusals_carry_a_precise_status(serve_native, request_bytes, status, needle):
    server = serve_native(echo_app())
    got, headers, body = http_exchange(server.port, request_bytes)
    assert got == status and needle in body
    if status == 426 and b"Sec-WebSocket-Version: 8" in request_bytes:
        assert headers["sec-websocket-version"] == "13"
    if request_bytes.startswith(b"GET /echo HTTP/1.1\r\nHost: x\r\n\r\n"):
        assert headers["upgrade"] == "websocket"


def test_origin_policy_allows_same_host_and_listed_origins(serve_native):
    server = serve_native(echo_app(allowed_origins=["https://app.example"]))
    for origin in (f"http://127.0.0.1:{server.port}", "https://app.example"):
        with connect(server.ws_url("/echo"), origin=origin) as ws:
            ws.send("ok")
            assert ws.recv() == "ok"
    with pytest.raises(InvalidStatus) as info:
        connect(server.ws_url("/echo"), origin="https://other.example")
    assert info.value.response.status_code == 403


def test_a_peer_that_stops_answering_pings_is_closed_with_1011(serve_native):
    server = serve_native(echo_app(ping_interval=0.2, ping_timeout=0.3))
    raw = RawWebSocket(server.port, "/echo")  # never answers pings
    kind, _ = raw.next_event()
    assert kind == OP_PING
    assert raw.expect_close()[0] == 1011


def test_a_peer_that_answers_pings_stays_connected(serve_native):
    # A pong may come late on a loaded machine: the timeout is generous, and the connection
    # is watched for longer than interval + timeout, so an unrecognised pong would close it.
    server = serve_native(echo_app(ping_interval=0.1, ping_timeout=1.0))
    with connect(server.ws_url("/echo")) as ws:  # websockets answers pings itself
        time.sleep(2.5)
        ws.send("alive")
        assert ws.recv() == "alive"


def test_an_incomplete_request_is_dropped_after_the_handshake_timeout(serve_native):
    server = serve_native(echo_app(handshake_timeout=0.3))
    with socket.create_connection(("127.0.0.1", server.port), timeout=5) as sock:
        sock.sendall(b"GET /echo HTTP/1.1\r\nHost: x\r\n")  # never finishes
        start = time.monotonic()
        assert sock.recv(100) == b""
        assert time.monotonic() - start < 3


def test_a_client_that_does_not_read_is_closed_with_1008_past_max_send_buffer(serve_native):
    closed = asyncio.Event()
    seen = {}
    limit = 256 * 1024
    app = App(max_send_buffer=limit)
    sock = small_rcvbuf_socket(4096)  # set before connecting: the window stays small
    # Past all the kernel can absorb (its send buffer, the client's receive buffer), the
    # broadcasts pile up in the server: twice that, and at least 128 MB, if nothing stops it.
    absorbable = kernel_send_buffer_bound() + effective_rcvbuf(sock) + limit
    messages = max(2000, 2 * absorbable // 65536)

    @app.websocket("/flood")
    async def flood(websocket):
        chunk = b"x" * 65536
        try:
            for _ in range(messages):
                await websocket.broadcast(chunk)  # broadcast never waits for a reader
                await asyncio.sleep(0)
                if websocket.closed:
                    break
        finally:
            seen["code"] = websocket.close_code
            closed.set()

    server = serve_native(app)
    raw = RawWebSocket(server.port, "/flood", sock=sock)
    server.call(asyncio.wait_for(closed.wait(), 20))
    assert seen["code"] == 1008
    raw.close()


def test_own_sends_wait_for_a_slow_reader_instead_of_growing_the_buffer(serve_native):
    limit, chunk = 256 * 1024, 65536
    # The client's receive buffer is fixed before it connects (no autotuning), and the most
    # the server's kernel send buffer can hold is read from the sysctls: while the client
    # reads nothing, at most this much can leave a paced handler, on any machine.
    sock = small_rcvbuf_socket(64 * 1024)
    in_flight_bound = limit + chunk + kernel_send_buffer_bound() + effective_rcvbuf(sock) + (1 << 20)
    count = 2 * in_flight_bound // chunk  # twice what all the buffers together can absorb
    progress = {"sent": 0}
    app = App(max_send_buffer=limit)

    @app.websocket("/stream")
    async def stream(websocket):
        for _ in range(count):
            await websocket.send_bytes(b"y" * chunk)
            progress["sent"] += 1

    server = serve_native(app)
    raw = RawWebSocket(server.port, "/stream", sock=sock)
    try:
        # Once the buffers are full the handler stops; an unpaced one would run to `count`.
        sent = wait_until_stable(lambda: progress["sent"], settle=0.5, timeout=20,
                                 done=lambda n: n >= count)
        assert sent * chunk <= in_flight_bound, (sent, count)  # the handler is paced by the reader
        assert all(raw.next_event() == (OP_BINARY, b"y" * chunk) for _ in range(count))
        assert raw.expect_close()[0] == 1000  # the handler returned: all its sends went through
        assert progress["sent"] == count
    finally:
        raw.close()


def test_reading_pauses_while_a_handler_has_max_queue_unread_messages(serve_native):
    state = {}
    app = App(max_queue=4)

    @app.websocket("/slow")
    async def slow(websocket):
        # Read nothing until the server stops reading (however long the messages take to
        # arrive: no fixed sleep), or give up after 10 s and record that it never did.
        loop = asyncio.get_running_loop()
        deadline = loop.time() + 10
        while not websocket._reading_paused and loop.time() < deadline:
            await asyncio.sleep(0.01)
        state["paused"] = websocket._reading_paused
        got = [await websocket.receive_text() for _ in range(200)]
        await websocket.send_text(",".join(got[:3]) + f"|{len(got)}")

    server = serve_native(app)
    with connect(server.ws_url("/slow")) as ws:
        for i in range(200):
            ws.send(str(i))
        assert ws.recv(timeout=20) == "0,1,2|200"
    assert state["paused"] is True


def test_http_keep_alive_serves_several_requests_on_one_connection(serve_native):
    app = App()

    @app.get("/n/{n:int}")
    def double(n: int):
        return {"n": n * 2}

    server = serve_native(app)
    with socket.create_connection(("127.0.0.1", server.port), timeout=5) as sock:
        for n in (1, 2, 3):
            sock.sendall(f"GET /n/{n} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
            data = b""
            while not data.endswith(b"}"):
                data += sock.recv(4096)
            assert data.startswith(b"HTTP/1.1 200") and f'{{"n":{n * 2}}}'.encode() in data


def test_pipelined_http_requests_are_answered_in_order(serve_native):
    app = App()

    @app.get("/slow")
    async def slow_route():
        await asyncio.sleep(0.1)
        return "slow"

    @app.get("/fast")
    def fast_route():
        return "fast"

    server = serve_native(app)
    with socket.create_connection(("127.0.0.1", server.port), timeout=5) as sock:
        sock.sendall(b"GET /slow HTTP/1.1\r\nHost: x\r\n\r\nGET /fast HTTP/1.1\r\nHost: x\r\n\r\n")
        data = b""
        while data.count(b"HTTP/1.1 200") < 2 or not data.endswith(b"fast"):
            data += sock.recv(4096)
    assert data.index(b"slow") < data.index(b"fast")


@pytest.mark.parametrize("request_bytes, status", [
    (b"POST /x HTTP/1.1\r\nHost: x\r\nContent-Length: 5000\r\n\r\n" + b"a" * 5000, 413),
    (b"GET /x HTTP/1.1\r\nHost: x\r\nX-Big: " + b"b" * 5000 + b"\r\n\r\n", 431),
])
def test_http_limits(serve_native, request_bytes, status):
    app = App(max_body_size=1000, max_header_size=2000)

    @app.post("/x")
    async def x():
        return "ok"

    server = serve_native(app)
    assert http_exchange(server.port, request_bytes)[0] == status


def test_an_own_send_larger_than_max_send_buffer_is_delivered_not_closed(serve_native):
    server = serve_native(echo_app(max_send_buffer=64 * 1024, max_message_size=4 << 20))
    with connect(server.ws_url("/echo"), max_size=None) as ws:
        big = b"z" * (2 << 20)
        ws.send(big)
        assert ws.recv(timeout=10) == big


def test_messages_before_a_bad_frame_in_the_same_read_are_answered_first(serve_native):
    server = serve_native(echo_app())
    raw = RawWebSocket(server.port, "/echo")
    raw.send_raw(encode_frame(OP_TEXT, b"first", mask=os.urandom(4)) + encode_frame(0x5, b"", mask=os.urandom(4)))
    assert raw.next_event() == (OP_TEXT, "first")
    assert raw.expect_close()[0] == 1002


def test_coalesced_writes_keep_frames_whole_and_in_order_under_pipelining(serve_native):
    """Many pipelined messages on one connection (the early-flush path) and on many (batched)."""
    server = serve_native(echo_app())
    payloads = [f"message {i} ".encode() * (i % 7 + 1) for i in range(300)]
    raw = RawWebSocket(server.port, "/echo")
    raw.send_raw(b"".join(encode_frame(OP_BINARY, p, mask=os.urandom(4)) for p in payloads))
    assert [raw.next_event() for _ in payloads] == [(OP_BINARY, p) for p in payloads]
    clients = [RawWebSocket(server.port, "/echo") for _ in range(20)]
    for client in clients:
        client.send_raw(b"".join(encode_frame(OP_BINARY, p, mask=os.urandom(4)) for p in payloads[:40]))
    for client in clients:
        assert [client.next_event() for _ in payloads[:40]] == [(OP_BINARY, p) for p in payloads[:40]]
        client.close()


def test_a_request_trickled_byte_by_byte_is_still_dropped_at_the_handshake_timeout(serve_native):
    """Slowloris: partial data must not extend the deadline of an incomplete request."""
    server = serve_native(echo_app(handshake_timeout=0.5))
    request = upgrade_request("/echo")
    with socket.create_connection(("127.0.0.1", server.port), timeout=5) as sock:
        start = time.monotonic()
        for byte in request[:-2]:  # never completes the head
            try:
                sock.sendall(bytes([byte]))
            except OSError:
                break
            time.sleep(0.05)
            if time.monotonic() - start > 3:
                break
        sock.settimeout(2)
        try:
            data = sock.recv(100)
        except ConnectionResetError:
            data = b""
        assert data == b""
        assert time.monotonic() - start < 2.5


def test_a_slow_handler_for_a_pipelined_request_is_not_cut_off_by_the_request_timeout(serve_native):
    app = App(handshake_timeout=0.3)

    @app.get("/slow")
    async def slow():
        await asyncio.sleep(0.8)  # longer than the request timeout
        return "done"

    server = serve_native(app)
    with socket.create_connection(("127.0.0.1", server.port), timeout=5) as sock:
        sock.sendall(b"GET /slow HTTP/1.1\r\nHost: x\r\n\r\nGET /slow HTTP/1.1\r\nHost: x\r\n\r\n")
        data = b""
        while data.count(b"done") < 2:
            chunk = sock.recv(4096)
            assert chunk, f"connection closed early after {data!r}"
            data += chunk

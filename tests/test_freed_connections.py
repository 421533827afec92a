"""A connection that ended is freed at once, by reference counting, not by the collector.

Objects in a reference cycle wait for a pass of the cyclic garbage collector, and for the
full pass only once enough long-lived objects have piled up: on a server with thousands of
connections that is thousands of ended connections later. Whatever such a connection holds
waits with it: a refused request's headers (64 KiB of short header lines are about 1 MiB of
Python objects), a partial WebSocket message (up to `max_message_size`), unread messages.
A flood of 180 KB heads, each refused 431, grew the server from 30 to 145 MiB this way and
stalled other clients for the full passes (issue 11, bench/soak.py).

Each test runs real clients against the native server (or tether's ASGI face under uvicorn
and hypercorn) in this process with the collector off, waits until the server has let go of
them, then collects with `gc.DEBUG_SAVEALL`: a connection's object among the garbage (its
protocol, channel, core connection, parser, inflater, request) is a cycle left behind.
"""

from __future__ import annotations

import gc
import socket
from collections.abc import Callable, Iterator
from typing import Any

import pytest
import websockets.sync.client

from tether import App, WebSocketConnection
from tether.asgi import ASGIChannel
from tether.channel import ChannelBase
from tether.http import Request
from tether.protocol import OP_TEXT, Decompressor, FrameParser
from tether.server.channel import NativeChannel
from tether.server.http11 import HttpProtocol

from .netutil import read_to_eof, wait_until
from .rawws import RawWebSocket, upgrade_request

ROUNDS = 5  # connections per case: one would do; a few show it is not a one-off


def build_app(**settings: Any) -> App:
    app = App(**settings)

    @app.get("/")
    async def index() -> str:
        return "hello"

    @app.post("/upload")
    async def upload(request: Any) -> int:
        return len(await request.body())

    @app.websocket("/echo")
    async def echo(websocket: Any) -> None:
        async for message in websocket:
            await websocket.send(message)

    @app.websocket("/bye")
    async def bye(websocket: Any) -> None:
        await websocket.send("bye")
        await websocket.close(1000)

    return app


@pytest.fixture
def collector_off() -> Iterator[None]:
    enabled = gc.isenabled()
    gc.collect()
    gc.disable()
    try:
        yield
    finally:
        gc.set_debug(0)
        if enabled:
            gc.enable()


# What one connection makes: the servers' own objects (App, Hub, routes) are cyclic by
# design and live as long as their server, so an earlier test's server going away while
# this one runs puts them among the garbage: they are not what these tests look for.
CONNECTION_TYPES = (HttpProtocol, NativeChannel, ASGIChannel, WebSocketConnection, FrameParser, Decompressor,
                    Request)


def connection_garbage() -> list[str]:
    """Collect, and name the connection objects that only the collector freed."""
    gc.set_debug(gc.DEBUG_SAVEALL)
    try:
        gc.collect()
        # type(), not isinstance(): a dead weakref.proxy among the garbage raises on it
        found = {type(obj).__qualname__ for obj in gc.garbage if issubclass(type(obj), CONNECTION_TYPES)}
        return sorted(found)
    finally:
        gc.garbage.clear()
        gc.set_debug(0)


def freed(server: Any) -> None:
    """Wait until no protocol, channel or core connection of `server` (native or ASGI, known
    by its event loop) is alive. With the collector off an object in a cycle stays alive,
    so on a cycle this fails (times out) as surely as the check after it."""
    loop = server.loop

    def none_alive() -> bool:
        for obj in gc.get_objects():
            kind = type(obj)  # not isinstance(): a dead weakref.proxy raises on it
            if issubclass(kind, (HttpProtocol, ChannelBase)) and obj.loop is loop:
                return False
            if issubclass(kind, WebSocketConnection) and obj._loop is loop:
                return False
        return True

    wait_until(none_alive, timeout=10, message="the ended connections freed")


def http_keep_alive(port: int) -> None:
    with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
        sock.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        assert sock.recv(65536).startswith(b"HTTP/1.1 200")
    # the client closes a keep-alive connection


def http_pipelined(port: int) -> None:
    with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
        sock.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n" * 2 + b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        assert read_to_eof(sock).count(b"HTTP/1.1 200") == 3


def http_head_refused(port: int) -> None:
    with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
        sock.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n" + b"X-A: b\r\n" * 10_000 + b"\r\n")  # 80 KB: over 64 KiB
        assert read_to_eof(sock).startswith(b"HTTP/1.1 431")


def http_body_cut_off(port: int) -> None:
    with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
        sock.sendall(b"POST /upload HTTP/1.1\r\nHost: x\r\nContent-Length: 100000\r\n\r\n" + b"b" * 50_000)
    # gone with half of the body sent


def websocket_echo(port: int) -> None:
    with websockets.sync.client.connect(f"ws://127.0.0.1:{port}/echo") as client:
        client.send("ping")
        assert client.recv(timeout=5) == "ping"


def websocket_closed_by_server(port: int) -> None:
    with websockets.sync.client.connect(f"ws://127.0.0.1:{port}/bye") as client:
        assert client.recv(timeout=5) == "bye"


def websocket_gone_mid_message(port: int) -> None:
    raw = RawWebSocket(port, "/echo")
    raw.send_frame(OP_TEXT, b"x" * 100_000, fin=False)  # a partial message the server holds
    raw.sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
    raw.close()  # a reset: no close frame, no FIN


def websocket_refused(port: int) -> None:
    with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
        sock.sendall(upgrade_request("/nowhere"))
        assert read_to_eof(sock).startswith(b"HTTP/1.1 404")


CASES: dict[str, Callable[[int], None]] = {
    "HTTP keep-alive": http_keep_alive,
    "HTTP pipelined": http_pipelined,
    "HTTP head refused 431": http_head_refused,
    "HTTP body cut off": http_body_cut_off,
    "WebSocket echo": websocket_echo,
    "WebSocket closed by the server": websocket_closed_by_server,
    "WebSocket gone mid-message": websocket_gone_mid_message,
    "WebSocket refused": websocket_refused,
}


@pytest.mark.parametrize("deflate", [False, True], ids=["plain", "deflate"])
@pytest.mark.parametrize("case", list(CASES))
def test_an_ended_connection_leaves_no_reference_cycle(serve_native, collector_off, case, deflate):
    server = serve_native(build_app(permessage_deflate=deflate))
    connection_garbage()  # what the server's start (or an earlier test's end) left: not the case's
    for _ in range(ROUNDS):
        CASES[case](server.port)
    freed(server)
    assert connection_garbage() == []


SERVERS = ("uvicorn", "hypercorn")  # for `serve`: tether's ASGI face, under two servers


@pytest.mark.parametrize("case", ["WebSocket echo", "WebSocket closed by the server", "WebSocket gone mid-message"])
def test_under_asgi_an_ended_websocket_leaves_no_reference_cycle(serve, collector_off, case):
    server = serve(build_app())
    connection_garbage()  # what the server's start (or an earlier test's end) left: not the case's
    for _ in range(ROUNDS):
        CASES[case](server.port)
    freed(server)
    assert connection_garbage() == []


def test_the_check_sees_a_cycle(collector_off):
    """The check above is not blind: a connection object in a cycle is reported."""
    parser = FrameParser()
    holder: list[Any] = [parser]
    holder.append(holder)
    del parser, holder
    assert connection_garbage() == ["FrameParser"]

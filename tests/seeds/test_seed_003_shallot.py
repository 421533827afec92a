"""Every example of Shallot's WebSocket page (shared/seeds/003_75fa14ca4c16cb4f.txt) on
tether, with only the import line changed (`from shallot import websocket` becomes
`from tether import websocket, ws_send, ws_close, ws_accept`), driven by real clients.

The page's second example passes `on_disconnect=standard_disconnect`, a name it never
defines; the functions it does define are `my_disconnect` and `my_close`, used here.
"""

from __future__ import annotations

import threading
import time

import pytest
from websockets.exceptions import ConnectionClosed, InvalidStatus
from websockets.sync.client import connect

from tether import App, Router, websocket, ws_accept, ws_close, ws_send

SERVERS = ("native", "uvicorn", "hypercorn", "granian")  # every road in

def test_echo_exit_sends_bybye_then_closes_with_1001(serve):
    @websocket
    async def handle_ws_echo(scope, receiver):
        async for message in receiver:
            yield {"text": f"@ECHO: {message}", "type": "websocket.send"}
            if message == "exit":
                yield ws_send("bybye")
                yield ws_close(1001)

    app = App()
    app.websocket("/echo")(handle_ws_echo)
    server = serve(app)
    with connect(server.ws_url("/echo")) as ws:
        ws.send("hello")
        assert ws.recv() == "@ECHO: hello"
        ws.send(b"bin")
        assert ws.recv() == "@ECHO: b'bin'"
        ws.send("exit")
        assert ws.recv() == "@ECHO: exit"
        assert ws.recv() == "bybye"
        with pytest.raises(ConnectionClosed) as info:
            ws.recv()
        assert info.value.rcvd.code == 1001


def test_exhausted_generator_closes_with_1000_and_scope_is_asgi_like(serve):
    @websocket
    async def once(scope, receiver):
        yield ws_send(f"{scope['type']} {scope['path']} {scope['query_string']!r} {dict(scope['headers'])[b'x-h']!r}")
        yield ws_send(b"\x01")

    app = App()
    app.websocket("/once")(once)
    server = serve(app)
    with connect(server.ws_url("/once?a=1"), additional_headers={"X-H": "v"}) as ws:
        assert ws.recv() == "websocket /once b'a=1' b'v'"
        assert ws.recv() == b"\x01"
        with pytest.raises(ConnectionClosed) as info:
            ws.recv()
        assert info.value.rcvd.code == 1000


def test_on_disconnect_then_on_close_when_the_client_leaves(serve, capsys):
    done = threading.Event()

    async def my_disconnect(scope):
        print("-> Client Disconnected!")

    async def my_close(scope):
        print("--> The connection has been closed! Either by the server or by the client")
        done.set()

    @websocket(on_disconnect=my_disconnect, on_close=my_close)
    async def handle_ws_echo(scope, receiver):
        async for message in receiver:
            yield ws_send(f"@ECHO: {message}")

    app = App()
    app.websocket("/echo")(handle_ws_echo)
    server = serve(app)
    with connect(server.ws_url("/echo")) as ws:
        ws.send("x")
        assert ws.recv() == "@ECHO: x"
    assert done.wait(5)
    assert capsys.readouterr().out == (
        "-> Client Disconnected!\n--> The connection has been closed! Either by the server or by the client\n")


def test_server_side_close_runs_on_close_only(serve):
    calls = []
    done = threading.Event()

    @websocket(on_disconnect=lambda scope: calls.append("disconnect"),
               on_close=lambda scope: (calls.append("close"), done.set()))
    async def short(scope, receiver):
        yield ws_send("one and done")

    app = App()
    app.websocket("/short")(short)
    server = serve(app)
    with connect(server.ws_url("/short")) as ws:
        assert ws.recv() == "one and done"
        with pytest.raises(ConnectionClosed):
            ws.recv()
    assert done.wait(5) and calls == ["close"]


@pytest.mark.parametrize("allowed", [True, False])
def test_on_connect_accepts_with_a_subprotocol_or_refuses(serve, allowed):
    def something():
        return allowed

    async def connection_accept(scope):
        if something():
            return ws_accept(subprotocol="sub-123")  # == {"type": "websocket.accept", "subprotocol": "sub-123"}
        else:
            return ws_close()

    @websocket(on_connect=connection_accept)
    async def handle_ws_echo(scope, receiver):
        async for message in receiver:
            yield ws_send(f"@ECHO: {message}")

    app = App()
    app.websocket("/echo")(handle_ws_echo)
    server = serve(app)
    if allowed:
        with connect(server.ws_url("/echo"), subprotocols=["sub-123"]) as ws:
            assert ws.subprotocol == "sub-123"
            ws.send("x")
            assert ws.recv() == "@ECHO: x"
    else:
        with pytest.raises(InvalidStatus) as info:
            connect(server.ws_url("/echo"), subprotocols=["sub-123"])
        assert info.value.response.status_code == 403


def test_a_bare_async_generator_registers_too_and_misuse_is_named(serve):
    app = App()

    @app.websocket("/bare")
    async def bare(scope, receiver):
        async for message in receiver:
            yield ws_send(message.upper())

    @app.websocket("/wrong")
    async def wrong(scope, receiver):
        yield "not a dict"

    server = serve(app)
    with connect(server.ws_url("/bare")) as ws:
        ws.send("shout")
        assert ws.recv() == "SHOUT"
    with connect(server.ws_url("/wrong")) as ws:
        with pytest.raises(ConnectionClosed) as info:
            ws.recv()
        assert info.value.rcvd.code == 1011
    with pytest.raises(TypeError, match="needs an async function"):
        websocket(lambda scope, receiver: None)
    time.sleep(0.05)


# -- Shallot's own tutorial (docs/source/tutorial.rst, "Websockets"), beyond the page ------------
def test_a_handler_that_only_receives_is_a_handler(serve):
    """The tutorial's first example and its fan-in pattern: no `yield`, only `async for`."""
    seen: list[str] = []
    done = threading.Event()

    @websocket
    async def print_client_messages(request, receiver):
        async for message in receiver:
            seen.append(message)
        done.set()

    app = App()
    app.websocket("/fan-in")(print_client_messages)
    server = serve(app)
    with connect(server.ws_url("/fan-in")) as ws:
        ws.send("one")
        ws.send("two")
    assert done.wait(5) and seen == ["one", "two"]


def test_what_a_handler_without_yield_returns_is_sent(serve):
    """Shallot's test_ws_handler_can_be_non_generators: the returned message is sent, then
    the socket closes (1000); returning None sends nothing."""

    @websocket
    async def first_only(scope, receiver):
        async for message in receiver:
            return ws_send(f"first: {message}")
        return None

    @websocket
    async def nothing(scope, receiver):
        pass

    @websocket
    async def counter(scope, receiver):
        return 2

    app = App()
    app.websocket("/first")(first_only)
    app.websocket("/nothing")(nothing)
    app.websocket("/counter")(counter)
    server = serve(app)
    with connect(server.ws_url("/first")) as ws:
        ws.send("a")
        assert ws.recv(timeout=5) == "first: a"
        assert close_code(ws) == 1000
    with connect(server.ws_url("/nothing")) as ws:
        assert close_code(ws) == 1000
    with connect(server.ws_url("/counter")) as ws:
        assert close_code(ws) == 1011  # TypeError: "counter returned 2; return None, ws_send(...)..."


def close_code(ws) -> int:
    """The code of the close the server sends next (after any other message: a failure)."""
    with pytest.raises(ConnectionClosed) as info:
        ws.recv(timeout=5)
    return info.value.rcvd.code


def test_path_parameters_follow_the_receiver_in_path_order(serve):
    """The tutorial's `named_echo_server(request, receiver, name)` on "/named/{name}"."""

    @websocket
    async def named_echo_server(request, receiver, name):
        async for message in receiver:
            yield ws_send(f"@{name}: {message}")

    @websocket
    async def two(request, receiver, first, second):
        yield ws_send(f"{first}/{second}")

    app = App()
    app.websocket("/named/{name}")(named_echo_server)
    app.websocket("/two/{a}/{b:int}")(two)
    server = serve(app)
    with connect(server.ws_url("/named/alice")) as ws:
        ws.send("hi")
        assert ws.recv(timeout=5) == "@alice: hi"
    with connect(server.ws_url("/two/x/7")) as ws:
        assert ws.recv(timeout=5) == "x/7"


def test_a_handler_that_cannot_take_the_path_parameters_is_refused_at_registration():
    @websocket
    async def no_room(scope, receiver):
        yield ws_send("never")

    with pytest.raises(TypeError, match=r"route '/rooms/\{room\}': .*no_room must take \(scope, receiver, room\)"):
        App().websocket("/rooms/{room}")(no_room)
    with pytest.raises(TypeError, match=r"route '/rooms/\{room\}': .*no_room must take"):
        App().add_websocket_route("/rooms/{room}", no_room)  # added as a session
    with pytest.raises(TypeError, match=r"route '/rooms/\{room\}': .*no_room must take"):
        App().route("/rooms/{room}")(no_room)  # Microdot's way of registering a session
    router = Router()
    router.websocket("/echo")(no_room)  # fine on its own route
    with pytest.raises(TypeError, match=r"route '/in/\{room\}/echo': .*no_room must take"):
        App().include_router(router, prefix="/in/{room}")  # a prefix with a parameter adds one

"""Every example of Robyn's first WebSocket API page (shared/seeds/000_52ea3159399fd424.txt)
on tether, with only the import line changed (`from robyn import Robyn, jsonify, WebSocket`
becomes `from tether import App as Robyn, jsonify, WebSocket`), driven by real clients.

The page shows successive `@websocket.on("message")` snippets for one endpoint; each test
registers one snippet, as a reader trying them one at a time would.
"""

from __future__ import annotations

import threading
import time

import pytest
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import connect

from tether import App as Robyn
from tether import WebSocket, jsonify

SERVERS = ("native", "uvicorn", "hypercorn", "granian")  # every road in

def make():
    app = Robyn(__file__)
    websocket = WebSocket(app, "/web_socket")
    return app, websocket


def test_first_example_connect_message_close(serve):
    app, websocket = make()

    @websocket.on("message")
    def connect_():  # the page names its functions crosswise; the event decides
        return "Hello world, from ws"

    @websocket.on("close")
    def close():
        return "Goodbye world, from ws"

    @websocket.on("connect")
    def message():
        return "Connected to ws"

    server = serve(app)
    with connect(server.ws_url("/web_socket")) as ws:
        assert ws.recv() == "Connected to ws"
        ws.send("anything")
        assert ws.recv() == "Hello world, from ws"
        server.call(app.hub.close(app.hub.ids()[0]))  # a server-side close sends close's value last
        assert ws.recv() == "Goodbye world, from ws"
        with pytest.raises(ConnectionClosed):
            ws.recv()


def test_sync_send_to(serve):
    app, websocket = make()

    @websocket.on("message")
    def message(ws, msg, global_dependencies) -> str:
        websocket_id = ws.id
        ws.sync_send_to(websocket_id, "This is a message to self")
        return ""

    server = serve(app)
    with connect(server.ws_url("/web_socket")) as ws:
        ws.send("hi")
        assert ws.recv() == "This is a message to self"
        with pytest.raises(TimeoutError):
            ws.recv(timeout=0.2)  # "" sends nothing


def test_async_send_to(serve):
    app, websocket = make()

    @websocket.on("message")
    async def message(ws, msg, global_dependencies) -> str:
        websocket_id = ws.id
        await ws.async_send_to(websocket_id, "This is a message to self")
        return ""

    server = serve(app)
    with connect(server.ws_url("/web_socket")) as ws:
        ws.send("hi")
        assert ws.recv() == "This is a message to self"


@pytest.mark.parametrize("style", ["sync", "async"])
def test_broadcast(serve, style):
    app, websocket = make()

    if style == "sync":
        @websocket.on("message")
        def message(ws, msg, global_dependencies) -> str:
            websocket_id = ws.id  # noqa: F841 (as on the page)
            ws.sync_broadcast("This is a message to self")
            return ""
    else:
        @websocket.on("message")
        async def message(ws, msg, global_dependencies) -> str:
            websocket_id = ws.id  # noqa: F841 (as on the page)
            await ws.async_broadcast("This is a message to self")
            return ""

    server = serve(app)
    with connect(server.ws_url("/web_socket")) as one, connect(server.ws_url("/web_socket")) as two:
        time.sleep(0.05)
        one.send("go")
        assert one.recv() == "This is a message to self"
        assert two.recv() == "This is a message to self"


def test_query_params(serve):
    app, websocket = make()

    @websocket.on("message")
    async def message(ws, msg, global_dependencies) -> str:
        websocket_id = ws.id  # noqa: F841 (as on the page)
        if (ws.query_params.get("name") == "gordon" and ws.query_params.get("desg") == "commissioner"):
            ws.sync_broadcast("Gordon authorized to login!")
        return ""

    server = serve(app)
    with connect(server.ws_url("/web_socket?name=gordon&desg=commissioner")) as gordon, \
            connect(server.ws_url("/web_socket?name=joker")) as joker:
        time.sleep(0.05)
        joker.send("let me in")
        with pytest.raises(TimeoutError):
            joker.recv(timeout=0.2)
        gordon.send("login")
        assert gordon.recv() == "Gordon authorized to login!"
        assert joker.recv() == "Gordon authorized to login!"


def test_close_from_the_server(serve):
    app, websocket = make()

    @websocket.on("message")
    def message(ws, msg):
        if msg == "disconnect":
            ws.close()
            return "Closing connection"
        return "Message received"

    server = serve(app)
    with connect(server.ws_url("/web_socket")) as ws:
        ws.send("hello")
        assert ws.recv() == "Message received"
        ws.send("disconnect")
        assert ws.recv() == "Closing connection"  # the handler's value first, then the close frame
        with pytest.raises(ConnectionClosed) as info:
            ws.recv()
        assert info.value.rcvd.code == 1000
    assert len(app.hub) == 0


def test_global_and_router_dependencies_and_jsonify(serve):
    app, websocket = make()
    app.inject_global(greeting="hello")
    app.inject(table="users")
    websocket.inject_global(extra="endpoint")

    @websocket.on("message")
    def message(ws, msg, global_dependencies, router_dependencies):
        return jsonify({"msg": msg, "global": global_dependencies, "router": router_dependencies})

    server = serve(app)
    with connect(server.ws_url("/web_socket")) as ws:
        ws.send("x")
        assert ws.recv() == '{"msg":"x","global":{"greeting":"hello","extra":"endpoint"},"router":{"table":"users"}}'
    assert isinstance(jsonify([1]), str) and jsonify([1]) == "[1]"


def test_sync_methods_work_from_another_thread(serve):
    app, websocket = make()
    seen = {}

    @websocket.on("connect")
    def connected(ws):
        seen["ws"] = ws
        return "ready"

    server = serve(app)
    with connect(server.ws_url("/web_socket")) as ws:
        assert ws.recv() == "ready"
        worker = threading.Thread(target=lambda: (seen["ws"].sync_send_to(seen["ws"].id, "from a thread"),
                                                  seen["ws"].sync_broadcast("broadcast from a thread")))
        worker.start()
        worker.join()
        assert ws.recv(timeout=10) == "from a thread"
        assert ws.recv(timeout=10) == "broadcast from a thread"


def test_close_handler_runs_when_the_client_leaves(serve):
    app, websocket = make()
    closed = threading.Event()

    @websocket.on("close")
    async def close(ws):
        closed.set()
        return "cannot be sent: the client is gone"

    server = serve(app)
    with connect(server.ws_url("/web_socket")):
        pass
    assert closed.wait(5)


def test_registration_errors_name_the_route_and_problem():
    app, websocket = make()
    with pytest.raises(ValueError, match="unknown event 'disconnect'.*connect, message, close"):
        websocket.on("disconnect")
    with pytest.raises(TypeError, match="parameter 'extra' cannot be filled"):
        websocket.on("message")(lambda ws, msg, g, r, extra: None)

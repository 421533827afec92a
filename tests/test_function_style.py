"""SPEC 1a, the function style (`tether.styles.function`), through real clients over real
sockets; FastAPI's habits also through the in-process TestClient."""

from __future__ import annotations

import asyncio
import json
import threading
import time

import aiohttp
import pytest
from websockets.exceptions import ConnectionClosed, InvalidStatus
from websockets.sync.client import connect

from tether import App, WebSocketDisconnect
from tether.testing import TestClient


def recv_close(ws) -> tuple[int, str]:
    """Read until the server closes; return its close code and reason."""
    with pytest.raises(ConnectionClosed) as info:
        while True:
            ws.recv(timeout=5)
    return info.value.rcvd.code, info.value.rcvd.reason


# -- parameters ---------------------------------------------------------------------------
def params_app() -> App:
    app = App()

    @app.websocket("/ws/{room}")
    async def handler(websocket, room: str, page: int = 1, debug: bool = False,
                      tags: list[str] = [], limit: float | None = None):  # noqa: B006
        await websocket.send_json({"room": room, "page": page, "debug": debug, "tags": tags, "limit": limit})

    @app.websocket("/need")
    async def need(websocket, token: str):
        await websocket.send_text(token)

    @app.websocket("/item/{id:int}")
    async def item(websocket, id: int):
        await websocket.send_json(id)

    return app


def test_path_and_query_parameters_are_resolved_and_coerced(serve):
    server = serve(params_app())
    with connect(server.ws_url("/ws/lobby?page=3&debug=yes&tags=a&tags=b&limit=2.5")) as ws:
        assert ws.recv() == '{"room":"lobby","page":3,"debug":true,"tags":["a","b"],"limit":2.5}'
    with connect(server.ws_url("/ws/lobby")) as ws:
        assert ws.recv() == '{"room":"lobby","page":1,"debug":false,"tags":[],"limit":null}'


@pytest.mark.parametrize("path, status, needle", [
    ("/need", 400, "'token'"),
    ("/ws/lobby?page=abc", 400, "'page'"),
    ("/ws/lobby?debug=maybe", 400, "'debug'"),
    ("/item/abc", 404, "/item/abc"),
])
def test_a_missing_or_bad_parameter_rejects_the_handshake(serve, path, status, needle):
    server = serve(params_app())
    with pytest.raises(InvalidStatus) as info:
        connect(server.ws_url(path))
    assert info.value.response.status_code == status
    assert needle in info.value.response.body.decode()


def test_typed_path_converter_matches(serve):
    server = serve(params_app())
    with connect(server.ws_url("/item/42")) as ws:
        assert ws.recv() == "42"


# -- callbacks ----------------------------------------------------------------------------
def test_on_connect_greets_first_and_on_close_says_goodbye_last(serve):
    app = App()

    @app.websocket("/chat")
    async def chat(websocket, name: str = "anon"):
        msg = await websocket.receive_text()
        await websocket.send_text(f"{name}: {msg}")

    @chat.on_connect
    def greet(websocket, name: str = "anon"):
        return f"Welcome, {name}!"

    @chat.on_close
    async def bye(websocket):
        return "Goodbye!"

    server = serve(app)
    with connect(server.ws_url("/chat?name=bruce")) as ws:
        assert ws.recv() == "Welcome, bruce!"
        ws.send("hi")
        assert ws.recv() == "bruce: hi"
        assert ws.recv() == "Goodbye!"
        assert recv_close(ws)[0] == 1000


def test_on_close_runs_exactly_once_on_every_close_path(serve):
    calls: list[str] = []
    app = App()

    @app.websocket("/w")
    async def handler(websocket, mode: str):
        if mode == "return":
            return
        if mode == "close":
            await websocket.close(4001, "by server")
            await websocket.close()  # idempotent
            return
        if mode == "raise":
            raise ValueError("handler error")
        while not websocket.closed:  # "client": the client leaves while the handler is busy
            await asyncio.sleep(0.01)  # (it never receives; it only sees `closed`, and ends)

    @handler.on_close
    def closed(websocket, mode: str):
        calls.append(mode)
        return "bye"

    server = serve(app)
    for mode, code in (("return", 1000), ("close", 4001), ("raise", 1011)):
        with connect(server.ws_url(f"/w?mode={mode}")) as ws:
            assert ws.recv() == "bye"  # sent before the close frame
            assert recv_close(ws)[0] == code
    with connect(server.ws_url("/w?mode=client")) as ws:
        pass
    deadline = time.monotonic() + 5
    while len(calls) < 4 and time.monotonic() < deadline:
        time.sleep(0.02)
    time.sleep(0.1)
    assert sorted(calls) == sorted(["return", "close", "raise", "client"])
    assert len(server.app.hub) == 0


# -- subprotocols ---------------------------------------------------------------------------
def test_subprotocol_is_chosen_in_the_endpoint_preference_order(serve):
    app = App()

    @app.websocket("/sp", subprotocols=["chat.v2", "chat.v1"])
    async def sp(websocket):
        await websocket.send_text(str(websocket.subprotocol))

    server = serve(app)
    with connect(server.ws_url("/sp"), subprotocols=["chat.v1", "chat.v2"]) as ws:
        assert ws.subprotocol == "chat.v2" and ws.recv() == "chat.v2"
    with connect(server.ws_url("/sp"), subprotocols=["chat.v1"]) as ws:
        assert ws.subprotocol == "chat.v1"
    with connect(server.ws_url("/sp")) as ws:
        assert ws.subprotocol is None and ws.recv() == "None"


def test_accepting_a_subprotocol_the_client_did_not_offer_sends_none_and_warns(serve, caplog):
    app = App()

    @app.websocket("/raw")
    async def raw(websocket):
        pass

    async def own_session(websocket):
        await websocket.accept(subprotocol="never-offered")
        await websocket.send_text(str(websocket.subprotocol))

    app.add_websocket_route("/manual", own_session)
    server = serve(app)
    with connect(server.ws_url("/manual"), subprotocols=["x"]) as ws:
        assert ws.subprotocol is None and ws.recv() == "None"
    assert any("never-offered" in r.getMessage() for r in caplog.records)


def test_a_handler_that_accepts_itself_gets_its_subprotocol_and_headers(serve):
    """FastAPI's habit: `await websocket.accept(subprotocol=..., headers=...)` first thing.
    The 101 carries what it asks for, and on_connect's greeting still comes first."""
    app = App()

    @app.websocket("/wamp", subprotocols=["chat"])
    async def wamp(websocket):
        await websocket.accept(subprotocol="wamp", headers=[("X-Accepted-By", "handler")])
        await websocket.send_text(f"{websocket.subprotocol} {await websocket.receive_text()}")

    @wamp.on_connect
    def greet(websocket):
        return "welcome"

    server = serve(app)
    with connect(server.ws_url("/wamp"), subprotocols=["chat", "wamp"]) as ws:
        assert ws.subprotocol == "wamp"
        assert ws.response.headers["X-Accepted-By"] == "handler"
        assert ws.recv(timeout=5) == "welcome"
        ws.send("hi")
        assert ws.recv(timeout=5) == "wamp hi"


def test_accept_takes_header_pairs_as_bytes_as_starlette_code_writes_them(serve):
    """`accept(headers=[(b"name", b"value")])` (the ASGI form) failed the handshake under ASGI."""
    app = App()

    @app.websocket("/bytes")
    async def handler(websocket):
        await websocket.accept(headers=[(b"additional", b"header")])
        await websocket.send_text("ok")

    server = serve(app)
    with connect(server.ws_url("/bytes")) as ws:
        assert ws.response.headers["additional"] == "header" and ws.recv(timeout=5) == "ok"


def test_a_handler_that_accepts_itself_is_accepted_by_its_first_receive_or_refused_if_it_never_does(serve):
    app = App()

    @app.websocket("/maybe", subprotocols=["chat"])
    async def maybe(websocket, accept: bool = False):
        if accept:
            await websocket.accept()
        elif websocket.query_params.get("refuse"):
            return  # never accepted: refused
        text = await websocket.receive_text()
        await websocket.send_text(f"{websocket.subprotocol}: {text}")

    server = serve(app)
    with connect(server.ws_url("/maybe"), subprotocols=["chat"]) as ws:  # a receive before accept() accepts
        assert ws.subprotocol == "chat"
        ws.send("a")
        assert ws.recv(timeout=5) == "chat: a"
    with connect(server.ws_url("/maybe?accept=1"), subprotocols=["chat"]) as ws:  # accept() alone: the route's
        assert ws.subprotocol == "chat"
        ws.send("b")
        assert ws.recv(timeout=5) == "chat: b"
    with pytest.raises(InvalidStatus) as info:
        connect(server.ws_url("/maybe?refuse=1"))
    assert info.value.response.status_code == 403


def test_an_accept_that_comes_too_late_to_matter_is_logged(serve, caplog):
    """A handler that leaves accept() to a helper is accepted before it runs: what the
    helper's accept() asks for cannot reach the 101, and a warning says so."""
    app = App()

    async def setup(websocket):
        await websocket.accept(subprotocol="wamp")

    @app.websocket("/late")
    async def late(websocket):
        await setup(websocket)
        await websocket.send_text(str(websocket.subprotocol))

    server = serve(app)
    with connect(server.ws_url("/late"), subprotocols=["wamp"]) as ws:
        assert ws.recv(timeout=5) == "None"
    assert any("already accepted" in r.getMessage() and "wamp" in r.getMessage() for r in caplog.records)


def test_starlettes_json_modes_and_the_scope_mapping(serve):
    app = App()

    @app.websocket("/starlette")
    async def starlette(websocket):
        got = await websocket.receive_json(mode="binary")
        await websocket.send_json({"got": got, "path": websocket["path"], "type": websocket["type"],
                                   "subprotocols": websocket["subprotocols"], "keys": set(websocket) >= {"path", "headers"}},
                                  mode="binary")
        try:
            await websocket.receive_json(mode="text")
        except TypeError as exc:
            await websocket.send_json({"error": str(exc)})

    server = serve(app)
    with connect(server.ws_url("/starlette"), subprotocols=["x"]) as ws:
        ws.send(b'{"n": 1}')
        reply = ws.recv(timeout=5)
        assert isinstance(reply, bytes)
        assert json.loads(reply) == {"got": {"n": 1}, "path": "/starlette", "type": "websocket",
                                     "subprotocols": ["x"], "keys": True}
        ws.send(b"[]")
        assert "receive_text() got a binary message" in json.loads(ws.recv(timeout=5))["error"]


def starlette_habits_app() -> App:
    app = App()

    @app.websocket("/fastapi")
    async def fastapi_style(websocket):
        await websocket.accept()                       # FastAPI code starts with this
        await websocket.accept()                       # and a second call is harmless
        await websocket.send_json({"url": str(websocket.url), "path": websocket.url.path,
                                   "scheme": websocket.url.scheme, "app": websocket.app is app})
        async for text in websocket.iter_text():
            await websocket.send_text(text.upper())

    @app.websocket("/bytes")
    async def bytes_style(websocket):
        async for data in websocket.iter_bytes():
            await websocket.send_bytes(data[::-1])

    @app.websocket("/json")
    async def json_style(websocket):
        async for value in websocket.iter_json():
            await websocket.send_json({"got": value})

    return app


def test_fastapi_habits_work():
    app = starlette_habits_app()
    with TestClient(app) as client:
        with client.websocket_connect("/fastapi?x=1") as ws:
            assert ws.receive_json() == {"url": "ws://testserver/fastapi?x=1", "path": "/fastapi",
                                         "scheme": "ws", "app": True}
            ws.send_text("shout")
            assert ws.receive_text() == "SHOUT"
        with client.websocket_connect("/bytes") as ws:
            ws.send_bytes(b"abc")
            assert ws.receive_bytes() == b"cba"
        with client.websocket_connect("/json") as ws:
            ws.send_json([1, 2])
            assert ws.receive_json() == {"got": [1, 2]}


def test_an_exception_handler_gets_the_websocket_handlers_exception(serve, caplog):
    """As in Starlette: `handler(websocket, exc)` may close with its own code; a handler that
    leaves the connection open has it closed with 1011; before accept, 500."""

    class Banned(Exception):
        pass

    class Quiet(Exception):
        pass

    async def banned(websocket, exc):
        await websocket.close(code=1008, reason=f"banned: {exc}")

    app = App(exception_handlers={Banned: banned})
    seen: list[str] = []

    @app.exception_handler(Quiet)
    def quiet(websocket, exc):
        seen.append(f"{websocket.path} {exc}")

    @app.websocket("/ws/{what}")
    async def handler(websocket, what: str):
        if what == "early":
            raise Banned("before accept")  # a handler that names accept, never reached: not accepted yet
        await websocket.accept()
        raise (Banned if what == "banned" else Quiet)(what)

    server = serve(app)
    with connect(server.ws_url("/ws/banned")) as ws:
        assert recv_close(ws) == (1008, "banned: banned")
    with connect(server.ws_url("/ws/quiet")) as ws:
        assert recv_close(ws)[0] == 1011
    with pytest.raises(InvalidStatus) as info:
        connect(server.ws_url("/ws/early"))
    assert info.value.response.status_code == 403  # the exception handler refused it (close before accept)
    assert seen == ["/ws/quiet quiet"]
    assert not any("WebSocket handler for" in r.getMessage() for r in caplog.records)  # handled: no traceback


def test_a_handler_that_names_accept_may_join_and_broadcast_first(serve):
    """Naming `accept` (a domain object's `offer.accept()` counts) leaves the handshake to the
    handler: join() and broadcast() complete it as a send does (join raised InvalidState,
    broadcast skipped the sender); send_nowait(), which cannot wait, says what to do."""
    app = App()

    class Offer:
        def accept(self):
            return "taken"

    @app.websocket("/shop/{how}")
    async def shop(websocket, how: str):
        if how == "join":
            await websocket.join("buyers")
            await websocket.send_text(f"joined {Offer().accept()}")
        elif how == "broadcast":
            await websocket.send_text(f"reached {await websocket.broadcast('news')}")
        else:
            try:
                websocket.send_nowait("early")
            except RuntimeError as exc:
                await websocket.send_text(str(exc))

    server = serve(app)
    with connect(server.ws_url("/shop/join")) as ws:
        assert ws.recv(timeout=5) == "joined taken"
    with connect(server.ws_url("/shop/broadcast")) as ws:
        assert ws.recv(timeout=5) == "news" and ws.recv(timeout=5) == "reached 1"
    with connect(server.ws_url("/shop/nowait")) as ws:
        assert "await websocket.accept() first" in ws.recv(timeout=5)


def test_an_accept_in_a_nested_function_of_the_handler_counts(serve):
    app = App()

    @app.websocket("/nested")
    async def nested(websocket):
        async def open_with(subprotocol):
            await websocket.accept(subprotocol=subprotocol)

        await open_with("wamp")
        await websocket.send_text(str(websocket.subprotocol))

    server = serve(app)
    with connect(server.ws_url("/nested"), subprotocols=["wamp"]) as ws:
        assert ws.subprotocol == "wamp" and ws.recv(timeout=5) == "wamp"


def test_accept_refuses_a_header_that_would_split_the_101(serve):
    app = App()

    @app.websocket("/split")
    async def split(websocket, session: str):
        await websocket.accept(headers=[("X-Session", session)])

    server = serve(app)
    with pytest.raises(InvalidStatus) as info:
        connect(server.ws_url("/split?session=abc%0d%0aSet-Cookie:%20admin=1"))
    assert info.value.response.status_code == 500 and "Set-Cookie" not in info.value.response.headers


def test_a_catch_all_exception_handler_is_for_http_and_a_sync_one_runs_in_the_thread_pool(serve, caplog):
    """As in Starlette, a handler for `Exception` itself does not see WebSocket errors: they
    are logged and closed 1011. A sync handler for a narrower class runs off the loop."""

    class Narrow(Exception):
        pass

    app = App()
    threads: dict[str, str] = {}

    @app.exception_handler(Exception)
    def catch_all(request, exc):
        threads["catch_all"] = "called"
        return "oops"

    @app.exception_handler(Narrow)
    def narrow(websocket, exc):
        threads["handler"] = threading.current_thread().name

    @app.websocket("/fail/{kind}")
    async def fail(websocket, kind: str):
        threads["loop"] = threading.current_thread().name
        raise (Narrow if kind == "narrow" else ZeroDivisionError)(kind)

    server = serve(app)
    with connect(server.ws_url("/fail/zero")) as ws:
        assert recv_close(ws)[0] == 1011
    assert "catch_all" not in threads
    assert any("WebSocket handler for /fail/zero raised" in r.getMessage() for r in caplog.records)
    with connect(server.ws_url("/fail/narrow")) as ws:
        assert recv_close(ws)[0] == 1011
    assert threads["handler"] != threads["loop"]


# -- receiving ------------------------------------------------------------------------------
def test_receive_variants_and_type_errors(serve):
    app = App()

    @app.websocket("/r")
    async def r(websocket):
        assert await websocket.receive_text() == "t"
        assert await websocket.receive_bytes() == b"b"
        assert await websocket.receive_json() == {"a": 1}
        assert await websocket.receive() == b"raw"
        try:
            await websocket.receive_text()
        except TypeError as exc:
            await websocket.send_text(str(exc))
        try:
            await websocket.receive_json()
        except ValueError as exc:
            await websocket.send_text(str(exc))

    server = serve(app)
    with connect(server.ws_url("/r")) as ws:
        for message in ("t", b"b", '{"a": 1}', b"raw", b"\x01\x02", "not json"):
            ws.send(message)
        assert "receive_text() got a binary message (2 bytes)" in ws.recv()
        assert "not JSON" in ws.recv()


def test_disconnect_raises_in_receive_with_code_and_reason_and_is_quiet_if_uncaught(serve, caplog):
    seen = {}
    done = threading.Event()
    app = App()

    @app.websocket("/d")
    async def d(websocket):
        try:
            await websocket.receive_text()
        except WebSocketDisconnect as exc:
            seen["code"], seen["reason"] = exc.code, exc.reason
            seen["closed"] = websocket.closed
        done.set()

    @app.websocket("/quiet")
    async def quiet(websocket):
        while True:
            await websocket.receive_text()

    server = serve(app)
    with connect(server.ws_url("/d")) as ws:
        ws.close(4002, "leaving")
    assert done.wait(5)
    assert seen == {"code": 4002, "reason": "leaving", "closed": True}
    with connect(server.ws_url("/quiet")) as ws:
        ws.send("x")
    time.sleep(0.2)
    assert not [r for r in caplog.records if r.exc_info]


def test_a_handler_that_only_sends_learns_the_peer_is_gone(serve):
    result = {}
    done = threading.Event()
    app = App()

    @app.websocket("/ticker")
    async def ticker(websocket):
        try:
            while True:
                await websocket.send_text("tick")
                await asyncio.sleep(0.01)
        except WebSocketDisconnect:
            result["closed"] = websocket.closed
        done.set()

    server = serve(app)
    with connect(server.ws_url("/ticker")) as ws:
        assert ws.recv() == "tick"
    assert done.wait(5) and result["closed"] is True


def test_async_for_ends_when_the_client_closes(serve):
    got = []
    done = threading.Event()
    app = App()

    @app.websocket("/it")
    async def it(websocket):
        async for message in websocket:
            got.append(message)
        done.set()

    server = serve(app)
    with connect(server.ws_url("/it")) as ws:
        ws.send("a")
        ws.send(b"b")
    assert done.wait(5) and got == ["a", b"b"]


# -- sending --------------------------------------------------------------------------------
def test_send_dispatches_on_type(serve):
    app = App()

    @app.websocket("/s")
    async def s(websocket):
        await websocket.send("text")
        await websocket.send(b"bytes")
        await websocket.send(bytearray(b"ba"))
        await websocket.send(memoryview(b"mv"))
        await websocket.send({"json": [1, "é"]})
        await websocket.send_json([1])
        await websocket.send_bytes(b"sb")
        try:
            await websocket.send_text(b"wrong")
        except TypeError as exc:
            await websocket.send_text(str(exc))

    server = serve(app)
    with connect(server.ws_url("/s")) as ws:
        assert [ws.recv() for _ in range(8)] == [
            "text", b"bytes", b"ba", b"mv", '{"json":[1,"é"]}', "[1]", b"sb", "send_text() takes str, not bytes"]


def test_everything_one_connection_sends_arrives_in_program_order(serve):
    app = App()

    @app.websocket("/order")
    async def order(websocket):
        for i in range(50):
            if i % 2:
                app.hub.send_to_sync(websocket.id, str(i))
            else:
                await websocket.send_text(str(i))

    server = serve(app)
    with connect(server.ws_url("/order")) as ws:
        assert [ws.recv() for _ in range(50)] == [str(i) for i in range(50)]


# -- connection data ------------------------------------------------------------------------
def test_connection_attributes(serve):
    app = App()

    @app.websocket("/info/{name}")
    async def info(websocket, name: str):
        websocket.state.user = name
        await websocket.send_json({
            "id_len": len(websocket.id), "q": websocket.query_params.getlist("q"),
            "path_params": websocket.path_params, "ua": websocket.headers["X-Test"],
            "ua_lower": websocket.headers.get("x-test"), "cookies": websocket.cookies,
            "client_host": websocket.client[0], "user": websocket.state.user,
        })

    server = serve(app)
    with connect(server.ws_url("/info/alfred?q=1&q=2"),
                 additional_headers={"X-Test": "yes", "Cookie": "session=abc; theme=dark"}) as ws:
        assert ws.recv() == ('{"id_len":36,"q":["1","2"],"path_params":{"name":"alfred"},"ua":"yes",'
                             '"ua_lower":"yes","cookies":{"session":"abc","theme":"dark"},'
                             '"client_host":"127.0.0.1","user":"alfred"}')


# -- broadcast and the hub ------------------------------------------------------------------
def chat_app() -> App:
    app = App()

    @app.websocket("/chat/{room}")
    async def chat(websocket, room: str):
        await websocket.send_text("joined")
        async for message in websocket:
            if message.startswith("skipme "):
                await websocket.broadcast(message[7:], exclude=websocket)
            else:
                await websocket.broadcast(message)

    return app


def test_broadcast_reaches_the_same_concrete_path_only_sender_included(serve):
    server = serve(chat_app())
    with connect(server.ws_url("/chat/a")) as a1, connect(server.ws_url("/chat/a")) as a2, \
            connect(server.ws_url("/chat/b")) as b1:
        for ws in (a1, a2, b1):
            assert ws.recv() == "joined"
        a1.send("hello a")
        assert a1.recv() == "hello a" and a2.recv() == "hello a"
        a1.send("skipme only a2")
        assert a2.recv() == "only a2"
        b1.send("hello b")
        assert b1.recv() == "hello b"
        with pytest.raises(TimeoutError):
            a1.recv(timeout=0.2)


def test_hub_send_close_and_sync_twins_from_another_thread(serve):
    app = App()

    @app.websocket("/hub")
    async def hub_endpoint(websocket):
        await websocket.send_text(websocket.id)
        async for _ in websocket:
            pass

    server = serve(app)
    with connect(server.ws_url("/hub")) as one, connect(server.ws_url("/hub")) as two:
        id_one, id_two = one.recv(), two.recv()
        assert len(app.hub) == 2 and sorted(app.hub.ids("/hub")) == sorted([id_one, id_two])
        assert app.hub.ids("/elsewhere") == [] and server.call(app.hub.count()) == 2
        assert server.call(app.hub.send_to(id_one, {"direct": True})) is True
        assert one.recv(timeout=10) == '{"direct":true}'
        assert server.call(app.hub.send_to("no-such-id", "x")) is False
        assert server.call(app.hub.broadcast("/hub", "all", exclude=[id_one])) == 1
        assert two.recv(timeout=10) == "all"
        # the thread-safe twins, called from this (non-loop) thread
        app.hub.send_to_sync(id_two, "sync direct")
        assert two.recv(timeout=10) == "sync direct"
        app.hub.broadcast_sync("/hub", "sync all")
        assert one.recv(timeout=10) == "sync all" and two.recv(timeout=10) == "sync all"
        app.hub.close_sync(id_two, 4003, "kicked")
        assert recv_close(two) == (4003, "kicked")
        assert server.call(app.hub.close(id_one, 4004, "async kick")) is True
        assert recv_close(one) == (4004, "async kick")
    assert len(app.hub) == 0


def test_hub_rooms(serve):
    app = App()

    @app.websocket("/room")
    async def room(websocket, name: str):
        await websocket.join(name)
        await websocket.send_text("in")
        async for message in websocket:
            if message == "leave":
                await websocket.leave(name)
                await websocket.send_text("left")
            else:
                await app.hub.publish(name, message, exclude=websocket.id)

    server = serve(app)
    with connect(server.ws_url("/room?name=red")) as r1, connect(server.ws_url("/room?name=red")) as r2, \
            connect(server.ws_url("/room?name=blue")) as b1:
        for ws in (r1, r2, b1):
            assert ws.recv() == "in"
        assert len(app.hub.members("red")) == 2 and len(app.hub.members("blue")) == 1
        r1.send("to red")
        assert r2.recv() == "to red"
        with pytest.raises(TimeoutError):
            r1.recv(timeout=0.2)
        with pytest.raises(TimeoutError):
            b1.recv(timeout=0.2)
        r2.send("leave")
        assert r2.recv() == "left"
        assert len(app.hub.members("red")) == 1
    deadline = time.monotonic() + 5
    while (app.hub.members("red") or app.hub.members("blue")) and time.monotonic() < deadline:
        time.sleep(0.02)
    assert app.hub.members("red") == [] and app.hub.members("blue") == []


def test_aiohttp_client_talks_to_the_function_style(serve):
    server = serve(chat_app())

    async def scenario():
        async with aiohttp.ClientSession() as session:
            async with session.ws_connect(server.ws_url("/chat/aio")) as ws:
                assert (await ws.receive_str()) == "joined"
                await ws.send_str("via aiohttp")
                assert (await ws.receive_str()) == "via aiohttp"
                await ws.close()
                return ws.close_code

    assert asyncio.run(scenario()) == 1000


def test_websocket_client_library_talks_to_the_function_style(serve):
    import websocket as websocket_client  # the websocket-client package

    app = App()

    @app.websocket("/sp", subprotocols=["chat.v1"])
    async def sp(websocket):
        async for message in websocket:
            await websocket.send(message)

    server = serve(app)
    ws = websocket_client.create_connection(server.ws_url("/sp"), subprotocols=["chat.v1"], timeout=5)
    try:
        assert ws.getsubprotocol() == "chat.v1"
        ws.send("text")
        assert ws.recv() == "text"
        ws.send_binary(b"\x00\x01")
        assert ws.recv() == b"\x00\x01"
    finally:
        ws.close()

"""SPEC 4, `tether.testing.TestClient`: in process, no socket, never hangs."""

from __future__ import annotations

import time

import pytest

from tether import App, WebSocketDisconnect
from tether.testing import TestClient, WebSocketRejected


def make_app() -> App:
    app = App()
    app.state.events = []

    @app.on_startup
    def up():
        app.state.events.append("startup")

    @app.on_shutdown
    def down():
        app.state.events.append("shutdown")

    @app.get("/hello/{name}")
    def hello(name: str, punct: str = "!"):
        return f"hello {name}{punct}"

    @app.post("/json")
    async def echo(request):
        return {"got": await request.json()}

    @app.websocket("/echo", subprotocols=["v1"])
    async def echo_ws(websocket):
        async for message in websocket:
            await websocket.send(message)

    @app.websocket("/room/{name}")
    async def room(websocket, name: str, token: str):
        await websocket.send_text(f"joined {name}")
        async for message in websocket:
            await websocket.broadcast(message)

    @app.websocket("/bye")
    async def bye(websocket):
        await websocket.send_text("closing")
        await websocket.close(4000, "done")

    @app.websocket("/silent")
    async def silent(websocket):
        await websocket.receive_text()

    return app


def test_http_requests():
    app = make_app()
    with TestClient(app) as client:
        response = client.get("/hello/world", params={"punct": "?"})
        assert (response.status_code, response.text) == (200, "hello world?")
        assert response.headers["content-type"] == "text/plain; charset=utf-8"
        assert client.post("/json", json={"a": 1}).json() == {"got": {"a": 1}}
        assert client.get("/missing").status_code == 404
        assert client.get("/echo").status_code == 426
    assert app.state.events == ["startup", "shutdown"]


def test_websocket_session_send_receive_all_types():
    with TestClient(make_app()) as client:
        with client.websocket_connect("/echo", subprotocols=["v0", "v1"]) as ws:
            assert ws.subprotocol == "v1"
            ws.send_text("hi")
            assert ws.receive_text() == "hi"
            ws.send_bytes(b"\x00")
            assert ws.receive_bytes() == b"\x00"
            ws.send_json({"k": [1]})
            assert ws.receive_json() == {"k": [1]}


def test_several_sessions_see_a_broadcast():
    with TestClient(make_app()) as client:
        with client.websocket_connect("/room/a?token=t") as one, client.websocket_connect("/room/a?token=t") as two:
            assert one.receive_text() == "joined a" and two.receive_text() == "joined a"
            one.send_text("to all")
            assert one.receive_text() == "to all" and two.receive_text() == "to all"


def test_refused_handshake_raises_with_the_http_status():
    with TestClient(make_app()) as client:
        with pytest.raises(WebSocketRejected) as info:
            client.websocket_connect("/room/a")
        assert info.value.status_code == 400 and b"'token'" in info.value.body
        with pytest.raises(WebSocketRejected) as info:
            client.websocket_connect("/nope")
        assert info.value.status_code == 404


def test_server_close_is_seen_with_its_code():
    with TestClient(make_app()) as client:
        with client.websocket_connect("/bye") as ws:
            assert ws.receive_text() == "closing"
            with pytest.raises(WebSocketDisconnect) as info:
                ws.receive_text()
            assert (info.value.code, info.value.reason) == (4000, "done")


def test_receive_times_out_instead_of_hanging():
    with TestClient(make_app()) as client:
        with client.websocket_connect("/silent") as ws:
            start = time.monotonic()
            with pytest.raises(TimeoutError):
                ws.receive_text(timeout=0.2)
            assert time.monotonic() - start < 2


def test_message_over_the_limit_closes_with_1009():
    app = App(max_message_size=10)

    @app.websocket("/e")
    async def e(websocket):
        async for message in websocket:
            await websocket.send(message)

    with TestClient(app) as client:
        with client.websocket_connect("/e") as ws:
            ws.send_text("x" * 11)
            with pytest.raises(WebSocketDisconnect) as info:
                ws.receive_text()
            assert info.value.code == 1009

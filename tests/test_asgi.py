"""The ASGI face: the same App under uvicorn, hypercorn and granian, and what differs."""

from __future__ import annotations

import asyncio
import json
import urllib.error
import urllib.request

import pytest
from websockets.exceptions import ConnectionClosed, InvalidStatus
from websockets.sync.client import connect

from tether import App
from tether.testing import TestClient

from .conftest import ASGIServer

SERVERS = ("native", "uvicorn", "hypercorn", "granian")


def rejecting_app() -> App:
    app = App()

    @app.websocket("/need")
    async def need(websocket, token: str):
        await websocket.send_text(token)

    async def refuses(websocket):
        pass  # never accepts

    app.add_websocket_route("/refuse", refuses)
    return app


@pytest.mark.parametrize("path, status, body", [
    ("/need", 400, b"missing required query parameter 'token'"),
    ("/refuse", 403, b"the handler did not accept the connection"),
    ("/nowhere", 404, b"no WebSocket route for /nowhere"),
])
def test_handshake_rejections_carry_status_and_body_on_every_server(serve, path, status, body):
    server = serve(rejecting_app())
    with pytest.raises(InvalidStatus) as info:
        connect(server.ws_url(path))
    assert info.value.response.status_code == status
    assert bytes(info.value.response.body) == body


def test_origin_refusal_on_every_server(serve):
    server = serve(rejecting_app())
    with pytest.raises(InvalidStatus) as info:
        connect(server.ws_url("/need?token=t"), origin="https://evil.example")
    assert info.value.response.status_code == 403
    with connect(server.ws_url("/need?token=t")) as ws:
        assert ws.recv() == "t"


def test_without_the_http_response_extension_a_refusal_is_a_close_before_accept():
    """A server without `websocket.http.response` turns a close before accept into 403."""
    app = rejecting_app()
    sent = []

    async def scenario():
        events = iter([{"type": "websocket.connect"}])

        async def receive():
            try:
                return next(events)
            except StopIteration:
                await asyncio.Event().wait()

        async def send(message):
            sent.append(message)

        scope = {"type": "websocket", "path": "/need", "query_string": b"", "headers": [(b"host", b"x")],
                 "subprotocols": [], "extensions": {}}
        await app(scope, receive, send)

    asyncio.run(scenario())
    assert sent == [{"type": "websocket.close", "code": 1000}]


@pytest.mark.parametrize("kind", ["uvicorn", "hypercorn", "granian"])
def test_asgi_middleware_wraps_the_app(kind):
    app = App()

    @app.get("/")
    def index(request):
        return {"tagged": request.headers.get("x-tag")}

    @app.websocket("/ws")
    async def ws(websocket):
        await websocket.send_text(websocket.headers.get("x-tag"))

    def middleware(inner):
        async def wrapped(scope, receive, send):
            if scope["type"] in ("http", "websocket"):
                scope = dict(scope, headers=list(scope["headers"]) + [(b"x-tag", b"by-middleware")])
            await inner(scope, receive, send)
        return wrapped

    server = ASGIServer(middleware(app), kind).start()
    try:
        with urllib.request.urlopen(server.url("/")) as response:
            assert json.loads(response.read()) == {"tagged": "by-middleware"}
        with connect(server.ws_url("/ws")) as websocket:
            assert websocket.recv() == "by-middleware"
    finally:
        server.stop()


def test_mounting_at_the_root_keeps_paths_whole(serve):
    async def everything(scope, receive, send):
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": f"{scope['root_path']}|{scope['path']}".encode()})

    app = App()
    app.mount("/", everything)
    server = serve(app)
    with urllib.request.urlopen(server.url("/a/b")) as response:
        assert response.read() == b"|/a/b"


def test_mounting_another_asgi_app(serve):
    async def legacy(scope, receive, send):
        assert scope["type"] == "http"
        await send({"type": "http.response.start", "status": 200,
                    "headers": [(b"content-type", b"text/plain")]})
        await send({"type": "http.response.body", "body": f"legacy {scope['path']} ".encode(), "more_body": True})
        await send({"type": "http.response.body", "body": scope["root_path"].encode()})

    app = App()
    app.mount("/legacy", legacy)

    @app.get("/legacy-not")
    def not_mounted():
        return "ours"

    server = serve(app)
    with urllib.request.urlopen(server.url("/legacy/old/page")) as response:
        assert response.read() == b"legacy /old/page /legacy"
    with urllib.request.urlopen(server.url("/legacy-not")) as response:
        assert response.read() == b"ours"


def test_lifespan_runs_startup_and_shutdown_hooks_under_asgi_servers(serve):
    events = []
    app = App()
    app.on_startup(lambda: events.append("up"))
    app.on_shutdown(lambda: events.append("down"))
    server = serve(app)
    assert events == ["up"]
    server.stop()
    assert events == ["up", "down"]


def test_message_size_limit_is_enforced_by_the_app_too(serve):
    app = App(max_message_size=100)

    @app.websocket("/echo")
    async def echo(websocket):
        async for message in websocket:
            await websocket.send(message)

    server = serve(app)
    with connect(server.ws_url("/echo")) as ws:
        ws.send("x" * 100)
        assert ws.recv() == "x" * 100
        ws.send("x" * 101)
        with pytest.raises(ConnectionClosed) as info:
            ws.recv(timeout=5)
        assert info.value.rcvd.code == 1009


def test_a_failing_startup_hook_fails_the_lifespan():
    app = App()

    @app.on_startup
    def broken():
        raise RuntimeError("database unreachable")

    sent = []

    async def scenario():
        queue = [{"type": "lifespan.startup"}]

        async def receive():
            return queue.pop(0)

        async def send(message):
            sent.append(message)

        await app({"type": "lifespan"}, receive, send)

    asyncio.run(scenario())
    assert sent == [{"type": "lifespan.startup.failed", "message": "RuntimeError: database unreachable"}]


def test_testclient_and_asgi_agree():
    app = rejecting_app()
    with TestClient(app) as client:
        with client.websocket_connect("/need?token=same") as ws:
            assert ws.receive_text() == "same"

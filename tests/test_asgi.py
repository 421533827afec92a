"""The ASGI face: the same App under uvicorn, hypercorn and granian, and what differs."""

from __future__ import annotations

import asyncio
import json
import socket
import threading
import urllib.error
import urllib.request

import pytest
from websockets.exceptions import ConnectionClosed, InvalidStatus
from websockets.sync.client import connect

from tether import App
from tether.protocol import OP_PING, OP_TEXT
from tether.testing import TestClient

from .apps import echo_app
from .conftest import ASGIServer
from .netutil import effective_rcvbuf, kernel_send_buffer_bound, small_rcvbuf_socket
from .rawws import RawWebSocket, http_exchange, upgrade_request

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


def test_a_server_that_breaks_the_asgi_protocol_ends_the_connection_instead_of_spinning(caplog):
    """A receive() that keeps answering "websocket.connect" without suspending starved the
    loop forever (6.6 million calls in 3 s): the session now ends with a warning."""
    app = App()

    @app.websocket("/echo")
    async def echo(websocket):
        async for message in websocket:
            await websocket.send(message)

    sent, calls = [], 0

    async def scenario():
        async def receive():
            nonlocal calls
            calls += 1
            return {"type": "websocket.connect"}

        async def send(message):
            sent.append(message)

        scope = {"type": "websocket", "path": "/echo", "query_string": b"", "headers": [(b"host", b"x")],
                 "subprotocols": [], "extensions": {}}
        await asyncio.wait_for(app(scope, receive, send), 5)

    asyncio.run(scenario())
    assert sent[0]["type"] == "websocket.accept" and calls == 2
    assert any("'websocket.connect' where a receive or a disconnect belongs" in r.getMessage() for r in caplog.records)


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


# -- documented differences (docs/deploy.md): what the ASGI server does itself ----------------
SHUTDOWN = {"native": ("bye", 1001), "uvicorn": (None, 1012), "hypercorn": (None, 1011), "granian": (None, None)}


def test_shutdown_close_code_is_the_servers(serve, server_kind):
    server = serve(echo_app(goodbye="bye"))
    with connect(server.ws_url("/echo")) as ws:
        stopping = threading.Thread(target=server.stop)
        stopping.start()
        message, code = SHUTDOWN[server_kind]
        if message is not None:
            assert ws.recv(timeout=5) == message
        if code is None:  # granian's embedded server leaves open WebSockets alone at stop()
            with pytest.raises(TimeoutError):
                ws.recv(timeout=1)
        else:
            with pytest.raises(ConnectionClosed) as info:
                ws.recv(timeout=5)
            assert info.value.rcvd.code == code
    stopping.join(30)


def test_keepalive_pings_are_the_servers(serve, server_kind):
    server = serve(echo_app(ping_interval=0.2, ping_timeout=0.3))
    raw = RawWebSocket(server.port, "/echo")
    if server_kind == "native":
        raw.sock.settimeout(10)  # a wait for the ping due at 0.2 s: generous on a slow machine
        assert raw.next_event()[0] == OP_PING
    else:  # the App's ping settings do not reach an ASGI server (its own defaults apply)
        raw.sock.settimeout(1.0)  # five of the App's ping intervals, none of the servers' own
        with pytest.raises(socket.timeout):
            raw.next_event()
    raw.close()


MALFORMED = {  # (wrong version, 15-byte key) -> status
    "native": (426, 400), "uvicorn": (400, 400), "hypercorn": (400, 101), "granian": (400, 101),
}


def test_malformed_handshakes_are_answered_by_the_server(serve, server_kind):
    server = serve(echo_app())
    assert http_exchange(server.port, upgrade_request("/echo", version="8"))[0] == MALFORMED[server_kind][0]
    assert http_exchange(server.port, upgrade_request("/echo", key="c2hvcnQ="))[0] == MALFORMED[server_kind][1]


PROTOCOL_ERRORS = {  # (invalid UTF-8, unmasked frame) -> close code, or None: TCP closed without one
    "native": (1007, 1002), "uvicorn": (1007, 1002), "hypercorn": (None, None), "granian": (1005, 1005),
}


@pytest.mark.parametrize("which", [0, 1])
def test_protocol_errors_are_answered_by_the_server(serve, server_kind, which):
    server = serve(echo_app())
    raw = RawWebSocket(server.port, "/echo")
    if which == 0:
        raw.send_frame(OP_TEXT, b"\xff\xfe")
    else:
        raw.send_frame(OP_TEXT, b"hi", mask=False)
    expected = PROTOCOL_ERRORS[server_kind][which]
    if expected is None:
        with pytest.raises(AssertionError, match="without a close frame"):
            raw.expect_close()
    else:
        assert raw.expect_close()[0] == expected
    raw.close()


def test_slow_client_is_closed_with_1008_on_every_server(serve):
    limit = 256 * 1024
    app = App(max_send_buffer=limit)
    done = threading.Event()
    sock = small_rcvbuf_socket(4096)  # set before connecting: the window stays small
    # Past all the kernel can absorb, the broadcasts pile up in the app: twice that, and at
    # least 128 MB, if nothing stops it (the ASGI servers' own buffers are far smaller).
    absorbable = kernel_send_buffer_bound() + effective_rcvbuf(sock) + limit
    messages = max(2000, 2 * absorbable // 65536)

    @app.websocket("/flood")
    async def flood(websocket):
        for _ in range(messages):
            await websocket.broadcast(b"x" * 65536)
            await asyncio.sleep(0)
            if websocket.closed:
                break
        app.state.code = websocket.close_code
        done.set()

    server = serve(app)
    raw = RawWebSocket(server.port, "/flood", sock=sock)
    assert done.wait(20)
    assert app.state.code == 1008
    raw.close()


def test_websocket_routes_of_a_mounted_app_are_served_under_asgi_only(serve, server_kind):
    async def sub_app(scope, receive, send):
        assert scope["type"] == "websocket"
        await receive()
        await send({"type": "websocket.accept"})
        await send({"type": "websocket.send", "text": f"mounted {scope['path']}"})
        await send({"type": "websocket.close", "code": 1000})

    app = App()
    app.mount("/sub", sub_app)
    server = serve(app)
    if server_kind == "native":
        with pytest.raises(InvalidStatus) as info:
            connect(server.ws_url("/sub/live"))
        assert info.value.response.status_code == 404
    else:
        with connect(server.ws_url("/sub/live")) as ws:
            assert ws.recv() == "mounted /live"


def test_permessage_deflate_is_negotiated_by_uvicorn_and_hypercorn(serve, server_kind):
    server = serve(echo_app())
    with connect(server.ws_url("/echo"), compression="deflate") as ws:
        negotiated = [extension.name for extension in ws.protocol.extensions]
        ws.send("x" * 1000)
        assert ws.recv() == "x" * 1000
    # echo_app leaves the App's permessage_deflate off, which tether's own server follows
    # (tests/test_deflate.py has it on); uvicorn's websockets and hypercorn's wsproto
    # negotiate it whatever the App says; granian does not implement it.
    assert negotiated == (["permessage-deflate"] if server_kind in ("uvicorn", "hypercorn") else [])


def test_max_queue_pauses_the_apps_reading_on_every_server(serve):
    app = App(max_queue=4)

    @app.websocket("/slow")
    async def slow(websocket):
        # Read nothing until the app stops reading (however long the messages take to
        # arrive: no fixed sleep), or give up after 10 s and record that it never did.
        loop = asyncio.get_running_loop()
        deadline = loop.time() + 10
        while not websocket._reading_paused and loop.time() < deadline:
            await asyncio.sleep(0.01)
        app.state.paused = websocket._reading_paused
        got = [await websocket.receive_text() for _ in range(100)]
        await websocket.send_text(f"{got[0]}..{got[-1]}|{len(got)}")

    server = serve(app)
    with connect(server.ws_url("/slow")) as ws:
        for i in range(100):
            ws.send(str(i))
        assert ws.recv(timeout=20) == "0..99|100"
    assert app.state.paused is True  # the rest waits in the server's own buffer under ASGI

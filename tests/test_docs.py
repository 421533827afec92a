"""docs/styles.md: every example runs as written and does what the text says."""

from __future__ import annotations

import json
import pathlib
import re
import time
import urllib.request

import pytest
from websockets.exceptions import ConnectionClosed, InvalidStatus
from websockets.sync.client import connect

DOC = pathlib.Path(__file__).resolve().parents[1] / "docs" / "styles.md"
BLOCKS = re.findall(r"```python\n(.*?)```", DOC.read_text(), re.S)


def load(index: int):
    namespace = {"__name__": "styles_doc"}
    exec(compile(BLOCKS[index], f"docs/styles.md block {index}", "exec"), namespace)
    return namespace["app"]


def closed_with(ws) -> int:
    with pytest.raises(ConnectionClosed) as info:
        ws.recv(timeout=5)
    return info.value.rcvd.code


def test_five_styles_and_the_starlette_habits():
    assert len(BLOCKS) == 6


def test_function_style(serve):
    server = serve(load(0))
    with connect(server.ws_url("/counter/laps?start=10")) as ws:
        assert ws.recv() == "counting for laps"
        ws.send("go")
        assert json.loads(ws.recv()) == {"name": "laps", "count": 11, "last": "go"}


def test_starlette_habits_in_the_function_style(serve):
    server = serve(load(1))
    with connect(server.ws_url("/wamp"), subprotocols=["wamp"]) as ws:
        assert ws.subprotocol == "wamp" and ws.response.headers["X-Session"] == "new"
        ws.send(b'{"q": 1}')
        reply = ws.recv(timeout=5)
        assert isinstance(reply, bytes) and json.loads(reply) == {"echo": {"q": 1}, "path": "/wamp"}


def test_event_style(serve):
    server = serve(load(2))
    with connect(server.ws_url("/shout")) as one, connect(server.ws_url("/shout")) as two:
        assert one.recv() == "stay calm" and two.recv() == "stay calm"
        one.send("hello")
        assert one.recv() == "HELLO" and two.recv() == "HELLO"
        two.send("bye")
        assert two.recv() == "closing" and closed_with(two) == 1000


def test_class_style(serve):
    app = load(3)
    server = serve(app)
    with pytest.raises(InvalidStatus) as info:
        connect(server.ws_url("/ws/tickets/7/"))
    assert info.value.response.status_code == 403
    with connect(server.ws_url("/ws/tickets/7?token=letmein")) as ws:
        hello = json.loads(ws.recv())
        assert hello["event"] == 7
        request = urllib.request.Request(server.url(f"/announce/{hello['you']}"), data=b"", method="POST")
        assert urllib.request.urlopen(request).read() == b'{"delivered":true}'
        assert ws.recv() == "doors open"
        ws.send("hi")
        assert ws.recv() == "got hi"
        ws.send("leave")
        with pytest.raises(ConnectionClosed) as closed:
            ws.recv(timeout=5)
        assert (closed.value.rcvd.code, closed.value.rcvd.reason) == (1000, "see you")


def test_generator_style(serve):
    app = load(4)
    server = serve(app)
    with pytest.raises(InvalidStatus) as info:
        connect(server.ws_url("/reverse"))
    assert info.value.response.status_code == 403
    with connect(server.ws_url("/reverse"), subprotocols=["json.v1"]) as ws:
        assert ws.subprotocol == "json.v1"
        ws.send("stressed")
        assert ws.recv() == "desserts"
        ws.send("stop")
        assert closed_with(ws) == 1000
    with connect(server.ws_url("/notes/kitchen")) as ws:
        ws.send("milk")
        ws.send("eggs")
    deadline = time.monotonic() + 5
    while len(app.state.notes) < 2 and time.monotonic() < deadline:
        time.sleep(0.02)
    assert app.state.notes == ["kitchen: milk", "kitchen: eggs"]


def test_microdot_style(serve):
    app = load(5)
    server = serve(app)
    with connect(server.ws_url("/typing/lobby?user=ann")) as ws:
        ws.send("hello")
        assert ws.recv() == "lobby: ann typed 5 chars"
    deadline = time.monotonic() + 5
    while app.state.gone == 0 and time.monotonic() < deadline:
        time.sleep(0.02)
    assert app.state.gone == 1


DEPLOY = pathlib.Path(__file__).resolve().parents[1] / "docs" / "deploy.md"


def test_deploy_composition_example_under_uvicorn_and_native(serve_native):
    from .conftest import ASGIServer

    block = re.findall(r"```python\n(.*?)```", DEPLOY.read_text(), re.S)[0]
    namespace = {"__name__": "deploy_doc"}
    exec(compile(block, "docs/deploy.md", "exec"), namespace)
    uvicorn = ASGIServer(namespace["asgi_app"], "uvicorn").start()
    try:
        with urllib.request.urlopen(uvicorn.url("/")) as response:
            assert response.read() == b"tether" and response.headers["x-served-by"] == "tether"
        with urllib.request.urlopen(uvicorn.url("/legacy/x")) as response:
            assert response.read() == b"legacy" and response.headers["x-served-by"] == "tether"
    finally:
        uvicorn.stop()
    native = serve_native(namespace["app"])  # the mount works on the native server too
    with urllib.request.urlopen(native.url("/legacy/x")) as response:
        assert response.read() == b"legacy"

"""What a newcomer trips on, pinned: handshake logs, FastAPI habits, route typos caught at
registration, sends after one's own close."""

from __future__ import annotations

import subprocess
import sys
import textwrap
import threading

import pytest
from websockets.exceptions import InvalidStatus
from websockets.sync.client import connect

from tether import App, InvalidState, WebSocketDisconnect
from tether.testing import TestClient

from .netutil import reserve_port, wait_until

LOGGED_APP = '''
from tether import App

app = App()

@app.websocket("/rooms/{room}")
async def room(websocket, room: str, page: int):
    await websocket.send_text(f"{room} {page}")
    async for message in websocket:
        pass
'''


def test_every_websocket_handshake_is_in_the_access_log(tmp_path):
    """101 at INFO with the query string, a refusal at WARNING with its status and reason,
    and the close with its code, side and duration: what a browser's 1006 never tells."""
    (tmp_path / "app.py").write_text(textwrap.dedent(LOGGED_APP))
    port = reserve_port()
    proc = subprocess.Popen([sys.executable, "-m", "tether", "run", "app:app", "--port", str(port),
                             "--log-level", "info"], cwd=tmp_path, stderr=subprocess.PIPE, text=True)
    lines: list[str] = []
    reader = threading.Thread(target=lambda: lines.extend(iter(proc.stderr.readline, "")), daemon=True)
    reader.start()
    try:
        wait_until(lambda: any("serving on" in line for line in lines), timeout=20, message="server start")
        with pytest.raises(InvalidStatus) as refused:
            connect(f"ws://127.0.0.1:{port}/rooms/lobby?page=abc", open_timeout=5)
        assert refused.value.response.status_code == 400
        with pytest.raises(InvalidStatus):
            connect(f"ws://127.0.0.1:{port}/nowhere", open_timeout=5)
        with connect(f"ws://127.0.0.1:{port}/rooms/lobby?page=2", open_timeout=5) as ws:
            assert ws.recv(timeout=5) == "lobby 2"
        wait_until(lambda: any("closed 1000" in line for line in lines), timeout=10, message="close line")
    finally:
        proc.terminate()
        proc.wait(15)
        reader.join(5)
    log = "".join(lines)
    assert 'WARNING: 127.0.0.1:' in log
    assert '"WebSocket /rooms/lobby?page=abc" refused 400: query parameter \'page\' must be int' in log
    assert '"WebSocket /nowhere" refused 404: no WebSocket route for /nowhere' in log
    assert 'INFO: 127.0.0.1:' in log and '"WebSocket /rooms/lobby?page=2" 101' in log
    assert '"WebSocket /rooms/lobby?page=2" closed 1000 by the client after ' in log


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


def test_a_route_with_an_unbalanced_brace_is_refused_at_registration():
    app = App()
    with pytest.raises(ValueError, match=r"route '/rooms/\{room': unbalanced \{"):
        @app.websocket("/rooms/{room")
        async def room(websocket, room: str): ...


@pytest.mark.parametrize("register", ["websocket", "get"])
def test_a_path_parameter_no_handler_parameter_receives_is_refused_at_registration(register):
    app = App()
    with pytest.raises(TypeError, match=r"route '/typo/\{rom\}': path parameter 'rom' .* requires 'room'"):
        if register == "websocket":
            @app.websocket("/typo/{rom}")
            async def ws_handler(websocket, room: str): ...
        else:
            @app.get("/typo/{rom}")
            def http_handler(room: str): ...


def test_handlers_that_read_path_params_themselves_still_register():
    app = App()

    @app.websocket("/rooms/{room}")
    async def room(websocket, page: int = 1):
        await websocket.accept()
        await websocket.send_text(websocket.path_params["room"])

    with TestClient(app) as client, client.websocket_connect("/rooms/blue") as ws:
        assert ws.receive_text() == "blue"


def test_sending_after_ones_own_close_is_a_clear_error():
    app = App()
    seen = []

    @app.websocket("/closer")
    async def closer(websocket):
        await websocket.close(4000, "done")
        try:
            await websocket.send_text("too late")
        except Exception as exc:  # noqa: BLE001 - the test records what the handler saw
            seen.append(exc)

    with TestClient(app) as client, client.websocket_connect("/closer") as ws:
        with pytest.raises(WebSocketDisconnect) as closed:
            ws.receive_text()
        assert closed.value.code == 4000
    wait_until(lambda: seen, timeout=5, message="the handler's send")
    assert isinstance(seen[0], InvalidState)
    assert "send after close()" in str(seen[0])


def test_a_send_after_the_client_left_is_still_a_disconnect():
    app = App()
    seen = []

    @app.websocket("/leaver")
    async def leaver(websocket):
        try:
            await websocket.receive_text()
        except WebSocketDisconnect:
            pass
        try:
            await websocket.send_text("anyone?")
        except Exception as exc:  # noqa: BLE001
            seen.append(exc)

    with TestClient(app) as client, client.websocket_connect("/leaver") as ws:
        ws.close(1000)
    wait_until(lambda: seen, timeout=5, message="the handler's send")
    assert type(seen[0]) is WebSocketDisconnect

"""Every example of the Robyn current-API WebSocket page (shared/seeds/001_165764d1abf32331.txt)
on tether, with only the import line changed (`from robyn import ...` becomes
`from tether import App as Robyn, WebSocketDisconnect`), driven by real clients.

Each example's body is kept as the page has it; where the page ends with `app.start()` the
test runs that file unchanged as a process, otherwise the `serve` fixture serves the app.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import time

import pytest
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import connect

from tests.netutil import reserve_port
from tether import App as Robyn
from tether import WebSocketDisconnect

SERVERS = ("native", "uvicorn", "hypercorn", "granian")  # every road in

def test_request_example_runs_as_a_script_with_app_start(tmp_path):
    script = tmp_path / "main.py"
    script.write_text(textwrap.dedent('''\
        from tether import App as Robyn

        app = Robyn(__file__)

        @app.websocket("/web_socket")
        async def handler(websocket):
            while True:
                msg = await websocket.receive_text()
                await websocket.send_text(f"Echo: {msg}")

        app.start()
    '''))
    port = reserve_port()
    env = dict(os.environ, TETHER_PORT=str(port))
    process = subprocess.Popen([sys.executable, str(script)], env=env, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 20
        while True:
            try:
                ws = connect(f"ws://127.0.0.1:{port}/web_socket")
                break
            except OSError:
                assert time.monotonic() < deadline, "the example did not start"
                time.sleep(0.05)
        with ws:
            ws.send("Gotham")
            assert ws.recv() == "Echo: Gotham"
    finally:
        process.terminate()
        assert process.wait(10) == 0


def test_receiving_messages_example(serve, capsys):
    app = Robyn(__file__)

    @app.websocket("/ws")
    async def handler(websocket):
        try:
            while True:
                msg = await websocket.receive_text()
                await websocket.send_text(f"Got: {msg}")
        except WebSocketDisconnect:
            print(f"Client {websocket.id} disconnected")

    server = serve(app)
    with connect(server.ws_url("/ws")) as ws:
        ws.send("signal")
        assert ws.recv() == "Got: signal"
    deadline = time.monotonic() + 5
    while "disconnected" not in (out := capsys.readouterr().out) and time.monotonic() < deadline:
        time.sleep(0.02)
    assert out.startswith("Client ") and out.strip().endswith(" disconnected")
    assert len(out.split()[1]) == 36  # the connection's UUID


def test_sending_messages_example(serve):
    app = Robyn(__file__)

    @app.websocket("/ws")
    async def handler(websocket):
        while True:
            msg = await websocket.receive_text()
            await websocket.send_text(f"Echo: {msg}")

    server = serve(app)
    with connect(server.ws_url("/ws")) as ws:
        for text in ("one", "two"):
            ws.send(text)
            assert ws.recv() == f"Echo: {text}"


def test_broadcasting_example(serve):
    app = Robyn(__file__)

    @app.websocket("/chat")
    async def handler(websocket):
        while True:
            msg = await websocket.receive_text()
            # Send to all connected clients
            await websocket.broadcast(f"User {websocket.id}: {msg}")
            # Also send a confirmation to this client only
            await websocket.send_text("Your message was sent")

    server = serve(app)
    with connect(server.ws_url("/chat")) as batman, connect(server.ws_url("/chat")) as robin:
        time.sleep(0.05)
        batman.send("to the cave")
        first = batman.recv()
        assert first.startswith("User ") and first.endswith(": to the cave")
        assert batman.recv() == "Your message was sent"
        assert robin.recv() == first
        with pytest.raises(TimeoutError):
            robin.recv(timeout=0.2)  # the confirmation went to the sender only


def test_query_params_example(serve):
    app = Robyn(__file__)

    @app.websocket("/ws")
    async def handler(websocket):
        name = websocket.query_params.get("name")
        role = websocket.query_params.get("role")
        if name == "gordon" and role == "commissioner":
            await websocket.broadcast("Gordon authorized!")
        while True:
            msg = await websocket.receive_text()
            await websocket.send_text(f"Hello {name}: {msg}")

    server = serve(app)
    with connect(server.ws_url("/ws?name=alfred")) as alfred:
        with connect(server.ws_url("/ws?name=gordon&role=commissioner")) as gordon:
            assert gordon.recv() == "Gordon authorized!"
            assert alfred.recv() == "Gordon authorized!"
            gordon.send("hi")
            assert gordon.recv() == "Hello gordon: hi"
        alfred.send("tea?")
        assert alfred.recv() == "Hello alfred: tea?"


def test_easy_access_query_params_example(serve):
    app = Robyn(__file__)

    @app.websocket("/ws")
    async def handler(websocket, room: str = "default", page: int = 1):
        try:
            while True:
                msg = await websocket.receive_text()
                await websocket.send_text(
                    f"room={room} page={page} msg={msg}"
                )
        except WebSocketDisconnect:
            pass

    server = serve(app)
    with connect(server.ws_url("/ws?room=batcave&page=2")) as ws:
        ws.send("hi")
        assert ws.recv() == "room=batcave page=2 msg=hi"
    with connect(server.ws_url("/ws")) as ws:
        ws.send("hi")
        assert ws.recv() == "room=default page=1 msg=hi"


def test_closing_connections_example(serve):
    app = Robyn(__file__)

    @app.websocket("/ws")
    async def handler(websocket):
        while True:
            msg = await websocket.receive_text()
            if msg == "quit":
                await websocket.close()
                break
            await websocket.send_text(f"Got: {msg}")

    server = serve(app)
    with connect(server.ws_url("/ws")) as ws:
        ws.send("hello")
        assert ws.recv() == "Got: hello"
        ws.send("quit")
        with pytest.raises(ConnectionClosed) as info:
            ws.recv()
        assert info.value.rcvd.code == 1000
    time.sleep(0.1)
    assert len(app.hub) == 0  # removed from the registry


def test_connect_and_close_callbacks_example(serve):
    app = Robyn(__file__)

    @app.websocket("/chat")
    async def chat(websocket):
        while True:
            msg = await websocket.receive_text()
            await websocket.broadcast(msg)

    @chat.on_connect
    def on_connect(websocket):
        return f"Welcome, {websocket.id}!"

    @chat.on_close
    def on_close(websocket):
        return "Goodbye!"

    server = serve(app)
    with connect(server.ws_url("/chat")) as ws:
        welcome = ws.recv()
        assert welcome.startswith("Welcome, ") and welcome.endswith("!")
        connection_id = welcome[len("Welcome, "):-1]
        ws.send("hello league")
        assert ws.recv() == "hello league"
        server.call(app.hub.close(connection_id))  # the server ends it: on_close's value comes last
        assert ws.recv() == "Goodbye!"
        with pytest.raises(ConnectionClosed):
            ws.recv()

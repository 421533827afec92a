"""Every example of Microdot's WebSocket page (shared/seeds/004_a6190ea2cd9595ed.txt) on
tether, with only the import line changed (`from microdot.websocket import with_websocket`
becomes `from tether import with_websocket`), driven by real clients.
"""

from __future__ import annotations

import asyncio
import threading

import pytest
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import connect

from tether import App, with_websocket

SERVERS = ("native", "uvicorn", "hypercorn", "granian")  # every road in

def test_echo(serve):
    app = App()

    @app.route('/echo')
    @with_websocket
    async def echo(request, ws):
        while True:
            message = await ws.receive()
            await ws.send(message)

    server = serve(app)
    with connect(server.ws_url("/echo")) as ws:
        for message in ("hello", b"\x00\x01"):
            ws.send(message)
            assert ws.recv() == message


def test_returning_ends_the_connection(serve):
    app = App()

    @app.route('/echo')
    @with_websocket
    async def echo(request, ws):
        while True:
            message = await ws.receive()
            if message == 'exit':
                break
            await ws.send(message)
        await ws.send('goodbye')

    server = serve(app)
    with connect(server.ws_url("/echo")) as ws:
        ws.send("one")
        assert ws.recv() == "one"
        ws.send("exit")
        assert ws.recv() == "goodbye"
        with pytest.raises(ConnectionClosed) as info:
            ws.recv()
        assert info.value.rcvd.code == 1000


def test_client_disconnect_cancels_the_route_function(serve, capsys):
    done = threading.Event()
    app = App()

    @app.route('/echo')
    @with_websocket
    async def echo(request, ws):
        try:
            while True:
                message = await ws.receive()
                await ws.send(message)
        except asyncio.CancelledError:
            print('Client disconnected!')
        finally:
            done.set()

    server = serve(app)
    with connect(server.ws_url("/echo")) as ws:
        ws.send("x")
        assert ws.recv() == "x"
    assert done.wait(5)
    assert capsys.readouterr().out == "Client disconnected!\n"


def test_cancellation_reaches_a_function_awaiting_something_else(serve):
    cancelled = threading.Event()
    app = App()

    @app.route('/busy')
    @with_websocket
    async def busy(request, ws):
        await ws.send("working")
        try:
            await asyncio.sleep(3600)
        except asyncio.CancelledError:
            cancelled.set()
            raise

    server = serve(app)
    with connect(server.ws_url("/busy")) as ws:
        assert ws.recv() == "working"
    assert cancelled.wait(5)


def test_request_and_path_parameters(serve):
    app = App()

    @app.route('/room/<name>')
    @with_websocket
    async def room(request, ws, name):
        await ws.send(f"{request.path} {name} {request.args.get('who')} {request.headers.get('x-h')}")

    server = serve(app)
    with connect(server.ws_url("/room/cave?who=alfred"), additional_headers={"X-H": "v"}) as ws:
        assert ws.recv() == "/room/cave cave alfred v"


def test_plain_http_to_the_route_is_told_to_upgrade(serve):
    import urllib.error
    import urllib.request

    app = App()

    @app.route('/echo')
    @with_websocket
    async def echo(request, ws):
        pass

    server = serve(app)
    with pytest.raises(urllib.error.HTTPError) as info:
        urllib.request.urlopen(server.url("/echo"))
    assert info.value.code == 426 and info.value.headers["Upgrade"] == "websocket"


def test_a_route_function_without_request_and_ws_is_refused_at_registration():
    with pytest.raises(TypeError, match="must accept 2 positional parameter"):
        with_websocket(lambda request: None)

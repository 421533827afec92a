"""The server without its accelerators: the stdlib event loop, and pure-Python unmasking."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import textwrap
import threading
import time

from websockets.sync.client import connect

from tether import App
from tether.server.serve import Server

from .netutil import reserve_port


def test_the_server_runs_on_the_standard_asyncio_loop():
    app = App()

    @app.websocket("/echo")
    async def echo(websocket):
        async for message in websocket:
            await websocket.send(message)

    loop = asyncio.new_event_loop()  # not uvloop
    server = Server(app, "127.0.0.1", 0)
    started = threading.Event()

    def run():
        asyncio.set_event_loop(loop)
        loop.run_until_complete(server.start())
        started.set()
        loop.run_forever()

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    assert started.wait(10)
    try:
        assert type(loop).__module__.startswith("asyncio")
        with connect(f"ws://127.0.0.1:{server.port}/echo") as ws:
            payload = os.urandom(100_000)
            ws.send(payload)
            assert ws.recv() == payload
    finally:
        asyncio.run_coroutine_threadsafe(server.shutdown(), loop).result(30)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(10)
        loop.close()


def test_pure_python_unmasking_serves_large_binary_messages(tmp_path):
    (tmp_path / "echoapp.py").write_text(textwrap.dedent('''
        from tether import App
        from tether.protocol import masking

        app = App()

        @app.websocket("/echo")
        async def echo(websocket):
            await websocket.send_text(f"accelerated={masking.ACCELERATED}")
            async for message in websocket:
                await websocket.send(message)
    '''))
    port = reserve_port()
    env = dict(os.environ, TETHER_PURE_PYTHON="1")
    process = subprocess.Popen([sys.executable, "-m", "tether", "run", "echoapp:app", "--port", str(port),
                                "--log-level", "warning"], cwd=tmp_path, env=env)
    try:
        deadline = time.monotonic() + 15
        while True:
            try:
                ws = connect(f"ws://127.0.0.1:{port}/echo", max_size=None)
                break
            except OSError:
                assert time.monotonic() < deadline
                time.sleep(0.05)
        with ws:
            assert ws.recv() == "accelerated=False"
            for size in (1, 7, 16384, 300_001):
                payload = os.urandom(size)
                ws.send(payload)
                assert ws.recv() == payload
    finally:
        process.terminate()
        process.wait(15)

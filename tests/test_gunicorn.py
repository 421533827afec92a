"""docs/deploy.md's gunicorn line: a tether App under gunicorn's uvicorn workers, for real."""

from __future__ import annotations

import signal
import subprocess
import sys
import textwrap
import time
import urllib.request

from websockets.sync.client import connect

from .netutil import reserve_port


def test_gunicorn_with_uvicorn_workers_serves_http_and_websocket(tmp_path):
    (tmp_path / "main.py").write_text(textwrap.dedent('''
        from tether import App

        app = App()

        @app.get("/")
        def index():
            return "under gunicorn"

        @app.websocket("/echo")
        async def echo(websocket):
            async for message in websocket:
                await websocket.send(message)
    '''))
    port = reserve_port()  # gunicorn binds with SO_REUSEADDR
    gunicorn = [sys.executable, "-m", "gunicorn", "-k", "uvicorn_worker.UvicornWorker", "-w", "2",
                "-b", f"127.0.0.1:{port}", "--log-level", "warning", "main:app"]
    process = subprocess.Popen(gunicorn, cwd=tmp_path)
    try:
        deadline = time.monotonic() + 20
        while True:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=2) as response:
                    assert response.read() == b"under gunicorn"
                break
            except OSError:
                assert time.monotonic() < deadline, "gunicorn did not start"
                time.sleep(0.1)
        for _ in range(4):  # whichever worker takes the connection
            with connect(f"ws://127.0.0.1:{port}/echo") as ws:
                ws.send("hello")
                assert ws.recv() == "hello"
    finally:
        process.send_signal(signal.SIGTERM)
        assert process.wait(30) == 0

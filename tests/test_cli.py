"""The `tether` command and graceful shutdown, as real processes."""

from __future__ import annotations

import signal
import socket
import subprocess
import sys
import textwrap
import time

import pytest
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import connect

APP = '''
import asyncio
from tether import App

app = App()

@app.get("/")
def index():
    return "VERSION"

@app.websocket("/ws")
async def ws(websocket):
    await websocket.send_text("hello")
    async for message in websocket:
        await websocket.send_text(message)

@ws.on_close
def bye(websocket):
    return "server going down"

@app.websocket("/stubborn")
async def stubborn(websocket):
    await websocket.send_text("sleeping")
    await asyncio.sleep(3600)
'''


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_http(port: int, timeout: float = 15) -> bytes:
    deadline = time.monotonic() + timeout
    while True:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=2) as sock:
                sock.sendall(b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
                data = b""
                while chunk := sock.recv(4096):
                    data += chunk
                return data
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.05)


@pytest.fixture
def project(tmp_path):
    (tmp_path / "myapp.py").write_text(APP.replace("VERSION", "v1"))
    return tmp_path


def start(project, *args, port=None):
    port = port or free_port()
    process = subprocess.Popen(
        [sys.executable, "-m", "tether", "run", "myapp:app", "--port", str(port), *args],
        cwd=project, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    return process, port


def test_run_serves_the_app_from_the_current_directory_and_logs(project):
    process, port = start(project, "--shutdown-timeout", "1")
    try:
        assert wait_http(port).endswith(b"v1")
    finally:
        process.send_signal(signal.SIGINT)
        output = process.communicate(timeout=15)[0]
    assert process.returncode == 0
    assert f"tether serving on http://127.0.0.1:{port}" in output
    assert '"GET / HTTP/1.1" 200' in output


def test_sigterm_sends_1001_after_on_close_and_exits_0(project):
    process, port = start(project, "--shutdown-timeout", "1")
    try:
        wait_http(port)
        with connect(f"ws://127.0.0.1:{port}/ws") as ws, connect(f"ws://127.0.0.1:{port}/stubborn") as stubborn:
            assert ws.recv() == "hello" and stubborn.recv() == "sleeping"
            started = time.monotonic()
            process.send_signal(signal.SIGTERM)
            assert ws.recv(timeout=5) == "server going down"
            with pytest.raises(ConnectionClosed) as info:
                ws.recv(timeout=5)
            assert info.value.rcvd.code == 1001
            with pytest.raises(ConnectionClosed) as info:
                stubborn.recv(timeout=5)
            assert info.value.rcvd.code == 1001
        assert process.wait(timeout=15) == 0
        assert time.monotonic() - started < 10  # the stubborn handler was cancelled after 1 s
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()


def test_routes_lists_http_and_websocket_routes(project):
    output = subprocess.run([sys.executable, "-m", "tether", "routes", "myapp:app"], cwd=project,
                            capture_output=True, text=True, check=True).stdout
    assert "GET" in output and " / " in output and "WS" in output and "/ws" in output


@pytest.mark.parametrize("target, message", [
    ("nosuchmodule:app", "could not import module 'nosuchmodule'"),
    ("myapp:missing", "has no attribute 'missing'"),
    ("myapp:asyncio", "not a tether App"),
])
def test_a_bad_target_is_a_clear_error(project, target, message):
    result = subprocess.run([sys.executable, "-m", "tether", "routes", target], cwd=project,
                            capture_output=True, text=True)
    assert result.returncode != 0 and message in result.stderr


def test_settings_flags_reach_the_app(project):
    (project / "limits.py").write_text(textwrap.dedent('''
        from tether import App
        app = App()

        @app.get("/")
        def limits():
            return {"max": app.settings.max_message_size, "origins": app.settings.allowed_origins}
    '''))
    port = free_port()
    process = subprocess.Popen([sys.executable, "-m", "tether", "run", "limits:app", "--port", str(port),
                                "--max-message-size", "1234", "--allowed-origins", "https://a,https://b"],
                               cwd=project, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        assert wait_http(port).endswith(b'{"max":1234,"origins":["https://a","https://b"]}')
    finally:
        process.terminate()
        process.wait(15)


def test_reload_restarts_on_a_code_change(project):
    process, port = start(project, "--reload")
    try:
        assert wait_http(port).endswith(b"v1")
        time.sleep(0.6)
        (project / "myapp.py").write_text(APP.replace("VERSION", "v2"))
        deadline = time.monotonic() + 20
        while True:
            try:
                if wait_http(port, timeout=2).endswith(b"v2"):
                    break
            except OSError:
                pass
            assert time.monotonic() < deadline, "the server did not reload"
            time.sleep(0.2)
    finally:
        process.send_signal(signal.SIGINT)
        process.communicate(timeout=20)


def test_workers_share_the_port(project):
    process, port = start(project, "--workers", "2")
    try:
        assert wait_http(port).endswith(b"v1")
        time.sleep(0.5)
        output_pids = subprocess.run(["pgrep", "-P", str(process.pid)], capture_output=True, text=True).stdout.split()
        assert len(output_pids) == 2
    finally:
        process.send_signal(signal.SIGTERM)
        process.communicate(timeout=20)
    assert process.returncode == 0

"""The `tether` command (`tether.cli`) as real processes: `tether run` (what it serves and
logs, HTTP requests and WebSocket handshakes alike; its flags, --reload, --workers) and its
graceful shutdown, `tether routes`, `--version` and the defaults `--help` shows."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import textwrap
import threading
import time

import pytest
from websockets.exceptions import ConnectionClosed, InvalidStatus
from websockets.sync.client import connect

from .netutil import reserve_port, wait_until

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


def children(pid: int) -> list[int]:
    """The pids of `pid`'s child processes (pgrep -P, without needing procps installed)."""
    if shutil.which("pgrep"):
        return [int(p) for p in subprocess.run(["pgrep", "-P", str(pid)], capture_output=True,
                                               text=True).stdout.split()]
    found = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat") as file:
                    # "pid (comm) state ppid ...": comm may hold spaces, so split after ")"
                    if int(file.read().rpartition(")")[2].split()[1]) == pid:
                        found.append(int(entry))
            except (OSError, ValueError, IndexError):
                pass
    return found


@pytest.fixture
def project(tmp_path):
    (tmp_path / "myapp.py").write_text(APP.replace("VERSION", "v1"))
    return tmp_path


def start(project, *args, port=None):
    port = port or reserve_port()
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
    (tmp_path / "myapp.py").write_text(textwrap.dedent(LOGGED_APP))
    proc, port = start(tmp_path, "--log-level", "info")
    lines: list[str] = []
    reader = threading.Thread(target=lambda: lines.extend(iter(proc.stdout.readline, "")), daemon=True)
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
    port = reserve_port()
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
        source = project / "myapp.py"
        written = source.stat().st_mtime_ns
        source.write_text(APP.replace("VERSION", "v2"))
        # The reloader, and Python's bytecode cache, see a change by its mtime (the cache in
        # whole seconds): a rewrite of the same size within the same second as the first
        # write would go unnoticed, or be served from the stale .pyc. Move the mtime past
        # any file system's granularity, as an edit made a little later would.
        later = max(source.stat().st_mtime_ns, written + 2_000_000_000)
        os.utime(source, ns=(later, later))
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


def rewrite(source, text: str) -> None:
    """Write `text` to `source` with an mtime 2 s past the last one (see the test above)."""
    written = source.stat().st_mtime_ns
    source.write_text(text)
    later = max(source.stat().st_mtime_ns, written + 2_000_000_000)
    os.utime(source, ns=(later, later))


def test_reload_survives_an_edit_that_does_not_import(project):
    port = reserve_port()
    log_path = project / "tether.log"
    with open(log_path, "w") as log:
        process = subprocess.Popen([sys.executable, "-m", "tether", "run", "myapp:app", "--port", str(port),
                                    "--reload", "--shutdown-timeout", "1"],
                                   cwd=project, stdout=log, stderr=subprocess.STDOUT)
    try:
        assert wait_http(port).endswith(b"v1")
        source = project / "myapp.py"
        rewrite(source, APP.replace("VERSION", "v2").replace("def index():", "def index(:"))
        log = wait_until(lambda: "waiting for a change" in log_path.read_text() and log_path.read_text(),
                         timeout=20, interval=0.05, message="the reloader waiting for a fix")
        assert "Traceback (most recent call last)" in log and "SyntaxError" in log
        assert "could not import module 'myapp': SyntaxError" in log
        assert process.poll() is None
        rewrite(source, APP.replace("VERSION", "v3"))

        def answers_v3() -> bool:
            try:
                return wait_http(port, timeout=2).endswith(b"v3")
            except OSError:
                return False

        wait_until(answers_v3, timeout=20, interval=0.1, message="the fixed code answering")
    finally:
        process.send_signal(signal.SIGINT)
        process.wait(timeout=30)
    assert process.returncode == 0


def test_workers_share_the_port(project):
    process, port = start(project, "--workers", "2")
    try:
        assert wait_http(port).endswith(b"v1")

        def workers() -> list[int]:  # both are forked at start-up: wait for them, not a fixed time
            pids = children(process.pid)
            return pids if len(pids) >= 2 else []

        assert len(wait_until(workers, message="two worker processes")) == 2
    finally:
        process.send_signal(signal.SIGTERM)
        process.communicate(timeout=20)
    assert process.returncode == 0


def test_version_and_defaults_are_shown():
    version = subprocess.run([sys.executable, "-m", "tether", "--version"], capture_output=True, text=True,
                             check=True).stdout
    assert version.strip() == "tether 0.1.0"
    helptext = subprocess.run([sys.executable, "-m", "tether", "run", "--help"], capture_output=True, text=True,
                              check=True).stdout
    for shown in ("(default: 127.0.0.1)", "(default: 8080)", "(default: 1)", "(default: info)",
                  "(default: 1048576)", "(default: 20.0)"):
        assert shown in " ".join(helptext.split()), shown


def test_routes_lists_each_websocket_routes_style_and_the_mounts(tmp_path):
    (tmp_path / "styled.py").write_text(textwrap.dedent('''
        from tether import App, GenericWebsocket, WebSocket, websocket, with_websocket

        app = App()

        @app.websocket("/fn")
        async def fn(ws): ...

        events = WebSocket(app, "/events")

        class Room(GenericWebsocket):
            pass

        app.websocket("/class")(Room)

        @websocket
        async def gen(scope, receiver):
            yield "x"

        app.websocket("/gen")(gen)

        @app.route("/md")
        @with_websocket
        async def md(request, ws): ...

        async def legacy(scope, receive, send): ...

        app.mount("/legacy", legacy)
    '''))
    output = subprocess.run([sys.executable, "-m", "tether", "routes", "styled:app"], cwd=tmp_path,
                            capture_output=True, text=True, check=True).stdout
    rows = {line.split()[-1 if "MOUNT" not in line else 2]: line.split() for line in output.splitlines()}
    assert rows["fn"][:3] == ["WS", "function", "/fn"]
    assert rows["Room"][:3] == ["WS", "class", "/class"]
    assert rows["gen"][:3] == ["WS", "generator", "/gen"]
    assert rows["md"][:3] == ["WS", "microdot", "/md"]
    assert any(line.split()[:3] == ["WS", "events", "/events"] for line in output.splitlines())
    assert any(line.split()[:3] == ["MOUNT", "/legacy/...", "legacy"] for line in output.splitlines()), output

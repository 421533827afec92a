"""`tether run --workers N`: the master reports failures and supervises its workers, as real
processes (and the single-process mode fails as clearly)."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from .netutil import reserve_port, wait_until
from .test_cli import children, wait_http

PID_APP = '''
import os
from tether import App

app = App()

@app.get("/")
def index():
    return str(os.getpid())

@app.get("/crash")
def crash():
    os._exit(3)
'''

FAILING_STARTUP_APP = '''
from tether import App

app = App()

@app.on_startup
def connect_to_the_database():
    raise RuntimeError("database unreachable")
'''


class Running:
    """A `tether run app:app` process whose output (stdout and stderr) goes to a file."""

    def __init__(self, folder: Path, source: str, *args: str) -> None:
        (folder / "app.py").write_text(textwrap.dedent(source))
        self.port = reserve_port()
        self.log_path = folder / "tether.log"
        with open(self.log_path, "w") as log:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "tether", "run", "app:app", "--port", str(self.port),
                 "--shutdown-timeout", "1", *args],
                cwd=folder, stdout=log, stderr=subprocess.STDOUT)

    def log(self) -> str:
        return self.log_path.read_text()

    def wait_log(self, text: str, timeout: float = 15) -> str:
        return wait_until(lambda: text in self.log() and self.log(), timeout=timeout,
                          interval=0.05, message=f"{text!r} in the log")

    def workers(self, count: int, without: int | None = None) -> list[int]:
        """The pids of the master's `count` workers, once it has that many (none of them `without`)."""
        def ready() -> list[int]:
            pids = children(self.process.pid)
            return pids if len(pids) == count and without not in pids else []

        return wait_until(ready, timeout=15, interval=0.05, message=f"{count} worker processes")

    def stop(self, sig: int = signal.SIGTERM) -> int:
        self.process.send_signal(sig)
        return self.process.wait(timeout=30)


@pytest.fixture
def running() -> Iterator[list[Running]]:
    started: list[Running] = []
    yield started
    for server in started:
        if server.process.poll() is None:
            for pid in children(server.process.pid):
                try:
                    os.kill(pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
            server.process.kill()
            server.process.wait()


def get(port: int, path: str = "/", timeout: float = 2) -> bytes:
    """The body of one GET on a new connection (so SO_REUSEPORT may pick any worker)."""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
        sock.sendall(f"GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n".encode())
        data = b""
        while chunk := sock.recv(4096):
            data += chunk
    return data.partition(b"\r\n\r\n")[2]


def run_to_exit(folder: Path, source: str, *args: str) -> subprocess.CompletedProcess[str]:
    (folder / "app.py").write_text(textwrap.dedent(source))
    return subprocess.run([sys.executable, "-m", "tether", "run", "app:app", *args], cwd=folder,
                          capture_output=True, text=True, timeout=30)


@pytest.mark.parametrize("workers", ["1", "2"])
def test_a_port_in_use_is_an_error_not_a_silent_exit_0(tmp_path, workers):
    with socket.socket() as holder:  # listening, without SO_REUSEPORT: nobody else may bind
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        port = holder.getsockname()[1]
        result = run_to_exit(tmp_path, PID_APP, "--port", str(port), "--workers", workers)
    assert result.returncode != 0
    assert "Traceback (most recent call last)" in result.stderr
    # The one-line cause, from the process that gives up (the master, with workers).
    cause = "tether: could not start serving on" if workers == "1" else "failed during startup"
    assert any(cause in line and "address already in use" in line.lower()
               for line in result.stderr.splitlines()), result.stderr


@pytest.mark.parametrize("workers", ["1", "2"])
def test_a_failing_startup_hook_is_reported_with_its_traceback(tmp_path, workers):
    result = run_to_exit(tmp_path, FAILING_STARTUP_APP, "--port", str(reserve_port()), "--workers", workers)
    assert result.returncode != 0
    assert "Traceback (most recent call last)" in result.stderr
    assert "in connect_to_the_database" in result.stderr
    cause = "tether: could not start serving on" if workers == "1" else "failed during startup"
    assert any(cause in line and "RuntimeError: database unreachable" in line
               for line in result.stderr.splitlines()), result.stderr


def test_a_killed_worker_is_logged_and_replaced(tmp_path, running):
    server = Running(tmp_path, PID_APP, "--workers", "2")
    running.append(server)
    first = server.workers(2)
    for pid in first:  # each one serving (a process that exists may still be starting)
        server.wait_log(f"(pid {pid};")
    killed = first[0]
    seen: set[int] = set()
    wait_until(lambda: seen.add(int(get(server.port))) or seen == set(first), interval=0.02,
               message="both workers answering")
    os.kill(killed, signal.SIGKILL)
    server.wait_log(f"tether worker {killed} killed by signal SIGKILL; starting a new worker")
    (new,) = set(server.workers(2, without=killed)) - set(first)
    server.wait_log(f"(pid {new};")
    # The port answers all along, and the new worker serves on it too.
    wait_until(lambda: int(get(server.port)) == new, timeout=15, interval=0.02,
               message="an answer from the new worker")
    assert server.stop(signal.SIGTERM) == 0
    log = server.log()
    assert f"tether serving on http://127.0.0.1:{server.port} (pid {new};" in log
    assert "ERROR" not in log


def test_sigint_stops_every_worker_gracefully_and_exits_0(tmp_path, running):
    server = Running(tmp_path, PID_APP, "--workers", "3")
    running.append(server)
    workers = server.workers(3)
    for pid in workers:  # each one serving (a process that exists may still be starting)
        server.wait_log(f"(pid {pid};")
    wait_http(server.port)
    assert server.stop(signal.SIGINT) == 0
    log = server.log()
    for pid in workers:
        assert f"tether shutting down (pid {pid})" in log
    # the one warning: several workers without a backplane do not share a hub
    warnings = [line for line in log.splitlines() if line.startswith("WARNING")]
    assert len(warnings) == 1 and "--workers 3 without a backplane: each worker has its own hub" in warnings[0]
    assert "--backplane redis://" in warnings[0]
    assert "ERROR" not in log


def test_a_crash_loop_stops_the_master_with_an_error(tmp_path, running):
    server = Running(tmp_path, PID_APP, "--workers", "2")
    running.append(server)
    server.workers(2)
    deadline = time.monotonic() + 30
    while server.process.poll() is None:  # each /crash kills the worker that answers it
        assert time.monotonic() < deadline, "the master did not stop"
        try:
            get(server.port, "/crash", timeout=1)
        except OSError:
            pass
        time.sleep(0.02)
    assert server.process.wait(timeout=30) != 0
    log = server.log()
    assert "exited with status 3; starting a new worker" in log
    assert "ERROR: tether: crash loop: 6 worker deaths within 30 s" in log
    with pytest.raises(ConnectionRefusedError):  # the master waited for every worker to end
        socket.create_connection(("127.0.0.1", server.port), timeout=2).close()

"""Applications served by `python -m tether run MODULE:app` in a process of their own, on a
fixed 127.0.0.1 port, for the tests that crash, stop, pause or restart a server and start it
again on the same port (which a server in the test's own thread, conftest's `serve`, cannot).

- `AppProcess(cwd, "module:app", port=None, env=None, args=(), log=None, ready="port")`: the
  module is imported from `cwd`; `port` is reserved with `netutil.reserve_port()` when not
  given, and kept across restarts; `env` is added to `os.environ`; `args` come after the
  command's own `--port P --log-level warning`. The process's stdout and stderr are appended
  to `log` (default `cwd/<module>-<port>.log`), across restarts; `log()` reads it.
- `start()` starts the process and waits, 20 s at most, until it is ready: with
  `ready="port"` until the port accepts a TCP connection, with `ready="/path"` until a GET of
  that path answers 200, with `ready=None` not at all (the caller waits its own way, e.g. by
  retrying a WebSocket connection). A process that exits meanwhile fails the wait at once,
  with the end of its log. Returns the AppProcess.
- `url(path)` / `ws_url(path)`: `http://127.0.0.1:P/path` / `ws://127.0.0.1:P/path`.
- `kill(signum=SIGKILL)`: SIGCONT first (a process stopped with SIGSTOP dies of SIGKILL, but
  would not act on SIGTERM until continued), then `signum`, then waits for the process
  (reaped; 20 s at most). SIGKILL is a crash; SIGTERM a graceful shutdown. Does nothing if the
  process is not running.
- `stop()`: `kill(SIGTERM)`, a graceful shutdown (the server closes WebSockets with 1001).
- `signal(signum)`: sends a signal and returns at once (SIGSTOP / SIGCONT: pause, resume).
- `running`: started and not exited.

Fixture `app_processes`: `app_processes(cwd, target, kind=AppProcess, **kwargs)` makes one
more `kind(cwd, target, **kwargs)` (an AppProcess subclass, for a test file's extras), starts
it and returns it; after the test every process it started is killed (SIGKILL, after SIGCONT:
a test that failed while one was stopped leaves nothing behind). A test module imports it by
its function's name, as with redisutil's fixtures:

    from .processes import AppProcess, app_processes_fixture  # noqa: F401
"""

from __future__ import annotations

import os
import pathlib
import socket
import subprocess
import sys
import urllib.request
from collections.abc import Callable, Iterator, Mapping, Sequence
from signal import SIGCONT, SIGKILL, SIGTERM
from typing import Any, TypeVar

import pytest

from .netutil import reserve_port, wait_until

P = TypeVar("P", bound="AppProcess")

START_TIMEOUT = 20  # seconds for a process to be ready
REAP_TIMEOUT = 20  # seconds for a signalled process to exit
LOG_TAIL = 3000  # characters of the log shown when a process exited before it was ready


class AppProcess:
    """`python -m tether run TARGET` in `cwd`, on a fixed port, that can be killed and started again."""

    def __init__(self, cwd: pathlib.Path, target: str, port: int | None = None, env: Mapping[str, str] | None = None,
                 args: Sequence[str] = (), log: pathlib.Path | None = None, ready: str | None = "port") -> None:
        assert ready is None or ready == "port" or ready.startswith("/"), ready
        self.cwd = pathlib.Path(cwd)
        self.target = target
        self.port = port or reserve_port()
        self.env = dict(env or {})
        self.args = list(args)
        self.log_path = log or self.cwd / f"{target.partition(':')[0]}-{self.port}.log"
        self.ready = ready
        self.process: subprocess.Popen[bytes] | None = None

    def url(self, path: str = "/") -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    def ws_url(self, path: str = "/") -> str:
        return f"ws://127.0.0.1:{self.port}{path}"

    @property
    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def log(self) -> str:
        """Everything the process (and those before it on this AppProcess) wrote."""
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def _is_ready(self) -> bool:
        assert self.running, (f"{self.target} on :{self.port} exited ({self.process.returncode}) before it was "
                              f"ready:\n{self.log()[-LOG_TAIL:]}")
        try:
            if self.ready == "port":
                with socket.create_connection(("127.0.0.1", self.port), timeout=2):
                    return True
            with urllib.request.urlopen(self.url(self.ready), timeout=2) as response:
                return response.status == 200
        except OSError:  # refused, reset, timed out, or an HTTP error status (URLError)
            return False

    def start(self: P) -> P:
        assert not self.running, f"{self.target} on :{self.port} is already running"
        command = [sys.executable, "-m", "tether", "run", self.target, "--port", str(self.port),
                   "--log-level", "warning", *self.args]
        with self.log_path.open("ab") as log:
            self.process = subprocess.Popen(command, cwd=self.cwd, env={**os.environ, **self.env},
                                            stdout=log, stderr=subprocess.STDOUT)
        if self.ready is not None:
            what = "accept connections" if self.ready == "port" else f"answer GET {self.ready}"
            wait_until(self._is_ready, timeout=START_TIMEOUT, interval=0.05,
                       message=f"{self.target} on :{self.port} to {what}")
        return self

    def signal(self, signum: int) -> None:
        assert self.process is not None, "never started"
        self.process.send_signal(signum)

    def kill(self, signum: int = SIGKILL) -> None:
        """`signum` (SIGKILL: a crash; SIGTERM: a graceful shutdown) after SIGCONT; then reap."""
        if self.running:
            self.process.send_signal(SIGCONT)
            self.process.send_signal(signum)
            self.process.wait(REAP_TIMEOUT)

    def stop(self) -> None:
        """A graceful shutdown (SIGTERM): the server closes its connections with 1001."""
        self.kill(SIGTERM)


@pytest.fixture(name="app_processes")
def app_processes_fixture() -> Iterator[Callable[..., Any]]:
    """`app_processes(cwd, target, kind=AppProcess, **kwargs)` starts one more process; all
    are killed after the test."""
    started: list[AppProcess] = []

    def start(cwd: pathlib.Path, target: str, kind: type[P] = AppProcess, **kwargs: Any) -> P:
        process = kind(cwd, target, **kwargs)
        started.append(process)
        return process.start()

    try:
        yield start
    finally:
        failures = []
        for process in started:  # each one, even if one before would not die
            try:
                process.kill()
            except subprocess.TimeoutExpired as error:
                failures.append(error)
        if failures:
            raise failures[0]

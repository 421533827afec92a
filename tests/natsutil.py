"""A real NATS server for tests: Debian's `nats-server -js`, one process per test or module,
never a mock.

`NatsServer` starts `nats-server -js` (with `user=`/`password=`: `--user`/`--pass`; `url`
stays without them) on a free 127.0.0.1 port (`netutil.reserve_port()`),
its JetStream store in a fresh temp dir (`-sd`) (`jetstream=False`: without -js, ready when it
greets), and waits until JetStream answers a
`$JS.API.INFO` request (the server is listening before its JetStream is ready, more so after
a restart that recovers a store). It then offers what tests of the NATS backplane need to
break it on purpose:

- `url` (`nats://127.0.0.1:P`, no query string), `store` (the JetStream store dir), `running`.
- `pause()` (SIGSTOP: a hung server) and `resume()` (SIGCONT).
- `stop()` (SIGTERM, then wait), `kill()` (SIGKILL: a crash), `start()` again (same port, same
  store), `restart()` (kill, then start: the store is kept, as a server restarted on the same
  disk), `restart(lose_store=True)` (kill, remove the store, start: a server replaced by one
  that has none), `close()` (stop and remove its dir; idempotent).
- `request(subject, payload)`: one request on a connection of the helper's own (raw NATS
  protocol, so the helper needs no nats-py), the reply's payload as bytes.

Fixtures: `nats_server` (a fresh server per test) and `nats_module_server` (one per module, for
the tests that break nothing). A module imports them by their functions' names, which differ
from the fixtures' so that ruff sees no redefinition (F811) in `def test_x(nats_server)`:

    from .natsutil import nats_module_server_fixture, nats_server_fixture  # noqa: F401
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from .netutil import reserve_port, wait_until

STARTUP_TIMEOUT = 15.0  # seconds: bound on "until JetStream answers"
STOP_TIMEOUT = 10.0


def nats_server_binary() -> str:
    """Path of the nats-server to run: $TETHER_NATS_SERVER, else the one on PATH, else Debian's."""
    for candidate in (os.environ.get("TETHER_NATS_SERVER"), shutil.which("nats-server"), "/usr/sbin/nats-server"):
        if candidate and os.path.exists(candidate):
            return candidate
    raise RuntimeError("nats-server not found: `make system-deps` installs it (Debian's package nats-server), "
                       "or run `apt-get install -y nats-server`")


def raw_request(host: str, port: int, subject: str, payload: bytes = b"", timeout: float = 5.0,
                credentials: dict[str, str] | None = None) -> bytes:
    """One NATS request on a new connection (CONNECT with `credentials` ({"user": ..., "pass":
    ...}), SUB an inbox, PUB with it as the reply, read the MSG): the reply's payload. OSError
    or TimeoutError when there is none."""
    with socket.create_connection((host, port), timeout=timeout) as sock:
        reader = sock.makefile("rb")
        if not reader.readline().startswith(b"INFO "):
            raise OSError("not a NATS server (no INFO)")
        inbox = f"_INBOX.helper{os.getpid()}"
        options = {"verbose": False, "pedantic": False, "headers": True, "no_responders": True, **(credentials or {})}
        sock.sendall(f"CONNECT {json.dumps(options)}\r\nSUB {inbox} 1\r\nPUB {subject} {inbox} {len(payload)}\r\n"
                     .encode() + payload + b"\r\n")
        while True:
            line = reader.readline()
            if not line:
                raise OSError("the server closed the connection")
            if line.startswith(b"PING"):
                sock.sendall(b"PONG\r\n")
            elif line.startswith(b"-ERR"):
                raise OSError(line.decode(errors="replace").strip())
            elif line.startswith((b"MSG ", b"HMSG ")):
                sizes = line.split()
                total = int(sizes[-1])
                body = reader.read(total + 2)[:total]
                header_size = int(sizes[-2]) if line.startswith(b"HMSG ") else 0
                if header_size and body[header_size:] == b"":
                    raise OSError(f"no reply: {body[:header_size].decode(errors='replace').splitlines()[0]}")
                return body[header_size:]


class NatsServer:
    """One real nats-server process with JetStream; see the module doc. Not started until
    `start()`; `close()` stops it and removes its dir."""

    def __init__(self, *, port: int | None = None, jetstream: bool = True, user: str | None = None,
                 password: str | None = None, args: tuple[str, ...] = (),
                 startup_timeout: float = STARTUP_TIMEOUT) -> None:
        self.host = "127.0.0.1"
        self.jetstream = jetstream
        self.credentials = {"user": user, "pass": password or ""} if user is not None else None
        self.port = port or reserve_port(self.host)
        self.extra_args = list(args)
        self.startup_timeout = startup_timeout
        self.dir = Path(tempfile.mkdtemp(prefix="tether-nats-"))
        self.store = self.dir / "jetstream"
        self.log_path = self.dir / "nats.log"
        self.process: subprocess.Popen[bytes] | None = None
        self.starts = 0
        self._closed = False

    @property
    def url(self) -> str:
        return f"nats://{self.host}:{self.port}"

    @property
    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def argv(self) -> list[str]:
        jetstream = ["-js", "-sd", str(self.store)] if self.jetstream else []
        auth = ["--user", self.credentials["user"], "--pass", self.credentials["pass"]] if self.credentials else []
        return [nats_server_binary(), *jetstream, *auth, "-a", self.host, "-p", str(self.port), *self.extra_args]

    def start(self) -> NatsServer:
        """Start it (again: same port, same store) and return once JetStream answers."""
        if self.running:
            raise RuntimeError("already running")
        with open(self.log_path, "ab") as log:
            self.process = subprocess.Popen(self.argv(), stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT)
        self.starts += 1
        try:
            wait_until(self._answers, timeout=self.startup_timeout, interval=0.005,
                       message=f"nats-server's JetStream on :{self.port}")
        except AssertionError as exc:
            self.kill()
            raise RuntimeError(f"{exc}:\n{self.log_tail()}") from None
        return self

    def _answers(self) -> bool:
        """Whether JetStream answers `$JS.API.INFO` (RuntimeError when the server exited)."""
        assert self.process is not None
        if self.process.poll() is not None:
            raise RuntimeError(f"nats-server exited with {self.process.returncode}:\n{self.log_tail()}")
        try:
            if not self.jetstream:
                with socket.create_connection((self.host, self.port), timeout=1.0) as sock:
                    return sock.makefile("rb").readline().startswith(b"INFO ")
            return "error" not in json.loads(self.request("$JS.API.INFO", timeout=1.0))
        except (OSError, ValueError):  # not listening yet, or JetStream not up yet
            return False

    def request(self, subject: str, payload: bytes = b"", timeout: float = 5.0) -> bytes:
        """One request to the server (a JetStream API call, say): the reply's payload."""
        return raw_request(self.host, self.port, subject, payload, timeout, self.credentials)

    def api(self, subject: str, body: dict[str, Any] | None = None) -> Any:
        """A JetStream API call (`STREAM.NAMES`, ...: what follows `$JS.API.`), its JSON reply."""
        return json.loads(self.request(f"$JS.API.{subject}", json.dumps(body).encode() if body is not None else b""))

    def log_tail(self, lines: int = 30) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no log)"

    def _end(self, signum: int) -> int | None:
        """Send `signum` and reap (SIGKILL past STOP_TIMEOUT); the exit code, None if never started."""
        process = self.process
        if process is not None and process.poll() is None:
            process.send_signal(signal.SIGCONT)  # a paused server handles its SIGTERM
            process.send_signal(signum)
            try:
                process.wait(STOP_TIMEOUT)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(STOP_TIMEOUT)
        return None if process is None else process.returncode

    def stop(self) -> int | None:
        """SIGTERM (the server shuts down cleanly, its store written), then wait."""
        return self._end(signal.SIGTERM)

    def kill(self) -> int | None:
        """SIGKILL: the server vanishes at once, as in a crash; clients see the TCP close."""
        return self._end(signal.SIGKILL)

    def pause(self) -> None:
        """SIGSTOP: the server hangs (its connections stay open and silent) until `resume()`."""
        assert self.process is not None
        self.process.send_signal(signal.SIGSTOP)

    def resume(self) -> None:
        """SIGCONT after `pause()`."""
        assert self.process is not None
        self.process.send_signal(signal.SIGCONT)

    def restart(self, lose_store: bool = False) -> NatsServer:
        """Kill, then start on the same port: with the same store (streams recovered), or with
        none when `lose_store` (every stream and bucket gone)."""
        self.kill()
        if lose_store:
            shutil.rmtree(self.store, ignore_errors=True)
        return self.start()

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        self.stop()
        shutil.rmtree(self.dir, ignore_errors=True)

    def __repr__(self) -> str:
        return f"<NatsServer {self.url} running={self.running}>"


@pytest.fixture(name="nats_server")
def nats_server_fixture() -> Iterator[NatsServer]:
    """A fresh nats-server for this test, stopped after it."""
    server = NatsServer().start()
    try:
        yield server
    finally:
        server.close()


@pytest.fixture(name="nats_module_server", scope="module")
def nats_module_server_fixture() -> Iterator[NatsServer]:
    """One nats-server for a module's tests that break nothing."""
    server = NatsServer().start()
    try:
        yield server
    finally:
        server.close()

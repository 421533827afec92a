"""Fixtures: a real server for an App on 127.0.0.1, in its own thread with its own loop.

`serve(app)` starts the App on tether's native server or, through its ASGI face, under
uvicorn, hypercorn or granian: tests that use it run once per server. A test module picks
the servers with a module-level `SERVERS` tuple (default: native and uvicorn). Tests of the
native server itself use `serve_native`.
"""

from __future__ import annotations

import asyncio
import socket
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest

from tether import App
from tether.server.serve import Server, new_event_loop

from .netutil import loopback_bypasses_proxies, reserve_port  # noqa: F401 (an autouse session fixture)


class RunningServer:
    """A native tether server serving `app` on a free port, in a background thread."""

    def __init__(self, app: App) -> None:
        self.app = app
        self.loop = new_event_loop()
        self.server = Server(app, "127.0.0.1", 0)
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._started = threading.Event()
        self._error: BaseException | None = None

    def _run(self) -> None:
        asyncio.set_event_loop(self.loop)
        try:
            self.loop.run_until_complete(self.server.start())
        except BaseException as exc:  # surfaced by start()
            self._error = exc
            self._started.set()
            return
        self._started.set()
        self.loop.run_forever()

    def start(self) -> RunningServer:
        self._thread.start()
        self._started.wait(10)
        if self._error:
            raise self._error
        return self

    @property
    def port(self) -> int:
        return self.server.port

    def url(self, path: str = "/") -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    def ws_url(self, path: str = "/") -> str:
        return f"ws://127.0.0.1:{self.port}{path}"

    def call(self, coro: Any, timeout: float = 10) -> Any:
        """Run a coroutine on the server's loop and return its result."""
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    def stop(self) -> None:
        if self.loop.is_running():
            self.call(self.server.shutdown(), timeout=30)
            self.loop.call_soon_threadsafe(self.loop.stop)
            self._thread.join(10)
        self.loop.close()


class ASGIServer(RunningServer):
    """The App under an ASGI server (uvicorn, hypercorn or granian), in a background thread."""

    def __init__(self, app: App, kind: str) -> None:
        self.app = app
        self.kind = kind
        self.loop = new_event_loop()
        self._port = reserve_port()  # not handed to any other process meanwhile (see netutil)
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._stopping: asyncio.Event | None = None

    @property
    def port(self) -> int:
        return self._port

    def _serve(self) -> Any:
        if self.kind == "uvicorn":
            import uvicorn

            config = uvicorn.Config(self.app, host="127.0.0.1", port=self._port, log_level="warning",
                                    lifespan="on", ws="websockets-sansio", loop="none")
            self._uvicorn = uvicorn.Server(config)
            return self._uvicorn.serve()
        if self.kind == "hypercorn":
            from hypercorn.asyncio import serve
            from hypercorn.config import Config

            config = Config()
            config.bind = [f"127.0.0.1:{self._port}"]
            config.loglevel = "WARNING"
            self._stopping = asyncio.Event()
            return serve(self.app, config, shutdown_trigger=self._stopping.wait)
        if self.kind == "granian":
            from granian.constants import Interfaces
            from granian.server.embed import Server as Granian

            self._granian = Granian(self.app, address="127.0.0.1", port=self._port,
                                    interface=Interfaces.ASGI, log_enabled=False)
            return self._granian.serve()
        raise ValueError(f"unknown server {self.kind}")

    def _run(self) -> None:
        asyncio.set_event_loop(self.loop)
        self.loop.run_until_complete(self._serve())

    def start(self) -> ASGIServer:
        self._thread.start()
        deadline = time.monotonic() + 15
        while True:
            try:
                socket.create_connection(("127.0.0.1", self._port), timeout=1).close()
                break
            except OSError:
                assert self._thread.is_alive(), f"{self.kind} exited during start-up"
                assert time.monotonic() < deadline, f"{self.kind} did not start"
                time.sleep(0.02)
        return self

    def stop(self) -> None:
        if not self._thread.is_alive():
            return
        if self.kind == "uvicorn":
            self._uvicorn.should_exit = True
        elif self.kind == "hypercorn":
            self.loop.call_soon_threadsafe(self._stopping.set)
        else:
            self.loop.call_soon_threadsafe(self._granian.stop)
        self._thread.join(20)


def _server_factory(kind: str) -> Iterator[Any]:
    running: list[RunningServer] = []

    def start(app: App) -> RunningServer:
        server = (RunningServer(app) if kind == "native" else ASGIServer(app, kind)).start()
        running.append(server)
        return server

    yield start
    for server in running:
        server.stop()


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    if "serve" in metafunc.fixturenames:
        metafunc.parametrize("server_kind", getattr(metafunc.module, "SERVERS", ("native", "uvicorn")))


@pytest.fixture
def serve(server_kind: str) -> Iterator[Any]:
    """`serve(app)` starts a real server for `app` (native or ASGI); stopped after the test."""
    yield from _server_factory(server_kind)


@pytest.fixture
def serve_native() -> Iterator[Any]:
    """`serve_native(app)`: tether's own server only, for tests of the server itself."""
    yield from _server_factory("native")

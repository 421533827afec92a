"""Fixtures: a real tether server on 127.0.0.1 (own thread, own loop) and raw-socket clients."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator
from typing import Any

import pytest

from tether import App
from tether.server.serve import Server, new_event_loop


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


@pytest.fixture
def serve() -> Iterator[Any]:
    """`serve(app)` starts a real server for `app` and returns it; stopped after the test."""
    running: list[RunningServer] = []

    def start(app: App) -> RunningServer:
        server = RunningServer(app).start()
        running.append(server)
        return server

    yield start
    for server in running:
        server.stop()

"""Sockets, event loop, workers, signals and graceful shutdown for the native server.

`run(app, host, port)` serves until SIGINT/SIGTERM. Shutdown stops accepting, closes idle
HTTP connections, sends close 1001 to every WebSocket (its on_close value first), gives
handlers `shutdown_timeout` seconds to finish, cancels the rest, flushes what was already
sent, runs the shutdown hooks and returns (exit status 0).
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import socket
import ssl
import sys
from typing import TYPE_CHECKING, Any

from ..protocol import ACCELERATED
from ..protocol.codes import WS_1001_GOING_AWAY
from ..tasks import spawn
from .batcher import WriteBatcher
from .http11 import HttpProtocol

if TYPE_CHECKING:
    from ..types import Application as App

__all__ = ["Server", "ServerState", "run"]

logger = logging.getLogger("tether")

try:
    import uvloop
except ImportError:  # the stdlib loop serves too, only slower
    uvloop = None


class ServerState:
    """What every connection of one server shares."""

    def __init__(self, app: App, loop: asyncio.AbstractEventLoop) -> None:
        self.app = app
        self.settings = app.settings
        self.loop = loop
        self.batcher = WriteBatcher(loop)
        self.connections: set[Any] = set()
        self.tasks: set[asyncio.Task[Any]] = set()

    def track(self, task: asyncio.Task[Any]) -> None:
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)

    def new_connection(self) -> HttpProtocol:
        """The protocol for one new client connection (the server's protocol factory): hand
        it a transport with `connection_made(transport)` and feed it with `data_received`."""
        return HttpProtocol(self)


class Server:
    """The native server for one app on one event loop."""

    def __init__(self, app: App, host: str = "127.0.0.1", port: int = 8080, *,
                 ssl_context: ssl.SSLContext | None = None, sock: socket.socket | None = None,
                 reuse_port: bool = False, backlog: int = 4096) -> None:
        self.app = app
        self.host = host
        self.port = port
        self.ssl_context = ssl_context
        self.sock = sock
        self.reuse_port = reuse_port
        self.backlog = backlog
        self.state: ServerState | None = None
        self._server: asyncio.base_events.Server | None = None
        self._stop: asyncio.Event | None = None
        self._stop_requested = False

    async def start(self) -> None:
        """Run the startup hooks and start listening; `self.port` is the bound port."""
        loop = asyncio.get_running_loop()
        self.state = ServerState(self.app, loop)
        await self.app.startup()
        listen: dict[str, Any] = {"sock": self.sock} if self.sock else {
            "host": self.host, "port": self.port, "reuse_port": self.reuse_port or None}
        self._server = await loop.create_server(
            self.state.new_connection, ssl=self.ssl_context, backlog=self.backlog, **listen)
        self.port = self._server.sockets[0].getsockname()[1]

    async def shutdown(self) -> None:
        """Graceful shutdown (see the module doc)."""
        state = self.state
        assert state is not None and self._server is not None
        self._server.close()
        for connection in list(state.connections):
            if isinstance(connection, HttpProtocol):
                connection.shutdown()
        closing = spawn(self.app.hub.close_all(WS_1001_GOING_AWAY, "server shutting down"))
        pending = set(state.tasks) | {closing}
        if pending:
            _, pending = await asyncio.wait(pending, timeout=self.app.settings.shutdown_timeout)
        for task in pending:
            task.cancel()
        if pending:
            await asyncio.wait(pending, timeout=1)
        state.batcher.flush()
        # Let close frames and last responses reach the clients before the loop goes away.
        deadline = state.loop.time() + self.app.settings.close_timeout
        while state.connections and state.loop.time() < deadline:
            await asyncio.sleep(0.01)
        for connection in list(state.connections):
            connection.transport.abort()
        await self.app.shutdown()

    async def serve(self, install_signals: bool = True) -> None:
        """Start, serve until SIGINT/SIGTERM (or `stop()`), then shut down gracefully."""
        await self.start()
        stop = self._stop = asyncio.Event()
        if self._stop_requested:
            stop.set()
        loop = asyncio.get_running_loop()
        if install_signals:
            for sig in (signal.SIGINT, signal.SIGTERM):
                loop.add_signal_handler(sig, stop.set)
        scheme = "https" if self.ssl_context else "http"
        logger.info("tether serving on %s://%s:%d (pid %d; %s loop, %s unmasking)", scheme, self.host,
                    self.port, os.getpid(), "uvloop" if uvloop and isinstance(loop, uvloop.Loop) else "asyncio",
                    "C" if ACCELERATED else "pure-Python")
        await stop.wait()
        logger.info("tether shutting down (pid %d)", os.getpid())
        await self.shutdown()

    def stop(self) -> None:
        """Ask `serve()` to shut down (call from the loop's thread); before `serve()` has
        started, it makes `serve()` shut down as soon as it has started."""
        self._stop_requested = True
        if self._stop is not None:
            self._stop.set()


def new_event_loop() -> asyncio.AbstractEventLoop:
    """uvloop's loop when installed, else the standard one."""
    return uvloop.new_event_loop() if uvloop is not None else asyncio.new_event_loop()


def _ssl_context(certfile: str | None, keyfile: str | None) -> ssl.SSLContext | None:
    if not certfile:
        return None
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(certfile, keyfile)
    return context


def _serve_one(app: App, host: str, port: int, ssl_context: ssl.SSLContext | None, reuse_port: bool) -> None:
    loop = new_event_loop()
    asyncio.set_event_loop(loop)
    try:
        loop.run_until_complete(Server(app, host, port, ssl_context=ssl_context, reuse_port=reuse_port).serve())
    finally:
        loop.close()


def run(app: App, host: str = "127.0.0.1", port: int = 8080, *, workers: int = 1,
        ssl_certfile: str | None = None, ssl_keyfile: str | None = None, log_level: str | None = None) -> None:
    """Serve `app` until SIGINT/SIGTERM; `workers` > 1 forks processes sharing the port (SO_REUSEPORT)."""
    if log_level is not None or not logging.getLogger().handlers:
        logging.basicConfig(level=(log_level or "info").upper(), format="%(levelname)s: %(message)s")
    context = _ssl_context(ssl_certfile, ssl_keyfile)
    if workers <= 1:
        _serve_one(app, host, port, context, reuse_port=False)
        return
    children = []
    for _ in range(workers):
        pid = os.fork()
        if pid == 0:
            try:
                _serve_one(app, host, port, context, reuse_port=True)
            finally:
                os._exit(0)
        children.append(pid)

    def forward(signum: int, _frame: Any) -> None:
        for child in children:
            try:
                os.kill(child, signum)
            except ProcessLookupError:
                pass

    signal.signal(signal.SIGINT, forward)
    signal.signal(signal.SIGTERM, forward)
    status = 0
    for child in children:
        _, code = os.waitpid(child, 0)
        status = status or os.waitstatus_to_exitcode(code)
    sys.exit(status)

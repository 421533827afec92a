"""Sockets, event loop, workers, signals and graceful shutdown for the native server.

`run(app, host, port)` serves until SIGINT/SIGTERM. Shutdown stops accepting, closes idle
HTTP connections, sends close 1001 to every WebSocket (its on_close value first), gives
handlers `shutdown_timeout` seconds to finish, cancels the rest, flushes what was already
sent, runs the shutdown hooks and returns (exit status 0); the readiness check (`health_path`)
answers 503 from the signal on, and with `shutdown_delay` the server first goes on serving that
many seconds (a second signal cuts it short). A server that cannot start (the
port is taken, a startup hook raises) logs the traceback and exits with status 1; with
`workers` > 1 a master supervises the worker processes (see `run`).
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import os
import signal
import socket
import ssl
import sys
from collections.abc import Callable
from types import ModuleType
from typing import TYPE_CHECKING, Any, NoReturn

from ..backplane import check as check_backplane
from ..backplane import configured_url
from ..exceptions import MissingExtra
from ..metrics import mark_not_ready, watch_server
from ..protocol import ACCELERATED
from ..protocol.codes import WS_1001_GOING_AWAY
from ..protocol.deflate import CompressorPool, DeflateOptions
from ..tasks import spawn
from ..watchdog import LoopWatchdog
from .batcher import WriteBatcher
from .http11 import HttpProtocol
from .state import Traffic
from .supervisor import FAILED, MASTER_SIGNALS, STARTED, Supervisor, report_error, tell_master

if TYPE_CHECKING:
    from ..types import Application as App

__all__ = ["Server", "ServerState", "run"]

logger = logging.getLogger("tether")

uvloop: ModuleType | None
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
        self.traffic = Traffic()
        deflate = DeflateOptions.from_setting(app.settings.permessage_deflate)
        self.compressors = CompressorPool(deflate) if deflate is not None else None
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
        # Once serving (startup hooks may block: nothing is served yet); see tether.watchdog.
        self._watchdog: LoopWatchdog | None = None
        if self.app.settings.loop_lag_warning > 0:
            self._watchdog = LoopWatchdog(loop, self.app.settings.loop_lag_warning)
            self._watchdog.start()
        watch_server(self.app, self.state, self._watchdog)  # read at scrape time, if metrics are on

    async def shutdown(self) -> None:
        """Graceful shutdown (see the module doc)."""
        state = self.state
        assert state is not None and self._server is not None
        mark_not_ready(self.app)
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
        if self._watchdog is not None:
            self._watchdog.stop()
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
        mark_not_ready(self.app)
        delay = self.app.settings.shutdown_delay
        if delay > 0:  # still serving, the readiness check says 503: the load balancer moves away
            logger.info("tether not ready; shutting down in %g s (pid %d; a second signal: now)", delay, os.getpid())
            stop.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), delay)
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


class _ReportingServer(Server):
    """A Server that calls `on_started()` once it listens (its startup hooks have run)."""

    def __init__(self, app: App, host: str, port: int, *, on_started: Callable[[], None],
                 ssl_context: ssl.SSLContext | None, reuse_port: bool) -> None:
        super().__init__(app, host, port, ssl_context=ssl_context, reuse_port=reuse_port)
        self._on_started = on_started

    async def start(self) -> None:
        await super().start()
        self._on_started()


def _serve_one(app: App, host: str, port: int, ssl_context: ssl.SSLContext | None, reuse_port: bool,
               on_started: Callable[[], None] = lambda: None) -> None:
    loop = new_event_loop()
    asyncio.set_event_loop(loop)
    server = _ReportingServer(app, host, port, on_started=on_started, ssl_context=ssl_context,
                              reuse_port=reuse_port)
    try:
        loop.run_until_complete(server.serve())
    finally:
        loop.close()


def _cause(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {exc}"


def _worker_main(app: App, host: str, port: int, context: ssl.SSLContext | None, pipe: int,
                 inherited: list[int], mask: set[int | signal.Signals]) -> NoReturn:
    """A forked worker (`supervisor.WorkerMain`): serve, tell the master on `pipe` once
    serving (or why it could not start), and never return (os._exit: the master's stack must
    not run in the child)."""
    code = 1
    try:
        for fd in inherited:  # the master's pipes
            with contextlib.suppress(OSError):
                os.close(fd)
        signal.set_wakeup_fd(-1)
        for sig in MASTER_SIGNALS:  # until the loop takes over SIGINT/SIGTERM: die of them
            signal.signal(sig, signal.SIG_DFL)
        signal.pthread_sigmask(signal.SIG_SETMASK, mask)
        if not logging.getLogger().handlers:
            logging.basicConfig(level="INFO", format="%(levelname)s: %(message)s")
        started = False

        def on_started() -> None:
            nonlocal started
            started = True
            tell_master(pipe, STARTED)

        try:
            _serve_one(app, host, port, context, reuse_port=True, on_started=on_started)
            code = 0
        except KeyboardInterrupt:  # a SIGINT after the loop closed: shutdown was done
            code = 0 if started else 130
        except BaseException as exc:
            if started:
                report_error(f"tether worker {os.getpid()} crashed", exc)
            else:
                report_error(f"tether worker {os.getpid()} failed to start", exc)
                tell_master(pipe, FAILED + _cause(exc).encode("utf-8", "replace"))
    finally:
        for stream in (sys.stdout, sys.stderr):
            with contextlib.suppress(Exception):
                stream.flush()
        os._exit(code)


def run(app: App, host: str = "127.0.0.1", port: int = 8080, *, workers: int = 1,
        ssl_certfile: str | None = None, ssl_keyfile: str | None = None, log_level: str | None = None) -> None:
    """Serve `app` until SIGINT/SIGTERM; `workers` > 1 forks processes sharing the port (SO_REUSEPORT).

    A server that fails to start (the port is in use, a startup hook raises, the TLS files do
    not load) logs the traceback and a one-line cause, and exits with status 1; a backplane
    whose package is not installed (or an unknown backplane scheme) logs one line, naming the
    pip command, and exits with status 1 before anything is served.

    With `workers` > 1 this process is a master that serves nothing itself
    (`tether.server.supervisor.Supervisor`: when a worker is replaced, when all are stopped).
    Each worker tells the master once `Server.start()` has succeeded (startup hooks run,
    socket listening); one that fails before that prints its traceback to stderr and tells
    the master the cause instead. A master that stopped its workers for a failure exits 1.
    """
    if log_level is not None or not logging.getLogger().handlers:
        logging.basicConfig(level=(log_level or "info").upper(), format="%(levelname)s: %(message)s")
    try:  # a backplane whose package is missing, or an unknown scheme: one line, before serving or forking
        check_backplane(configured_url(app.settings.backplane))
    except (MissingExtra, ValueError) as exc:
        report_error(f"tether: {exc}")
        sys.exit(1)
    try:
        context = _ssl_context(ssl_certfile, ssl_keyfile)
    except (OSError, ssl.SSLError) as exc:
        report_error(f"tether: could not load the TLS certificate or key: {_cause(exc)}")
        sys.exit(1)
    if workers > 1:
        if not (app.settings.backplane or os.environ.get("TETHER_BACKPLANE")):
            logger.warning("tether: --workers %d without a backplane: each worker has its own hub, so a "
                           "broadcast reaches only the clients of the worker that sent it and send_to() finds "
                           "only that worker's connections; share one hub with --backplane redis://HOST:6379/0 "
                           "(see docs/scaling.md)", workers)
        status = Supervisor(functools.partial(_worker_main, app, host, port, context), workers).run()
        if status:
            sys.exit(status)
        return
    started = False

    def on_started() -> None:
        nonlocal started
        started = True

    try:
        _serve_one(app, host, port, context, reuse_port=False, on_started=on_started)
    except Exception as exc:
        if started:
            raise
        report_error("tether failed to start", exc)
        report_error(f"tether: could not start serving on {host}:{port}: {_cause(exc)}")
        sys.exit(1)

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
import logging
import os
import selectors
import signal
import socket
import ssl
import sys
import time
import traceback
from collections import deque
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


# The crash-loop bound of a master: more than max(CRASH_LOOP_DEATHS, workers) deaths of
# workers that had started serving, within CRASH_LOOP_WINDOW seconds.
CRASH_LOOP_DEATHS = 5
CRASH_LOOP_WINDOW = 30.0
_STARTED, _FAILED = b"R", b"F"  # what a worker writes on its pipe to the master
_MASTER_SIGNALS = {signal.SIGINT, signal.SIGTERM, signal.SIGCHLD}


def _error(message: str, exc: BaseException | None = None) -> None:
    """Report an error that must be seen: through the `tether` logger, or straight to stderr
    when the log level or the logging setup would hide it."""
    if logger.isEnabledFor(logging.ERROR) and logger.hasHandlers():
        logger.error("%s", message, exc_info=exc)
    else:
        print(message, file=sys.stderr)
        if exc is not None:
            traceback.print_exception(exc, file=sys.stderr)


def _cause(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {exc}"


def _describe(wait_status: int) -> str:
    """'exited with status 3' / 'killed by signal SIGKILL' for a status from os.waitpid()."""
    if os.WIFSIGNALED(wait_status):
        number = os.WTERMSIG(wait_status)
        try:
            name = signal.Signals(number).name
        except ValueError:
            name = str(number)
        return f"killed by signal {name}"
    return f"exited with status {os.waitstatus_to_exitcode(wait_status)}"


def _write(fd: int, data: bytes) -> None:
    with contextlib.suppress(OSError):  # the master is gone: nobody to tell
        os.write(fd, data)


def _worker_main(app: App, host: str, port: int, context: ssl.SSLContext | None, pipe: int,
                 inherited: list[int], mask: set[int | signal.Signals]) -> NoReturn:
    """A forked worker: serve, tell the master on `pipe` once serving (or why it could not
    start), and never return (os._exit: the master's stack must not run in the child)."""
    code = 1
    try:
        for fd in inherited:  # the master's pipes
            with contextlib.suppress(OSError):
                os.close(fd)
        signal.set_wakeup_fd(-1)
        for sig in _MASTER_SIGNALS:  # until the loop takes over SIGINT/SIGTERM: die of them
            signal.signal(sig, signal.SIG_DFL)
        signal.pthread_sigmask(signal.SIG_SETMASK, mask)
        if not logging.getLogger().handlers:
            logging.basicConfig(level="INFO", format="%(levelname)s: %(message)s")
        started = False

        def on_started() -> None:
            nonlocal started
            started = True
            _write(pipe, _STARTED)

        try:
            _serve_one(app, host, port, context, reuse_port=True, on_started=on_started)
            code = 0
        except KeyboardInterrupt:  # a SIGINT after the loop closed: shutdown was done
            code = 0 if started else 130
        except BaseException as exc:
            if started:
                _error(f"tether worker {os.getpid()} crashed", exc)
            else:
                _error(f"tether worker {os.getpid()} failed to start", exc)
                _write(pipe, _FAILED + _cause(exc).encode("utf-8", "replace"))
    finally:
        for stream in (sys.stdout, sys.stderr):
            with contextlib.suppress(Exception):
                stream.flush()
        os._exit(code)


class _Worker:
    """The master's view of one worker process."""

    def __init__(self, pid: int, pipe: int) -> None:
        self.pid = pid
        self.pipe: int | None = pipe
        self.said = b""  # what it wrote: _STARTED, or _FAILED + the cause

    @property
    def started(self) -> bool:
        return self.said[:1] == _STARTED

    @property
    def failure(self) -> str | None:
        return self.said[1:].decode("utf-8", "replace") if self.said[:1] == _FAILED else None


def _supervise(app: App, host: str, port: int, context: ssl.SSLContext | None, workers: int) -> int:
    """Fork `workers` workers, keep them running, return the master's exit status (see `run`)."""
    selector = selectors.DefaultSelector()
    wake_read, wake_write = os.pipe()  # signals wake the select() up (signal.set_wakeup_fd)
    os.set_blocking(wake_read, False)
    os.set_blocking(wake_write, False)
    selector.register(wake_read, selectors.EVENT_READ)
    pool: dict[int, _Worker] = {}
    received: list[int] = []
    forwarded: set[int] = set()
    deaths: deque[float] = deque()
    status = 0
    stopping = False

    def on_signal(signum: int, _frame: Any) -> None:
        if signum != signal.SIGCHLD:
            received.append(signum)

    def spawn_worker() -> None:
        pipe_read, pipe_write = os.pipe()
        mask = signal.pthread_sigmask(signal.SIG_BLOCK, _MASTER_SIGNALS)  # none lost in the child
        try:
            pid = os.fork()
            if pid == 0:
                inherited = [pipe_read, wake_read, wake_write]
                inherited += [w.pipe for w in pool.values() if w.pipe is not None]
                _worker_main(app, host, port, context, pipe_write, inherited, mask)
        except BaseException:
            os.close(pipe_read)
            raise
        finally:
            signal.pthread_sigmask(signal.SIG_SETMASK, mask)
            os.close(pipe_write)  # only the worker holds it: EOF when the worker is gone
        os.set_blocking(pipe_read, False)
        pool[pid] = _Worker(pid, pipe_read)
        selector.register(pipe_read, selectors.EVENT_READ, pid)

    def read(worker: _Worker) -> None:
        while worker.pipe is not None:
            try:
                data = os.read(worker.pipe, 4096)
            except BlockingIOError:
                return
            if data:
                worker.said += data
            else:
                selector.unregister(worker.pipe)
                os.close(worker.pipe)
                worker.pipe = None

    def stop_all(signum: int = signal.SIGTERM) -> None:
        forwarded.add(signum)
        for pid in pool:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signum)

    def buried(worker: _Worker, wait_status: int) -> None:
        nonlocal status, stopping
        how = _describe(wait_status)
        if stopping:
            killed_by_us = os.WIFSIGNALED(wait_status) and os.WTERMSIG(wait_status) in forwarded
            if os.waitstatus_to_exitcode(wait_status) != 0 and not killed_by_us:
                if worker.failure:
                    how += f", having failed during startup: {worker.failure}"
                logger.warning("tether worker %d %s while the workers were stopping", worker.pid, how)
                status = status or 1
        elif not worker.started:
            _error(f"tether: worker {worker.pid} failed during startup ({how}): "
                   f"{worker.failure or 'it never started serving'}; stopping all workers")
            status, stopping = 1, True
            stop_all()
        else:
            now = time.monotonic()
            deaths.append(now)
            while deaths and deaths[0] < now - CRASH_LOOP_WINDOW:
                deaths.popleft()
            if len(deaths) > max(CRASH_LOOP_DEATHS, workers):
                _error(f"tether: crash loop: {len(deaths)} worker deaths within {CRASH_LOOP_WINDOW:g} s "
                       f"(the last: worker {worker.pid} {how}); stopping all workers")
                status, stopping = 1, True
                stop_all()
            else:
                logger.warning("tether worker %d %s; starting a new worker", worker.pid, how)
                spawn_worker()

    previous = {sig: signal.signal(sig, on_signal) for sig in _MASTER_SIGNALS}
    previous_wakeup = signal.set_wakeup_fd(wake_write, warn_on_full_buffer=False)
    try:
        for _ in range(workers):
            spawn_worker()
        logger.info("tether master (pid %d) running %d workers", os.getpid(), workers)
        while pool:
            for key, _ in selector.select(timeout=1.0):
                if key.fd == wake_read:
                    with contextlib.suppress(BlockingIOError):
                        while os.read(wake_read, 512):
                            pass
                elif key.data in pool:
                    read(pool[key.data])
            while received:
                signum = received.pop(0)
                if not stopping:
                    logger.info("tether master (pid %d) got %s: stopping the workers", os.getpid(),
                                signal.Signals(signum).name)
                stopping = True
                stop_all(signum)
            for pid in list(pool):
                done, wait_status = os.waitpid(pid, os.WNOHANG)
                if done:
                    worker = pool.pop(pid)
                    read(worker)  # all it wrote before it died, up to EOF
                    buried(worker, wait_status)
        return status
    finally:
        if pool:  # leaving on an exception: do not orphan the workers
            stop_all()
            for pid in pool:
                os.waitpid(pid, 0)
        signal.set_wakeup_fd(previous_wakeup)
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        for worker in pool.values():
            if worker.pipe is not None:
                os.close(worker.pipe)
        selector.close()
        os.close(wake_read)
        os.close(wake_write)


def run(app: App, host: str = "127.0.0.1", port: int = 8080, *, workers: int = 1,
        ssl_certfile: str | None = None, ssl_keyfile: str | None = None, log_level: str | None = None) -> None:
    """Serve `app` until SIGINT/SIGTERM; `workers` > 1 forks processes sharing the port (SO_REUSEPORT).

    A server that fails to start (the port is in use, a startup hook raises, the TLS files do
    not load) logs the traceback and a one-line cause, and exits with status 1; a backplane
    whose package is not installed (or an unknown backplane scheme) logs one line, naming the
    pip command, and exits with status 1 before anything is served.

    With `workers` > 1 this process is a master that serves nothing itself. Each worker
    writes one byte on a pipe to the master once `Server.start()` has succeeded (startup
    hooks run, socket listening); one that fails before that prints its traceback to stderr
    and writes the cause on the pipe instead. Then, as gunicorn does:

    - a worker that dies before it started serving is not replaced: the master stops every
      worker (SIGTERM) and exits with status 1, logging the cause;
    - a worker that dies after it started serving is logged with its exit status or signal
      and replaced by a new one;
    - a crash loop, more than max(CRASH_LOOP_DEATHS, workers) such deaths (5, or the number
      of workers if larger) within CRASH_LOOP_WINDOW (30) seconds, stops every worker and
      exits with status 1;
    - SIGINT/SIGTERM are forwarded to the workers; once all have shut down the master
      returns (exit status 0), or exits with 1 if one exited with an error meanwhile.
    """
    if log_level is not None or not logging.getLogger().handlers:
        logging.basicConfig(level=(log_level or "info").upper(), format="%(levelname)s: %(message)s")
    try:  # a backplane whose package is missing, or an unknown scheme: one line, before serving or forking
        check_backplane(configured_url(app.settings.backplane))
    except (MissingExtra, ValueError) as exc:
        _error(f"tether: {exc}")
        sys.exit(1)
    try:
        context = _ssl_context(ssl_certfile, ssl_keyfile)
    except (OSError, ssl.SSLError) as exc:
        _error(f"tether: could not load the TLS certificate or key: {_cause(exc)}")
        sys.exit(1)
    if workers > 1:
        if not (app.settings.backplane or os.environ.get("TETHER_BACKPLANE")):
            logger.warning("tether: --workers %d without a backplane: each worker has its own hub, so a "
                           "broadcast reaches only the clients of the worker that sent it and send_to() finds "
                           "only that worker's connections; share one hub with --backplane redis://HOST:6379/0 "
                           "(see docs/scaling.md)", workers)
        status = _supervise(app, host, port, context, workers)
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
        _error("tether failed to start", exc)
        _error(f"tether: could not start serving on {host}:{port}: {_cause(exc)}")
        sys.exit(1)

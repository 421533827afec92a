"""The master of `tether run --workers N`: forks the workers and keeps them running.

`Supervisor(start_worker, workers).run()` forks `workers` processes, each running
`start_worker(pipe, inherited, mask)` (it serves and never returns), and returns the master's
exit status. Each worker writes `STARTED` on its pipe once it serves, or `FAILED` + the cause
if it could not start (`tell_master`). Then, as gunicorn does:

- a worker that dies before it started serving is not replaced: the master stops every
  worker (SIGTERM) and exits with status 1, logging the cause;
- a worker that dies after it started serving is logged with its exit status or signal and
  replaced by a new one;
- a crash loop, more than max(CRASH_LOOP_DEATHS, workers) such deaths within
  CRASH_LOOP_WINDOW seconds, stops every worker and exits with status 1;
- SIGINT/SIGTERM are forwarded to the workers; once all have shut down the master returns
  0, or 1 if one exited with an error meanwhile.

The master waits in one `select()` on the workers' pipes and a wake-up pipe that signals
write to (`signal.set_wakeup_fd`); each event has its method: `on_signal` (a signal arrived,
from the handler), `on_output` (a worker wrote or closed its pipe), `on_stop_signal`
(SIGINT/SIGTERM, in the loop), `on_exit` (a worker died).
"""

from __future__ import annotations

import contextlib
import logging
import os
import selectors
import signal
import sys
import time
import traceback
from collections import deque
from collections.abc import Callable
from typing import Any, NoReturn

__all__ = ["Supervisor", "WorkerMain", "CRASH_LOOP_DEATHS", "CRASH_LOOP_WINDOW", "STARTED", "FAILED",
           "MASTER_SIGNALS", "report_error", "tell_master"]

logger = logging.getLogger("tether")

CRASH_LOOP_DEATHS = 5
CRASH_LOOP_WINDOW = 30.0
STARTED, FAILED = b"R", b"F"  # what a worker writes on its pipe to the master
MASTER_SIGNALS = {signal.SIGINT, signal.SIGTERM, signal.SIGCHLD}

#: A worker's body: `start_worker(pipe, inherited, mask)` with the write end of its pipe to the
#: master, the master's descriptors it must close, and the signal mask to restore; it never returns.
WorkerMain = Callable[[int, list[int], set[int | signal.Signals]], NoReturn]


def report_error(message: str, exc: BaseException | None = None) -> None:
    """Report an error that must be seen: through the `tether` logger, or straight to stderr
    when the log level or the logging setup would hide it."""
    if logger.isEnabledFor(logging.ERROR) and logger.hasHandlers():
        logger.error("%s", message, exc_info=exc)
    else:
        print(message, file=sys.stderr)
        if exc is not None:
            traceback.print_exception(exc, file=sys.stderr)


def tell_master(fd: int, data: bytes) -> None:
    """Write `data` on a worker's pipe to the master (nothing happens if the master is gone)."""
    with contextlib.suppress(OSError):
        os.write(fd, data)


def describe(wait_status: int) -> str:
    """'exited with status 3' / 'killed by signal SIGKILL' for a status from os.waitpid()."""
    if os.WIFSIGNALED(wait_status):
        number = os.WTERMSIG(wait_status)
        try:
            name = signal.Signals(number).name
        except ValueError:
            name = str(number)
        return f"killed by signal {name}"
    return f"exited with status {os.waitstatus_to_exitcode(wait_status)}"


class WorkerProcess:
    """The master's view of one worker process."""

    def __init__(self, pid: int, pipe: int) -> None:
        self.pid = pid
        self.pipe: int | None = pipe
        self.said = b""  # what it wrote: STARTED, or FAILED + the cause

    @property
    def started(self) -> bool:
        return self.said[:1] == STARTED

    @property
    def failure(self) -> str | None:
        return self.said[1:].decode("utf-8", "replace") if self.said[:1] == FAILED else None


class Supervisor:
    """Fork `workers` processes running `start_worker`, keep them running (see the module doc)."""

    def __init__(self, start_worker: WorkerMain, workers: int) -> None:
        self.start_worker = start_worker
        self.workers = workers
        self.pool: dict[int, WorkerProcess] = {}
        self.status = 0
        self.stopping = False
        self._received: list[int] = []       # signals the handler saw, for the loop
        self._forwarded: set[int] = set()    # signals sent to the workers
        self._deaths: deque[float] = deque()  # when started workers died (crash-loop window)
        self._selector = selectors.DefaultSelector()
        self._wake_read, self._wake_write = os.pipe()

    def run(self) -> int:
        """Fork the workers and supervise them until none is left; the master's exit status."""
        for fd in (self._wake_read, self._wake_write):
            os.set_blocking(fd, False)
        self._selector.register(self._wake_read, selectors.EVENT_READ)
        previous = {sig: signal.signal(sig, self.on_signal) for sig in MASTER_SIGNALS}
        previous_wakeup = signal.set_wakeup_fd(self._wake_write, warn_on_full_buffer=False)
        try:
            for _ in range(self.workers):
                self.spawn_worker()
            logger.info("tether master (pid %d) running %d workers", os.getpid(), self.workers)
            while self.pool:
                self._wait_for_events()
            return self.status
        finally:
            self._close(previous, previous_wakeup)

    def _wait_for_events(self) -> None:
        """One round: wait up to a second for a pipe, then handle signals and dead workers."""
        for key, _ in self._selector.select(timeout=1.0):
            if key.fd == self._wake_read:
                with contextlib.suppress(BlockingIOError):
                    while os.read(self._wake_read, 512):
                        pass
            elif key.data in self.pool:
                self.on_output(self.pool[key.data])
        while self._received:
            self.on_stop_signal(self._received.pop(0))
        for pid in list(self.pool):
            done, wait_status = os.waitpid(pid, os.WNOHANG)
            if done:
                worker = self.pool.pop(pid)
                self.on_output(worker)  # all it wrote before it died, up to EOF
                self.on_exit(worker, wait_status)

    # -- events ------------------------------------------------------------------------------
    def on_signal(self, signum: int, _frame: Any) -> None:
        """The signal handler: SIGINT/SIGTERM are handled in the loop (`on_stop_signal`);
        SIGCHLD only wakes it up."""
        if signum != signal.SIGCHLD:
            self._received.append(signum)

    def on_stop_signal(self, signum: int) -> None:
        """SIGINT or SIGTERM: forward it to every worker; the loop ends once they are gone."""
        if not self.stopping:
            logger.info("tether master (pid %d) got %s: stopping the workers", os.getpid(),
                        signal.Signals(signum).name)
        self.stopping = True
        self.stop_all(signum)

    def on_output(self, worker: WorkerProcess) -> None:
        """Read what `worker` wrote on its pipe; at EOF (it is gone) close the pipe."""
        while worker.pipe is not None:
            try:
                data = os.read(worker.pipe, 4096)
            except BlockingIOError:
                return
            if data:
                worker.said += data
            else:
                self._selector.unregister(worker.pipe)
                os.close(worker.pipe)
                worker.pipe = None

    def on_exit(self, worker: WorkerProcess, wait_status: int) -> None:
        """A worker died: expected while stopping; before it served, stop everything; after,
        replace it, unless the deaths make a crash loop."""
        how = describe(wait_status)
        if self.stopping:
            killed_by_us = os.WIFSIGNALED(wait_status) and os.WTERMSIG(wait_status) in self._forwarded
            if os.waitstatus_to_exitcode(wait_status) != 0 and not killed_by_us:
                if worker.failure:
                    how += f", having failed during startup: {worker.failure}"
                logger.warning("tether worker %d %s while the workers were stopping", worker.pid, how)
                self.status = self.status or 1
        elif not worker.started:
            self._give_up(f"tether: worker {worker.pid} failed during startup ({how}): "
                          f"{worker.failure or 'it never started serving'}; stopping all workers")
        elif self._crash_loop():
            self._give_up(f"tether: crash loop: {len(self._deaths)} worker deaths within {CRASH_LOOP_WINDOW:g} s "
                          f"(the last: worker {worker.pid} {how}); stopping all workers")
        else:
            logger.warning("tether worker %d %s; starting a new worker", worker.pid, how)
            self.spawn_worker()

    # -- actions -----------------------------------------------------------------------------
    def spawn_worker(self) -> None:
        """Fork one worker (no master signal is lost in the child: they are blocked across the fork)."""
        pipe_read, pipe_write = os.pipe()
        mask = signal.pthread_sigmask(signal.SIG_BLOCK, MASTER_SIGNALS)
        try:
            pid = os.fork()
            if pid == 0:
                inherited = [pipe_read, self._wake_read, self._wake_write]
                inherited += [w.pipe for w in self.pool.values() if w.pipe is not None]
                self.start_worker(pipe_write, inherited, mask)
        except BaseException:
            os.close(pipe_read)
            raise
        finally:
            signal.pthread_sigmask(signal.SIG_SETMASK, mask)
            os.close(pipe_write)  # only the worker holds it: EOF when the worker is gone
        os.set_blocking(pipe_read, False)
        self.pool[pid] = WorkerProcess(pid, pipe_read)
        self._selector.register(pipe_read, selectors.EVENT_READ, pid)

    def stop_all(self, signum: int = signal.SIGTERM) -> None:
        """Send `signum` to every worker."""
        self._forwarded.add(signum)
        for pid in self.pool:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signum)

    def _crash_loop(self) -> bool:
        """Count a started worker's death; whether the window now holds too many."""
        now = time.monotonic()
        self._deaths.append(now)
        while self._deaths and self._deaths[0] < now - CRASH_LOOP_WINDOW:
            self._deaths.popleft()
        return len(self._deaths) > max(CRASH_LOOP_DEATHS, self.workers)

    def _give_up(self, message: str) -> None:
        report_error(message)
        self.status, self.stopping = 1, True
        self.stop_all()

    def _close(self, previous: dict[signal.Signals, Any], previous_wakeup: int) -> None:
        """Leave no orphan (an exception ended the loop), restore the signal handlers, close
        every descriptor."""
        if self.pool:
            self.stop_all()
            for pid in self.pool:
                os.waitpid(pid, 0)
        signal.set_wakeup_fd(previous_wakeup)
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        for worker in self.pool.values():
            if worker.pipe is not None:
                os.close(worker.pipe)
        self._selector.close()
        os.close(self._wake_read)
        os.close(self._wake_write)

"""The loop-lag watchdog: a WARNING, naming the culprit, when something blocked the event loop.

Every connection of a server shares one event loop, so a handler that blocks it (a sync
WebSocket callback doing I/O, `time.sleep` inside an `async def`) stalls them all. The
native server starts a `LoopWatchdog` when `loop_lag_warning` (seconds) is above 0:

- on the loop, a timer ticks every `interval` (0.1 s) and measures how late it woke; a lag
  past the threshold is logged on `tether` at WARNING once the loop runs again;
- a daemon thread watches the tick's deadline. While the loop is overdue (by half a tick)
  it reads the loop thread's stack (`sys._current_frames()`) and keeps the outermost frame
  of user code that tether or asyncio called, with the line it was at (and the innermost
  frame, when another): the handler, even an `async def` one, a user's own task or callback. A loop stuck for
  `stuck_after` seconds (an endless loop never lets the tick log) is reported by the thread.

Nothing is set or timed around handler calls: the hot path pays nothing. What it costs is a
timer callback on the loop and a thread waking up every 0.1 s.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import importlib.util
import logging
import os
import selectors
import sys
import threading
import time
from types import FrameType

__all__ = ["LoopWatchdog"]

logger = logging.getLogger("tether")

# Frames of these are the machinery around user code, never the culprit themselves.
_uvloop = importlib.util.find_spec("uvloop")  # uvloop.run() wraps the main coroutine in its own
_MACHINERY = (*(os.path.dirname(os.path.abspath(path)) + os.sep for path in (
    __file__, asyncio.__file__, concurrent.futures.__file__, _uvloop and _uvloop.origin) if path),
    threading.__file__, selectors.__file__)


def _is_machinery(frame: FrameType) -> bool:
    return frame.f_code.co_filename.startswith(_MACHINERY)


def _where(frame: FrameType) -> str:
    path = frame.f_code.co_filename
    try:
        relative = os.path.relpath(path)
        path = path if relative.startswith("..") else relative
    except ValueError:  # another drive
        pass
    return f"{frame.f_code.co_qualname} ({path}:{frame.f_lineno})"


class LoopWatchdog:
    """Watch `loop` (see the module doc); `start()` from the loop's thread, `stop()` from there too."""

    def __init__(self, loop: asyncio.AbstractEventLoop, threshold: float, interval: float = 0.1,
                 stuck_after: float | None = None) -> None:
        self.loop = loop
        self.threshold = threshold
        self.interval = min(interval, threshold / 2)
        self.stuck_after = max(5.0, 10 * threshold) if stuck_after is None else stuck_after
        self._due = 0.0  # time.monotonic() when the next tick should run
        self._stall = 0.0  # the _due of the stall the culprits below were seen in
        self._culprits: dict[object, str] = {}  # code object -> who, in the order seen
        self._stuck_reported = 0.0
        self._handle: asyncio.TimerHandle | None = None
        self._stopping = threading.Event()
        self._thread = threading.Thread(target=self._watch, name="tether-loop-watchdog", daemon=True)
        self._loop_thread = 0
        self._base: set[FrameType] = set()
        self._lag = self._max_lag = 0.0  # seconds (read through `lag`, `max_lag`)
        self._stalls = 0

    def start(self) -> None:
        self._loop_thread = threading.get_ident()
        # The frames under the running task (whoever called run_until_complete/run_forever)
        # stay for the loop's life: a stack walk stops there.
        task = asyncio.current_task()
        root = getattr(task.get_coro(), "cr_frame", None) if task is not None else None
        frame: FrameType | None = sys._getframe()
        while frame is not None and frame is not root:
            frame = frame.f_back
        while frame is not None and frame.f_back is not None:
            frame = frame.f_back
            self._base.add(frame)
        self._schedule(time.monotonic())
        self._thread.start()

    def stop(self) -> None:
        self._stopping.set()
        if self._handle is not None:
            self._handle.cancel()
            self._handle = None

    # -- what it measured (read on the loop's thread; tether.metrics exports them) ----------------
    @property
    def lag(self) -> float:
        """How late the last tick ran, in seconds: the event loop's current lag."""
        return self._lag

    @property
    def max_lag(self) -> float:
        """The largest lag of any tick since `start()`, in seconds."""
        return self._max_lag

    @property
    def stalls(self) -> int:
        """Ticks late by more than `threshold` since `start()` (each one logged a WARNING)."""
        return self._stalls

    # -- on the loop ---------------------------------------------------------------------------
    def _schedule(self, now: float) -> None:
        self._due = now + self.interval
        self._handle = self.loop.call_later(self.interval, self._tick)

    def _tick(self) -> None:
        now = time.monotonic()
        due, lag = self._due, max(now - self._due, 0.0)
        self._schedule(now)
        self._lag = lag
        self._max_lag = max(self._max_lag, lag)
        if lag > self.threshold:
            self._stalls += 1
            logger.warning(
                "the event loop was blocked for at least %.2f s by %s: every connection of this "
                "worker waited (loop_lag_warning = %g s). Blocking calls belong in a sync HTTP "
                "handler (run in a thread) or in `await asyncio.to_thread(...)`, not in async "
                "handlers or WebSocket callbacks", lag, self._who(due), self.threshold)

    def _who(self, stall: float) -> str:
        culprits = list(self._culprits.values()) if self._stall == stall else []
        if not culprits:
            return ("a callback on the event loop (none seen blocking on its stack: C code "
                    "holding the GIL, or many callbacks at once)")
        return " then ".join(culprits)

    # -- on the watchdog's thread ----------------------------------------------------------------
    def _watch(self) -> None:
        while not self._stopping.wait(self.interval):
            if self.loop.is_closed():
                return  # stopped without stop(): nothing left to watch
            due = self._due
            overdue = time.monotonic() - due
            if overdue <= self.interval / 2:
                continue  # sampled from half a tick late: a stall just past the threshold is seen
            if self._stall != due:  # a new stall: the tick reads _stall, then _culprits
                self._culprits = {}
                self._stall = due
            if len(self._culprits) < 3:
                found = self._find_culprit()
                if found is not None:
                    self._culprits.setdefault(*found)
            if overdue > self.stuck_after and self._stuck_reported != due:
                self._stuck_reported = due
                logger.warning("the event loop has been blocked for %.1f s so far, by %s", overdue,
                               self._who(due))

    def _find_culprit(self) -> tuple[object, str] | None:
        """(code, 'func (file:line)') of the user code the loop thread is in now, or None."""
        frame: FrameType | None = sys._current_frames().get(self._loop_thread)
        if frame is None:
            return None
        task = asyncio.current_task(self.loop)  # the task the loop is stepping (a dict read)
        root = getattr(task.get_coro(), "cr_frame", None) if task is not None else None
        innermost, found = frame, None
        while frame is not None and frame not in self._base:
            if not _is_machinery(frame):
                found = frame
            elif found is not None:
                break  # the outermost user frame that tether or asyncio called
            if frame is root:
                break
            frame = frame.f_back
        if found is None:
            return None
        who = _where(found)
        if innermost is not found:
            who += f", in {_where(innermost)}"
        if task is not None and not task.get_name().startswith("Task-"):
            who += f", task {task.get_name()!r}"
        return found.f_code, who

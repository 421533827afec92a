"""Fire-and-forget tasks that cannot be garbage-collected mid-flight, and listeners called so.

The event loop keeps only a weak reference to a task; `spawn` keeps a strong one until the
task is done (as the asyncio documentation advises for background tasks). `call_listeners`
calls sync or async listeners without letting one's failure reach the caller or the others.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
from collections.abc import Awaitable, Callable, Coroutine, Iterable
from typing import Any

__all__ = ["spawn", "call_listeners"]

logger = logging.getLogger("tether")

_running: set[asyncio.Task[Any]] = set()


def spawn(coro: Coroutine[Any, Any, Any], loop: asyncio.AbstractEventLoop | None = None) -> asyncio.Task[Any]:
    """Run `coro` as a task on `loop` (default: the running loop), referenced until it ends."""
    task = (loop or asyncio.get_running_loop()).create_task(coro)
    _running.add(task)
    task.add_done_callback(_running.discard)
    return task


def call_listeners(listeners: Iterable[Callable[..., Any]], what: str, *args: Any) -> None:
    """Call each of `listeners` with `args`; an awaitable result runs as a task. An exception,
    raised at once or by the task, is logged ("<what> raised") and reaches neither the caller
    nor the other listeners."""
    for listener in list(listeners):
        try:
            result = listener(*args)
            if inspect.isawaitable(result):
                spawn(_logged(result, what))
        except Exception:
            logger.exception("%s raised", what)


async def _logged(awaitable: Awaitable[Any], what: str) -> None:
    try:
        await awaitable
    except Exception:
        logger.exception("%s raised", what)

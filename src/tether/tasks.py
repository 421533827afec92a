"""Fire-and-forget tasks that cannot be garbage-collected mid-flight, listeners called so, and
tasks stopped for sure.

The event loop keeps only a weak reference to a task; `spawn` keeps a strong one until the
task is done (as the asyncio documentation advises for background tasks). `call_listeners`
calls sync or async listeners without letting one's failure reach the caller or the others.
`cancel_and_wait` stops tasks even when one of them swallowed its cancellation;
`close_quietly` lets a connection go, bounded.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import logging
from collections.abc import Awaitable, Callable, Coroutine, Iterable
from typing import Any

__all__ = ["spawn", "call_listeners", "cancel_and_wait", "close_quietly"]

logger = logging.getLogger("tether")

_running: set[asyncio.Task[Any]] = set()

#: How long `cancel_and_wait` lets a cancelled task finish before cancelling it again, and how
#: many times it cancels it in all before it gives up on it.
CANCEL_AGAIN_AFTER = 0.5
CANCEL_TRIES = 10


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


async def cancel_and_wait(tasks: Iterable[asyncio.Task[Any]]) -> None:
    """Cancel `tasks` and wait until each has ended; what one raised is dropped (the caller is
    stopping them).

    A task that is still running `CANCEL_AGAIN_AFTER` seconds after a cancellation is
    cancelled again: it may have swallowed the first. Python 3.11's `asyncio.wait_for`
    returns the awaited result, not the cancellation, when both come in the same turn of
    the loop, and redis-py sends every command under one; a task cancelled then goes on as
    if nothing happened. After `CANCEL_TRIES` cancellations a task still running is logged
    as an error and left behind, so that the caller (a `stop()`) never hangs on it."""
    tasks = list(tasks)
    pending = {task for task in tasks if not task.done()}
    for _ in range(CANCEL_TRIES):
        if not pending:
            break
        for task in pending:
            task.cancel()
        _, pending = await asyncio.wait(pending, timeout=CANCEL_AGAIN_AFTER)
    for task in pending:
        logger.error("tether: %r did not end after %d cancellations; left running", task, CANCEL_TRIES)
    for task in tasks:
        if task.done() and not task.cancelled():
            task.exception()  # retrieved: asyncio does not log it as never retrieved


async def close_quietly(closing: Awaitable[Any], seconds: float = 1.0) -> None:
    """Await `closing` (a connection's close) for at most `seconds`; its error or its timeout
    is dropped (the connection is being let go). A cancellation of the caller goes through: a
    task stopped during its cleanup ends (`asyncio.timeout`, which, unlike 3.11's wait_for,
    never trades a cancellation for the close's result)."""
    with contextlib.suppress(Exception):
        async with asyncio.timeout(seconds):
            await closing

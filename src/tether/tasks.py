"""Fire-and-forget tasks that cannot be garbage-collected mid-flight.

The event loop keeps only a weak reference to a task; `spawn` keeps a strong one until the
task is done (as the asyncio documentation advises for background tasks).
"""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine
from typing import Any

__all__ = ["spawn"]

_running: set[asyncio.Task[Any]] = set()


def spawn(coro: Coroutine[Any, Any, Any], loop: asyncio.AbstractEventLoop | None = None) -> asyncio.Task[Any]:
    """Run `coro` as a task on `loop` (default: the running loop), referenced until it ends."""
    task = (loop or asyncio.get_running_loop()).create_task(coro)
    _running.add(task)
    task.add_done_callback(_running.discard)
    return task

"""tether.tasks: `spawn`, fire-and-forget tasks the collector cannot take mid-flight."""

from __future__ import annotations

import asyncio
import gc

from tether.server.serve import new_event_loop
from tether.tasks import spawn


def test_a_spawned_task_is_kept_alive_until_it_ends():
    """The loop holds tasks weakly: an unreferenced fire-and-forget task could be collected
    mid-flight. spawn() keeps a reference until the task is done."""
    loop = new_event_loop()
    done = []

    async def background() -> None:
        await asyncio.sleep(0.05)
        done.append(True)

    async def main() -> None:
        spawn(background())  # the result is dropped on purpose
        gc.collect()
        await asyncio.sleep(0.2)

    try:
        loop.run_until_complete(main())
    finally:
        loop.close()
    assert done == [True]

"""tether.tasks: `spawn`, fire-and-forget tasks the collector cannot take mid-flight,
`cancel_and_wait`, which ends tasks that swallowed a cancellation, and `close_quietly`."""

from __future__ import annotations

import asyncio
import gc
import logging
import sys

import pytest

from tether import tasks
from tether.server.serve import new_event_loop
from tether.tasks import cancel_and_wait, close_quietly, spawn


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


def test_cancel_and_wait_ends_a_task_whose_wait_for_swallowed_the_cancellation():
    """Python 3.11's wait_for returns the result when the cancellation comes in the turn the
    awaited coroutine finished (redis-py sends every command under one): such a task goes on.
    Cancelled at each of the first turns (one of them is that turn on 3.11), every task ends."""

    async def command_then_idle(sent: list[int]) -> None:
        await asyncio.wait_for(asyncio.sleep(0), 5)  # a command sent at once, as redis-py's
        sent.append(1)
        await asyncio.sleep(3600)  # a writer waiting for more to send

    async def main() -> list[int]:
        went_on = []
        for turns in range(4):
            sent: list[int] = []
            task = asyncio.ensure_future(command_then_idle(sent))
            for _ in range(turns):
                await asyncio.sleep(0)
            await cancel_and_wait([task])
            assert task.cancelled()
            went_on.append(len(sent))
        return went_on

    went_on = asyncio.run(main())
    assert went_on[0] == 0  # cancelled before it ran
    if sys.version_info < (3, 12):  # the turn the bug needs was among those tried
        assert 1 in went_on


def test_cancel_and_wait_leaves_a_task_that_never_ends_after_its_tries_and_says_so(
        monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture):
    """A stop() never hangs: a task that swallows every cancellation is cancelled
    CANCEL_TRIES times, then logged and left; a task that failed by itself is not an error."""
    monkeypatch.setattr(tasks, "CANCEL_AGAIN_AFTER", 0.01)
    monkeypatch.setattr(tasks, "CANCEL_TRIES", 3)
    cancellations = []
    released = asyncio.Event()

    async def stubborn() -> None:
        while not released.is_set():
            try:
                await released.wait()
            except asyncio.CancelledError:
                cancellations.append(1)

    async def failing() -> None:
        raise ValueError("its own failure")

    async def main() -> None:
        never, fails = asyncio.ensure_future(stubborn()), asyncio.ensure_future(failing())
        await asyncio.sleep(0)
        await cancel_and_wait([never, fails])
        assert not never.done() and fails.done()
        released.set()
        await never

    with caplog.at_level(logging.ERROR, logger="tether"):
        asyncio.run(main())
    assert cancellations == [1, 1, 1]
    assert [record.getMessage().endswith("did not end after 3 cancellations; left running")
            for record in caplog.records] == [True]


def test_close_quietly_drops_a_failed_or_hung_close_and_lets_a_cancellation_through():
    async def failing() -> None:
        raise ConnectionError("already gone")

    async def main() -> bool:
        await close_quietly(failing())
        await close_quietly(asyncio.sleep(3600), seconds=0.01)  # a close that hangs: bounded
        cleanup = asyncio.ensure_future(close_quietly(asyncio.sleep(3600)))
        await asyncio.sleep(0)
        cleanup.cancel()
        await asyncio.wait([cleanup])
        return cleanup.cancelled()

    assert asyncio.run(main())

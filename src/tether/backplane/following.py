"""The channels a backplane follows, and the confirmations of subscriptions on their way
(`Backplane.subscribe` returns one until the server has the subscription)."""

from __future__ import annotations

import asyncio

__all__ = ["Following"]


class Following:
    """`channels`: every channel subscribed (made again after an outage); `waiting`: the
    confirmation of each subscription not yet in force, for every caller to wait on."""

    def __init__(self) -> None:
        self.channels: set[str] = set()
        self.waiting: dict[str, asyncio.Future[None]] = {}

    def wait(self, loop: asyncio.AbstractEventLoop, channel: str) -> asyncio.Future[None]:
        """A new confirmation of `channel`'s subscription, handed to whoever asks until it is in force."""
        waiter: asyncio.Future[None] = loop.create_future()
        self.waiting[channel] = waiter
        return waiter

    def confirm(self, channel: str, waiter: asyncio.Future[None] | None = None) -> None:
        """`channel`'s subscription is in force (or given up): its waiters go on. With `waiter`,
        only when that is still the channel's confirmation."""
        current = self.waiting.get(channel)
        if waiter is None or current is waiter:
            self.waiting.pop(channel, None)
            waiter = current
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    def remove(self, channel: str) -> bool:
        """Stop following `channel` (its waiters go on); False when it was not followed."""
        if channel not in self.channels:
            return False
        self.channels.discard(channel)
        self.confirm(channel)
        return True

    def release(self) -> None:
        """The backplane is down: no join waits for it (every waiter goes on)."""
        for waiter in self.waiting.values():
            if not waiter.done():
                waiter.set_result(None)
        self.waiting.clear()

"""Pacing for the live client (`tether.client.live`): how long to wait before reconnecting,
and how fast to send the joins of a reconnection.

`Backoff` is exponential backoff with full jitter: the wait before attempt *n* (0 first) is
drawn uniformly from `[0, min(max_delay, min_delay * 2**n))`. Full jitter spreads out
clients that lost the same server at the same moment, so that they do not come back as one
wave; the cap keeps an outage of any length from stretching the wait past `max_delay`.
`random` (a `random.random`-like function) is injectable so that tests can pin the draws.

`Pacer` is a token bucket for the client's own bursts: a reconnecting client with many rooms
sends their joins at most `burst` at once, then `rate` a second, under the server's default
command rate (`commands_per_second` 20, `command_burst` 50, docs/live-protocol.md) so that
a rejoin is neither refused with 429 nor counted against the connection's error budget.
"""

from __future__ import annotations

import asyncio
import random as _random
from collections.abc import Callable

__all__ = ["Backoff", "Pacer"]


class Backoff:
    """Full-jitter exponential backoff (see the module doc)."""

    def __init__(self, min_delay: float = 0.25, max_delay: float = 10.0,
                 random: Callable[[], float] = _random.random) -> None:
        if min_delay < 0 or max_delay < min_delay:
            raise ValueError(f"need 0 <= min_delay <= max_delay, not {min_delay} and {max_delay}")
        self.min_delay, self.max_delay, self.random = min_delay, max_delay, random

    def ceiling(self, attempt: int) -> float:
        """The longest wait before attempt `attempt` (0 first)."""
        return min(self.max_delay, self.min_delay * 2.0 ** min(attempt, 64))

    def delay(self, attempt: int) -> float:
        """A wait drawn for attempt `attempt`: uniform in [0, ceiling(attempt))."""
        return self.random() * self.ceiling(attempt)


class Pacer:
    """A token bucket: `await take()` returns at once while tokens remain (`burst` at first),
    else when the next one has accrued (`rate` a second)."""

    def __init__(self, burst: int = 40, rate: float = 15.0) -> None:
        self.burst, self.rate = burst, rate
        self._tokens = float(burst)
        self._stamp: float | None = None

    async def take(self) -> None:
        loop = asyncio.get_running_loop()
        now = loop.time()
        if self._stamp is not None:
            self._tokens = min(self.burst, self._tokens + (now - self._stamp) * self.rate)
        self._stamp = now
        self._tokens -= 1
        if self._tokens < 0:  # this one is owed: wait until it has accrued
            await asyncio.sleep(-self._tokens / self.rate)

"""How long a waiting task was kept from running by its own event loop, so that a backplane's
checks of silence (no message for `probe` seconds, no answer to a probe or a PING within as
long) count only the time the loop was free to hear: a loop held elsewhere (a blocking
handler, a storm of joins) reads nothing meanwhile, the answer included, and that silence is
not the server's."""

from __future__ import annotations

import asyncio

__all__ = ["HeldClock"]


class HeldClock:
    """For a task that wakes at least every `tick` seconds and calls `held()` each time: how
    late it ran since the previous call (the time past twice a tick, when it was that late)."""

    def __init__(self, tick: float) -> None:
        self._loop = asyncio.get_running_loop()
        self.tick = tick
        self._previous = self._loop.time()
        #: the held time of every call so far, added up
        self.total = 0.0

    def held(self) -> float:
        """Seconds since the previous call that the loop kept this task waiting past its tick,
        when that is over a tick (else 0: a wake a little late is no hold)."""
        now = self._loop.time()
        late = now - self._previous - self.tick
        self._previous = now
        held = late if late > self.tick else 0.0
        self.total += held
        return held

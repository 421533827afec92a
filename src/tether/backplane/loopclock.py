"""How long a waiting task was kept from running by its own event loop, so that a backplane's
checks of silence (no message for `probe` seconds, no answer to a probe or a PING within as
long) count only the time the loop was free to hear: a loop held elsewhere (a blocking
handler, a storm of joins) reads nothing meanwhile, the answer included, and that silence is
not the server's."""

from __future__ import annotations

import asyncio

__all__ = ["HeldClock"]


class HeldClock:
    """For a task that wakes at least every `tick` seconds and calls `held(now)` each time: how
    late it ran since the previous call (the time past a tick, when that is over a tick)."""

    def __init__(self, tick: float) -> None:
        self.tick = tick
        self._previous = asyncio.get_running_loop().time()
        #: the held time of every call so far, added up
        self.total = 0.0

    def held(self, now: float) -> float:
        """Seconds between the previous call and this one, at `now` (the loop's time, which
        the caller has read), that the loop kept this task waiting past its tick, when that
        is over a tick (else 0: a wake a little late is no hold)."""
        late = now - self._previous - self.tick
        self._previous = now
        held = late if late > self.tick else 0.0
        self.total += held
        return held

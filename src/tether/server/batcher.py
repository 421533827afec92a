"""Write coalescing ("corking"): what one connection is sent within one event-loop
iteration leaves in a single `transport.write`, made in the next iteration."""

from __future__ import annotations

import asyncio
from typing import Protocol

__all__ = ["WriteBatcher", "Flushable"]


class Flushable(Protocol):
    """A connection with corked output."""

    def flush(self) -> None:
        """Write out everything corked so far."""


class WriteBatcher:
    """Flushes every connection written to during this loop iteration, once, in the next."""

    __slots__ = ("_loop", "_pending", "_scheduled")

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        self._pending: list[Flushable] = []
        self._scheduled = False

    def add(self, connection: Flushable) -> None:
        """Flush `connection` in the next loop iteration."""
        self._pending.append(connection)
        if not self._scheduled:
            self._scheduled = True
            self._loop.call_soon(self.flush)

    def alone(self) -> bool:
        """True when a single connection has output waiting for this iteration's flush."""
        return len(self._pending) == 1

    def flush(self) -> None:
        """Write out every pending connection now."""
        pending, self._pending = self._pending, []
        self._scheduled = False
        for connection in pending:
            connection.flush()

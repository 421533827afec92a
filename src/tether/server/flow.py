"""Write flow control shared by the server's protocols: asyncio calls pause_writing() when
a transport's buffer passes its high-water mark and resume_writing() once it drained."""

from __future__ import annotations

import asyncio


class WriteFlowControl:
    """Mixin for an asyncio.Protocol with a `loop`: `writable()` is None or a future to await."""

    loop: asyncio.AbstractEventLoop

    def __init__(self) -> None:
        # Instance attributes, not class defaults: CPython 3.11 specializes loads of an
        # attribute only when the class has none of that name (own sends read these).
        self._write_paused = False
        self._drain_waiter: asyncio.Future[None] | None = None

    def pause_writing(self) -> None:
        self._write_paused = True

    def resume_writing(self) -> None:
        self._write_paused = False
        self._release_drain()

    def _release_drain(self) -> None:
        """Wake whoever waits for the buffer (also called when the connection is lost)."""
        waiter, self._drain_waiter = self._drain_waiter, None
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    def writable(self) -> asyncio.Future[None] | None:
        """None when more may be written now, else a future that resolves once it may."""
        if not self._write_paused:
            return None
        if self._drain_waiter is None:
            self._drain_waiter = self.loop.create_future()
        return self._drain_waiter

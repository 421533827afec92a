"""A road that records what the core asks of it: drive `tether.WebSocketConnection` and
`tether.Hub` with no socket (as websockets' tests drive its sans-I/O protocol).

`RecordingChannel` is a `ChannelBase` whose road primitives append events to `events`:

    ("accept", subprotocol, headers)
    ("refuse", status, headers, body)
    ("message", opcode, payload)        own sends (send_message) and deliveries (write_frame)
    ("close", code, reason, wait_for_peer)
    ("pause",) / ("resume",)

The test plays the client: `channel.ended(code, reason)` (the peer closed or vanished; the
channel's state machine records it and the channel tells the core),
`ws.message_received(message)`; and the road's buffer: `channel.buffered` (what
`buffered_bytes()` answers, for the 1008 rule) and `channel.drain_future` (what `drain()`
returns: None, or a future the test resolves).
"""

from __future__ import annotations

import asyncio
import functools
import threading
from collections.abc import Callable, Coroutine
from typing import Any

from tether.channel import ChannelBase
from tether.hub import Hub
from tether.protocol import OP_TEXT
from tether.protocol.connection import Connection, Side
from tether.websocket_connection import WebSocket

__all__ = ["RecordingChannel", "async_test", "open_connection", "settle"]


class RecordingChannel(ChannelBase):
    """A channel whose road is a list of events (see the module doc)."""

    def __init__(self, loop: asyncio.AbstractEventLoop | None = None, *, max_send_buffer: int = 1 << 20) -> None:
        super().__init__(loop or asyncio.get_running_loop(), max_send_buffer, Connection(Side.SERVER))
        self.events: list[tuple[Any, ...]] = []
        self.frames: list[bytes] = []  # the ready frames handed to write_frame (deliveries)
        self.buffered = 0  # what buffered_bytes() answers
        self.drain_future: asyncio.Future[None] | None = None  # what drain() returns
        self.threads: set[int] = set()  # threads the road was written from

    def _record(self, *event: Any) -> None:
        self.threads.add(threading.get_ident())
        self.events.append(event)

    # -- the road primitives ----------------------------------------------------------------
    def write_accept(self, subprotocol: str | None, headers: list[tuple[str, str]]) -> None:
        self._record("accept", subprotocol, headers)

    def write_refusal(self, status: int, headers: list[tuple[str, str]], body: bytes) -> None:
        self._record("refuse", status, headers, body)

    def send_message(self, opcode: int, payload: bytes) -> None:
        self._record("message", opcode, payload)

    def write_frame(self, frame: bytes, opcode: int, payload: bytes) -> None:
        self.frames.append(frame)
        self._record("message", opcode, payload)

    def write_close(self, frame: bytes, code: int, reason: str, wait_for_peer: bool) -> None:
        self._record("close", code, reason, wait_for_peer)

    def buffered_bytes(self) -> int:
        return self.buffered

    def pause_reading(self) -> None:
        self._record("pause")

    def resume_reading(self) -> None:
        self._record("resume")

    def drain(self) -> asyncio.Future[None] | None:
        return self.drain_future

    # -- reading the record -------------------------------------------------------------------
    def kinds(self) -> list[str]:
        """The kind of every event, in order."""
        return [event[0] for event in self.events]

    def messages(self) -> list[str | bytes]:
        """Every message written, decoded: str for text, bytes for binary."""
        return [payload.decode("utf-8") if opcode == OP_TEXT else payload
                for kind, opcode, payload in (e for e in self.events if e[0] == "message")]

    def closes(self) -> list[tuple[Any, ...]]:
        """Every close written, as (code, reason, wait_for_peer)."""
        return [event[1:] for event in self.events if event[0] == "close"]


async def open_connection(hub: Hub, path: str = "/p", *, max_send_buffer: int = 1 << 20,
                          **kwargs: Any) -> tuple[WebSocket, RecordingChannel]:
    """An accepted core WebSocket on a fresh RecordingChannel (its events start after accept)."""
    channel = RecordingChannel(max_send_buffer=max_send_buffer)
    ws = WebSocket(channel, hub, path=path, **kwargs)
    await ws.accept()
    channel.events.clear()
    return ws, channel


async def settle(turns: int = 5) -> None:
    """Let the loop run a few iterations (spawned close callbacks, woken receives)."""
    for _ in range(turns):
        await asyncio.sleep(0)


def async_test(fn: Callable[..., Coroutine[Any, Any, Any]]) -> Callable[..., Any]:
    """Run an async test function with asyncio.run (bounded: 5 s), keeping its fixtures."""

    @functools.wraps(fn)
    def run(*args: Any, **kwargs: Any) -> Any:
        return asyncio.run(asyncio.wait_for(fn(*args, **kwargs), 5))

    return run

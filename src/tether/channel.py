"""The seam between the core connection and a road in (native server, ASGI).

Two interfaces, named by the direction of the call (as picows names `WSTransport` and
`WSListener`):

- `Channel`: what the core `WebSocket` calls on its road (accept, reject, send, deliver,
  close, fail, flow control);
- `ConnectionListener`: what the road calls on the core (`message_received`,
  `disconnected`). The core `WebSocket` is one.

`ChannelBase` holds the policy every road obeys, written once: the refusal response, the
slow-client rule (below), failing a connection and telling the core, once, that it is over.
The connection's state, who ended it and the frames each step writes are its sans-I/O
state machine's (`self.protocol`, a `tether.protocol.connection.Connection`): nothing here
or in a road assigns them. A road subclasses ChannelBase and implements only how bytes or
ASGI messages move: `write_accept`, `write_refusal`, `send_message`, `write_frame`,
`write_close`, `buffered_bytes`, `pause_reading`, `resume_reading`, `drain`.

Slow clients (the `slow_client` setting; "buffer" is `buffered_bytes()`, what the server
holds for a client that has not taken it yet). Who waits on whom:

- A connection's own `send_*` waits on its own client only, in both modes: the message is
  queued, then the send waits while the road's buffer is above its high-water mark
  (`drain()`). It is never closed for being slow and has no timeout of its own: a client
  that stops reading is closed by keepalive (1011), as it stops answering pings.
- "close" (the default): a delivery (broadcast, publish, send_to, `send_nowait`, awaited
  or not) never waits: a client whose buffer is over `max_send_buffer` is failed with 1008.
- "wait": an awaited delivery (`await hub.broadcast/publish/send_to`,
  `await ws.broadcast`) queues at once for every client at or under `max_send_buffer`,
  then waits, for all the others together, until each is back at or under it
  (`deliver_when_drained`); one still over it after `send_timeout` seconds is failed with
  1008, so the call returns within about `send_timeout` whoever stalls. Deliveries nobody
  awaits (the `*_sync` twins, `send_nowait`, what other nodes of a cluster deliver here)
  cannot wait: they fail a client past `WAIT_MODE_CAP` x `max_send_buffer`.

Either way a connection holds at most its limit plus one message (`max_send_buffer` in
"close" mode, `WAIT_MODE_CAP` x `max_send_buffer` in "wait" mode, the road's high-water
mark for own sends alone).
"""

from __future__ import annotations

import asyncio
import enum
import logging
from collections.abc import Awaitable
from typing import Literal, Protocol

from .protocol.codes import WS_1006_ABNORMAL_CLOSURE, WS_1008_POLICY_VIOLATION
from .protocol.connection import CLOSED, CLOSING, CONNECTING, OPEN, Connection, ConnectionState

__all__ = ["ConnectionState", "CloseKind", "ConnectionListener", "Channel", "ChannelBase",
           "CONNECTING", "OPEN", "CLOSING", "CLOSED", "WAIT_MODE_CAP"]

logger = logging.getLogger("tether")

#: In "wait" mode a delivery nobody awaits fails a client only past this many times
#: `max_send_buffer`. Awaited deliveries keep a slow client at `max_send_buffer` (plus one
#: message); the `*_sync` twins interleaved with them get as much again as headroom, so a
#: client that is merely slow is not closed by the first delivery that cannot wait, while
#: one that stopped reading still costs a bounded amount of memory.
WAIT_MODE_CAP = 2

# An awaited delivery over the limit that the road offers no drain wait for (its buffer is
# under the road's own high-water mark, above a smaller max_send_buffer) looks again this often.
_RECHECK = 0.01


class CloseKind(enum.StrEnum):
    """Why a road ended a connection, as a type (metrics count these, never a reason's words)."""

    OTHER = "other"              #: the peer closed or vanished, a protocol error, a timeout...
    SLOW_CLIENT = "slow_client"  #: failed (1008) for not reading what it is sent


class ConnectionListener(Protocol):
    """What a road calls on the core connection (the core `WebSocket` implements it)."""

    path: str

    def message_received(self, message: str | bytes) -> None:
        """A complete message arrived: str for text, bytes for binary."""

    def disconnected(self, code: int, reason: str, kind: CloseKind = CloseKind.OTHER) -> None:
        """The connection can no longer send: the peer closed (`code` from its close frame),
        vanished (1006), or the road failed it (its close code, and `kind`). Called once,
        after the state machine recorded the end, and never after the core's own close."""


class Channel(Protocol):
    """What the core `WebSocket` calls on its road.

    `drain()` returns None when more may be sent now, else an awaitable that resolves once
    the road's buffer has drained: the core's own sends await it, and so do awaited
    deliveries to a slow client in "wait" mode (`deliver_when_drained`).
    """

    loop: asyncio.AbstractEventLoop
    protocol: Connection
    send_timeout: float | None

    @property
    def state(self) -> ConnectionState: ...
    def attach(self, listener: ConnectionListener) -> None: ...
    def accept(self, subprotocol: str | None, headers: list[tuple[str, str]]) -> None: ...
    def reject(self, status: int, body: bytes, headers: list[tuple[str, str]]) -> None: ...
    def send_message(self, opcode: int, payload: bytes) -> None: ...
    def deliver(self, frame: bytes, opcode: int, payload: bytes) -> bool: ...
    def deliver_or_wait(self, frame: bytes, opcode: int, payload: bytes) -> bool | None: ...
    async def deliver_when_drained(self, frame: bytes, opcode: int, payload: bytes) -> bool: ...
    def set_slow_client(self, slow_client: Literal["close", "wait"], send_timeout: float) -> None: ...
    def close(self, code: int, reason: str) -> None: ...
    def fail(self, code: int, reason: str, kind: CloseKind = CloseKind.OTHER) -> None: ...
    def pause_reading(self) -> None: ...
    def resume_reading(self) -> None: ...
    def drain(self) -> Awaitable[None] | None: ...


class _Departed:
    """The listener of a detached channel: it keeps the path (for the log) and drops the
    calls that still come."""

    __slots__ = ("path",)

    def __init__(self, path: str) -> None:
        self.path = path

    def message_received(self, message: str | bytes) -> None:
        pass

    def disconnected(self, code: int, reason: str, kind: CloseKind = CloseKind.OTHER) -> None:
        pass


class ChannelBase:
    """The connection policy shared by every road (see the module doc)."""

    loop: asyncio.AbstractEventLoop
    listener: ConnectionListener
    protocol: Connection
    max_send_buffer: int
    deliver_limit: int
    send_timeout: float | None

    def __init__(self, loop: asyncio.AbstractEventLoop, max_send_buffer: int, protocol: Connection) -> None:
        # Instance attributes only, never class-level defaults: CPython 3.11 cannot specialize
        # `self.protocol` loads when the class also has an attribute of that name (measured
        # with callgrind: about 1,000 more instructions per broadcast delivery).
        self.loop = loop
        self.max_send_buffer = max_send_buffer
        #: Past this many buffered bytes a delivery nobody awaits fails the connection (1008).
        self.deliver_limit = max_send_buffer
        #: None in "close" mode; in "wait" mode how long an awaited delivery waits for this client.
        self.send_timeout = None
        #: The connection's state machine: its state, who ended it, the frames each step writes.
        self.protocol = protocol

    @property
    def state(self) -> ConnectionState:
        """CONNECTING, OPEN, CLOSING or CLOSED: the state machine's."""
        return self.protocol.state

    def set_slow_client(self, slow_client: Literal["close", "wait"], send_timeout: float) -> None:
        """Apply the `slow_client` and `send_timeout` settings (see the module doc); the core
        does it before the handshake. Any value but "wait" means "close"."""
        if slow_client == "wait":
            self.send_timeout = send_timeout
            self.deliver_limit = WAIT_MODE_CAP * self.max_send_buffer
        else:
            self.send_timeout = None
            self.deliver_limit = self.max_send_buffer

    def attach(self, listener: ConnectionListener) -> None:
        """Set the core connection this channel reports to."""
        self.listener = listener

    # -- the handshake ----------------------------------------------------------------
    def accept(self, subprotocol: str | None, headers: list[tuple[str, str]]) -> None:
        """Complete the handshake (nothing happens when the client already left)."""
        if self.protocol.accept():
            self.write_accept(subprotocol, headers)

    def reject(self, status: int, body: bytes, headers: list[tuple[str, str]]) -> None:
        """Refuse the handshake with an HTTP response carrying `body` as plain text."""
        if not self.protocol.refuse():
            return
        head = [("Content-Type", "text/plain; charset=utf-8"), ("Content-Length", str(len(body))), *headers]
        self.write_refusal(status, head, body)

    # -- sending ----------------------------------------------------------------------
    def deliver(self, frame: bytes, opcode: int, payload: bytes) -> bool:
        """A delivery that does not wait (broadcast, publish, send_to): queued unless the
        connection is not open. A client whose buffer is already over `deliver_limit`
        (`max_send_buffer`; in "wait" mode `WAIT_MODE_CAP` times that) is not reading: the
        connection fails with 1008 instead of growing without bound. Returns whether the
        message was queued."""
        if self.protocol.state is not OPEN:
            return False
        if self.buffered_bytes() > self.deliver_limit:
            return self._not_reading(f"send buffer over {self.deliver_limit} bytes")
        self.write_frame(frame, opcode, payload)
        return True

    def deliver_or_wait(self, frame: bytes, opcode: int, payload: bytes) -> bool | None:
        """The first step of an awaited delivery: `deliver`, except that in "wait" mode a
        client over `max_send_buffer` is not failed: None says the caller has to wait for it
        (`deliver_when_drained`). (`deliver` inlined: one buffer look per target.)"""
        if self.protocol.state is not OPEN:
            return False
        buffered = self.buffered_bytes()
        if buffered > self.max_send_buffer and self.send_timeout is not None:
            return None
        if buffered > self.deliver_limit:
            return self._not_reading(f"send buffer over {self.deliver_limit} bytes")
        self.write_frame(frame, opcode, payload)
        return True

    async def deliver_when_drained(self, frame: bytes, opcode: int, payload: bytes) -> bool:
        """An awaited delivery in "wait" mode: wait until the buffer is at or under
        `max_send_buffer`, then queue the message as `deliver` does. A client still over it
        after `send_timeout` seconds is failed with 1008. Returns whether the message was
        queued (False also when the connection closed meanwhile). In "close" mode: `deliver`."""
        timeout = self.send_timeout
        if timeout is None:
            return self.deliver(frame, opcode, payload)
        deadline = self.loop.time() + timeout
        while self.protocol.state is OPEN and self.buffered_bytes() > self.max_send_buffer:
            remaining = deadline - self.loop.time()
            if remaining <= 0:
                return self._not_reading(f"send buffer over {self.max_send_buffer} bytes for {timeout:g} s")
            await self._wait_drained(remaining)
        return self.deliver(frame, opcode, payload)

    def _not_reading(self, why: str) -> bool:
        """Fail a client that does not take what it is sent (1008); False: nothing queued."""
        self.fail(WS_1008_POLICY_VIOLATION, f"{why}: the client is not reading", CloseKind.SLOW_CLIENT)
        return False

    async def _wait_drained(self, timeout: float) -> None:
        """Wait at most `timeout` seconds for the road's buffer to drain. The road's drain
        future is shared with the connection's own sends: it is waited on, never cancelled."""
        waiting = self.drain()
        if waiting is None:
            await asyncio.sleep(min(timeout, _RECHECK))
        else:
            await asyncio.wait((asyncio.ensure_future(waiting),), timeout=timeout)

    # -- closing ----------------------------------------------------------------------
    def close(self, code: int, reason: str) -> None:
        """Start the closing handshake from the server side (once; OPEN -> CLOSING)."""
        frame = self.protocol.close(code, reason)
        if frame is not None:
            self.write_close(frame, code, reason, wait_for_peer=True)

    def fail(self, code: int, reason: str, kind: CloseKind = CloseKind.OTHER) -> None:
        """Fail the connection (RFC 6455 7.1.7): send a close with `code` without waiting
        for the peer's answer, and tell the core it is over (and why, as `kind`), unless
        it already ended."""
        logger.info("WebSocket %s closed with %d: %s", self.listener.path, code, reason)
        protocol = self.protocol
        news = not protocol.ended
        frame = protocol.fail(code, reason)
        if frame is not None:
            self.write_close(frame, code, reason, wait_for_peer=False)
        if news:
            self.listener.disconnected(code, reason, kind)

    def ended(self, code: int = WS_1006_ABNORMAL_CLOSURE, reason: str = "connection lost") -> None:
        """The road learned that the connection is over (its transport is gone, or an ASGI
        server reported the peer's close): tell the core, unless it already ended."""
        protocol = self.protocol
        news = not protocol.ended
        protocol.connection_lost(code, reason)
        # The core may not be attached yet: the client left before its session started.
        listener = getattr(self, "listener", None)
        if news and listener is not None:
            listener.disconnected(code, reason)

    def detach(self) -> None:
        """Stop holding the core connection, once it is told the connection is over (a road
        calls this when its transport is gone). The core holds its channel, so the two make a
        reference cycle: kept, a closed connection (its unread messages, a partial message)
        would wait for the collector's next full pass instead of going with its handler."""
        listener = getattr(self, "listener", None)
        if listener is not None:
            self.listener = _Departed(listener.path)

    # -- what a road implements ---------------------------------------------------------
    def write_accept(self, subprotocol: str | None, headers: list[tuple[str, str]]) -> None:
        raise NotImplementedError

    def write_refusal(self, status: int, headers: list[tuple[str, str]], body: bytes) -> None:
        raise NotImplementedError

    def send_message(self, opcode: int, payload: bytes) -> None:
        """The connection's own send: always queued (the sender is paced by `drain()`)."""
        raise NotImplementedError

    def write_frame(self, frame: bytes, opcode: int, payload: bytes) -> None:
        """Queue one message, given both as a ready frame and as (opcode, payload)."""
        raise NotImplementedError

    def write_close(self, frame: bytes, code: int, reason: str, wait_for_peer: bool) -> None:
        """Send the close (`frame`, made by the state machine, for roads that write bytes;
        `code` and `reason` for those that carry messages); end the connection now, or when
        the peer answers (or times out)."""
        raise NotImplementedError

    def buffered_bytes(self) -> int:
        """Bytes queued for the client and not yet taken by it."""
        raise NotImplementedError

    def drain(self) -> Awaitable[None] | None:
        """None when more may be sent now, else an awaitable resolved once the buffer drained
        below the road's low-water mark (or the connection is gone)."""
        raise NotImplementedError

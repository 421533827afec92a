"""The seam between the core connection and a road in (native server, ASGI).

Two interfaces, named by the direction of the call (as picows names `WSTransport` and
`WSListener`):

- `Channel`: what the core `WebSocket` calls on its road (accept, reject, send, deliver,
  close, fail, flow control);
- `ConnectionListener`: what the road calls on the core (`message_received`,
  `disconnected`). The core `WebSocket` is one.

`ChannelBase` holds the policy every road obeys, written once: the connection state
(`ConnectionState`, with an explicit CLOSING), the refusal response, the rule for
deliveries nobody awaits (past `max_send_buffer` buffered bytes the client is not reading:
close 1008) and failing a connection. A road subclasses it and implements only how bytes
or ASGI messages move: `write_accept`, `write_refusal`, `send_message`, `write_frame`,
`write_close`, `buffered_bytes`, `pause_reading`, `resume_reading`, `drain`.
"""

from __future__ import annotations

import asyncio
import enum
import logging
from collections.abc import Awaitable
from typing import Protocol

from .protocol.codes import WS_1008_POLICY_VIOLATION

__all__ = ["ConnectionState", "ConnectionListener", "Channel", "ChannelBase",
           "CONNECTING", "OPEN", "CLOSING", "CLOSED"]

logger = logging.getLogger("tether")


class ConnectionState(enum.IntEnum):
    """Where a connection is in its life (RFC 6455's four states)."""

    CONNECTING = 0  #: handshake in progress: the core accepts or rejects it
    OPEN = 1        #: messages flow both ways
    CLOSING = 2     #: our close is out (or the connection failed); the peer's is awaited
    CLOSED = 3      #: refused, closed by the peer, close handshake done, or the transport is gone


CONNECTING, OPEN, CLOSING, CLOSED = ConnectionState


class ConnectionListener(Protocol):
    """What a road calls on the core connection (the core `WebSocket` implements it)."""

    path: str

    def message_received(self, message: str | bytes) -> None:
        """A complete message arrived: str for text, bytes for binary."""

    def disconnected(self, code: int, reason: str) -> None:
        """The connection can no longer send: the peer closed (`code` from its close frame),
        vanished (1006), or the road failed it (its close code). May be called more than
        once; only the first call counts."""


class Channel(Protocol):
    """What the core `WebSocket` calls on its road.

    `drain()` returns None when more may be sent now, else an awaitable that resolves once
    the road's buffer has drained: the core's own sends await it, deliveries never do.
    """

    loop: asyncio.AbstractEventLoop
    state: ConnectionState

    def attach(self, listener: ConnectionListener) -> None: ...
    def accept(self, subprotocol: str | None, headers: list[tuple[str, str]]) -> None: ...
    def reject(self, status: int, body: bytes, headers: list[tuple[str, str]]) -> None: ...
    def send_message(self, opcode: int, payload: bytes) -> None: ...
    def deliver(self, frame: bytes, opcode: int, payload: bytes) -> bool: ...
    def close(self, code: int, reason: str) -> None: ...
    def fail(self, code: int, reason: str) -> None: ...
    def pause_reading(self) -> None: ...
    def resume_reading(self) -> None: ...
    def drain(self) -> Awaitable[None] | None: ...


class ChannelBase:
    """The connection policy shared by every road (see the module doc)."""

    loop: asyncio.AbstractEventLoop
    listener: ConnectionListener
    state: ConnectionState
    max_send_buffer: int

    def __init__(self, loop: asyncio.AbstractEventLoop, max_send_buffer: int) -> None:
        # Instance attributes only, never class-level defaults: CPython 3.11 cannot specialize
        # `self.state` loads when the class also has a `state` attribute (measured with
        # callgrind: about 1,000 more instructions per broadcast delivery).
        self.loop = loop
        self.max_send_buffer = max_send_buffer
        self.state = CONNECTING

    def attach(self, listener: ConnectionListener) -> None:
        """Set the core connection this channel reports to."""
        self.listener = listener

    # -- the handshake ----------------------------------------------------------------
    def accept(self, subprotocol: str | None, headers: list[tuple[str, str]]) -> None:
        """Complete the handshake (nothing happens when the client already left)."""
        if self.state is not CONNECTING:
            return
        self.state = OPEN
        self.write_accept(subprotocol, headers)

    def reject(self, status: int, body: bytes, headers: list[tuple[str, str]]) -> None:
        """Refuse the handshake with an HTTP response carrying `body` as plain text."""
        if self.state is not CONNECTING:
            return
        self.state = CLOSED
        head = [("Content-Type", "text/plain; charset=utf-8"), ("Content-Length", str(len(body))), *headers]
        self.write_refusal(status, head, body)

    # -- sending ----------------------------------------------------------------------
    def deliver(self, frame: bytes, opcode: int, payload: bytes) -> bool:
        """A message nobody awaits (broadcast, publish, send_to): queued unless the
        connection is not open. A client whose buffer is already over `max_send_buffer` is
        not reading: the connection fails with 1008 instead of growing without bound.
        Returns whether the message was queued."""
        if self.state is not OPEN:
            return False
        if self.buffered_bytes() > self.max_send_buffer:
            self.fail(WS_1008_POLICY_VIOLATION,
                      f"send buffer over {self.max_send_buffer} bytes: the client is not reading")
            return False
        self.write_frame(frame, opcode, payload)
        return True

    # -- closing ----------------------------------------------------------------------
    def close(self, code: int, reason: str) -> None:
        """Start the closing handshake from the server side (once; OPEN -> CLOSING)."""
        if self.state is not OPEN:
            return
        self.state = CLOSING
        self.write_close(code, reason, wait_for_peer=True)

    def fail(self, code: int, reason: str) -> None:
        """Fail the connection (RFC 6455 7.1.7): send a close with `code` without waiting
        for the peer's answer, and tell the core it is over."""
        logger.info("WebSocket %s closed with %d: %s", self.listener.path, code, reason)
        if self.state is OPEN:
            self.state = CLOSING
            self.write_close(code, reason, wait_for_peer=False)
        self.listener.disconnected(code, reason)

    def ended(self, code: int, reason: str) -> None:
        """The road learned that the connection is over (the peer closed, or it is gone)."""
        self.state = CLOSED
        # The core may not be attached yet: the client left before its session started.
        listener = getattr(self, "listener", None)
        if listener is not None:
            listener.disconnected(code, reason)

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

    def write_close(self, code: int, reason: str, wait_for_peer: bool) -> None:
        """Send the close; end the connection now, or when the peer answers (or times out)."""
        raise NotImplementedError

    def buffered_bytes(self) -> int:
        """Bytes queued for the client and not yet taken by it."""
        raise NotImplementedError

"""One WebSocket connection's life, sans I/O, for either side (RFC 6455 sections 5 to 7).

`Connection` owns what a connection *is*: its state (CONNECTING, OPEN, CLOSING, CLOSED), who
ended it and with what code and reason, and the bytes each step puts on the wire (data
frames, pongs, the close, the close echo). The code that moves bytes (the native server's
channel, the ASGI channel, the TestClient's session, a Python client) calls it and writes
what it returns; nothing else assigns the state. It performs no I/O and keeps no clock: a
road decides when a ping is due or a peer is too slow, and tells the connection to `fail`.

Bytes in: `receive_data(data)` returns the frame parser's events (`FrameEvent`, in arrival
order). A road hands data messages to its application and answers the others through the
connection:

    (OP_PING, payload)    -> pong(payload): the pong to write, None unless OPEN
    (OP_PONG, payload)    -> (the peer is alive; nothing to write)
    (OP_CLOSE, (code, r)) -> close_received(code, r): the echo to write, None when it
                             answered our own close; either way the state is CLOSED
    (PROTOCOL_ERROR, err) -> fail(err.code, err.reason): the close to write

Commands out: `accept()` / `refuse()` end the handshake (its HTTP part is
`tether.protocol.handshake`'s), `send(opcode, payload)` frames a message, `ping(payload)`,
`close(code, reason)` starts the closing handshake, `fail(code, reason)` fails the
connection (RFC 6455 7.1.7: the close is sent, the peer's answer is not awaited),
`connection_lost()` records that the transport is gone.

Transitions (anything else leaves the state as it is and returns None):

    CONNECTING --accept--> OPEN          CONNECTING --refuse, fail, lost--> CLOSED
    OPEN --close, fail--> CLOSING        OPEN --close_received, lost--> CLOSED
    CLOSING --close_received, lost--> CLOSED

The first step that ends the connection records `close_code`, `close_reason` and
`closed_by` (`ended` becomes True) and later steps never change them. `closed_by` names the
side whose doing ended it: the one that sent the first close, refused the handshake (the
server), or vanished or broke the rules (the peer, also when this side is the one that fails
it).

The server side reads masked frames and writes unmasked ones; the client side the reverse,
with a fresh random mask per frame (RFC 6455 5.3), and compresses what it sends when given a
permessage-deflate `Compressor`. (A server's compression is its road's: one compressed frame
is shared by every receiver of a broadcast.)
"""

from __future__ import annotations

import enum
import os
from collections.abc import Callable
from typing import Final, Protocol

from .codes import WS_1006_ABNORMAL_CLOSURE
from .frames import OP_PING, OP_PONG, RSV1, FrameEvent, FrameParser, encode_close, encode_frame

__all__ = ["Side", "ConnectionState", "CONNECTING", "OPEN", "CLOSING", "CLOSED", "Connection",
           "MessageCompressor"]


class Side(enum.StrEnum):
    """Which end of the connection a `Connection` plays."""

    SERVER = "server"
    CLIENT = "client"


class ConnectionState(enum.IntEnum):
    """Where a connection is in its life (RFC 6455's four states)."""

    CONNECTING = 0  #: handshake in progress
    OPEN = 1        #: messages flow both ways
    CLOSING = 2     #: this side's close is out (or it failed the connection); the peer's is awaited
    CLOSED = 3      #: refused, closed by the peer, close handshake done, or the transport is gone


CONNECTING: Final = ConnectionState.CONNECTING
OPEN: Final = ConnectionState.OPEN
CLOSING: Final = ConnectionState.CLOSING
CLOSED: Final = ConnectionState.CLOSED


class MessageCompressor(Protocol):
    """Compresses one whole message's payload (`tether.protocol.deflate.Compressor`)."""

    def compress(self, payload: bytes | bytearray | memoryview) -> bytes: ...


class Connection:
    """The state machine of one WebSocket connection (see the module doc).

    `parser` reads the peer's frames (None for a road that receives whole messages, as ASGI
    does); the client side must give one that refuses masked frames (`reject_mask=True`).
    """

    __slots__ = ("side", "state", "close_code", "close_reason", "closed_by", "parser",
                 "receive_data", "send", "_peer", "_client", "_compressor")

    #: `receive_data(data)`: the peer's bytes (any slice of the stream) -> the events they
    #: complete. It is the parser's `feed` itself, so a read costs no call more than parsing.
    receive_data: Callable[[bytes], list[FrameEvent]]
    #: `send(opcode, payload)`: the frame of one data message (masked on the client side, and
    #: compressed there when a compressor was given). On the server side it is `encode_frame`
    #: itself: an own send costs no call more than framing. The caller checks the state
    #: first: a frame made when not OPEN must not be written.
    send: Callable[[int, bytes], bytes]

    def __init__(self, side: Side, parser: FrameParser | None = None,
                 compressor: MessageCompressor | None = None) -> None:
        self.side = side
        self.state = CONNECTING
        #: The code the connection ended with (None until it ends): the first close sent or
        #: received, the failure's code, 1006 when refused or lost.
        self.close_code: int | None = None
        self.close_reason = ""
        #: The side whose doing ended the connection (see the module doc); None until then.
        #: A `Side`, which is a str: "server" or "client".
        self.closed_by: Side | None = None
        self.parser = parser
        self.receive_data = parser.feed if parser is not None else self._no_parser
        self._peer = Side.CLIENT if side is Side.SERVER else Side.SERVER
        self._client = side is Side.CLIENT
        self._compressor = compressor
        self.send = self._client_frame if self._client else encode_frame

    def __repr__(self) -> str:
        return f"<Connection {self.side} {self.state.name}>"

    @property
    def ended(self) -> bool:
        """True once a step ended the connection (close sent or received, failed, refused, lost)."""
        return self.closed_by is not None

    def _end(self, code: int, reason: str, by: Side) -> None:
        """Record the end, unless an earlier step did."""
        if self.closed_by is None:
            self.close_code, self.close_reason, self.closed_by = code, reason, by

    # -- the handshake --------------------------------------------------------------------
    def accept(self) -> bool:
        """The handshake succeeded: CONNECTING -> OPEN. False in any other state."""
        if self.state is not CONNECTING:
            return False
        self.state = OPEN
        return True

    def refuse(self) -> bool:
        """The server refused the handshake (an HTTP response instead of 101): CONNECTING ->
        CLOSED, ended by the server with 1006 (no close frame was exchanged). False in any
        other state."""
        if self.state is not CONNECTING:
            return False
        self.state = CLOSED
        self._end(WS_1006_ABNORMAL_CLOSURE, "the handshake was refused", Side.SERVER)
        return True

    # -- bytes in ---------------------------------------------------------------------------
    @staticmethod
    def _no_parser(data: bytes) -> list[FrameEvent]:
        raise TypeError("this connection has no frame parser: its road receives whole messages")

    def pong(self, payload: bytes) -> bytes | None:
        """The pong answering a ping with `payload`; None unless OPEN (after a close, control
        frames are no longer answered)."""
        if self.state is not OPEN:
            return None
        return self._frame(OP_PONG, payload)

    def close_received(self, code: int, reason: str) -> bytes | None:
        """The peer's close frame arrived. From OPEN: the echo to send (its code, RFC 6455
        5.5.1; an empty body for 1005), ended by the peer. From CLOSING: the closing
        handshake is complete, nothing to send. The state is CLOSED either way (the server
        side then ends TCP; the client side waits for the server to)."""
        state = self.state
        if state is CLOSED:
            return None
        self.state = CLOSED
        if state is not OPEN:
            return None
        self._end(code, reason, self._peer)
        return self._close_frame(code, "")

    # -- bytes out --------------------------------------------------------------------------
    def ping(self, payload: bytes = b"") -> bytes | None:
        """A ping with `payload` (at most 125 bytes); None unless OPEN."""
        if self.state is not OPEN:
            return None
        return self._frame(OP_PING, payload)

    def close(self, code: int, reason: str = "") -> bytes | None:
        """Start the closing handshake: OPEN -> CLOSING, ended by this side with `code` and
        `reason`; the close frame to send. None in any other state (nothing changes)."""
        if self.state is not OPEN:
            return None
        self.state = CLOSING
        self._end(code, reason, self.side)
        return self._close_frame(code, reason)

    def fail(self, code: int, reason: str) -> bytes | None:
        """Fail the connection with `code` because of the peer (it broke the protocol, stopped
        answering, stopped reading): OPEN -> CLOSING with the close frame to send (the road
        then ends the transport without waiting for the answer); CONNECTING -> CLOSED. The
        end is the peer's, unless a step already ended it."""
        state = self.state
        if state is OPEN:
            self.state = CLOSING
            self._end(code, reason, self._peer)
            return self._close_frame(code, reason)
        if state is CONNECTING:
            self.state = CLOSED
            self._end(code, reason, self._peer)
        return None

    def connection_lost(self, code: int = WS_1006_ABNORMAL_CLOSURE, reason: str = "connection lost") -> None:
        """The transport is gone (or a road that does not see frames learned the peer
        closed, with its `code`): CLOSED; ended by the peer unless a step already ended it."""
        self.state = CLOSED
        self._end(code, reason, self._peer)

    # -- framing ----------------------------------------------------------------------------
    def _client_frame(self, opcode: int, payload: bytes) -> bytes:
        """A client's data frame: masked, and compressed (RSV1) when it has a compressor."""
        compressor = self._compressor
        if compressor is not None:
            return encode_frame(opcode | RSV1, compressor.compress(payload), mask=os.urandom(4))
        return encode_frame(opcode, payload, mask=os.urandom(4))

    def _frame(self, opcode: int, payload: bytes) -> bytes:
        return encode_frame(opcode, payload, mask=os.urandom(4) if self._client else None)

    def _close_frame(self, code: int, reason: str) -> bytes:
        return encode_close(code, reason, mask=os.urandom(4) if self._client else None)


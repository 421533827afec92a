"""The native WebSocket channel: RFC 6455 over an asyncio transport, for one core WebSocket.

Frames are parsed in `data_received` and complete messages handed straight to the core
WebSocket. Everything sent to a connection within one event-loop iteration is coalesced
("corked") into a single `transport.write` by the server's `WriteBatcher`, so pipelined
echoes cost one write per read and a burst of broadcasts one write per receiver. A
connection that is alone in the batcher writes every few frames instead, so its client is
not left idle while the server produces a long batch.
"""

from __future__ import annotations

import asyncio
import logging
from http import HTTPStatus
from typing import TYPE_CHECKING, Any

from ..protocol import (
    OP_BINARY, OP_CLOSE, OP_PING, OP_PONG, OP_TEXT, FrameParser, accept_headers, encode_close,
    encode_frame,
)
from .flow import WriteFlowControl

if TYPE_CHECKING:
    from ..connection import WebSocket
    from .serve import ServerState

__all__ = ["WebSocketProtocol", "WriteBatcher"]

logger = logging.getLogger("tether")

# Own sends flush at once past this many corked bytes, then wait for the transport to drain.
_CORK_LIMIT = 64 * 1024
# A connection that is the only one with corked output writes every this many frames: its
# client is waiting on it and can work on the first frames while the server makes the rest.
# (With many busy connections one batched pass is cheaper; see BENCHMARKS.md, echo C=1.)
_SOLO_FLUSH_FRAMES = 8


class WriteBatcher:
    """Flushes every connection written to during this loop iteration, once, in the next."""

    __slots__ = ("_loop", "_pending", "_scheduled")

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        self._pending: list[WebSocketProtocol] = []
        self._scheduled = False

    def add(self, connection: WebSocketProtocol) -> None:
        self._pending.append(connection)
        if not self._scheduled:
            self._scheduled = True
            self._loop.call_soon(self.flush)

    def alone(self) -> bool:
        """True when a single connection has output waiting for this iteration's flush."""
        return len(self._pending) == 1

    def flush(self) -> None:
        pending, self._pending = self._pending, []
        self._scheduled = False
        for connection in pending:
            connection.flush()


def http_response(status: int, headers: list[tuple[str, str]], body: bytes = b"") -> bytes:
    """Serialize an HTTP/1.1 response head (and body)."""
    try:
        reason = HTTPStatus(status).phrase
    except ValueError:
        reason = "Unknown"
    lines = [f"HTTP/1.1 {status} {reason}"] + [f"{name}: {value}" for name, value in headers]
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + body


class WebSocketProtocol(WriteFlowControl, asyncio.Protocol):
    """The channel of one WebSocket (see tether.websocket.Channel); also the transport's
    protocol once the handshake is accepted."""

    websocket: WebSocket

    def __init__(self, server: ServerState, transport: asyncio.Transport, key: str, leftover: bytes) -> None:
        self.server = server
        self.loop = server.loop
        self.transport = transport
        settings = server.settings
        self._key = key
        self._leftover = leftover
        self._parser = FrameParser(settings.max_message_size)
        self._batcher = server.batcher
        self._max_send_buffer = settings.max_send_buffer
        self._out: list[bytes] = []
        self._out_size = 0
        self._close_sent = False
        self._close_received = False
        self._lost = False
        self._close_timer: asyncio.TimerHandle | None = None
        self._ping_timer: asyncio.TimerHandle | None = None
        self._pong_timer: asyncio.TimerHandle | None = None

    # -- handshake (called by the core) ---------------------------------------------------
    def accept(self, subprotocol: str | None, headers: list[tuple[str, str]]) -> None:
        if self._lost:
            return
        self.transport.write(http_response(101, accept_headers(self._key, subprotocol) + headers))
        self.transport.set_protocol(self)
        self.server.connections.add(self)
        self._schedule_ping()
        self.transport.resume_reading()
        if self._leftover:
            leftover, self._leftover = self._leftover, b""
            self.loop.call_soon(self.data_received, leftover)

    def reject(self, status: int, body: bytes, headers: list[tuple[str, str]]) -> None:
        if self._lost:
            return
        head = [("Content-Type", "text/plain; charset=utf-8"), ("Content-Length", str(len(body))),
                ("Connection", "close")] + headers
        self.transport.write(http_response(status, head, body))
        self.transport.close()

    # -- incoming -------------------------------------------------------------------------
    def data_received(self, data: bytes) -> None:
        ws = self.websocket
        for kind, value in self._parser.feed(data):
            if kind == OP_TEXT or kind == OP_BINARY:
                ws._on_message(value)
            elif kind == OP_PING:
                if not self._close_sent:
                    self._write(encode_frame(OP_PONG, value))
            elif kind == OP_PONG:
                self._pong_received()
            elif kind == OP_CLOSE:
                self._close_frame_received(*value)
            else:
                # One loop turn later, so the handler first answers the messages that
                # arrived in the same read as the bad frame (Autobahn's strict behaviour).
                self.loop.call_soon(self.fail, value.code, value.reason)

    def _close_frame_received(self, code: int, reason: str) -> None:
        self._close_received = True
        if self._close_sent:  # the answer to our close: the handshake is complete
            self.transport.close()
            return
        self._close_sent = True
        self._write(encode_close(code, ""))
        self.flush()
        self.transport.close()
        self.websocket._on_disconnect(code, reason)

    def connection_lost(self, exc: Exception | None) -> None:
        self._lost = True
        self.server.connections.discard(self)
        for timer in (self._close_timer, self._ping_timer, self._pong_timer):
            if timer is not None:
                timer.cancel()
        self._out.clear()
        self._release_drain()
        websocket = getattr(self, "websocket", None)
        if websocket is not None:
            websocket._on_disconnect(1006, "connection lost")

    # -- outgoing -------------------------------------------------------------------------
    def _write(self, frame: bytes) -> None:
        out = self._out
        out.append(frame)
        self._out_size += len(frame)
        if len(out) == 1:
            self._batcher.add(self)

    def send_message(self, opcode: int, payload: bytes) -> None:
        """The connection's own send (broadcasts take send_prepared, which skips this check)."""
        self._write(encode_frame(opcode, payload))
        if len(self._out) == _SOLO_FLUSH_FRAMES and self._batcher.alone():
            self.flush()

    def send_prepared(self, frame: bytes, opcode: int, payload: bytes) -> None:
        """A delivery nobody waits on (broadcast, send_to): past max_send_buffer, close 1008."""
        if self._out_size + self.transport.get_write_buffer_size() > self._max_send_buffer:
            if not self._close_sent and not self._lost:
                self.fail(1008, f"send buffer over {self._max_send_buffer} bytes: the client is not reading")
            return
        self._write(frame)

    def flush(self) -> None:
        """Write everything corked so far in one call."""
        out = self._out
        if not out:
            return
        data = out[0] if len(out) == 1 else b"".join(out)
        out.clear()
        self._out_size = 0
        if self._lost:
            return
        self.transport.write(data)

    def drain(self) -> asyncio.Future[None] | None:
        if self._out_size > _CORK_LIMIT:
            self.flush()
        return None if self._lost else self.writable()

    def pause_reading(self) -> None:
        if not self._lost:
            self.transport.pause_reading()

    def resume_reading(self) -> None:
        if not self._lost:
            self.transport.resume_reading()

    # -- closing --------------------------------------------------------------------------
    def close(self, code: int, reason: str) -> None:
        """Start the closing handshake; the TCP connection ends when the client answers
        (or after close_timeout)."""
        if self._close_sent or self._lost:
            return
        self._close_sent = True
        self._write(encode_close(code, reason))
        self.flush()
        if self._close_received:
            self.transport.close()
        else:
            self._close_timer = self.loop.call_later(self.server.settings.close_timeout, self.transport.abort)

    def fail(self, code: int, reason: str) -> None:
        """Fail the connection (RFC 6455 7.1.7): close frame with `code`, then end TCP."""
        logger.info("WebSocket %s closed with %d: %s", getattr(self.websocket, "path", "?"), code, reason)
        if not self._close_sent and not self._lost:
            self._close_sent = True
            self._write(encode_close(code, reason))
            self.flush()
            self.transport.close()
            self._close_timer = self.loop.call_later(self.server.settings.close_timeout, self.transport.abort)
        self.websocket._on_disconnect(code, reason)

    # -- keepalive ------------------------------------------------------------------------
    def _schedule_ping(self) -> None:
        interval = self.server.settings.ping_interval
        if interval > 0 and not self._lost:
            self._ping_timer = self.loop.call_later(interval, self._send_ping)

    def _send_ping(self) -> None:
        if self._close_sent or self._lost:
            return
        self._write(encode_frame(OP_PING, b"tether"))
        timeout = self.server.settings.ping_timeout
        if timeout > 0:
            self._pong_timer = self.loop.call_later(timeout, self.fail, 1011, "keepalive ping timeout")
        else:
            self._schedule_ping()

    def _pong_received(self) -> None:
        if self._pong_timer is not None:
            self._pong_timer.cancel()
            self._pong_timer = None
            self._schedule_ping()

    def __repr__(self) -> Any:
        return f"<WebSocketProtocol {getattr(self, 'websocket', None)!r}>"

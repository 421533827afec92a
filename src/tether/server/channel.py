"""The native WebSocket channel: RFC 6455 over an asyncio transport, for one core WebSocket.

The channel moves bytes through the connection's state machine (`self.protocol`, the
server side of `tether.protocol.connection.Connection`): what a read completes is handed
straight to the core connection (`message_received`), pings and closes are answered with the
frames the machine makes, and the channel keeps only the timers and buffers. The peer's close
is echoed and ends TCP at once; our close waits up to `close_timeout` for the peer's answer.

Everything sent to a connection within one event-loop iteration is coalesced ("corked")
into a single `transport.write` by the server's `WriteBatcher` (server/batcher.py), so
pipelined echoes cost one write per read and a burst of broadcasts one write per receiver.
A connection that is alone in the batcher writes every few frames instead, so its client is
not left idle while the server produces a long batch.
"""

from __future__ import annotations

import asyncio
import logging
from typing import TYPE_CHECKING, Any

from ..channel import OPEN, ChannelBase, CloseKind
from ..protocol import OP_BINARY, OP_CLOSE, OP_PING, OP_PONG, OP_TEXT, FrameParser, accept_headers
from ..protocol.codes import WS_1008_POLICY_VIOLATION, WS_1011_INTERNAL_ERROR
from ..protocol.connection import Connection, Side
from .flow import WriteFlowControl
from .wire import http_response

if TYPE_CHECKING:
    from .state import ServerContext

__all__ = ["NativeChannel"]

logger = logging.getLogger("tether")

# Own sends flush at once past this many corked bytes, then wait for the transport to drain.
_CORK_LIMIT = 64 * 1024
# A connection that is the only one with corked output writes every this many frames: its
# client is waiting on it and can work on the first frames while the server makes the rest.
# (With many busy connections one batched pass is cheaper; see BENCHMARKS.md, echo C=1.)
_SOLO_FLUSH_FRAMES = 8
# Frames parsed per connection per loop turn: past it the rest waits for the next turn and
# reading pauses, so a flood of tiny frames (empty pongs: 6 bytes each) from one client costs
# the others a bounded delay per turn (issue 11, defect 5). bench/soak.py, two flooders of
# empty continuations, control client p99: 33 ms with 1024, 11 ms with 256. Legitimate
# clients rarely have 256 frames in one read (and then lose one loop turn, not throughput).
_FRAMES_PER_TURN = 256


class NativeChannel(WriteFlowControl, ChannelBase, asyncio.Protocol):
    """The channel of one WebSocket on the native server (a `tether.channel.Channel`);
    also the transport's protocol once the handshake is accepted."""

    def __init__(self, server: ServerContext, transport: asyncio.Transport, key: str, leftover: bytes) -> None:
        WriteFlowControl.__init__(self)
        settings = server.settings
        # The state machine's parser, kept here too for its backlog (and the deflate
        # channel's inflater).
        self._parser = FrameParser(settings.max_message_size, max_frames=_FRAMES_PER_TURN)
        ChannelBase.__init__(self, server.loop, settings.max_send_buffer, Connection(Side.SERVER, self._parser))
        self.server = server
        self.transport = transport
        self._key = key
        self._leftover = leftover
        self._batcher = server.batcher
        self._out: list[bytes] = []
        self._out_size = 0
        self._lost = False  # the transport is gone: nothing can be written
        self._close_timer: asyncio.TimerHandle | None = None
        self._ping_timer: asyncio.TimerHandle | None = None
        self._pong_timer: asyncio.TimerHandle | None = None
        # Reading is paused while the core has max_queue unread messages (_held_by_core), and
        # while the parser holds input past its frame budget for the next loop turn (_backlog).
        self._held_by_core = False
        self._backlog = False
        # Traffic counters (see `Traffic`): per read and per write, not per frame.
        self.messages_in = self.bytes_in = self.messages_out = self.bytes_out = 0

    # -- handshake ------------------------------------------------------------------------
    def write_accept(self, subprotocol: str | None, headers: list[tuple[str, str]]) -> None:
        self.transport.write(http_response(101, accept_headers(self._key, subprotocol) + headers))
        self.transport.set_protocol(self)
        self.server.connections.add(self)
        self._schedule_ping()
        if self._leftover:  # what came after the request goes first, reading only after it
            leftover, self._leftover = self._leftover, b""
            self.loop.call_soon(self._receive_leftover, leftover)
        else:
            self.transport.resume_reading()

    def _receive_leftover(self, leftover: bytes) -> None:
        """The bytes that followed the upgrade request (in its read), then the socket's: read
        on only now, so that nothing the client sent later is handled before them."""
        if self._lost:
            return
        self.data_received(leftover)
        if not self._held_by_core and not self._backlog and not self.transport.is_closing():
            self.transport.resume_reading()

    def write_refusal(self, status: int, headers: list[tuple[str, str]], body: bytes) -> None:
        self.transport.write(http_response(status, [*headers, ("Connection", "close")], body))
        self.transport.close()

    # -- incoming -------------------------------------------------------------------------
    def data_received(self, data: bytes) -> None:
        if self._pong_timer is not None:
            self._peer_alive()  # any bytes show the peer is there, not only its pong
        listener = self.listener
        # Each event is a `FrameEvent`; `kind` says what `value` is, but a type checker cannot
        # narrow one unpacked name on the other, so `value` is declared Any here: a bare
        # declaration compiles to nothing, where a cast() would be a call per read.
        value: Any
        events = self.protocol.receive_data(data)
        self.bytes_in += len(data)
        self.messages_in += len(events)
        for kind, value in events:
            if kind == OP_TEXT or kind == OP_BINARY:
                listener.message_received(value)
            elif kind == OP_PING:
                self._ping_received(value)
                if self.transport.is_closing():
                    return  # it failed the connection: nothing more of the peer's is processed
            elif kind == OP_PONG:
                self._peer_alive()
            elif kind == OP_CLOSE:
                self._close_frame_received(*value)
            else:
                # One loop turn later, so the handler first answers the messages that
                # arrived in the same read as the bad frame (Autobahn's strict behaviour).
                self.loop.call_soon(self.fail, value.code, value.reason)
        if self._parser.backlog:
            self._defer_backlog()

    def _defer_backlog(self) -> None:
        """The parser stopped at its frame budget: stop reading from the socket and go on
        in the next loop turn, after the other connections had theirs (a flood of tiny
        frames from one client cannot starve the rest)."""
        if not self._backlog:
            self._backlog = True
            if not self._held_by_core and not self._lost:
                self.transport.pause_reading()
        self.loop.call_soon(self._parse_backlog)

    def _parse_backlog(self) -> None:
        if self._lost or self._held_by_core or not self._backlog or self.transport.is_closing():
            return  # resume_reading() comes back here when the core unblocks (a failed one: never)
        self.data_received(b"")
        if not self._parser.backlog:
            self._backlog = False
            if not self._held_by_core and not self._lost:
                self.transport.resume_reading()

    def _ping_received(self, payload: bytes) -> None:
        """Answer a ping, unless the client is not reading: a pong is a delivery nobody
        awaits, bounded like one (`deliver_limit`; past it: close 1008)."""
        protocol = self.protocol
        if protocol.state is OPEN and self.buffered_bytes() > self.deliver_limit:
            self.fail(WS_1008_POLICY_VIOLATION,
                      f"send buffer over {self.deliver_limit} bytes: the client sends pings and does not read",
                      CloseKind.SLOW_CLIENT)
            return
        pong = protocol.pong(payload)
        if pong is not None:
            self.write_frame(pong, OP_PONG, payload)

    def _close_frame_received(self, code: int, reason: str) -> None:
        """Echo the peer's close (none when it answers ours), end TCP, and tell the core when
        the peer's close is what ended the connection."""
        echo = self.protocol.close_received(code, reason)
        if echo is not None:
            self.write_frame(echo, OP_CLOSE, b"")
            self.flush()
        self.transport.close()
        if echo is not None:
            self.listener.disconnected(code, reason)

    def connection_lost(self, exc: Exception | None) -> None:
        self._lost = True
        self.server.connections.discard(self)
        for timer in (self._close_timer, self._ping_timer, self._pong_timer):
            if timer is not None:
                timer.cancel()
        self._out.clear()
        self.server.traffic.add(self)
        self._release_drain()
        self.ended()
        self.detach()

    # -- outgoing -------------------------------------------------------------------------
    def write_frame(self, frame: bytes, opcode: int, payload: bytes) -> None:
        out = self._out
        out.append(frame)
        self._out_size += len(frame)
        if len(out) == 1:
            self._batcher.add(self)

    def send_message(self, opcode: int, payload: bytes) -> None:
        self.write_frame(self.protocol.send(opcode, payload), opcode, payload)
        if len(self._out) == _SOLO_FLUSH_FRAMES and self._batcher.alone():
            self.flush()

    def buffered_bytes(self) -> int:
        return self._out_size + self.transport.get_write_buffer_size()

    def flush(self) -> None:
        """Write everything corked so far in one call."""
        out = self._out
        if not out:
            return
        data = out[0] if len(out) == 1 else b"".join(out)
        self.messages_out += len(out)
        out.clear()
        self._out_size = 0
        if self._lost:
            return
        self.bytes_out += len(data)
        self.transport.write(data)

    def drain(self) -> asyncio.Future[None] | None:
        if self._out_size > _CORK_LIMIT:
            self.flush()
        return None if self._lost else self.writable()

    def pause_reading(self) -> None:
        self._held_by_core = True
        if not self._lost and not self._backlog:
            self.transport.pause_reading()

    def resume_reading(self) -> None:
        self._held_by_core = False
        if self._lost:
            return
        if self._backlog:
            self.loop.call_soon(self._parse_backlog)
        else:
            self.transport.resume_reading()

    # -- closing --------------------------------------------------------------------------
    def write_close(self, frame: bytes, code: int, reason: str, wait_for_peer: bool) -> None:
        """Send the close frame now; end TCP at once (fail) or when the peer answers, with
        `close_timeout` as the bound either way."""
        if self._lost:
            return
        self.write_frame(frame, OP_CLOSE, b"")
        self.flush()
        if not wait_for_peer:
            self.transport.close()
        self._close_timer = self.loop.call_later(self.server.settings.close_timeout, self.transport.abort)

    # -- keepalive ------------------------------------------------------------------------
    def _schedule_ping(self) -> None:
        interval = self.server.settings.ping_interval
        if interval > 0 and not self._lost:
            self._ping_timer = self.loop.call_later(interval, self._send_ping)

    def _send_ping(self) -> None:
        ping = self.protocol.ping(b"tether")
        if ping is None or self._lost:
            return
        self.write_frame(ping, OP_PING, b"tether")
        timeout = self.server.settings.ping_timeout
        if timeout > 0:
            self._pong_timer = self.loop.call_later(timeout, self._pong_timed_out)
        else:
            self._schedule_ping()

    def _pong_timed_out(self) -> None:
        """No byte came within `ping_timeout` of our ping: the peer is gone (1011), unless
        we are the ones not reading (the handler left `max_queue` messages unread, or a
        backlog waits) while the peer takes what we write: then the answer may be sitting
        unread, so ask again later. A peer that takes nothing either (writing is paused) is
        the one stalling: it is closed like a silent one."""
        self._pong_timer = None
        if (self._held_by_core or self._backlog) and not self._write_paused:
            self._schedule_ping()
            return
        self.fail(WS_1011_INTERNAL_ERROR, "keepalive ping timeout")

    def _peer_alive(self) -> None:
        if self._pong_timer is not None:
            self._pong_timer.cancel()
            self._pong_timer = None
            self._schedule_ping()

    def __repr__(self) -> str:
        return f"<NativeChannel {getattr(self, 'listener', None)!r} {self.state.name}>"

"""An asyncio WebSocket client on tether's own protocol stack.

`open_websocket(url)` connects (ws:// or wss://), plays the opening handshake
(`tether.protocol.handshake.validate_accept`) and returns a `ClientWebSocket`: the client
side of the connection state machine (`tether.protocol.connection.Connection`) over an
asyncio transport. Like the server's channel, it only moves bytes through the machine: it
answers pings with the machine's pongs and the server's close with its echo, fails the
connection on a protocol error, and reads the state, close code and reason from it.

    async with await open_websocket("ws://127.0.0.1:8000/echo") as ws:
        await ws.send("hello")
        print(await ws.receive())

Keepalive: a ping every `ping_interval` seconds; no byte from the server within
`ping_timeout` after it fails the connection (1011). Reading pauses while `max_queue`
messages wait unread; `send` waits while the transport's buffer is over its high-water mark.
"""

from __future__ import annotations

import asyncio
import ssl
from collections import deque
from collections.abc import AsyncIterator, Iterable, Sequence
from typing import Any, cast
from urllib.parse import urlsplit

import httptools

from ..datastructures import Headers
from ..exceptions import WebSocketDisconnect, WebSocketRejected
from ..http import splitting_header
from ..protocol import OP_BINARY, OP_CLOSE, OP_PING, OP_TEXT, PROTOCOL_ERROR, FrameParser
from ..protocol.codes import WS_1000_NORMAL_CLOSURE, WS_1006_ABNORMAL_CLOSURE, WS_1011_INTERNAL_ERROR
from ..protocol.connection import OPEN, Connection, ConnectionState, Side
from ..protocol.errors import HandshakeError
from ..protocol.handshake import new_client_key, validate_accept
from ..server.flow import WriteFlowControl
from .response import ResponseReader

__all__ = ["ClientWebSocket", "open_websocket"]

#: A handshake response larger than this (head and body) is refused.
MAX_RESPONSE_SIZE = 64 * 1024


class ClientWebSocket(WriteFlowControl, asyncio.Protocol):
    """One client connection (made by `open_websocket`; see the module doc)."""

    def __init__(self, loop: asyncio.AbstractEventLoop, key: str, subprotocols: Sequence[str], *,
                 max_message_size: int, ping_interval: float, ping_timeout: float, close_timeout: float,
                 max_queue: int) -> None:
        WriteFlowControl.__init__(self)
        self.loop = loop
        self.protocol = Connection(
            Side.CLIENT, FrameParser(max_message_size, require_mask=False, reject_mask=True))
        #: The subprotocol the server selected, and its 101 response's headers.
        self.subprotocol: str | None = None
        self.response_headers = Headers()
        self._key = key
        self._offered = list(subprotocols)
        self._ping_interval, self._ping_timeout, self._close_timeout = ping_interval, ping_timeout, close_timeout
        self._max_queue = max_queue
        self.transport: asyncio.Transport | None = None
        self._response = ResponseReader()
        self._response_parser: httptools.HttpResponseParser | None = httptools.HttpResponseParser(self._response)
        self._response_size = 0
        self.handshake: asyncio.Future[None] = loop.create_future()
        self._messages: deque[str | bytes] = deque()
        self._waiter: asyncio.Future[None] | None = None
        self._reading_paused = False
        self._ping_timer: asyncio.TimerHandle | None = None
        self._pong_timer: asyncio.TimerHandle | None = None
        self._lost = loop.create_future()

    # -- what the state machine knows ---------------------------------------------------------
    @property
    def state(self) -> ConnectionState:
        """CONNECTING, OPEN, CLOSING or CLOSED."""
        return self.protocol.state

    @property
    def close_code(self) -> int | None:
        """The code the connection ended with (None while it has not)."""
        return self.protocol.close_code

    @property
    def close_reason(self) -> str:
        return self.protocol.close_reason

    # -- asyncio.Protocol -------------------------------------------------------------------------
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # A stream transport (uvloop's is not an asyncio.Transport subclass: no isinstance test).
        self.transport = cast(asyncio.Transport, transport)

    def data_received(self, data: bytes) -> None:
        if self._pong_timer is not None:
            self._peer_alive()
        if self._response_parser is not None:
            self._handshake_data(data)
            return
        protocol = self.protocol
        for event in protocol.receive_data(data):  # narrowed on event[0] (see FrameEvent)
            if event[0] == OP_TEXT or event[0] == OP_BINARY:
                self._messages.append(event[1])
            elif event[0] == OP_PING:
                self._write(protocol.pong(event[1]))
            elif event[0] == OP_CLOSE:
                # The echo; the server ends TCP (or close_timeout does it for it).
                self._write(protocol.close_received(*event[1]))
                self._abort_later()
            elif event[0] == PROTOCOL_ERROR:
                self._fail(event[1].code, f"server protocol error: {event[1].reason}")
        self._wake()
        if len(self._messages) >= self._max_queue and not self._reading_paused and self.transport is not None:
            self._reading_paused = True
            self.transport.pause_reading()

    def connection_lost(self, exc: Exception | None) -> None:
        self.protocol.connection_lost()
        for timer in (self._ping_timer, self._pong_timer):
            if timer is not None:
                timer.cancel()
        if not self.handshake.done():
            parser = self._response_parser
            if parser is not None and self._response.head_complete:  # a refusal whose body ends with TCP
                self.handshake.set_exception(WebSocketRejected(parser.get_status_code(), bytes(self._response.body),
                                                               self._response.headers))
            else:
                self.handshake.set_exception(ConnectionError("the server closed the connection during the handshake"))
        self._release_drain()
        self._wake()
        if not self._lost.done():
            self._lost.set_result(None)

    # -- the handshake ------------------------------------------------------------------------------
    def _handshake_data(self, data: bytes) -> None:
        parser, response = self._response_parser, self._response
        assert parser is not None
        self._response_size += len(data)
        leftover = b""
        try:
            parser.feed_data(data)
        except httptools.HttpParserUpgrade as upgrade:
            leftover = data[upgrade.args[0]:] if upgrade.args else b""
        except httptools.HttpParserError as exc:
            self._refuse_handshake(ConnectionError(f"malformed handshake response: {exc}"))
            return
        status = parser.get_status_code()
        if status == 101 and response.head_complete:
            self._response_parser = None
            self._accept_response(leftover)
        elif response.complete:
            self._refuse_handshake(WebSocketRejected(status, bytes(response.body), response.headers))
        elif self._response_size > MAX_RESPONSE_SIZE:
            self._refuse_handshake(ConnectionError(f"handshake response over {MAX_RESPONSE_SIZE} bytes"))

    def _accept_response(self, leftover: bytes) -> None:
        headers = Headers(self._response.headers)
        try:
            self.subprotocol = validate_accept(101, headers.joined(), self._key, self._offered)
        except HandshakeError as exc:
            self._refuse_handshake(exc)
            return
        self.response_headers = headers
        self.protocol.accept()
        self._schedule_ping()
        self.handshake.set_result(None)
        if leftover:
            self.data_received(leftover)

    def _refuse_handshake(self, error: Exception) -> None:
        self._response_parser = None
        self.protocol.fail(WS_1006_ABNORMAL_CLOSURE, str(error))
        if not self.handshake.done():
            self.handshake.set_exception(error)
        if self.transport is not None:
            self.transport.close()

    # -- receiving ----------------------------------------------------------------------------------
    async def receive(self) -> str | bytes:
        """The next message (str for text, bytes for binary); WebSocketDisconnect once the
        connection is closing or closed and every message that came before has been read."""
        while not self._messages:
            if self.protocol.state is not OPEN:
                raise WebSocketDisconnect(self.protocol.close_code or WS_1006_ABNORMAL_CLOSURE,
                                          self.protocol.close_reason)
            self._waiter = self.loop.create_future()
            try:
                await self._waiter
            finally:
                self._waiter = None
        message = self._messages.popleft()
        if self._reading_paused and len(self._messages) <= self._max_queue // 2 and self.transport is not None:
            self._reading_paused = False
            self.transport.resume_reading()
        return message

    def __aiter__(self) -> AsyncIterator[str | bytes]:
        return self._iterate()

    async def _iterate(self) -> AsyncIterator[str | bytes]:
        try:
            while True:
                yield await self.receive()
        except WebSocketDisconnect:
            return

    def _wake(self) -> None:
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    # -- sending ------------------------------------------------------------------------------------
    async def send(self, data: str | bytes) -> None:
        """Send str as a text message, bytes-like as binary; waits while the transport's
        buffer is full. WebSocketDisconnect once the connection is closing or closed."""
        if self.protocol.state is not OPEN:
            raise WebSocketDisconnect(self.protocol.close_code or WS_1006_ABNORMAL_CLOSURE, self.protocol.close_reason)
        if isinstance(data, str):
            frame = self.protocol.send(OP_TEXT, data.encode("utf-8"))
        elif isinstance(data, (bytes, bytearray, memoryview)):
            frame = self.protocol.send(OP_BINARY, bytes(data))
        else:
            raise TypeError(f"send() takes str or bytes, not {type(data).__name__}")
        self._write(frame)
        waiting = self.writable()
        if waiting is not None:
            await waiting

    # -- closing ------------------------------------------------------------------------------------
    async def close(self, code: int = WS_1000_NORMAL_CLOSURE, reason: str = "") -> None:
        """Close (the closing handshake) and wait until the server ended the connection, at
        most `close_timeout` seconds (then the client ends it)."""
        self._write(self.protocol.close(code, reason))
        self._abort_later()
        await asyncio.shield(self._lost)

    async def __aenter__(self) -> ClientWebSocket:
        return self

    async def __aexit__(self, *exc_info: Any) -> None:
        await self.close()

    def _fail(self, code: int, reason: str) -> None:
        """Fail the connection (RFC 6455 7.1.7): the close, then the end of TCP."""
        self._write(self.protocol.fail(code, reason))
        if self.transport is not None:
            self.transport.close()

    def _abort_later(self) -> None:
        if self.transport is not None and not self._lost.done():
            self.loop.call_later(self._close_timeout, self.transport.abort)

    # -- keepalive ----------------------------------------------------------------------------------
    def _schedule_ping(self) -> None:
        if self._ping_interval > 0:
            self._ping_timer = self.loop.call_later(self._ping_interval, self._send_ping)

    def _send_ping(self) -> None:
        ping = self.protocol.ping(b"tether")
        if ping is None:
            return
        self._write(ping)
        if self._ping_timeout > 0:
            self._pong_timer = self.loop.call_later(self._ping_timeout, self._fail, WS_1011_INTERNAL_ERROR,
                                                    "keepalive ping timeout")
        else:
            self._schedule_ping()

    def _peer_alive(self) -> None:
        if self._pong_timer is not None:
            self._pong_timer.cancel()
            self._pong_timer = None
            self._schedule_ping()

    def _write(self, frame: bytes | None) -> None:
        """Write what the state machine made (None: nothing to write in its state)."""
        if frame is not None and self.transport is not None and not self.transport.is_closing():
            self.transport.write(frame)


async def open_websocket(url: str, *, subprotocols: Sequence[str] = (), headers: Iterable[tuple[str, str]] = (),
                         open_timeout: float = 10.0, max_message_size: int = 1 << 20, ping_interval: float = 20.0,
                         ping_timeout: float = 20.0, close_timeout: float = 10.0, max_queue: int = 32,
                         ssl_context: ssl.SSLContext | None = None) -> ClientWebSocket:
    """Connect to `url` (ws:// or wss://) and complete the opening handshake, offering
    `subprotocols`, with extra request `headers`. WebSocketRejected when the server answers
    with an HTTP response instead (its status and body); HandshakeError for a 101 that breaks
    RFC 6455 (a wrong Sec-WebSocket-Accept, a subprotocol not offered); TimeoutError after
    `open_timeout` seconds."""
    parts = urlsplit(url)
    if parts.scheme not in ("ws", "wss") or not parts.hostname:
        raise ValueError(f"open_websocket() takes a ws:// or wss:// URL, not {url!r}")
    secure = parts.scheme == "wss"
    port = parts.port or (443 if secure else 80)
    target = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
    key = new_client_key()
    loop = asyncio.get_running_loop()
    client = ClientWebSocket(loop, key, subprotocols, max_message_size=max_message_size, ping_interval=ping_interval,
                             ping_timeout=ping_timeout, close_timeout=close_timeout, max_queue=max_queue)
    lines = [f"GET {target} HTTP/1.1", f"Host: {parts.netloc}", "Upgrade: websocket", "Connection: Upgrade",
             f"Sec-WebSocket-Key: {key}", "Sec-WebSocket-Version: 13"]
    if subprotocols:
        lines.append(f"Sec-WebSocket-Protocol: {', '.join(subprotocols)}")
    extra = list(headers)
    unsafe = splitting_header(extra)
    if unsafe is not None:
        raise ValueError(f"header {unsafe[0]!r} holds a CR, LF or NUL")
    lines += [f"{name}: {value}" for name, value in extra]
    context = (ssl_context or ssl.create_default_context()) if secure else None
    async with asyncio.timeout(open_timeout):
        transport, _ = await loop.create_connection(lambda: client, parts.hostname, port, ssl=context)
        transport.write(("\r\n".join(lines) + "\r\n\r\n").encode("latin-1"))
        try:
            await client.handshake
        except BaseException:
            transport.abort()
            raise
    return client

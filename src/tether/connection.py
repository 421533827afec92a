"""The core connection object every handler style works through.

A `WebSocket` talks to a *channel* (the road in: native server, ASGI, in-process test
client). The channel drives it with two calls, `_on_message(msg)` and
`_on_disconnect(code, reason)`, and the WebSocket asks the channel to `accept`, `reject`,
`send_message`, `send_prepared`, `close`, `pause_reading`, `resume_reading` and `drain`.
The channel interface is written out in `Channel` below.

Receiving keeps a deque and, only while a handler is actually waiting, one future: no queue
object, no task and no lock per message.
"""

from __future__ import annotations

import json
import logging
import uuid
from collections import deque
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable
from typing import TYPE_CHECKING, Any, Protocol

from .datastructures import Headers, HTTPConnection, QueryParams, State
from .protocol import OP_BINARY, OP_TEXT, encode_frame

if TYPE_CHECKING:
    import asyncio

    from .hub import Hub

__all__ = ["WebSocket", "WebSocketDisconnect", "Channel", "ConnectionView", "encode_message", "jsonify"]

logger = logging.getLogger("tether")

CONNECTING, OPEN, CLOSED = 0, 1, 2


class WebSocketDisconnect(Exception):
    """The connection is closed: raised by receives and sends once the peer or the server closed it."""

    def __init__(self, code: int = 1000, reason: str = "") -> None:
        super().__init__(f"WebSocket closed with code {code}" + (f" ({reason})" if reason else ""))
        self.code = code
        self.reason = reason


class Channel(Protocol):
    """What a road in provides to a core `WebSocket` (the native server, the test client...).

    The WebSocket sets itself as `channel.websocket` when created. `drain()` returns None
    when more may be sent now, else an awaitable that resolves once the buffer has drained.
    """

    loop: asyncio.AbstractEventLoop
    websocket: WebSocket

    def accept(self, subprotocol: str | None, headers: list[tuple[str, str]]) -> None: ...
    def reject(self, status: int, body: bytes, headers: list[tuple[str, str]]) -> None: ...
    def send_message(self, opcode: int, payload: bytes) -> None: ...
    def send_prepared(self, frame: bytes, opcode: int, payload: bytes) -> None: ...
    def close(self, code: int, reason: str) -> None: ...
    def pause_reading(self) -> None: ...
    def resume_reading(self) -> None: ...
    def drain(self) -> Awaitable[None] | None: ...


def _json(obj: Any) -> str:
    return json.dumps(obj, separators=(",", ":"), ensure_ascii=False)


class JSONText(str):
    """A str holding JSON: sent as text over WebSocket, as application/json over HTTP."""


def jsonify(obj: Any) -> JSONText:
    """Serialize `obj` to compact JSON text (a `str`)."""
    return JSONText(_json(obj))


def is_reply(value: Any) -> bool:
    """Whether a callback's return value is something to send (not None, "" or b"")."""
    return value is not None and value != "" and value != b""


def encode_message(data: Any) -> tuple[int, bytes]:
    """(opcode, payload) for `send(data)`: str -> text, bytes-like -> binary, other -> JSON text."""
    if isinstance(data, str):
        return OP_TEXT, data.encode("utf-8")
    if isinstance(data, (bytes, bytearray, memoryview)):
        return OP_BINARY, bytes(data)
    return OP_TEXT, _json(data).encode("utf-8")


class WebSocket(HTTPConnection):
    """One WebSocket connection, as handlers see it (SPEC 1a).

    Created in the CONNECTING state; a handler style calls `accept()` (or `reject()`).
    """

    def __init__(self, channel: Channel, hub: Hub, *, path: str, query_string: str = "",
                 headers: Headers | None = None, client: tuple[str, int] | None = None,
                 path_params: dict[str, Any] | None = None, subprotocols: Iterable[str] = (),
                 max_queue: int = 32, scheme: str = "ws") -> None:
        self._channel = channel
        channel.websocket = self
        self._hub = hub
        self._loop = channel.loop
        self.id = str(uuid.uuid4())
        self.path = path
        self.query_string = query_string
        self.headers = headers if headers is not None else Headers()
        self.client = client
        self.path_params = path_params or {}
        self.offered_subprotocols = list(subprotocols)
        self.subprotocol: str | None = None
        self.scheme = scheme
        self.state = State()
        self.rooms: set[str] = set()
        self._phase = CONNECTING
        self._closing = False
        self._queue: deque[str | bytes] = deque()
        self._waiter: asyncio.Future[Any] | None = None
        self._max_queue = max_queue
        self._reading_paused = False
        self.close_code: int | None = None
        self.close_reason = ""
        self.closed_by: str | None = None  # "server" or "client" (peer closed, vanished or broke the protocol)
        self._scope: dict[str, Any] | None = None
        # Set by handler styles: run exactly once on every close path (see close()).
        self._close_callback: Callable[[], Awaitable[Any]] | None = None
        # Set by handler styles: called synchronously when the peer closes or vanishes.
        self._disconnect_callbacks: list[Callable[[], Any]] = []

    # -- request data -------------------------------------------------------------------
    @property
    def scope(self) -> dict[str, Any]:
        """The handshake as an ASGI-style dict: type, scheme, path, query_string, headers
        (lower-case byte pairs), client, subprotocols, path_params."""
        if self._scope is None:
            self._scope = {
                "type": "websocket", "asgi": {"version": "3.0"}, "scheme": self.scheme,
                "path": self.path, "query_string": self.query_string.encode("latin-1"),
                "headers": [(n.lower().encode("latin-1"), v.encode("latin-1")) for n, v in self.headers.items()],
                "client": self.client, "subprotocols": list(self.offered_subprotocols),
                "path_params": self.path_params,
            }
        return self._scope

    @property
    def closed(self) -> bool:
        """True once the connection is closed (or closing) from either side."""
        return self._phase == CLOSED or self._closing

    @property
    def accepted(self) -> bool:
        return self._phase != CONNECTING

    def __repr__(self) -> str:
        state = ("connecting", "open", "closed")[self._phase]
        return f"<WebSocket {self.id} {self.path} {state}>"

    # -- handshake ----------------------------------------------------------------------
    async def accept(self, subprotocol: str | None = None, headers: Iterable[tuple[str, str]] = ()) -> None:
        """Complete the handshake. A subprotocol the client did not offer is dropped with a warning."""
        if self._phase == CLOSED:
            raise WebSocketDisconnect(self.close_code or 1006, "the client left during the handshake")
        if self._phase != CONNECTING:
            raise RuntimeError("accept() on a WebSocket that is already open")
        if subprotocol is not None and subprotocol not in self.offered_subprotocols:
            logger.warning("WebSocket %s: subprotocol %r was not offered by the client (offered: %s); "
                           "accepting without one", self.path, subprotocol, self.offered_subprotocols or "none")
            subprotocol = None
        self.subprotocol = subprotocol
        self._phase = OPEN
        self._channel.accept(subprotocol, list(headers))
        self._hub._register(self)

    async def reject(self, status: int = 403, body: str | bytes = "", headers: Iterable[tuple[str, str]] = ()) -> None:
        """Refuse the handshake with an HTTP response; the handler never sees the connection open."""
        if self._phase == CLOSED:
            return
        if self._phase != CONNECTING:
            raise RuntimeError("reject() is only possible before accept()")
        self._phase = CLOSED
        self.close_code = 1006
        self._channel.reject(status, body.encode("utf-8") if isinstance(body, str) else body, list(headers))

    # -- receiving ----------------------------------------------------------------------
    async def receive(self) -> str | bytes:
        """The next message, str (text) or bytes (binary); WebSocketDisconnect once closed."""
        queue = self._queue
        if queue:
            message = queue.popleft()
            if self._reading_paused and len(queue) <= self._max_queue // 2:
                self._reading_paused = False
                self._channel.resume_reading()
            return message
        if self._phase != OPEN or self._closing:
            if self._phase == CONNECTING:
                raise RuntimeError("receive() before accept()")
            raise WebSocketDisconnect(self.close_code or 1000, self.close_reason)
        waiter = self._waiter = self._loop.create_future()
        try:
            return await waiter
        finally:
            self._waiter = None

    async def receive_text(self) -> str:
        """The next message, which must be text (TypeError naming the problem otherwise)."""
        return await self._receive_typed(str, "receive_text", "receive_bytes")

    async def receive_bytes(self) -> bytes:
        """The next message, which must be binary (TypeError naming the problem otherwise)."""
        return await self._receive_typed(bytes, "receive_bytes", "receive_text")

    async def _receive_typed(self, expected: type, name: str, other: str) -> Any:
        message = await self.receive()
        if not isinstance(message, expected):
            kind, unit = ("binary", "bytes") if isinstance(message, bytes) else ("text", "characters")
            raise TypeError(f"{name}() got a {kind} message ({len(message)} {unit}); "
                            f"use {other}() or receive() to accept {kind} messages")
        return message

    async def receive_json(self) -> Any:
        """The next message (text or UTF-8 binary) decoded as JSON; ValueError if it is not JSON."""
        message = await self.receive()
        try:
            return json.loads(message)
        except ValueError as exc:
            raise ValueError(f"receive_json() got a message that is not JSON: {exc}") from None

    def __aiter__(self) -> AsyncIterator[str | bytes]:
        return self._iterate()

    async def _iterate(self) -> AsyncIterator[str | bytes]:
        """Yield messages until the connection closes (the iteration then simply ends)."""
        try:
            while True:
                yield await self.receive()
        except WebSocketDisconnect:
            return

    # -- sending ------------------------------------------------------------------------
    def _check_open(self) -> None:
        if self._phase != OPEN:
            if self._phase == CONNECTING:
                raise RuntimeError("send before accept(): the handshake is not complete")
            raise WebSocketDisconnect(self.close_code or 1000, self.close_reason)

    async def _send(self, opcode: int, payload: bytes) -> None:
        self._check_open()
        self._channel.send_message(opcode, payload)
        waiting = self._channel.drain()
        if waiting is not None:
            await waiting

    async def send_text(self, data: str) -> None:
        if not isinstance(data, str):
            raise TypeError(f"send_text() takes str, not {type(data).__name__}")
        await self._send(OP_TEXT, data.encode("utf-8"))

    async def send_bytes(self, data: bytes | bytearray | memoryview) -> None:
        if not isinstance(data, (bytes, bytearray, memoryview)):
            raise TypeError(f"send_bytes() takes bytes, not {type(data).__name__}")
        await self._send(OP_BINARY, bytes(data))

    async def send_json(self, data: Any) -> None:
        await self._send(OP_TEXT, _json(data).encode("utf-8"))

    async def send(self, data: Any) -> None:
        """Send str as text, bytes-like as binary, anything else as JSON text."""
        await self._send(*encode_message(data))

    def _send_now(self, data: Any) -> None:
        """Queue `data` without waiting, as a delivery (program order is kept): a client
        that does not read is closed (1008) instead of growing the buffer."""
        self._check_open()
        opcode, payload = encode_message(data)
        self._channel.send_prepared(encode_frame(opcode, payload), opcode, payload)

    def _send_prepared(self, frame: bytes, opcode: int, payload: bytes) -> bool:
        """Queue an already encoded frame (broadcast); False if the connection is closed."""
        if self._phase != OPEN:
            return False
        self._channel.send_prepared(frame, opcode, payload)
        return True

    async def send_reply(self, value: Any) -> None:
        """Send a callback's return value, unless it is None or empty (the styles' rule)."""
        if is_reply(value):
            await self.send(value)

    async def broadcast(self, data: Any, exclude: Any = None) -> int:
        """Send to every client connected to this concrete path, this one included unless excluded."""
        return await self._hub.broadcast(self.path, data, exclude=exclude)

    # -- rooms --------------------------------------------------------------------------
    async def join(self, room: str) -> None:
        self._hub._join(self, room)

    async def leave(self, room: str) -> None:
        self._hub._leave(self, room)

    def detach(self) -> None:
        """Leave the registry and every room now; the connection stays open for its own
        sends (a close announced for later, as the event style's `ws.close()`)."""
        self._hub._unregister(self)

    # -- closing ------------------------------------------------------------------------
    async def close(self, code: int = 1000, reason: str = "") -> None:
        """Close from the server side (idempotent).

        Leaves the registry and every room at once, runs the close callback (its value is
        sent as the last message), sends the close frame, and makes pending and later
        receives raise WebSocketDisconnect. Before accept(), it refuses the handshake (403).
        """
        if self._phase == CONNECTING:
            await self.reject(403)
            return
        if self._phase == CLOSED or self._closing:
            return
        self._closing = True
        self.closed_by = "server"
        self._hub._unregister(self)
        await self._run_close_callback(send_result=True)
        if self._phase == OPEN:
            self._phase = CLOSED
            self.close_code, self.close_reason = code, reason
            self._channel.close(code, reason)
            self._wake(WebSocketDisconnect(code, reason))

    def _on_message(self, message: str | bytes) -> None:
        """Channel: a complete message arrived."""
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(message)
            return
        self._queue.append(message)
        if len(self._queue) >= self._max_queue and not self._reading_paused:
            self._reading_paused = True
            self._channel.pause_reading()

    def _on_disconnect(self, code: int, reason: str = "") -> None:
        """Channel: the peer closed (or vanished); the connection can no longer send."""
        if self._phase == CLOSED:
            return
        was_open = self._phase == OPEN
        self._phase = CLOSED
        self.close_code, self.close_reason = code, reason
        self.closed_by = self.closed_by or "client"
        self._hub._unregister(self)
        self._wake(WebSocketDisconnect(code, reason))
        for callback in self._disconnect_callbacks:
            callback()
        if was_open and self._close_callback is not None and not self._closing:
            self._closing = True
            self._loop.create_task(self._run_close_callback(send_result=False))

    def _wake(self, exc: WebSocketDisconnect) -> None:
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_exception(exc)

    async def _run_close_callback(self, send_result: bool) -> None:
        callback, self._close_callback = self._close_callback, None
        if callback is None:
            return
        try:
            result = await callback()
        except Exception:
            logger.exception("on_close callback of WebSocket %s raised", self.path)
            return
        if send_result and is_reply(result) and self._phase == OPEN:
            self._channel.send_message(*encode_message(result))


class ConnectionView:
    """A style's face on a core connection: delegates the request data to `self.connection`."""

    connection: WebSocket

    @property
    def id(self) -> str:
        return self.connection.id

    @property
    def headers(self) -> Headers:
        return self.connection.headers

    @property
    def query_params(self) -> QueryParams:
        return self.connection.query_params

    @property
    def path_params(self) -> dict[str, Any]:
        return self.connection.path_params

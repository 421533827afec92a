"""The core connection object every handler style works through: `WebSocket`.

A `WebSocket` talks to its road through a `tether.channel.Channel` and is the road's
`ConnectionListener`: the road calls `message_received(message)` and
`disconnected(code, reason)`; the WebSocket asks the channel to accept, reject, send,
deliver, close and pace reading. The connection's state, its close code and reason and who
closed it are read from the channel's sans-I/O state machine
(`tether.protocol.connection.Connection`), the one owner of them on every road; the
WebSocket keeps only what handlers add: queued messages, rooms, callbacks.

Receiving keeps a deque and, only while a handler is actually waiting, one future: no queue
object, no task and no lock per message.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
import weakref
from collections import deque
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Iterator
from typing import TYPE_CHECKING, Any, Literal, TypeVar

from .channel import CLOSED, CLOSING, CONNECTING, OPEN, Channel, CloseKind, ConnectionState
from .datastructures import Headers, HTTPConnection, State
from .encoding import Data, compact_json, encode_message, is_reply
from .exceptions import InvalidState, WebSocketDisconnect
from .http import splitting_header
from .metrics import count_close, count_handshake
from .protocol import OP_BINARY, OP_TEXT, encode_frame
from .protocol.codes import WS_1000_NORMAL_CLOSURE, WS_1006_ABNORMAL_CLOSURE
from .protocol.connection import Side
from .tasks import spawn

if TYPE_CHECKING:
    from .backplane.history import Position
    from .hub import Exclude, Hub
    from .hub.history import Recovery

__all__ = ["WebSocket", "WebSocketDisconnect"]

logger = logging.getLogger("tether")
access_log = logging.getLogger("tether.access")

_Message = TypeVar("_Message", str, bytes)
_T = TypeVar("_T")


def _text(value: str | bytes) -> str:
    return value.decode("latin-1") if isinstance(value, bytes) else value


class WebSocket(HTTPConnection):
    """One WebSocket connection, as handlers see it.

    Created in the CONNECTING state; a handler style calls `accept()` (or `reject()`).
    """

    # (subprotocol, then) while the handshake is left to the handler (`accept_on_first_use`).
    # A class-level default, set on the instance only when used: it is read on cold paths
    # alone, and one more instance attribute (a 30th, with `_query_params`) cost about 650
    # instructions per echoed message (callgrind, bench/hotpath.py echo).
    _deferred_accept: tuple[str | None, Callable[[], Awaitable[None]] | None] | None = None

    def __init__(self, channel: Channel, hub: Hub, *, path: str, query_string: str = "",
                 headers: Headers | None = None, client: tuple[str, int] | None = None,
                 path_params: dict[str, Any] | None = None, subprotocols: Iterable[str] = (),
                 max_queue: int = 32, scheme: str = "ws", app: Any = None) -> None:
        self.channel = channel
        #: The application serving this connection (Starlette's `websocket.app`).
        self.app = app
        channel.attach(self)
        if app is not None:  # the App's slow-client policy (tether.channel has the rule)
            channel.set_slow_client(app.settings.slow_client, app.settings.send_timeout)
        self.hub = hub
        self._loop = channel.loop
        self.id = hub.new_id()  # a UUID naming the node that holds it
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
        self._queue: deque[Data] = deque()
        self._waiter: asyncio.Future[Data] | None = None
        self._max_queue = max_queue
        self._reading_paused = False
        self._scope: dict[str, Any] | None = None
        # Close has begun (from either side): the close callbacks are claimed. The state stays
        # OPEN while a server close runs them, so that their replies can still be sent.
        self._closing = False
        # Whose close() sent the close frame; weak, as that task's result is this connection.
        self._closed_by_task: weakref.ref[asyncio.Task[Any]] | None = None
        #: `time.monotonic()` when the handshake was accepted (None before, or if it never was).
        self.opened_at: float | None = None
        # Made on first registration: most connections have at most one of each (memory per
        # idle connection counts).
        self._close_callbacks: list[Callable[[], Awaitable[Any]]] | None = None
        self._disconnect_callbacks: list[Callable[[], Any]] | None = None

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

    # Read as its scope, as Starlette's connections are: `websocket["path"]`, `list(websocket)`.
    # No `__len__`: it would make every truth test of a connection build the scope.
    def __getitem__(self, key: str) -> Any:
        return self.scope[key]

    def __iter__(self) -> Iterator[str]:
        return iter(self.scope)

    @property
    def connection_state(self) -> ConnectionState:
        """CONNECTING, OPEN, CLOSING or CLOSED (the channel's state machine's)."""
        return self.channel.protocol.state

    @property
    def close_code(self) -> int | None:
        """None while the connection has not ended; then the code it ended with (the close
        sent or received first, a failure's code, 1006 when refused or lost)."""
        return self.channel.protocol.close_code

    @property
    def close_reason(self) -> str:
        """The reason that came with `close_code` ("" until then)."""
        return self.channel.protocol.close_reason

    @property
    def closed_by(self) -> Side | None:
        """Who ended the connection: "server", or "client" (the peer closed, vanished or broke
        the protocol, or was failed for not reading); None until it ended. (A `Side`: a str.)"""
        return self.channel.protocol.closed_by

    @property
    def closed(self) -> bool:
        """True once the connection is closed (or closing) from either side."""
        return self.channel.protocol.state >= CLOSING or self._closing

    @property
    def accepted(self) -> bool:
        """True once the handshake is over (accepted, or the client left during it)."""
        return self.channel.protocol.state is not CONNECTING

    @property
    def log_name(self) -> str:
        """How the access log names this connection: `host:port - "WebSocket /path?query"`."""
        target = f"{self.path}?{self.query_string}" if self.query_string else self.path
        host, port = self.client or ("-", "-")
        return f'{host}:{port} - "WebSocket {target}"'

    def __repr__(self) -> str:
        return f"<WebSocket {self.id} {self.path} {self.channel.protocol.state.name.lower()}>"

    # -- handshake ----------------------------------------------------------------------
    async def accept(self, subprotocol: str | None = None,
                     headers: Iterable[tuple[str, str]] | Iterable[tuple[bytes, bytes]] = ()) -> None:
        """Complete the handshake, with `subprotocol` and extra response `headers` (str or,
        as ASGI and Starlette write them, bytes pairs). A
        subprotocol the client did not offer is dropped with a warning. On a connection that
        is already accepted it does nothing (a subprotocol or headers it asks for are ignored
        with a warning); on one that is closed it raises WebSocketDisconnect."""
        state = self.channel.protocol.state
        if state is CLOSED:
            raise WebSocketDisconnect(self.close_code or WS_1006_ABNORMAL_CLOSURE,
                                      "the connection was closed or refused before accept()")
        headers = [(_text(name), _text(value)) for name, value in headers]  # bytes pairs: the ASGI form
        unsafe = splitting_header(headers)
        if unsafe is not None:
            raise ValueError(f"accept(headers=...): {unsafe!r} holds a CR, LF or NUL (it would split the 101 response)")
        if state is not CONNECTING:  # a no-op, as FastAPI code calls it first thing
            if (subprotocol is not None and subprotocol != self.subprotocol) or headers:
                logger.warning("WebSocket %s: accept(subprotocol=%r, headers=%r) on a connection that was already "
                               "accepted (with subprotocol %r): ignored", self.path, subprotocol, headers,
                               self.subprotocol)
            return
        deferred = self._deferred_accept
        if deferred is not None:
            del self._deferred_accept  # back to the class default, not a 30th instance attribute
            if subprotocol is None:
                subprotocol = deferred[0]
        if subprotocol is not None and subprotocol not in self.offered_subprotocols:
            logger.warning("WebSocket %s: subprotocol %r was not offered by the client (offered: %s); "
                           "accepting without one", self.path, subprotocol, self.offered_subprotocols or "none")
            subprotocol = None
        self.subprotocol = subprotocol
        self.channel.accept(subprotocol, headers)
        self.opened_at = time.monotonic()
        count_handshake(self.app, 101)
        access_log.info("%s 101%s", self.log_name, f" ({subprotocol})" if subprotocol else "")
        self.hub.register(self)
        if deferred is not None and deferred[1] is not None:
            await deferred[1]()

    def accept_on_first_use(self, subprotocol: str | None,
                            then: Callable[[], Awaitable[None]] | None = None) -> None:
        """Leave the handshake to the handler: its own `accept()` completes it (its arguments
        win; without a subprotocol, `subprotocol` is used), and a send or receive before that
        accepts with `subprotocol`. Either way `await then()` runs right after the handshake,
        before anything else is sent. A handler that never accepts is refused (403)."""
        self._deferred_accept = (subprotocol, then)

    async def reject(self, status: int = 403, body: str | bytes = "", headers: Iterable[tuple[str, str]] = ()) -> None:
        """Refuse the handshake with an HTTP response; the handler never sees the connection open."""
        state = self.channel.protocol.state
        if state is CLOSED:
            return
        if state is not CONNECTING:
            raise InvalidState("reject() is only possible before accept()")
        data = body.encode("utf-8") if isinstance(body, str) else body
        access_log.warning("%s refused %d: %s", self.log_name, status,
                           data.decode("utf-8", "replace") or "(no reason given)")
        count_handshake(self.app, status)
        self.channel.reject(status, data, list(headers))

    # -- receiving ----------------------------------------------------------------------
    async def receive(self) -> Data:
        """The next message, str (text) or bytes (binary); WebSocketDisconnect once closed."""
        queue = self._queue
        if queue:
            message = queue.popleft()
            if self._reading_paused and len(queue) <= self._max_queue // 2:
                self._reading_paused = False
                self.channel.resume_reading()
            return message
        state = self.channel.protocol.state
        if state is not OPEN or self._closing:
            if state is CONNECTING:
                if self._deferred_accept is not None:
                    await self.accept()
                    return await self.receive()
                raise InvalidState("receive() before accept()")
            raise WebSocketDisconnect(self.close_code or WS_1000_NORMAL_CLOSURE, self.close_reason)
        waiter: asyncio.Future[Data]  # create_future() gives a Future[Any]; a declaration costs nothing
        waiter = self._waiter = self._loop.create_future()
        try:
            return await waiter
        finally:
            self._waiter = None
            # The WebSocketDisconnect a close sets on it holds this frame in its traceback:
            # kept here, the connection would live on in that cycle until a full collection.
            del waiter

    async def receive_text(self) -> str:
        """The next message, which must be text (TypeError naming the problem otherwise)."""
        return await self._receive_typed(str, "receive_text", "receive_bytes")

    async def receive_bytes(self) -> bytes:
        """The next message, which must be binary (TypeError naming the problem otherwise)."""
        return await self._receive_typed(bytes, "receive_bytes", "receive_text")

    async def _receive_typed(self, expected: type[_Message], name: str, other: str) -> _Message:
        message = await self.receive()
        if not isinstance(message, expected):
            kind, unit = ("binary", "bytes") if isinstance(message, bytes) else ("text", "characters")
            raise TypeError(f"{name}() got a {kind} message ({len(message)} {unit}); "
                            f"use {other}() or receive() to accept {kind} messages")
        return message

    async def receive_json(self, mode: Literal["text", "binary"] | None = None) -> Any:
        """The next message decoded as JSON; ValueError if it is not JSON. Text or UTF-8
        binary by default; `mode="text"` or `"binary"` (Starlette's) also requires that kind
        of message (TypeError otherwise)."""
        if mode == "text":
            message: Data = await self.receive_text()
        elif mode == "binary":
            message = await self.receive_bytes()
        elif mode is None:
            message = await self.receive()
        else:
            raise ValueError(f'receive_json(mode=...) takes "text" or "binary", not {mode!r}')
        try:
            return json.loads(message)
        except ValueError as exc:
            raise ValueError(f"receive_json() got a message that is not JSON: {exc}") from None

    def iter_text(self) -> AsyncIterator[str]:
        """Yield text messages until the connection closes (Starlette's name); a binary
        message raises TypeError as `receive_text()` does."""
        return self._messages(self.receive_text)

    def iter_bytes(self) -> AsyncIterator[bytes]:
        """Yield binary messages until the connection closes (Starlette's name)."""
        return self._messages(self.receive_bytes)

    def iter_json(self) -> AsyncIterator[Any]:
        """Yield messages decoded as JSON until the connection closes (Starlette's name)."""
        return self._messages(self.receive_json)

    def __aiter__(self) -> AsyncIterator[str | bytes]:
        return self._messages(self.receive)

    @staticmethod
    async def _messages(receive: Callable[[], Awaitable[_T]]) -> AsyncIterator[_T]:
        """Yield `await receive()` until the connection closes (the iteration then simply ends)."""
        try:
            while True:
                yield await receive()
        except WebSocketDisconnect:
            return

    # -- sending ------------------------------------------------------------------------
    def _check_open(self) -> None:
        state = self.channel.protocol.state
        if state is not OPEN:
            if state is CONNECTING:
                if self._deferred_accept is not None:
                    raise InvalidState("send_nowait() before accept(): this handler's code calls accept, so the "
                                       "handshake is left to it; await websocket.accept() first")
                raise InvalidState("send before accept(): the handshake is not complete")
            closer = self._closed_by_task() if self._closed_by_task is not None else None
            if closer is not None and closer is asyncio.current_task():
                raise InvalidState(f"send after close(): this handler closed the connection "
                                   f"(code {self.close_code}) and then sent on it")
            raise WebSocketDisconnect(self.close_code or WS_1000_NORMAL_CLOSURE, self.close_reason)

    async def _accept_if_deferred(self) -> None:
        """Complete a handshake left to the handler (`accept_on_first_use`) and not done yet."""
        if self._deferred_accept is not None and self.channel.protocol.state is CONNECTING:
            await self.accept()

    async def _send(self, opcode: int, payload: bytes) -> None:
        channel = self.channel
        if channel.protocol.state is not OPEN:  # a handshake left to the handler, else what _check_open says
            await self._accept_if_deferred()
            self._check_open()
        channel.send_message(opcode, payload)
        waiting = channel.drain()
        if waiting is not None:
            await waiting

    async def send_text(self, data: str) -> None:
        """Send a text message; waits while the client's buffer is above its high-water mark."""
        if not isinstance(data, str):
            raise TypeError(f"send_text() takes str, not {type(data).__name__}")
        await self._send(OP_TEXT, data.encode("utf-8"))

    async def send_bytes(self, data: bytes | bytearray | memoryview) -> None:
        """Send a binary message; waits while the client's buffer is above its high-water mark."""
        if not isinstance(data, (bytes, bytearray, memoryview)):
            raise TypeError(f"send_bytes() takes bytes, not {type(data).__name__}")
        await self._send(OP_BINARY, bytes(data))

    async def send_json(self, data: Any, mode: Literal["text", "binary"] = "text") -> None:
        """Send `data` as compact JSON in a text message (`mode="binary"`, Starlette's: in a
        binary one)."""
        if mode != "text" and mode != "binary":
            raise ValueError(f'send_json(mode=...) takes "text" or "binary", not {mode!r}')
        await self._send(OP_TEXT if mode == "text" else OP_BINARY, compact_json(data).encode("utf-8"))

    async def send(self, data: Any) -> None:
        """Send str as text, bytes-like as binary, anything else as JSON text."""
        await self._send(*encode_message(data))

    def send_nowait(self, data: Any) -> None:
        """Queue `data` without waiting, as a delivery (program order with this connection's
        other sends is kept): a client that does not read is closed (1008) instead of
        growing the buffer, past `max_send_buffer` (in "wait" mode, which it cannot follow:
        past twice that). WebSocketDisconnect if the connection is closed."""
        self._check_open()
        opcode, payload = encode_message(data)
        self.channel.deliver(encode_frame(opcode, payload), opcode, payload)

    async def broadcast(self, data: Any, exclude: Exclude = None) -> int:
        """Send to every client connected to this concrete path, this one included unless
        excluded; returns how many got it. In "wait" mode it waits for slow clients, at most
        about `send_timeout` (`Hub.broadcast`)."""
        await self._accept_if_deferred()  # the sender is included: it has to be registered
        return await self.hub.broadcast(self.path, data, exclude=exclude)

    # -- rooms --------------------------------------------------------------------------
    async def join(self, room: str, info: Any = None, since: Position | None = None) -> Recovery | None:
        """Become a member of `room` (left automatically when the connection closes), with
        `info` (any JSON-able value) as this member's presence. With a cluster backplane it
        returns once the node hears the room, so nothing published to it afterwards is missed.

        `since` (a `Position`, for a history room: `Hub.keep_history`) catches up first: the
        `Recovery` it returns says whether every message after that position was delivered
        (in order, then the live ones with no gap and no duplicate), or none was; and where
        the member is now. Without `since`, it returns None."""
        await self._accept_if_deferred()
        if since is not None:
            return await self.hub.join_from(self, room, since, info)
        waiting = self.hub.join(self, room, info)
        if waiting is not None:
            # Shielded: every member joining meanwhile waits on the same confirmation, which a
            # join given up (cancelled) must not cancel under the others.
            await asyncio.shield(waiting)
        return None

    async def leave(self, room: str) -> None:
        """Stop being a member of `room` (nothing happens if it was not one)."""
        self.hub.leave(self, room)

    def detach(self) -> None:
        """Leave the registry and every room now; the connection stays open for its own
        sends (a close announced for later, as the event style's `ws.close()`)."""
        self.hub.unregister(self)

    # -- lifecycle callbacks --------------------------------------------------------------
    def on_close(self, callback: Callable[[], Awaitable[Any]]) -> None:
        """Run `await callback()` exactly once when the connection closes, on every path
        (server close, client close, dead peer, shutdown, handler error). When the server
        closes, a non-empty return value is sent as the last message before the close frame."""
        if self._close_callbacks is None:
            self._close_callbacks = []
        self._close_callbacks.append(callback)

    def on_disconnect(self, callback: Callable[[], Any]) -> Callable[[], None]:
        """Call `callback()` at once (synchronously) when the peer closes or vanishes.
        Returns a function that unregisters it."""
        if self._disconnect_callbacks is None:
            self._disconnect_callbacks = []
        callbacks = self._disconnect_callbacks
        callbacks.append(callback)
        return lambda: callbacks.remove(callback)

    # -- closing ------------------------------------------------------------------------
    async def close(self, code: int = WS_1000_NORMAL_CLOSURE, reason: str = "") -> None:
        """Close from the server side (idempotent).

        Leaves the registry and every room at once, runs the close callbacks (their values
        are sent as the last messages), sends the close frame, and makes pending and later
        receives raise WebSocketDisconnect. Before accept(), it refuses the handshake (403).
        """
        state = self.channel.protocol.state
        if state is CONNECTING:
            await self.reject(403)
            return
        if state is not OPEN or self._closing:
            return
        self._closing = True
        self.hub.unregister(self)
        await self._run_close_callbacks(send_result=True)
        if self.channel.protocol.state is OPEN:
            count_close(self.app, code, "server")
            task = asyncio.current_task()
            self._closed_by_task = weakref.ref(task) if task is not None else None
            self.channel.close(code, reason)
            self._wake(WebSocketDisconnect(code, reason))

    # -- ConnectionListener: called by the road ---------------------------------------------
    def message_received(self, message: Data) -> None:
        """A complete message arrived: wake the waiting receive, or queue it (reading pauses
        while `max_queue` messages wait unread)."""
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(message)
            return
        self._queue.append(message)
        if len(self._queue) >= self._max_queue and not self._reading_paused:
            self._reading_paused = True
            self.channel.pause_reading()

    def disconnected(self, code: int, reason: str = "", kind: CloseKind = CloseKind.OTHER) -> None:
        """The peer closed, vanished or broke the protocol (the road calls it once, after
        the state machine recorded the end): leave the registry, wake a pending receive, call
        the disconnect callbacks, then run the close callbacks."""
        if self.opened_at is not None:  # not a client that left during the handshake
            count_close(self.app, code, self.closed_by, kind)
        self.hub.unregister(self)
        self._wake(WebSocketDisconnect(code, reason))
        for callback in list(self._disconnect_callbacks or ()):
            try:
                callback()
            except Exception:  # one bad callback must not cost the others, nor on_close
                logger.exception("on_disconnect callback of WebSocket %s raised", self.path)
        if not self._closing:
            self._closing = True
            if self._close_callbacks:
                spawn(self._run_close_callbacks(send_result=False), self._loop)

    def _wake(self, exc: WebSocketDisconnect) -> None:
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_exception(exc)

    async def _run_close_callbacks(self, send_result: bool) -> None:
        callbacks, self._close_callbacks = self._close_callbacks or [], None
        for callback in callbacks:
            try:
                result = await callback()
            except Exception:
                logger.exception("on_close callback of WebSocket %s raised", self.path)
                continue
            if send_result and is_reply(result) and self.channel.protocol.state is OPEN:
                self.channel.send_message(*encode_message(result))

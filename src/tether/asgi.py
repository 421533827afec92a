"""The App as an ASGI 3 application: the same core, reached through ASGI's receive/send.

`App.__call__` serves the `http`, `websocket` and `lifespan` scopes. A WebSocket runs over
an `ASGIChannel`, the ASGI twin of the native server's channel: what the core sends is queued
and written by one pump task in order (ASGI `send` must be awaited, the core's sends are
synchronous so that a broadcast never waits for one slow socket), and incoming
`websocket.receive` events are handed to the core connection as they come.

What an ASGI server does itself (framing, UTF-8 and protocol checks, ping/pong, its own
message size limit, the shutdown close code) is out of the App's hands: docs/deploy.md
lists each difference and the test that pins it.
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from typing import TYPE_CHECKING

from .channel import ChannelBase
from .datastructures import Headers
from .http import Request, Response, body_allowed
from .mount import raw_headers, strip_prefix
from .protocol import OP_TEXT, message_too_big
from .protocol.codes import WS_1000_NORMAL_CLOSURE, WS_1005_NO_STATUS_RCVD, WS_1006_ABNORMAL_CLOSURE
from .protocol.connection import Connection, Side
from .types import Application, Message, Receive, Scope, Send

if TYPE_CHECKING:
    from .config import Settings

__all__ = ["ASGIChannel", "serve_asgi"]

logger = logging.getLogger("tether")

_HIGH_WATER = 64 * 1024


def _headers(scope: Scope) -> Headers:
    return Headers([(name.decode("latin-1"), value.decode("latin-1")) for name, value in scope.get("headers", ())])


def _client(scope: Scope) -> tuple[str, int] | None:
    client = scope.get("client")
    return (client[0], client[1]) if client else None


class ASGIChannel(ChannelBase):
    """A core WebSocket's channel over ASGI (a `tether.channel.Channel`)."""

    def __init__(self, send: Send, settings: Settings, http_response: bool) -> None:
        # The state machine without a frame parser: the ASGI server frames and parses.
        super().__init__(asyncio.get_running_loop(), settings.max_send_buffer, Connection(Side.SERVER))
        self._max_message_size = settings.max_message_size
        self._send = send
        self._http_response = http_response
        self._queue: deque[tuple[Message | None, int]] = deque()
        self._queued = 0
        self._wakeup: asyncio.Future[None] | None = None
        self._drained: asyncio.Future[None] | None = None
        self._reading = asyncio.Event()
        self._reading.set()
        self._pump = self.loop.create_task(self._run_pump())
        self.reader: asyncio.Task[None] | None = None

    # -- outgoing -------------------------------------------------------------------------
    def _put(self, event: Message | None, size: int = 0) -> None:
        """Queue an ASGI event for the pump (None stops it)."""
        self._queue.append((event, size))
        self._queued += size
        if self._wakeup is not None and not self._wakeup.done():
            self._wakeup.set_result(None)

    async def _run_pump(self) -> None:
        while True:
            while not self._queue:
                self._wakeup = self.loop.create_future()
                await self._wakeup
            event, size = self._queue.popleft()
            if event is None:
                return
            try:
                await self._send(event)
            except Exception:  # the server says the client is gone
                self._queue.clear()
                self._release()
                self.ended(WS_1006_ABNORMAL_CLOSURE, "connection lost")
                return
            self._queued -= size
            if self._queued <= _HIGH_WATER // 2:
                self._release()

    def _release(self) -> None:
        waiter, self._drained = self._drained, None
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    def write_accept(self, subprotocol: str | None, headers: list[tuple[str, str]]) -> None:
        self._put({"type": "websocket.accept", "subprotocol": subprotocol, "headers": raw_headers(headers)})

    def write_refusal(self, status: int, headers: list[tuple[str, str]], body: bytes) -> None:
        if self._http_response:
            self._put({"type": "websocket.http.response.start", "status": status, "headers": raw_headers(headers)})
            self._put({"type": "websocket.http.response.body", "body": body})
        else:  # closing before accept: the server answers 403
            self._put({"type": "websocket.close", "code": WS_1000_NORMAL_CLOSURE})

    def send_message(self, opcode: int, payload: bytes) -> None:
        if opcode == OP_TEXT:
            self._put({"type": "websocket.send", "text": payload.decode("utf-8")}, len(payload))
        else:
            self._put({"type": "websocket.send", "bytes": payload}, len(payload))

    def write_frame(self, frame: bytes, opcode: int, payload: bytes) -> None:
        self.send_message(opcode, payload)

    def buffered_bytes(self) -> int:
        return self._queued

    def write_close(self, frame: bytes, code: int, reason: str, wait_for_peer: bool) -> None:
        """Queue the close (the ASGI server plays the close handshake) and stop reading."""
        self._put({"type": "websocket.close", "code": code, "reason": reason})
        # Some servers (granian) hold a close back while a receive() is pending.
        if self.reader is not None and self.reader is not asyncio.current_task():
            self.reader.cancel()

    def drain(self) -> asyncio.Future[None] | None:
        if self._queued <= _HIGH_WATER or self._pump.done():
            return None
        if self._drained is None:
            self._drained = self.loop.create_future()
        return self._drained

    def pause_reading(self) -> None:
        self._reading.clear()

    def resume_reading(self) -> None:
        self._reading.set()

    # -- incoming -------------------------------------------------------------------------
    async def read(self, receive: Receive) -> None:
        """Hand `websocket.receive` events to the core until `websocket.disconnect`."""
        limit = self._max_message_size
        while True:
            await self._reading.wait()
            message = await receive()
            if message["type"] == "websocket.receive":
                data = message.get("text")
                if data is None:
                    data = message.get("bytes") or b""
                size = len(data) if isinstance(data, bytes) else len(data.encode("utf-8"))
                if size > limit:
                    error = message_too_big(limit)
                    self.fail(error.code, error.reason)
                    return
                self.listener.message_received(data)
            elif message["type"] == "websocket.disconnect":
                self.ended(message.get("code", WS_1005_NO_STATUS_RCVD), message.get("reason") or "")
                return
            else:  # the server broke the ASGI protocol: end here rather than spin on it
                reason = f"the ASGI server sent {message['type']!r} where a receive or a disconnect belongs"
                logger.warning("tether: %s; the connection is treated as gone", reason)
                self.ended(WS_1006_ABNORMAL_CLOSURE, reason)
                return

    async def finish(self) -> None:
        """Wait until everything queued has been handed to the server."""
        self._put(None)
        await self._pump


async def _websocket(app: Application, scope: Scope, receive: Receive, send: Send) -> None:
    first = await receive()
    if first["type"] != "websocket.connect":
        return
    channel = ASGIChannel(send, app.settings, "websocket.http.response" in scope.get("extensions", {}))
    # The reader first runs once serve_websocket suspends, when the core connection exists.
    reader = channel.reader = channel.loop.create_task(channel.read(receive))
    try:
        await app.serve_websocket(
            channel, path=scope["path"], query_string=scope.get("query_string", b"").decode("latin-1"),
            headers=_headers(scope), client=_client(scope), subprotocols=scope.get("subprotocols", ()),
            scheme=scope.get("scheme", "ws"))
    finally:
        await channel.finish()
        reader.cancel()
        # The session is over: the channel lets go of the core connection and of the reader,
        # whose cancellation holds the reader's frame (and so the channel), so that no
        # reference cycle keeps them for the collector.
        channel.reader = None
        channel.detach()


async def _read_body(receive: Receive, limit: int) -> bytes | None:
    """The request body; None when it is over `limit` bytes."""
    chunks, size = [], 0
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            break
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > limit:
            return None
        chunks.append(chunk)
        if not message.get("more_body", False):
            break
    return b"".join(chunks)


async def _send_response(response: Response, send: Send, head_only: bool, receive: Receive) -> None:
    await send({"type": "http.response.start", "status": response.status_code,
                "headers": raw_headers(response.header_list())})
    if head_only:
        await send({"type": "http.response.body", "body": b""})
        return

    async def stream() -> None:
        async for chunk in response.body_chunks():
            await send({"type": "http.response.body", "body": chunk, "more_body": True})
        await send({"type": "http.response.body", "body": b""})

    if not response.is_streaming:
        await stream()
        return
    # A stream may never end by itself (SSE): stop it when the client goes away.
    streaming = asyncio.ensure_future(stream())
    disconnected = asyncio.ensure_future(_wait_disconnect(receive))
    await asyncio.wait({streaming, disconnected}, return_when=asyncio.FIRST_COMPLETED)
    for task in (streaming, disconnected):
        task.cancel()
    if streaming.done() and not streaming.cancelled():
        error = streaming.exception()
        if error is not None:
            raise error


async def _wait_disconnect(receive: Receive) -> None:
    while (await receive())["type"] != "http.disconnect":
        pass


async def _http(app: Application, scope: Scope, receive: Receive, send: Send) -> None:
    body = await _read_body(receive, app.settings.max_body_size)
    if body is None:
        response: Response = Response(f"request body over {app.settings.max_body_size} bytes\n", 413,
                                      media_type="text/plain")
    else:
        request = Request(scope["method"], scope["path"], scope.get("query_string", b"").decode("latin-1"),
                          _headers(scope), body, _client(scope), http_version=scope.get("http_version", "1.1"),
                          scheme=scope.get("scheme", "http"))
        response = await app.handle_http(request)
    try:
        await _send_response(response, send, not body_allowed(scope["method"], response.status_code), receive)
    except Exception:
        # As on the native server: the head is out, so log it; the server ends the response.
        logger.exception("%s %s failed while sending its response", scope["method"], scope["path"])
        raise


async def _lifespan(app: Application, receive: Receive, send: Send) -> None:
    while True:
        message = await receive()
        if message["type"] == "lifespan.startup":
            try:
                await app.startup()
            except Exception as exc:
                await send({"type": "lifespan.startup.failed", "message": f"{type(exc).__name__}: {exc}"})
                return
            await send({"type": "lifespan.startup.complete"})
        elif message["type"] == "lifespan.shutdown":
            try:
                await app.shutdown()
            except Exception as exc:
                await send({"type": "lifespan.shutdown.failed", "message": f"{type(exc).__name__}: {exc}"})
                return
            await send({"type": "lifespan.shutdown.complete"})
            return


async def serve_asgi(app: Application, scope: Scope, receive: Receive, send: Send) -> None:
    """Serve one ASGI connection of any scope type."""
    kind = scope["type"]
    if kind == "lifespan":
        await _lifespan(app, receive, send)
        return
    if app.hub.loop is None:  # a server that skipped lifespan
        app.hub.bind(asyncio.get_running_loop())
    mounted = app.mounted(scope["path"])
    if mounted is not None:
        prefix, sub_app = mounted
        child = dict(scope, path=strip_prefix(scope["path"], prefix),
                     root_path=scope.get("root_path", "") + prefix.rstrip("/"))
        await sub_app(child, receive, send)
    elif kind == "http":
        await _http(app, scope, receive, send)
    elif kind == "websocket":
        await _websocket(app, scope, receive, send)

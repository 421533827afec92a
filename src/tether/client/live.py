"""The Python client of tether's live channels (`tether.live.v1`, docs/live-protocol.md).

    from tether.client import connect

    async with connect("ws://127.0.0.1:8000/live", token=None) as client:
        room = await client.join("chat:lobby", info={"name": "ada"})
        await room.publish({"text": "hi"})
        async for message in room:          # Message(data, offset, epoch)
            ...

It runs on `tether.client.open_websocket`, the client side of tether's own sans-I/O protocol
state machine, not on the `websockets` package: one protocol stack for server and client,
it runs on uvloop as on asyncio's loop, and it adds no dependency.

**Connecting.** `connect(url, token)` returns a `LiveClient`; `async with` (or `await`) opens
the first connection: the WebSocket with the subprotocol `tether.live.v1`, then the `connect`
command with the token. That first connection is not retried: a server that is down raises
OSError, a refusal raises `LiveRefused` with the server's reason (`code` 4001; 4003 when the
token had expired already, which a token function is asked again for, once, at once). `token` is a string, None,
or a function (sync or async) returning one, called for every connection and every refresh.
The reply sets `client.id` (this connection's id: the key of one's own presence entry; it
changes with every connection), `client.ping` and `client.expires_in`.

**Reconnecting.** When the connection ends the client decides by its close code:
1000 from the server, 1009, 4001, 4002 and 4004 stop it (`LiveClosed`, `LiveRefused` for
4001); 4003 (the identity expired) reconnects at once with a fresh token; anything else
(1001, 4005, 1006 and network failures) reconnects after a full-jitter exponential backoff
(`tether.client.backoff.Backoff`: `min_delay` 0.25 s doubling up to `max_delay` 10 s, reset
by a successful connect; `random` injectable). A failed reconnection (refused TCP, a timeout,
an HTTP answer) is retried the same way; a refused `connect` stops the client, unless the
token had expired (4003) and comes from a function (asked again, with the backoff). Then every
room is joined again, with its `info` and its `position` as `since`. These joins of the
client's own are paced under the server's default command rate (`backoff.Pacer`) and tried
again when rate-limited; an application's `join` that is rate-limited raises LiveError.

**Rooms.** `await client.join(name, info=None, since=None)` returns a `Room` once its first
join succeeded (a `LiveError` when refused). `room.recovered`, `room.position`,
`room.presence` (`{id: info}`, oneself included, kept current from diffs), `room.joins` and
`room.lost` are current values, updated on each rejoin. `async for message in room` yields
the messages; `room.events()` yields, in wire order, `Joined` (after every join, the first
included: the way to observe rejoins and `recovered`), `Message` and `Lost` (see
`tether.client.feed`, which also states the deduplication by offset and what a full queue
does: each room queues at most `max_queue` (1000) messages; past that, a room with history is
joined again from its position once the application has caught up, which replays what was
skipped; a room without history reports the skipped messages as `Lost("queue_full")`).
Read a room from one task. Iteration ends after `room.leave()` or `client.close()`, and
raises the reason when the client stopped (or when a rejoin of the room was refused).

**Commands.** `room.publish(data)`, `room.history(since, limit)`, `room.leave()`; for
anything else (the protocol's tests use it) `await client.request(op, **fields)` sends a
command with an id and returns the reply's `result`, and `await client.send(op, **fields)`
sends one without an id (no reply); `connect(..., on_push=f)` calls `f` with every push, raw.
Commands wait while the client is reconnecting (a room's, while it is joined again), and raise
LiveClosed once it stopped. An error reply raises `LiveError(code, name, message, limit)` from
the awaiting call; errors sent with `"id": null` are logged and kept in `client.errors`. A
connection lost before the reply raises `LiveDisconnected` (a ConnectionError: the command
may or may not have run; the client reconnects).

**Heartbeat and expiry.** Ping pushes are answered with `{"op": "pong"}`; a connection from
which nothing was heard for 1.5 `ping` intervals is aborted and replaced (so a dead one is
found within two intervals). With an `expires_in`, the client sends `refresh` with a new
token at 80 % of it; a refused refresh is logged, and the expiry's 4003 brings a reconnect.
`await client.wait_closed()` returns after `close()`, or raises why the client stopped.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import itertools
import json
import logging
import random as _random
import ssl
from collections import deque
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine, Generator, Iterable, Mapping
from types import MappingProxyType
from typing import Any

from ..exceptions import WebSocketDisconnect
from ..protocol.connection import OPEN, Side
from .backoff import Backoff, Pacer
from .feed import Event, Feed, History, Message, Position, parse_position, position_json
from .websocket import ClientWebSocket, open_websocket

__all__ = ["SUBPROTOCOL", "connect", "LiveClient", "Room", "LiveError", "LiveClosed", "LiveRefused",
           "LiveDisconnected", "Token"]

logger = logging.getLogger("tether.client")

SUBPROTOCOL = "tether.live.v1"

#: A token, or a function (sync or async) giving one for each connection and refresh.
Token = str | Callable[[], str | Awaitable[str | None] | None] | None

# Close codes that stop the client (docs/live-protocol.md, "Close codes"); 1000 only when
# the server sent it. Anything else reconnects.
_MEANING = {1000: "the server closed the connection", 1009: "a message over the server's max_size",
            4001: "connect refused", 4002: "protocol misuse", 4003: "the token expired",
            4004: "too many error replies"}
_STOPPING = {1000, 1009, 4001, 4002, 4004}
_PONG = json.dumps({"op": "pong"})


class LiveError(Exception):
    """An error reply to a command: `code` (400, 401, 403, ...), `name` (`bad_request`, ...),
    the server's `message`, and `limit` (the setting's name, for errors over a limit)."""

    def __init__(self, code: int, name: str, message: str, limit: str | None = None) -> None:
        super().__init__(f"{code} {name}: {message}" + (f" (limit: {limit})" if limit else ""))
        self.code, self.name, self.message, self.limit = code, name, message, limit

    @classmethod
    def from_wire(cls, error: Any) -> LiveError:
        if not isinstance(error, Mapping):
            return cls(0, "malformed", f"an error reply that is not an object: {error!r}")
        code = error.get("code")
        return cls(code if isinstance(code, int) else 0, str(error.get("name", "")), str(error.get("message", "")),
                   error.get("limit") if isinstance(error.get("limit"), str) else None)


class LiveClosed(Exception):
    """The client stopped for good: the server closed with `code` (1000, 1009, 4002, 4004)
    and `reason`, or the client was closed (`code` 1000, raised by commands sent after)."""

    def __init__(self, code: int, reason: str, what: str | None = None) -> None:
        what = what or _MEANING.get(code, "closed")
        super().__init__(f"live connection closed with {code} ({what})" + (f": {reason}" if reason else ""))
        self.code, self.reason = code, reason


class LiveRefused(LiveClosed):
    """`connect` was refused (error 401): `reason` is the server's; `code` the close that
    followed, 4001, or 4003 when the token had expired already."""

    def __init__(self, reason: str, code: int = 4001) -> None:
        super().__init__(code, reason)


class LiveDisconnected(ConnectionError):
    """The connection was lost before the command's reply: it may or may not have run. The
    client reconnects by itself."""


def _stop_for(code: int, reason: str, by_server: bool) -> LiveClosed | None:
    """What a connection that ended with `code` means: the exception that stops the client,
    or None (reconnect)."""
    if code == 4001:
        return LiveRefused(reason)
    if code in _STOPPING and (code != 1000 or by_server):
        return LiveClosed(code, reason)
    return None


def _encode(command: Mapping[str, Any]) -> str:
    """A command as JSON text; ValueError for NaN or infinities, which JSON does not have."""
    return json.dumps(command, allow_nan=False)


def _decode(text: str | bytes) -> dict[str, Any] | None:
    try:
        frame = json.loads(text)
    except ValueError:
        logger.warning("live: a message that is not JSON: %.80r", text)
        return None
    return frame if isinstance(frame, dict) else None


class Room:
    """A joined room (see the module doc). Its values are the feed's (`tether.client.feed`)."""

    def __init__(self, client: LiveClient, name: str, info: Any, since: Position | None, max_queue: int) -> None:
        self.client, self.name, self.info = client, name, info
        self.feed = Feed(name, max_queue, since)
        self._first = asyncio.Event()  # the first join's outcome is known
        self._error: BaseException | None = None  # why the first join failed
        self._joined_on: ClientWebSocket | None = None
        self._resyncing = False
        self._settled = asyncio.Event()  # not leaving and joining again (a resync)
        self._settled.set()

    @property
    def recovered(self) -> bool:
        """Whether the last join recovered every message since the position it joined from."""
        return self.feed.recovered

    @property
    def position(self) -> Position | None:
        """The position of the last message queued (or of the last join); None without history."""
        return self.feed.position

    @property
    def presence(self) -> dict[str, Any]:
        """{connection id: info} of the members, oneself included (empty without presence)."""
        return self.feed.presence

    @property
    def joins(self) -> int:
        """Successful joins so far: 1, plus one per rejoin."""
        return self.feed.joins

    @property
    def lost(self) -> int:
        """How many Lost events the room had (the server's `lost` pushes, full queues)."""
        return self.feed.lost

    def __aiter__(self) -> Room:
        return self

    async def __anext__(self) -> Message:
        while True:
            event = await self.feed.next()
            self._read()
            if isinstance(event, Message):
                return event

    async def events(self) -> AsyncIterator[Event]:
        """Joined, Message and Lost events, in wire order (see the module doc)."""
        while True:
            try:
                event = await self.feed.next()
            except StopAsyncIteration:
                return
            self._read()
            yield event

    def _read(self) -> None:
        if self.feed.wants_resync and not self._resyncing:
            self.client._resync(self)

    async def _request(self, op: str, **fields: Any) -> dict[str, Any]:
        await self._settled.wait()
        return await self.client.request(op, room=self.name, **fields)

    async def publish(self, data: Any) -> None:
        """Publish `data` (any JSON) into the room: every member gets it, oneself included."""
        await self._request("publish", data=data)

    async def history(self, since: int | None = None, limit: int | None = None) -> History:
        """The room's kept messages with an offset over `since`, oldest first, at most `limit`."""
        fields: dict[str, Any] = {}
        if since is not None:
            fields["since"] = since
        if limit is not None:
            fields["limit"] = limit
        result = await self._request("history", **fields)
        position = parse_position(result.get("position"))
        epoch = position.epoch if position is not None else None
        return History(position, [Message(self.name, kept.get("data"), kept.get("offset"), epoch)
                                  for kept in result.get("messages", ())])

    async def leave(self) -> None:
        """Leave the room: no more events; iteration ends after what is queued."""
        await self.client._leave(self)

    def __repr__(self) -> str:
        return f"<Room {self.name!r} position={self.position} joins={self.joins}>"


class LiveClient:
    """A live connection that reconnects by itself (see the module doc); made by `connect`."""

    def __init__(self, url: str, token: Token = None, *, min_delay: float = 0.25, max_delay: float = 10.0,
                 random: Callable[[], float] = _random.random, max_queue: int = 1000, open_timeout: float = 10.0,
                 close_timeout: float = 5.0, max_message_size: int = 1 << 20,
                 headers: Iterable[tuple[str, str]] = (), ssl_context: ssl.SSLContext | None = None,
                 on_push: Callable[[dict[str, Any]], None] | None = None) -> None:
        self.url = url
        self.id: str | None = None
        self.ping: float | None = None
        self.expires_in: float | None = None
        #: connections made (the first included), refreshes accepted, how the last one ended
        self.connects = 0
        self.refreshes = 0
        self.close_code: int | None = None
        self.close_reason = ""
        #: errors the server sent with "id": null (to commands sent without an id)
        self.errors: deque[LiveError] = deque(maxlen=100)
        self._token_source = token
        self._backoff = Backoff(min_delay, max_delay, random)
        self._max_queue = max_queue
        self._open_options: dict[str, Any] = {
            "subprotocols": [SUBPROTOCOL], "headers": list(headers), "open_timeout": open_timeout,
            "close_timeout": close_timeout, "max_message_size": max_message_size, "ssl_context": ssl_context,
            "ping_interval": 0, "ping_timeout": 0}  # the live heartbeat replaces WebSocket pings
        self._open_timeout = open_timeout
        self._on_push = on_push
        self._rooms: dict[str, Room] = {}
        self._ws: ClientWebSocket | None = None
        self._ids = itertools.count(1)
        self._pending: dict[int, asyncio.Future[dict[str, Any]]] = {}
        self._ready = asyncio.Event()  # connected, and every room joined again
        self._done = asyncio.Event()
        self._stopped = False
        self._stop_error: BaseException | None = None  # why it stopped (None: close())
        self._heard = 0.0
        self._pacer = Pacer()  # the client's own joins, per connection
        self._runner: asyncio.Task[None] | None = None
        self._tasks: set[asyncio.Task[Any]] = set()

    # -- life ----------------------------------------------------------------------------------------
    async def start(self) -> LiveClient:
        """Open the first connection (see the module doc); `async with` and `await` call it."""
        if self._runner is not None:
            raise RuntimeError("this client is started already")
        try:
            ws = await self._open()
        except LiveRefused as refused:
            if not self._expired(refused):
                raise
            ws = await self._open()  # once more, with a new token
        self._runner = asyncio.get_running_loop().create_task(self._run(ws, self._attach(ws)))
        return self

    def __await__(self) -> Generator[Any, None, LiveClient]:
        return self.start().__await__()

    async def __aenter__(self) -> LiveClient:
        return self if self._runner is not None else await self.start()  # `async with await connect(...)`

    async def __aexit__(self, *exc_info: Any) -> None:
        await self.close()

    async def close(self) -> None:
        """Close the connection (1000: the server takes it out of its rooms) and stop:
        iterations end after what is queued, commands raise LiveClosed."""
        ws = self._ws
        self._stop(None)
        runner = self._runner
        if runner is not None and not runner.done():
            runner.cancel()
            await asyncio.wait([runner])
        if ws is not None and ws.state is OPEN:
            await ws.close(1000)

    async def wait_closed(self) -> None:
        """Return once the client stopped; raise why, unless it was `close()`."""
        await self._done.wait()
        if self._stop_error is not None:
            raise self._stop_error

    @property
    def connected(self) -> bool:
        """Connected, and every room joined again."""
        return self._ws is not None and self._ready.is_set() and not self._stopped

    @property
    def rooms(self) -> Mapping[str, Room]:
        return MappingProxyType(self._rooms)

    @property
    def websocket(self) -> ClientWebSocket | None:
        """The current connection (None while reconnecting): for tests that send raw frames."""
        return self._ws

    def _stop(self, error: BaseException | None) -> None:
        if self._stopped:
            return
        self._stopped, self._stop_error = True, error
        if error is not None:
            logger.warning("live client of %s stopped: %s", self.url, error)
        closed = error or LiveClosed(1000, "", "the client was closed")
        for room in self._rooms.values():
            room.feed.end(error)
            if not room._first.is_set():
                room._error = closed
                room._first.set()
        pending, self._pending = self._pending, {}
        for future in pending.values():
            if not future.done():
                future.set_exception(closed)
        for task in self._tasks:
            task.cancel()
        self._ready.set()  # wakes the commands waiting for a connection: they raise
        self._done.set()

    def _spawn(self, coro: Coroutine[Any, Any, Any]) -> None:
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._spawned)

    def _spawned(self, task: asyncio.Task[Any]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and not isinstance(error := task.exception(), LiveClosed | LiveDisconnected | None):
            logger.error("live: a task of the client of %s failed", self.url, exc_info=error)

    # -- commands --------------------------------------------------------------------------------------
    async def join(self, name: str, info: Any = None, since: Position | Mapping[str, Any] | None = None) -> Room:
        """Join `name` (see the module doc); `since`: a Position or `{"epoch", "offset"}`."""
        self._check_open()
        if name in self._rooms:
            raise ValueError(f"room {name!r} is joined already")
        room = Room(self, name, info, parse_position(since), self._max_queue)
        self._rooms[name] = room
        if self._ready.is_set() and self._ws is not None:
            self._spawn(self._join(self._ws, room))
        # else: the joins of the connection being made (or of the next one) include it
        try:
            await room._first.wait()
        except asyncio.CancelledError:
            if room.joins == 0 and self._rooms.get(name) is room:
                del self._rooms[name]  # a join that is still answered is left (_join)
            raise
        if room._error is not None:
            raise room._error
        return room

    async def request(self, op: str, **fields: Any) -> dict[str, Any]:
        """Send the command `op` with `fields` and an id; its reply's `result`, or LiveError."""
        return await self._call(await self._wait_ready(), op, fields)

    async def send(self, op: str, **fields: Any) -> None:
        """Send the command `op` with `fields` and no id: no reply (errors land in `errors`)."""
        ws = await self._wait_ready()
        try:
            await ws.send(_encode({**fields, "op": op}))
        except WebSocketDisconnect as exc:
            raise LiveDisconnected(f"{op}: the connection closed") from exc

    def _check_open(self) -> None:
        if self._stopped:
            raise self._stop_error or LiveClosed(1000, "", "the client was closed")

    async def _wait_ready(self) -> ClientWebSocket:
        while True:
            self._check_open()
            ws = self._ws
            if ws is not None and self._ready.is_set():
                return ws
            await self._ready.wait()

    async def _call(self, ws: ClientWebSocket, op: str, fields: Mapping[str, Any]) -> dict[str, Any]:
        ident = next(self._ids)
        text = _encode({**fields, "op": op, "id": ident})
        future: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
        self._pending[ident] = future
        try:
            await ws.send(text)
            return await future
        except WebSocketDisconnect as exc:
            raise LiveDisconnected(f"{op}: the connection closed before the reply") from exc
        finally:
            self._pending.pop(ident, None)

    async def _leave(self, room: Room) -> None:
        if self._rooms.get(room.name) is not room:
            return
        del self._rooms[room.name]
        room.feed.end()
        ws = self._ws
        if ws is None or room._joined_on is not ws:
            return  # not joined on this connection (a join in flight leaves when answered)
        try:
            await self._call(ws, "leave", {"room": room.name})
        except LiveDisconnected:
            pass
        except LiveError as error:
            if error.code != 410:  # not joined: left already
                raise

    async def _join(self, ws: ClientWebSocket, room: Room, automatic: bool = False) -> None:
        """Join `room` on `ws` from its position. The client's own joins (`automatic`: rejoins)
        are paced, and tried again when rate-limited; an application's join says LiveError."""
        feed = room.feed
        for attempt in itertools.count():
            if self._rooms.get(room.name) is not room or self._ws is not ws:
                return
            if automatic:
                await self._pacer.take()
            since = feed.begin_join()
            fields: dict[str, Any] = {"room": room.name}
            if room.info is not None:
                fields["info"] = room.info
            if since is not None:
                fields["since"] = position_json(since)
            try:
                result = await self._call(ws, "join", fields)
            except LiveDisconnected:
                return  # the next connection joins it again
            except LiveError as error:
                feed.join_failed()
                if automatic and error.name == "rate_limited" and attempt < 8:
                    await asyncio.sleep(self._backoff.ceiling(attempt))
                    continue
                self._drop(room, error)
                return
            except Exception as error:  # an info that is not JSON, ...
                feed.join_failed()
                self._drop(room, error)
                return
            if self._rooms.get(room.name) is not room:  # left (or given up) while joining
                feed.join_failed()
                if room.name not in self._rooms:
                    self._spawn(self._quietly(self._call(ws, "leave", {"room": room.name})))
                return
            feed.joined(bool(result.get("recovered")), parse_position(result.get("position")),
                        result.get("presence"))
            room._joined_on = ws
            room._first.set()
            return

    def _drop(self, room: Room, error: Exception) -> None:
        """A join of `room` was refused: the room is gone, and says why."""
        if self._rooms.get(room.name) is room:
            del self._rooms[room.name]
        if room._first.is_set():
            logger.warning("live: rejoining %r was refused: %s", room.name, error)
        else:
            room._error = error
            room._first.set()
        room.feed.end(error)

    def _resync(self, room: Room) -> None:
        """The room fell behind its queue: leave it and join it again from its position."""
        ws = self._ws
        if ws is None or room._joined_on is not ws or not self._ready.is_set():
            return  # the next connection's join does it
        room._resyncing = True
        room._settled.clear()
        self._spawn(self._rejoin_one(ws, room))

    async def _rejoin_one(self, ws: ClientWebSocket, room: Room) -> None:
        try:
            with contextlib.suppress(LiveError):  # 410: not joined any more; join again all the same
                await self._call(ws, "leave", {"room": room.name})
            await self._join(ws, room, automatic=True)
        except LiveDisconnected:
            return  # the next connection's join does it
        finally:
            room._resyncing = False
            room._settled.set()
        room._read()  # the replay may have filled the queue again, and been read down meanwhile

    @staticmethod
    async def _quietly(call: Awaitable[Any]) -> None:
        with contextlib.suppress(LiveError, LiveDisconnected):
            await call

    # -- connections -------------------------------------------------------------------------------------
    async def _token(self) -> str | None:
        source = self._token_source
        if not callable(source):
            return source
        value = source()
        if inspect.isawaitable(value):
            value = await value
        return value

    async def _open(self) -> ClientWebSocket:
        """A new connection, `connect` answered: LiveRefused / LiveClosed / LiveError when the
        server refused it; OSError, TimeoutError, WebSocketRejected... when it could not be made."""
        ws = await open_websocket(self.url, **self._open_options)
        try:
            frame = await self._connect(ws)
        except BaseException:
            self._abort(ws)
            raise
        if "error" in frame:
            error = LiveError.from_wire(frame["error"])
            code = await self._close_code(ws) if error.code == 401 else None
            self._abort(ws)
            if error.code == 401:
                raise LiveRefused(error.message, 4003 if code == 4003 else 4001) from error
            raise error
        result = frame.get("result")
        result = result if isinstance(result, dict) else {}
        self.id, self.ping, self.expires_in = result.get("client"), result.get("ping"), result.get("expires_in")
        self.connects += 1
        return ws

    async def _connect(self, ws: ClientWebSocket) -> dict[str, Any]:
        """Send `connect` with the token; its reply."""
        try:
            async with asyncio.timeout(self._open_timeout):
                token = await self._token()
                ident = next(self._ids)
                await ws.send(_encode({"id": ident, "op": "connect", "token": token}))
                while True:
                    frame = _decode(await ws.receive())
                    if frame is not None and frame.get("id") == ident:
                        return frame
        except WebSocketDisconnect as closed:
            raise _stop_for(closed.code, closed.reason, True) or ConnectionError(
                f"closed with {closed.code} before connect was answered") from None

    async def _close_code(self, ws: ClientWebSocket) -> int | None:
        """The code of the close that follows a refused connect (None if it does not come)."""
        try:
            async with asyncio.timeout(self._open_timeout):
                while True:
                    await ws.receive()
        except WebSocketDisconnect as closed:
            return closed.code
        except TimeoutError:
            return None

    def _expired(self, refused: LiveRefused) -> bool:
        """A connect refused because the token had expired, which a token function can renew."""
        return refused.code == 4003 and callable(self._token_source)

    @staticmethod
    def _abort(ws: ClientWebSocket) -> None:
        if ws.transport is not None:
            ws.transport.abort()

    async def _run(self, ws: ClientWebSocket, helpers: list[asyncio.Task[None]]) -> None:
        """Serve connections until one ends with a code that stops the client."""
        try:
            while True:
                stop = await self._serve(ws, helpers)
                if stop is not None:
                    self._stop(stop)
                    return
                logger.info("live: connection to %s ended (%s %s): reconnecting", self.url, self.close_code,
                            self.close_reason)
                ws = await self._reconnect(at_once=self.close_code == 4003)
                helpers = self._attach(ws)
        except (LiveClosed, LiveError) as error:  # a reconnection refused
            self._stop(error)
        except Exception as error:
            logger.exception("live: the client of %s failed", self.url)
            self._stop(error)

    async def _reconnect(self, at_once: bool) -> ClientWebSocket:
        """A new connection: at once after an expiry (4003), else after the backoff, and again
        until one is made. A refusal stops the client, unless it was an expired token and a
        token function can give another."""
        attempt = 0
        while True:
            await asyncio.sleep(0.0 if at_once else self._backoff.delay(attempt))
            at_once = False
            error: Exception
            try:
                return await self._open()
            except LiveRefused as refused:
                if not self._expired(refused):
                    raise
                at_once, error = attempt == 0, refused
            except (LiveClosed, LiveError):
                raise
            except Exception as failure:
                error = failure
            attempt += 1
            logger.info("live: reconnecting to %s failed (%r); attempt %d", self.url, error, attempt)

    def _attach(self, ws: ClientWebSocket) -> list[asyncio.Task[None]]:
        """Make `ws` the connection: its heartbeat and refresh tasks, and the rooms' joins
        (ready at once without rooms)."""
        loop = asyncio.get_running_loop()
        self._ws, self._heard, self._pacer = ws, loop.time(), Pacer()
        helpers = [loop.create_task(self._heartbeat(ws)), loop.create_task(self._refresher(ws))]
        if self._rooms:
            helpers.append(loop.create_task(self._rejoin(ws)))
        else:
            self._ready.set()
        return helpers

    async def _serve(self, ws: ClientWebSocket, helpers: list[asyncio.Task[None]]) -> LiveClosed | None:
        """Read `ws` until it ends; what its close code means: the exception that stops the
        client, or None (reconnect). Commands waiting for a reply raise it, or LiveDisconnected."""
        loop = asyncio.get_running_loop()
        try:
            while True:
                try:
                    text = await ws.receive()
                except WebSocketDisconnect:
                    break
                self._heard = loop.time()
                frame = _decode(text)
                if frame is not None:
                    await self._dispatch(ws, frame)
        finally:
            for task in helpers:
                task.cancel()
            self._ws = None
            code = ws.close_code if ws.close_code is not None else 1006
            stop = _stop_for(code, ws.close_reason, ws.protocol.closed_by is Side.SERVER)
            if not self._stopped:
                self.close_code, self.close_reason = code, ws.close_reason
                self._ready.clear()
            pending, self._pending = self._pending, {}
            for future in pending.values():
                if not future.done():
                    future.set_exception(stop or LiveDisconnected("the connection closed before the reply"))
        return stop

    async def _rejoin(self, ws: ClientWebSocket) -> None:
        """Join every room again (rooms joined meanwhile included), then be ready."""
        tried = set[str]()
        while rooms := [room for name, room in self._rooms.items() if name not in tried]:
            tried.update(room.name for room in rooms)
            await asyncio.gather(*(self._join(ws, room, automatic=True) for room in rooms))
        if self._ws is ws and not self._stopped:
            self._ready.set()
            for room in list(self._rooms.values()):  # read down while joining: no read will ask again
                room._read()

    async def _heartbeat(self, ws: ClientWebSocket) -> None:
        """Abort `ws` once nothing was heard from it for 1.5 ping intervals."""
        if not isinstance(self.ping, int | float) or self.ping <= 0:
            return
        limit, loop = 1.5 * self.ping, asyncio.get_running_loop()
        while (silent := loop.time() - self._heard) < limit:
            await asyncio.sleep(limit - silent)
        logger.warning("live: nothing heard from %s for %.2f s: the connection is dead", self.url, silent)
        self._abort(ws)

    async def _refresher(self, ws: ClientWebSocket) -> None:
        """Send `refresh` with a new token at 80 % of each `expires_in`."""
        expires_in = self.expires_in
        while isinstance(expires_in, int | float):
            await asyncio.sleep(max(0.0, 0.8 * expires_in))
            try:
                result = await self._call(ws, "refresh", {"token": await self._token()})
            except LiveDisconnected:
                return
            except Exception as error:  # refused (LiveError 401), or the token function failed
                logger.warning("live: token refresh failed (%s): the connection ends at expiry (4003) and "
                               "reconnects with a new token", error)
                return
            expires_in = self.expires_in = result.get("expires_in")
            self.refreshes += 1

    async def _dispatch(self, ws: ClientWebSocket, frame: dict[str, Any]) -> None:
        kind = frame.get("push")
        if kind is not None:
            if self._on_push is not None:
                try:
                    self._on_push(frame)
                except Exception:
                    logger.exception("live: on_push raised")
            if kind == "ping":
                with contextlib.suppress(WebSocketDisconnect):
                    await ws.send(_PONG)
                return
            name = frame.get("room")
            room = self._rooms.get(name) if isinstance(name, str) else None
            if room is not None:
                room.feed.push(frame)
            return
        ident, error = frame.get("id"), frame.get("error")
        future = self._pending.pop(ident, None) if isinstance(ident, int) else None
        if future is None:
            if error is not None:
                self.errors.append(LiveError.from_wire(error))
                logger.warning("live: error reply from %s: %s", self.url, self.errors[-1])
        elif not future.done():
            if error is not None:
                future.set_exception(LiveError.from_wire(error))
            else:
                result = frame.get("result")
                future.set_result(result if isinstance(result, dict) else {})


def connect(url: str, token: Token = None, *, min_delay: float = 0.25, max_delay: float = 10.0,
            random: Callable[[], float] = _random.random, max_queue: int = 1000, open_timeout: float = 10.0,
            close_timeout: float = 5.0, max_message_size: int = 1 << 20, headers: Iterable[tuple[str, str]] = (),
            ssl_context: ssl.SSLContext | None = None,
            on_push: Callable[[dict[str, Any]], None] | None = None) -> LiveClient:
    """A `LiveClient` of the live endpoint at `url` (ws:// or wss://); `async with` or `await`
    it to connect (see the module doc). `min_delay`, `max_delay` and `random` shape the
    reconnection backoff; `max_queue` bounds each room's queue of messages; `open_timeout`
    bounds a connection's handshake and `connect` reply; `on_push` is called with every push,
    raw (for tests and tracing)."""
    return LiveClient(url, token, min_delay=min_delay, max_delay=max_delay, random=random, max_queue=max_queue,
                      open_timeout=open_timeout, close_timeout=close_timeout, max_message_size=max_message_size,
                      headers=headers, ssl_context=ssl_context, on_push=on_push)

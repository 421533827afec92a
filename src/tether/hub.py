"""The connection registry: every open WebSocket by id, by concrete path and by room.

`app.hub` reaches connections from anywhere in the process (another handler, an HTTP
route, a background task). Broadcasts and publishes encode the frame once and hand the
same bytes to every connection. The `*_sync` methods may be called from any thread: on the
event loop's thread they act at once (keeping program order with the caller's other sends);
from another thread they are handed to the loop and return immediately.

The core `WebSocket` keeps the registry true: it calls `register` when accepted,
`unregister` on every close path, and `join`/`leave` for rooms.
"""

from __future__ import annotations

import asyncio
import threading
import weakref
from collections.abc import Callable
from typing import Any, Protocol

from .channel import Channel
from .encoding import encode_message
from .exceptions import InvalidState
from .protocol import encode_frame
from .protocol.codes import WS_1000_NORMAL_CLOSURE
from .tasks import spawn

__all__ = ["Hub", "Member"]


class Member(Protocol):
    """What the hub needs of a connection (the core `WebSocket` is one)."""

    id: str
    path: str
    rooms: set[str]
    channel: Channel

    @property
    def closed(self) -> bool: ...
    def send_nowait(self, data: Any) -> None: ...
    async def close(self, code: int = ..., reason: str = ...) -> None: ...


def _excluded(exclude: Any) -> set[str]:
    """Ids to skip: `exclude` is None, one id/connection, or an iterable of them."""
    if exclude is None:
        return set()
    if isinstance(exclude, str) or hasattr(exclude, "id"):
        exclude = (exclude,)
    return {getattr(item, "id", item) for item in exclude}


class Hub:
    """Registry of open connections (see the module doc)."""

    _instances: weakref.WeakSet[Hub] = weakref.WeakSet()

    @classmethod
    def holding(cls, connection_id: str) -> Hub | None:
        """The hub, among every App's in this process, that holds `connection_id`."""
        for hub in list(cls._instances):
            if connection_id in hub:
                return hub
        return None

    def __init__(self) -> None:
        Hub._instances.add(self)
        self._connections: dict[str, Member] = {}
        self._paths: dict[str, dict[str, Member]] = {}
        self._rooms: dict[str, dict[str, Member]] = {}
        self._loop: asyncio.AbstractEventLoop | None = None
        self._loop_thread_id: int | None = None

    def bind(self, loop: asyncio.AbstractEventLoop) -> None:
        """Record the loop that owns the connections; call from that loop's thread
        (`App.startup()` does)."""
        self._loop = loop
        self._loop_thread_id = threading.get_ident()

    @property
    def loop(self) -> asyncio.AbstractEventLoop | None:
        """The loop the hub is bound to, or None before the app started."""
        return self._loop

    # -- registry (kept by the core WebSocket) ------------------------------------------
    def register(self, ws: Member) -> None:
        """Add an accepted connection."""
        self._connections[ws.id] = ws
        self._paths.setdefault(ws.path, {})[ws.id] = ws

    def unregister(self, ws: Member) -> None:
        """Remove a connection from the registry and every room (idempotent)."""
        if self._connections.pop(ws.id, None) is None:
            return
        peers = self._paths.get(ws.path)
        if peers is not None:
            peers.pop(ws.id, None)
            if not peers:
                del self._paths[ws.path]
        for room in list(ws.rooms):
            self.leave(ws, room)

    def join(self, ws: Member, room: str) -> None:
        """Make an open connection a member of `room`; InvalidState if it is not open."""
        if ws.id not in self._connections:
            raise InvalidState(f"connection {ws.id} is not open: it cannot join room {room!r}")
        self._rooms.setdefault(room, {})[ws.id] = ws
        ws.rooms.add(room)

    def leave(self, ws: Member, room: str) -> None:
        """Remove a connection from `room` (nothing happens if it was not a member)."""
        ws.rooms.discard(room)
        members = self._rooms.get(room)
        if members is not None:
            members.pop(ws.id, None)
            if not members:
                del self._rooms[room]

    # -- queries --------------------------------------------------------------------------
    def __len__(self) -> int:
        return len(self._connections)

    def __contains__(self, connection_id: object) -> bool:
        return connection_id in self._connections

    def get(self, connection_id: str) -> Member | None:
        """The open connection with this id in this process, or None."""
        return self._connections.get(connection_id)

    def ids(self, path: str | None = None) -> list[str]:
        """Ids of the open connections, all or those on one concrete path."""
        if path is None:
            return list(self._connections)
        return list(self._paths.get(path, ()))

    def members(self, room: str) -> list[str]:
        """Ids of the connections in `room`."""
        return list(self._rooms.get(room, ()))

    async def count(self) -> int:
        """How many connections are open."""
        return len(self._connections)

    # -- delivery -------------------------------------------------------------------------
    @staticmethod
    def _deliver(targets: dict[str, Member] | None, data: Any, exclude: Any) -> int:
        if not targets:
            return 0
        opcode, payload = encode_message(data)
        frame = encode_frame(opcode, payload)
        skip = _excluded(exclude)
        sent = 0
        for ws in list(targets.values()):
            if skip and ws.id in skip:
                continue
            if ws.channel.deliver(frame, opcode, payload):
                sent += 1
        return sent

    def _broadcast_now(self, path: str, data: Any, exclude: Any = None) -> int:
        return self._deliver(self._paths.get(path), data, exclude)

    def _publish_now(self, room: str, data: Any, exclude: Any = None) -> int:
        return self._deliver(self._rooms.get(room), data, exclude)

    def _send_to_now(self, connection_id: str, data: Any) -> bool:
        ws = self._connections.get(connection_id)
        if ws is None or ws.closed:
            return False
        ws.send_nowait(data)
        return True

    def _close_soon(self, connection_id: str, code: int, reason: str) -> None:
        ws = self._connections.get(connection_id)
        if ws is not None:
            spawn(ws.close(code, reason))

    async def broadcast(self, path: str, data: Any, exclude: Any = None) -> int:
        """Send `data` to every connection on the concrete `path`; returns how many got it."""
        return self._broadcast_now(path, data, exclude)

    async def publish(self, room: str, data: Any, exclude: Any = None) -> int:
        """Send `data` to every member of `room`; returns how many got it."""
        return self._publish_now(room, data, exclude)

    async def send_to(self, connection_id: str, data: Any) -> bool:
        """Send `data` to one connection; False when no open connection has that id."""
        return self._send_to_now(connection_id, data)

    async def close(self, connection_id: str, code: int = WS_1000_NORMAL_CLOSURE, reason: str = "") -> bool:
        """Close one connection by id; False when no open connection has that id."""
        ws = self._connections.get(connection_id)
        if ws is None:
            return False
        await ws.close(code, reason)
        return True

    async def close_all(self, code: int, reason: str = "") -> None:
        """Close every connection at once (their close callbacks run concurrently); returns
        when all have closed."""
        closing = [ws.close(code, reason) for ws in list(self._connections.values())]
        if closing:
            await asyncio.gather(*closing, return_exceptions=True)

    # -- thread-safe twins ----------------------------------------------------------------
    def _run_on_loop(self, now: Callable[..., Any], *args: Any) -> None:
        """Run `now(*args)` at once on the loop's thread, else hand it to the loop."""
        loop = self._loop
        if loop is None or self._loop_thread_id == threading.get_ident():
            now(*args)
        else:
            loop.call_soon_threadsafe(now, *args)

    def send_to_sync(self, connection_id: str, data: Any) -> None:
        """`send_to` from any thread (returns at once; a missing id is ignored)."""
        self._run_on_loop(self._send_to_now, connection_id, data)

    def broadcast_sync(self, path: str, data: Any, exclude: Any = None) -> None:
        """`broadcast` from any thread (returns at once)."""
        self._run_on_loop(self._broadcast_now, path, data, exclude)

    def publish_sync(self, room: str, data: Any, exclude: Any = None) -> None:
        """`publish` from any thread (returns at once)."""
        self._run_on_loop(self._publish_now, room, data, exclude)

    def close_sync(self, connection_id: str, code: int = WS_1000_NORMAL_CLOSURE, reason: str = "") -> None:
        """`close` from any thread (returns at once)."""
        self._run_on_loop(self._close_soon, connection_id, code, reason)

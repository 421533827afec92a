"""The live endpoint, `app.live(path, **settings)`: a WebSocket route that speaks the live
protocol (docs/live-protocol.md), the app's declarations of rooms and hooks, and the
endpoint's heartbeat.

It is an application of the hub, not a second registry: a live room is a hub room with the
live format (`LiveFormat`: every message framed once per message and node, with its offset
in a room with history) and, if declared with `history`, a history room. Presence changes
reach the members of a room on every node through `Hub.notify`; the hub's loss reports
reach this node's members as `lost` pushes. `GET /tether.js` (and `/tether.d.ts`) serve the
browser client shipped in this package.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from importlib import resources
from typing import TYPE_CHECKING, Any, Protocol

from ..exceptions import WebSocketDisconnect
from ..http import Response
from ..patterns import RoomPatterns
from ..tasks import spawn
from .commands import PING, push
from .connection import LiveConnection
from .errors import SUBPROTOCOL, CloseCode
from .limits import LiveSettings
from .rooms import Hook, LiveFormat, LiveRoom

if TYPE_CHECKING:
    from ..hub import Hub
    from ..websocket_connection import WebSocket

__all__ = ["Live"]

logger = logging.getLogger("tether")

_FORMAT = LiveFormat()
_CLIENT_FILES = {"/tether.js": "text/javascript; charset=utf-8", "/tether.d.ts": "text/plain; charset=utf-8"}


class Host(Protocol):
    """What a live endpoint needs of the App that mounts it."""

    hub: Hub
    routes: list[Any]  # each with a .path

    def add_route(self, path: str, endpoint: Callable[..., Any], methods: Any = ...) -> Any: ...

    def add_websocket_route(self, path: str, session: Any, name: str | None = None) -> Any: ...

    def on_shutdown(self, func: Any) -> Any: ...


class Live:
    """One live endpoint (see the module doc); `app.live(path, **settings)` makes it. It is
    its route's session: called with each connection's core `WebSocket`."""

    is_tether_session = True

    def __init__(self, app: Host, path: str, settings: LiveSettings) -> None:
        self.app = app
        self.path = path
        self.settings = settings
        self.rooms: RoomPatterns[LiveRoom] = RoomPatterns()
        #: `authenticate(token, websocket)`, or None: every connection is anonymous
        self.authenticator: Callable[..., Any] | None = None
        #: this node's connections that sent `connect` (the heartbeat pings them)
        self.connections: set[LiveConnection] = set()
        self._beating: asyncio.Task[None] | None = None
        self._patterns: dict[str, LiveRoom] = {}
        app.add_websocket_route(path, self)
        app.hub.on_presence(self._presence_changed)
        app.hub.on_loss(self._lost)
        app.on_shutdown(self._stop_heartbeat)
        _serve_client_files(app)

    # -- declarations ---------------------------------------------------------------------------
    def authenticate(self, hook: Hook) -> Hook:
        """Decorator: `hook(token, websocket)` (sync or async) judges a connect's or refresh's
        token: it returns the identity (`conn.identity`; an `Authenticated` to state an
        expiry) or raises `Refuse(reason)`."""
        self.authenticator = hook
        return hook

    def room(self, pattern: str, *, history: int | None = None, history_ttl: float | None = None,
             presence: bool = True, client_publish: bool = False) -> LiveRoom:
        """Declare the rooms named like `pattern` (`chat:{name}` or an exact name; the first
        declaration that matches a name wins): with `history` (keep the last N messages) or
        `history_ttl` (seconds), `presence` (members see who is here) and `client_publish`
        (members may publish). Use it as a decorator to authorize joins: the function gets
        the connection and the pattern's parameters, returns the member's presence info
        (None: the client's own) or raises `Refuse`. Declare rooms before the app starts,
        the same on every node."""
        if pattern in self._patterns:
            raise ValueError(f"live.room({pattern!r}) is declared already")
        declared = LiveRoom(pattern, history=history, history_ttl=history_ttl, presence=presence,
                            client_publish=client_publish)
        if declared.keeps_history:
            size = history if history is not None else _SIZE_FOR_TTL_ONLY
            self.app.hub.keep_history(pattern, size=size, ttl=history_ttl)
        self.app.hub.format_rooms(pattern, _FORMAT)
        self.rooms.declare(pattern, declared)
        self._patterns[pattern] = declared
        return declared

    def on_publish(self, pattern: str) -> Callable[[Hook], Hook]:
        """Decorator: `hook(conn, **params, data=data)` checks a client's publish into the
        rooms declared with `pattern` (declare them first): it returns the data to publish,
        or raises `Refuse`."""
        declared = self._patterns.get(pattern)
        if declared is None:
            raise ValueError(f"live.on_publish({pattern!r}): declare the room first (live.room({pattern!r}, ...))")

        def decorator(hook: Hook) -> Hook:
            declared.check_publish = hook
            return hook
        return decorator

    # -- the session ----------------------------------------------------------------------------------
    async def __call__(self, websocket: WebSocket) -> None:
        """One connection, from the handshake to its close."""
        if SUBPROTOCOL not in websocket.offered_subprotocols:
            await websocket.accept()
            await websocket.close(CloseCode.PROTOCOL_MISUSE, f"offer the subprotocol {SUBPROTOCOL}")
            return
        await websocket.accept(SUBPROTOCOL)
        conn = LiveConnection(websocket, self.settings, self.rooms, self.authenticator)
        try:
            first = await asyncio.wait_for(websocket.receive(), self.settings.connect_timeout)
        except TimeoutError:
            await websocket.close(CloseCode.PROTOCOL_MISUSE,
                                  f"no connect command within {self.settings.connect_timeout:g} s")
            return
        if not isinstance(first, str) or not await conn.connect(first):
            if isinstance(first, bytes):
                await websocket.close(CloseCode.PROTOCOL_MISUSE, "the live protocol uses text frames only")
            await _closed(websocket)
            return
        self.connections.add(conn)
        if self._beating is None:
            self._beating = spawn(self._heartbeat())
        try:
            async for message in websocket:
                if isinstance(message, bytes):
                    await websocket.close(CloseCode.PROTOCOL_MISUSE, "the live protocol uses text frames only")
                    break
                await conn.run(message)
            await _closed(websocket)
        finally:
            self.connections.discard(conn)
            conn.ended()

    async def _heartbeat(self) -> None:
        """While this node has live connections: ping each every `ping_interval`, and close
        those not heard from for two intervals (4005)."""
        interval = self.settings.ping_interval
        loop = asyncio.get_running_loop()
        try:
            while self.connections:
                await asyncio.sleep(interval)
                silent_since = loop.time() - 2 * interval
                for conn in list(self.connections):
                    if conn.heard < silent_since:
                        conn.close(CloseCode.HEARTBEAT, f"nothing heard for {2 * interval:g} s")
                    else:
                        conn.send(PING)
        finally:
            self._beating = None

    def _stop_heartbeat(self) -> None:
        if self._beating is not None:
            self._beating.cancel()

    # -- what the hub reports -----------------------------------------------------------------------------
    def _presence_changed(self, room: str, joined: dict[str, Any], left: dict[str, Any]) -> None:
        """A presence change in the cluster (heard once, on one node): to the room's members
        on every node."""
        declared = self.rooms.get(room)
        if declared is not None and declared.presence:
            self.app.hub.notify(room, push("presence", room=room, joined=joined, left=left))

    def _lost(self, room: str, reason: str) -> None:
        """Messages of `room` may not have reached this node's members: tell them."""
        if self.rooms.get(room) is None:
            return
        text = push("lost", room=room, reason=reason)
        hub = self.app.hub
        for member_id in hub.members(room):
            member = hub.get(member_id)
            if member is not None and not member.closed:
                member.send_nowait(text)


#: The size of a room declared with `history_ttl` alone (its messages are bounded by age).
_SIZE_FOR_TTL_ONLY = 10_000


async def _closed(websocket: WebSocket) -> None:
    """Wait until a connection the session is done with has closed (its close is on its way)."""
    try:
        while True:
            await websocket.receive()
    except WebSocketDisconnect:
        return


def _serve_client_files(app: Host) -> None:
    """Serve the browser client and its declarations (once per app)."""
    for path, media_type in _CLIENT_FILES.items():
        if any(route.path == path for route in app.routes):
            continue
        body = resources.files("tether.live").joinpath("static", path.lstrip("/")).read_bytes()

        def serve(body: bytes = body, media_type: str = media_type) -> Response:
            return Response(body, media_type=media_type, headers={"cache-control": "no-cache"})
        app.add_route(path, serve, ["GET"])

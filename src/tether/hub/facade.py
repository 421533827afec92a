"""`Hub`, the face of the hub package: the one object an App has (`app.hub`), composed of
its parts and the one fan-out loop (see `tether.hub`).

The `*_sync` methods may be called from any thread: on the event loop's thread they act at
once (keeping program order with the caller's other sends); from another thread they are
handed to the loop and return immediately.

The core `WebSocket` keeps the registry true: it calls `register` when accepted,
`unregister` on every close path, and `join`/`leave` for rooms.

Slow clients (the `slow_client` setting, see `tether.channel`): in "close" mode no delivery
waits. In "wait" mode the awaited `broadcast`, `publish` and `send_to` wait for the members
whose buffer is over `max_send_buffer` (all at once, each up to `send_timeout`, then it is
closed with 1008), after the others got the message; the `*_sync` twins never wait.

With a cluster backplane (`tether.backplane`, e.g. Redis) every delivery also reaches the
other nodes: local members get a message at once, then one envelope (the message encoded
once) is published on the path's or room's topic, or on the holding node's inbox for
`send_to`/`close` (a connection id names its node). A node follows only the paths and
rooms it has members of, and builds each frame once for all its local members.
Presence (`join(room, info)`, `presence(room)`, `on_presence(listener)`) and `count()` are
cluster-wide; `len(hub)`, `ids()`, `members()` and `get()` are this node's. An awaited
delivery in "wait" mode waits only for this node's slow members: the envelope leaves before
that wait, and the nodes it reaches deliver it as nobody awaits it (the `*_sync` rule).
`send_to` a connection on another node returns once the envelope is on its way.
"""

from __future__ import annotations

import asyncio
import os
import threading
import weakref
from collections.abc import Awaitable, Callable, Set
from typing import Any

from ..backplane import Backplane, NodeState
from ..backplane.envelope import new_connection_id, new_node_id
from ..backplane.history import NOWHERE, HistoryLimits, Position
from ..backplane.topic import Topic, TopicKind
from ..encoding import compact_json, encode_message
from ..exceptions import InvalidState
from ..patterns import RoomPatterns
from ..protocol import OP_TEXT
from ..protocol.codes import WS_1000_NORMAL_CLOSURE
from ..tasks import spawn
from .fanout import NOBODY, Exclude, Waits, delivered, excluded, fan_out
from .formats import RoomFormat
from .history import DEFAULT_MAX_RECOVER, HistoryPolicy, KeptMessage, Recovery
from .keeper import HistoryKeeper, LossListener
from .presence import Presence, PresenceListener
from .registry import Member, Registry
from .routing import ClusterRouter

__all__ = ["Hub"]


class Hub:
    """Every open connection of this node, its rooms and their presence, and the way to the
    other nodes' (see the module doc). Its parts: `Registry` (connections, paths, rooms),
    `ClusterRouter` (topics to and from the backplane) and `Presence`; every delivery goes
    through `tether.hub.fanout.fan_out`."""

    _instances: weakref.WeakSet[Hub] = weakref.WeakSet()

    @classmethod
    def holding(cls, connection_id: str) -> Hub | None:
        """The hub, among every App's in this process, that holds `connection_id`."""
        for hub in list(cls._instances):
            if connection_id in hub:
                return hub
        return None

    @classmethod
    def routing(cls, connection_id: str) -> Hub | None:
        """The hub that holds `connection_id`, else one whose cluster backplane can reach
        the node holding it (Panther's module-level functions use this)."""
        holder = cls.holding(connection_id)
        if holder is not None:
            return holder
        for hub in list(cls._instances):
            if hub._router.inbox_of(connection_id) is not None:
                return hub
        return None

    def __init__(self) -> None:
        Hub._instances.add(self)
        self._registry = Registry()
        self._router = ClusterRouter(new_node_id(), self._deliver_encoded, self._deliver_encoded_to, self._close_here,
                                     self._deliver_kept)
        self._formats: RoomPatterns[RoomFormat] = RoomPatterns()
        self._keeper = HistoryKeeper(self._registry, self._router, self._formats)
        # A room keeps history or has a format: a publish looks its room up (else it never does).
        self._shaped = False
        self._presence = Presence(self._router)
        self._node_pid = os.getpid()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._loop_thread_id: int | None = None
        # A member whose channel is in "wait" mode registered: the awaited deliveries check
        # each target's buffer (without one they are their *_sync twins, at no extra cost).
        self._waits = False

    @property
    def node(self) -> bytes:
        """6 random bytes naming this node: the first bytes of every connection id it issues."""
        return self._router.node

    @property
    def backplane(self) -> Backplane:
        """The backplane the hub serves through (a `LocalBackplane` until `start`)."""
        return self._router.backplane

    def new_id(self) -> str:
        """A connection id (a UUID string) that names this node."""
        return new_connection_id(self._router.node)

    # -- the backplane -----------------------------------------------------------------------
    async def start(self, backplane: Backplane) -> None:
        """Serve through `backplane` (called by `App.startup()`)."""
        await self._router.start(backplane, self._presence.gone, self._snapshot, self._keeper.resumed,
                                 self._keeper.publish_lost)

    async def stop(self) -> None:
        """Leave the cluster (called by `App.shutdown()`)."""
        await self._router.stop()

    def _snapshot(self) -> NodeState:
        return NodeState(len(self._registry.connections), self._presence.snapshot())

    def bind(self, loop: asyncio.AbstractEventLoop) -> None:
        """Record the loop that owns the connections; call from that loop's thread
        (`App.startup()` does). A process that binds a hub it got from its parent (a forked
        worker) draws a node id of its own, so that no two workers share one."""
        if self._node_pid != os.getpid():
            self._router.node = new_node_id()
            self._node_pid = os.getpid()
        self._loop = loop
        self._loop_thread_id = threading.get_ident()

    @property
    def loop(self) -> asyncio.AbstractEventLoop | None:
        """The loop the hub is bound to, or None before the app started."""
        return self._loop

    # -- registry and rooms (kept by the core WebSocket) -------------------------------------
    def register(self, ws: Member) -> None:
        """Add an accepted connection."""
        if ws.channel.send_timeout is not None:
            self._waits = True
        if self._registry.add(ws):
            self._router.follow(Topic(TopicKind.PATH, ws.path))
        if self._router.cluster:
            self._router.backplane.connections_changed(1)

    def unregister(self, ws: Member) -> None:
        """Remove a connection from the registry and every room (idempotent)."""
        registry = self._registry
        if not registry.remove(ws):
            return
        if ws.path not in registry.paths:
            self._router.unfollow(Topic(TopicKind.PATH, ws.path))
        for room in list(ws.rooms):
            self.leave(ws, room)
        if self._router.cluster:
            self._router.backplane.connections_changed(-1)

    def join(self, ws: Member, room: str, info: Any = None) -> Awaitable[Any] | None:
        """Make an open connection a member of `room`, with presence `info` (any JSON-able
        value); InvalidState if it is not open. Returns an awaitable when the cluster
        subscription to the room is still being made (`WebSocket.join` awaits it, so that
        nothing published to the room afterwards is missed), else None."""
        if ws.id not in self._registry.connections:
            raise InvalidState(f"connection {ws.id} is not open: it cannot join room {room!r}")
        info_json = compact_json(info)  # first: info that is not JSON-able changes nothing
        # Asked at every join, not only a room's first: a second member that joins while the
        # first one's subscription is on its way waits for it too (None once it is in force).
        waiting = [pending for topic in self._room_topics(room) if (pending := self._router.follow(topic))]
        self._registry.enter(ws, room)
        self._presence.joined(room, ws.id, info, info_json)
        if not waiting:
            return None
        return waiting[0] if len(waiting) == 1 else asyncio.gather(*waiting)

    def _room_topics(self, room: str) -> tuple[Topic, ...]:
        """The topics a room's messages travel on: ROOM; and KEPT for a history room's
        numbered messages (its ROOM topic carries only `notify`)."""
        if self._keeper.policy(room) is not None:
            return Topic(TopicKind.KEPT, room), Topic(TopicKind.ROOM, room)
        return (Topic(TopicKind.ROOM, room),)

    def leave(self, ws: Member, room: str) -> None:
        """Remove a connection from `room` (nothing happens if it was not a member)."""
        registry = self._registry
        if not registry.exit(ws, room):
            return
        if room not in registry.rooms:
            for topic in self._room_topics(room):
                self._router.unfollow(topic)
            self._keeper.forget(room)
        self._presence.left(room, ws.id)

    # -- history rooms ---------------------------------------------------------------------------
    def keep_history(self, pattern: str, size: int = 1000, ttl: float | None = None,
                     max_recover: int = DEFAULT_MAX_RECOVER) -> None:
        """Rooms named like `pattern` (`chat:{name}`: `{name}` matches any text; or one exact
        name) keep their last `size` messages, each for at most `ttl` seconds (None: as long
        as the size allows; a backplane may still bound it, docs/scaling.md). Declare them
        before the rooms are used, the same on every node. Every message published into such
        a room gets the room's next offset within its epoch and is delivered, on every node,
        in offset order; a join may then catch up from a position (`WebSocket.join(room,
        since=...)`), for up to `max_recover` missed messages."""
        self._keeper.declare(pattern, HistoryPolicy(HistoryLimits(size, ttl), max_recover))
        self._shaped = True

    def format_rooms(self, pattern: str, room_format: RoomFormat) -> None:
        """Rooms named like `pattern` (as for `keep_history`) deliver each published value as
        `room_format` frames it (`tether.hub.formats`; the live layer's rooms). Declare them
        before the rooms are used, the same on every node."""
        self._formats.declare(pattern, room_format)
        self._shaped = True

    async def history(self, room: str, since: int | None = None, limit: int | None = None
                      ) -> tuple[Position, list[KeptMessage]]:
        """A history room's current position and its kept messages with an offset over
        `since` (all when None), oldest first, at most `limit` of them. ValueError for a room
        that keeps no history."""
        return await self._keeper.read(room, since, limit)

    async def join_from(self, ws: Member, room: str, since: Position, info: Any = None) -> Recovery:
        """Make `ws` a member of the history `room` and catch it up from `since` (see
        `tether.hub.history`): the messages after it, in order, then live ones with no gap and
        no duplicate (recovered); or, when that cannot be done whole, none of them (not
        recovered). A room without history joins as `join` does, not recovered."""
        policy = self._keeper.policy(room)
        if policy is None:
            waiting = self.join(ws, room, info)
            if waiting is not None:
                await asyncio.shield(waiting)
            return Recovery(False, NOWHERE)
        return await self._keeper.catch_up(ws, room, since, policy, lambda: self.join(ws, room, info))

    def on_loss(self, listener: LossListener) -> LossListener:
        """Call `listener(room, reason)` (sync or async) when messages of `room` may not have
        reached this node's members: a history room whose history could not give back what
        this node missed, and, after a backplane outage, every room without history that has
        members here. Usable as a decorator."""
        return self._keeper.on_loss(listener)

    # -- presence ------------------------------------------------------------------------------
    def on_presence(self, listener: PresenceListener) -> PresenceListener:
        """Call `listener(room, joined, left)` (sync or async) on every join and leave, with
        {connection_id: info} dicts. Each change is reported once in the cluster: on the node
        where it happened, or, for the members of a node that crashed, on the node that
        removed them (within 3 backplane heartbeats). Usable as a decorator."""
        return self._presence.on_presence(listener)

    async def presence(self, room: str) -> dict[str, Any]:
        """{connection_id: info} for every member of `room` on every node."""
        return await self._presence.of(room)

    # -- queries --------------------------------------------------------------------------
    def __len__(self) -> int:
        return len(self._registry.connections)

    def __contains__(self, connection_id: object) -> bool:
        return connection_id in self._registry.connections

    def get(self, connection_id: str) -> Member | None:
        """The open connection with this id in this process, or None."""
        return self._registry.connections.get(connection_id)

    def ids(self, path: str | None = None) -> list[str]:
        """Ids of the open connections, all or those on one concrete path."""
        if path is None:
            return list(self._registry.connections)
        return list(self._registry.paths.get(path, ()))

    def members(self, room: str) -> list[str]:
        """Ids of the connections in `room`."""
        return list(self._registry.rooms.get(room, ()))

    async def count(self) -> int:
        """How many connections are open on every node (`len(hub)`: on this one)."""
        if not self._router.cluster:
            return len(self._registry.connections)
        return await self._router.backplane.count()

    # -- delivery: every path ends in fan_out -------------------------------------------------
    def _deliver(self, kind: TopicKind, name: str, members: dict[str, Member] | None, opcode: int,
                 payload: bytes, exclude: Exclude, waits: Waits | None) -> int:
        """This node's `members` get the message (encoded once) through the fan-out loop,
        then, in a cluster, one envelope takes it to the other nodes' members of the topic."""
        skip = excluded(exclude)
        sent = fan_out(members.values(), opcode, payload, skip, waits) if members else 0
        router = self._router
        if router.cluster:
            router.publish(Topic(kind, name), opcode, payload, skip)
        return sent

    def _broadcast_now(self, path: str, data: Any, exclude: Exclude = None, waits: Waits | None = None) -> int:
        return self._deliver(TopicKind.PATH, path, self._registry.paths.get(path), *encode_message(data), exclude,
                             waits)

    def _publish_now(self, room: str, data: Any, exclude: Exclude = None, waits: Waits | None = None) -> int:
        if self._shaped:
            room_format = self._formats.get(room)
            policy = self._keeper.policy(room)
            if policy is not None:
                return self._publish_kept(room, data, exclude, policy, room_format)
            if room_format is not None:
                framed = room_format.frame(room, None, room_format.encode(data))
                return self._deliver(TopicKind.ROOM, room, self._registry.rooms.get(room), OP_TEXT, framed, exclude,
                                     waits)
        return self._deliver(TopicKind.ROOM, room, self._registry.rooms.get(room), *encode_message(data), exclude,
                             waits)

    def _publish_kept(self, room: str, data: Any, exclude: Exclude, policy: HistoryPolicy,
                      room_format: RoomFormat | None) -> int:
        """Into a history room: the backplane numbers and keeps the message (as the room's
        format encodes it, if it has one: each node frames it with its offset), and every
        node delivers it as it comes back (nobody waits for it, as for other nodes'
        messages). Returns how many of this node's members it is on its way to."""
        if room_format is None:
            opcode, payload = encode_message(data)
        else:
            opcode, payload = OP_TEXT, room_format.encode(data)
        skip = excluded(exclude)
        self._router.publish_kept(room, opcode, payload, skip, policy.limits)
        members = self._registry.rooms.get(room) or {}
        return sum(1 for member_id in members if member_id not in skip)

    def _send_to_now(self, connection_id: str, data: Any, waits: Waits | None = None) -> bool:
        """`data` to one connection: a fan-out to one when this node holds it, else an
        envelope to the node that does (False when there is none to reach)."""
        ws = self._registry.connections.get(connection_id)
        if ws is None or ws.closed:
            inbox = self._router.inbox_of(connection_id)
            if inbox is None:
                return False
            self._router.send(inbox, connection_id, *encode_message(data))
            return True
        opcode, payload = encode_message(data)
        return fan_out((ws,), opcode, payload, NOBODY, waits) == 1

    def _deliver_encoded(self, topic: Topic, opcode: int, payload: bytes, exclude: Set[str]) -> None:
        """Another node's broadcast or publish, for this node's members of `topic`."""
        group = self._registry.paths if topic.kind is TopicKind.PATH else self._registry.rooms
        members = group.get(topic.name)
        if members:
            fan_out(members.values(), opcode, payload, exclude)

    def _deliver_kept(self, room: str, position: Position, opcode: int, payload: bytes, exclude: Set[str]) -> None:
        """A history room's numbered message (any node's): the history part delivers it."""
        self._keeper.delivered(room, position, opcode, payload, exclude)

    def _deliver_encoded_to(self, connection_id: str, opcode: int, payload: bytes) -> None:
        """Another node's send_to a connection of this node."""
        ws = self._registry.connections.get(connection_id)
        if ws is not None:
            fan_out((ws,), opcode, payload)

    def _close_here(self, connection_id: str, code: int, reason: str) -> None:
        ws = self._registry.connections.get(connection_id)
        if ws is not None:
            spawn(ws.close(code, reason))

    def _close_soon(self, connection_id: str, code: int, reason: str) -> None:
        if connection_id in self._registry.connections:
            self._close_here(connection_id, code, reason)
        else:
            self._router.close(connection_id, code, reason)

    async def broadcast(self, path: str, data: Any, exclude: Exclude = None) -> int:
        """Send `data` to every connection on the concrete `path`; returns how many got it.
        In "wait" mode it waits for slow ones (at most about `send_timeout`, see the module doc)."""
        if not self._waits:
            return self._broadcast_now(path, data, exclude)
        waits: Waits = []
        sent = self._broadcast_now(path, data, exclude, waits)
        return sent + await delivered(waits)

    def notify(self, room: str, data: Any) -> int:
        """Send `data` to every member of `room` on every node as it is: not numbered, not
        kept and not formatted, in any room (the live layer's presence changes). Returns how
        many of this node's members got it; nobody waits, whatever the slow-client mode."""
        return self._deliver(TopicKind.ROOM, room, self._registry.rooms.get(room), *encode_message(data), None, None)

    async def publish(self, room: str, data: Any, exclude: Exclude = None) -> int:
        """Send `data` to every member of `room`; returns how many got it. In "wait" mode it
        waits for slow ones (at most about `send_timeout`, see the module doc)."""
        if not self._waits:
            return self._publish_now(room, data, exclude)
        waits: Waits = []
        sent = self._publish_now(room, data, exclude, waits)
        return sent + await delivered(waits)

    async def send_to(self, connection_id: str, data: Any) -> bool:
        """Send `data` to one connection; True once it is queued (with a cluster backplane:
        on its way to the node holding it), False when no open connection has that id or it
        was closed (1008) for not reading instead. In "wait" mode a slow local connection is
        waited for, up to `send_timeout`."""
        if not self._waits:
            return self._send_to_now(connection_id, data)
        waits: Waits = []
        if self._send_to_now(connection_id, data, waits):
            return True
        return await delivered(waits) > 0

    async def close(self, connection_id: str, code: int = WS_1000_NORMAL_CLOSURE, reason: str = "") -> bool:
        """Close one connection by id; False when no open connection has that id (with a
        cluster backplane: True once the close is on its way to the node holding it)."""
        ws = self._registry.connections.get(connection_id)
        if ws is None:
            return self._router.close(connection_id, code, reason)
        await ws.close(code, reason)
        return True

    async def close_all(self, code: int, reason: str = "") -> None:
        """Close every connection at once (their close callbacks run concurrently); returns
        when all have closed."""
        closing = [ws.close(code, reason) for ws in list(self._registry.connections.values())]
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

    def broadcast_sync(self, path: str, data: Any, exclude: Exclude = None) -> None:
        """`broadcast` from any thread (returns at once)."""
        self._run_on_loop(self._broadcast_now, path, data, exclude)

    def publish_sync(self, room: str, data: Any, exclude: Exclude = None) -> None:
        """`publish` from any thread (returns at once)."""
        self._run_on_loop(self._publish_now, room, data, exclude)

    def close_sync(self, connection_id: str, code: int = WS_1000_NORMAL_CLOSURE, reason: str = "") -> None:
        """`close` from any thread (returns at once)."""
        self._run_on_loop(self._close_soon, connection_id, code, reason)

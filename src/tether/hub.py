"""The connection registry: every open WebSocket by id, by concrete path and by room.

`app.hub` reaches connections from anywhere in the process (another handler, an HTTP
route, a background task). Broadcasts and publishes encode the frame once and hand the
same bytes to every connection. The `*_sync` methods may be called from any thread: on the
event loop's thread they act at once (keeping program order with the caller's other sends);
from another thread they are handed to the loop and return immediately.

The core `WebSocket` keeps the registry true: it calls `register` when accepted,
`unregister` on every close path, and `join`/`leave` for rooms.

Slow clients (the `slow_client` setting, see `tether.channel`): in "close" mode no delivery
waits. In "wait" mode the awaited `broadcast`, `publish` and `send_to` wait for the members
whose buffer is over `max_send_buffer` (all at once, each up to `send_timeout`, then it is
closed with 1008), after the others got the message; the `*_sync` twins never wait.

With a cluster backplane (`tether.backplane`, e.g. Redis) every delivery also reaches the
other nodes: local members get a message at once, then one envelope (the message encoded
once) is published on the path's or room's topic, or on the holding node's inbox for
`send_to`/`close` (a connection id names its node). A node subscribes only to the paths
and rooms it has members of, and builds each frame once for all its local members.
Presence (`join(room, info)`, `presence(room)`, `on_presence(listener)`) and `count()` are
cluster-wide; `len(hub)`, `ids()`, `members()` and `get()` are this node's. An awaited
delivery in "wait" mode waits only for this node's slow members: the envelope leaves before
that wait, and the nodes it reaches deliver it as nobody awaits it (the `*_sync` rule).
`send_to` a connection on another node returns once the envelope is on its way.
"""

from __future__ import annotations

import asyncio
import inspect
import json
import logging
import os
import threading
import weakref
from collections.abc import Awaitable, Callable, Iterable
from typing import Any, Protocol, TypeAlias, cast

from .backplane import Backplane, NodeState
from .backplane.envelope import Kind, decode, encode, new_connection_id, new_node_id, node_of
from .backplane.memory import LocalBackplane
from .backplane.topic import Topic, TopicKind
from .channel import Channel
from .encoding import compact_json, encode_message
from .exceptions import InvalidState
from .protocol import encode_frame
from .protocol.codes import WS_1000_NORMAL_CLOSURE
from .tasks import spawn

__all__ = ["Hub", "Member", "PresenceListener"]

#: `listener(room, joined, left)`: {connection_id: info} of who joined and who left `room`.
PresenceListener = Callable[[str, dict[str, Any], dict[str, Any]], Any]


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


logger = logging.getLogger("tether")


async def _logged(awaitable: Awaitable[Any], room: str) -> None:
    try:
        await awaitable
    except Exception:
        logger.exception("presence listener for room %r raised", room)


class Identified(Protocol):
    """Anything with a connection id: a core `WebSocket`, a style's face on one."""

    @property
    def id(self) -> str: ...


#: Whom a broadcast or publish skips: nobody (None), one connection or its id, or an
#: iterable of connections and ids.
Exclude: TypeAlias = str | Identified | Iterable[str | Identified] | None


def _id_of(item: str | Identified) -> str:
    return item if isinstance(item, str) else item.id


def _excluded(exclude: Exclude) -> set[str]:
    """The ids `exclude` names (see `Exclude`)."""
    if exclude is None:
        return set()
    if isinstance(exclude, str):
        return {exclude}
    if hasattr(exclude, "id"):  # one connection (a WebSocket is iterable too: its scope's keys)
        return {cast("Identified", exclude).id}
    return {_id_of(item) for item in exclude}


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

    @classmethod
    def routing(cls, connection_id: str) -> Hub | None:
        """The hub that holds `connection_id`, else one whose cluster backplane can reach
        the node holding it (Panther's module-level functions use this)."""
        holder = cls.holding(connection_id)
        if holder is not None:
            return holder
        node = node_of(connection_id)
        for hub in list(cls._instances):
            if hub._cluster and node is not None and node != hub.node:
                return hub
        return None

    def __init__(self) -> None:
        Hub._instances.add(self)
        self._connections: dict[str, Member] = {}
        self._paths: dict[str, dict[str, Member]] = {}
        self._rooms: dict[str, dict[str, Member]] = {}
        self._presence: dict[str, dict[str, str]] = {}  # room -> {id: info JSON}, this node's members
        self._presence_listeners: list[PresenceListener] = []
        self._loop: asyncio.AbstractEventLoop | None = None
        self._loop_thread_id: int | None = None
        #: 6 random bytes naming this node: the first bytes of every connection id it issues
        self.node = new_node_id()
        self._node_pid = os.getpid()
        self.backplane: Backplane = LocalBackplane(self.node)
        self._cluster = False
        # A member whose channel is in "wait" mode registered: the awaited deliveries check
        # each target's buffer (without one they are their *_sync twins, at no extra cost).
        self._waits = False

    def new_id(self) -> str:
        """A connection id (a UUID string) that names this node."""
        return new_connection_id(self.node)

    # -- the backplane -----------------------------------------------------------------------
    async def start(self, backplane: Backplane) -> None:
        """Serve through `backplane` (called by `App.startup()`)."""
        self.backplane = backplane
        self._cluster = backplane.cluster
        await backplane.start(self._received, self._members_gone, self._snapshot)
        if self._cluster:
            for path in self._paths:
                backplane.subscribe(backplane.channel(Topic(TopicKind.PATH, path)))
            for room in self._rooms:
                backplane.subscribe(backplane.channel(Topic(TopicKind.ROOM, room)))

    async def stop(self) -> None:
        """Leave the cluster (called by `App.shutdown()`)."""
        await self.backplane.stop()
        self._cluster = False

    def _snapshot(self) -> NodeState:
        return NodeState(len(self._connections), {room: dict(members) for room, members in self._presence.items()})

    def bind(self, loop: asyncio.AbstractEventLoop) -> None:
        """Record the loop that owns the connections; call from that loop's thread
        (`App.startup()` does). A process that binds a hub it got from its parent (a forked
        worker) draws a node id of its own, so that no two workers share one."""
        if self._node_pid != os.getpid():
            self.node = new_node_id()
            self._node_pid = os.getpid()
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
        if ws.channel.send_timeout is not None:
            self._waits = True
        peers = self._paths.get(ws.path)
        if peers is None:
            peers = self._paths[ws.path] = {}
            if self._cluster:
                self.backplane.subscribe(self.backplane.channel(Topic(TopicKind.PATH, ws.path)))
        peers[ws.id] = ws
        if self._cluster:
            self.backplane.connections_changed(1)

    def unregister(self, ws: Member) -> None:
        """Remove a connection from the registry and every room (idempotent)."""
        if self._connections.pop(ws.id, None) is None:
            return
        peers = self._paths.get(ws.path)
        if peers is not None:
            peers.pop(ws.id, None)
            if not peers:
                del self._paths[ws.path]
                if self._cluster:
                    self.backplane.unsubscribe(self.backplane.channel(Topic(TopicKind.PATH, ws.path)))
        for room in list(ws.rooms):
            self.leave(ws, room)
        if self._cluster:
            self.backplane.connections_changed(-1)

    def join(self, ws: Member, room: str, info: Any = None) -> Awaitable[None] | None:
        """Make an open connection a member of `room`, with presence `info` (any JSON-able
        value); InvalidState if it is not open. Returns an awaitable when the cluster
        subscription to the room is still being made (`WebSocket.join` awaits it, so that
        nothing published to the room afterwards is missed), else None."""
        if ws.id not in self._connections:
            raise InvalidState(f"connection {ws.id} is not open: it cannot join room {room!r}")
        info_json = compact_json(info)
        members = self._rooms.get(room)
        if members is None:
            members = self._rooms[room] = {}
        # Asked at every join, not only a room's first: a second member that joins while the
        # first one's subscription is on its way waits for it too (None once it is in force).
        topic = Topic(TopicKind.ROOM, room)
        waiting = self.backplane.subscribe(self.backplane.channel(topic)) if self._cluster else None
        members[ws.id] = ws
        ws.rooms.add(room)
        self._presence.setdefault(room, {})[ws.id] = info_json
        if self._cluster:
            self.backplane.presence_join(room, ws.id, info_json)
        self._presence_changed(room, {ws.id: info}, {})
        return waiting

    def leave(self, ws: Member, room: str) -> None:
        """Remove a connection from `room` (nothing happens if it was not a member)."""
        ws.rooms.discard(room)
        members = self._rooms.get(room)
        if members is None or members.pop(ws.id, None) is None:
            return
        if not members:
            del self._rooms[room]
            if self._cluster:
                self.backplane.unsubscribe(self.backplane.channel(Topic(TopicKind.ROOM, room)))
        present = self._presence.get(room, {})
        info_json = present.pop(ws.id, "null")
        if not present:
            self._presence.pop(room, None)
        if self._cluster:
            self.backplane.presence_leave(room, ws.id)
        self._presence_changed(room, {}, {ws.id: json.loads(info_json)})

    # -- presence ------------------------------------------------------------------------------
    def on_presence(self, listener: PresenceListener) -> PresenceListener:
        """Call `listener(room, joined, left)` (sync or async) on every join and leave, with
        {connection_id: info} dicts. Each change is reported once in the cluster: on the node
        where it happened, or, for the members of a node that crashed, on the node that
        removed them (within 3 backplane heartbeats). Usable as a decorator."""
        self._presence_listeners.append(listener)
        return listener

    async def presence(self, room: str) -> dict[str, Any]:
        """{connection_id: info} for every member of `room` on every node."""
        if not self._cluster:
            return {key: json.loads(value) for key, value in self._presence.get(room, {}).items()}
        return {key: json.loads(value) for key, value in (await self.backplane.presence(room)).items()}

    def _presence_changed(self, room: str, joined: dict[str, Any], left: dict[str, Any]) -> None:
        for listener in list(self._presence_listeners):
            try:
                result = listener(room, joined, left)
                if inspect.isawaitable(result):
                    spawn(_logged(result, room))
            except Exception:
                logger.exception("presence listener for room %r raised", room)

    def _members_gone(self, room: str, gone: dict[str, str]) -> None:
        self._presence_changed(room, {}, {key: json.loads(value) for key, value in gone.items()})

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
        """How many connections are open on every node (`len(hub)`: on this one)."""
        if not self._cluster:
            return len(self._connections)
        return await self.backplane.count()

    # -- delivery -------------------------------------------------------------------------
    def _deliver(self, targets: dict[str, Member] | None, data: Any, exclude: Exclude) -> int:
        if not targets:
            return 0
        opcode, payload = encode_message(data)
        return self._deliver_encoded(targets, opcode, payload, _excluded(exclude))

    def _broadcast_now(self, path: str, data: Any, exclude: Exclude = None) -> int:
        if not self._cluster:
            return self._deliver(self._paths.get(path), data, exclude)
        return self._deliver_cluster(Kind.BROADCAST, Topic(TopicKind.PATH, path), self._paths.get(path), data, exclude)

    def _publish_now(self, room: str, data: Any, exclude: Exclude = None) -> int:
        if not self._cluster:
            return self._deliver(self._rooms.get(room), data, exclude)
        return self._deliver_cluster(Kind.PUBLISH, Topic(TopicKind.ROOM, room), self._rooms.get(room), data, exclude)

    def _deliver_cluster(self, kind: Kind, topic: Topic, targets: dict[str, Member] | None,
                         data: Any, exclude: Exclude) -> int:
        """Local members at once, then one envelope for the other nodes."""
        opcode, payload = encode_message(data)
        skip = _excluded(exclude)
        sent = self._deliver_encoded(targets, opcode, payload, skip)
        self._publish_envelope(kind, topic, opcode, payload, skip)
        return sent

    def _publish_envelope(self, kind: Kind, topic: Topic, opcode: int, payload: bytes, skip: set[str]) -> None:
        self.backplane.publish(self.backplane.channel(topic),
                               encode(kind, opcode, self.node, payload, exclude=skip))

    async def _deliver_waiting(self, kind: Kind, topic: Topic, targets: dict[str, Member] | None,
                               data: Any, exclude: Exclude) -> int:
        """An awaited broadcast/publish while members may be waited for ("wait" mode): the
        members at or under their limit get the frame at once, the envelope goes to the other
        nodes, then the call waits for the members over it, all together (each closed with
        1008 after its `send_timeout`). Returns how many got it."""
        opcode, payload = encode_message(data)
        skip = _excluded(exclude)
        sent = 0
        slow: list[Channel] = []
        frame = b""
        if targets:
            frame = encode_frame(opcode, payload)
            for ws in list(targets.values()):
                if skip and ws.id in skip:
                    continue
                channel = ws.channel
                queued = channel.deliver_or_wait(frame, opcode, payload)
                if queued is None:
                    slow.append(channel)
                elif queued:
                    sent += 1
        if self._cluster:
            self._publish_envelope(kind, topic, opcode, payload, skip)
        if len(slow) == 1:  # the usual case: no task
            sent += await slow[0].deliver_when_drained(frame, opcode, payload)
        elif slow:
            done = await asyncio.gather(*(channel.deliver_when_drained(frame, opcode, payload) for channel in slow))
            sent += sum(done)
        return sent

    @staticmethod
    def _deliver_encoded(targets: dict[str, Member] | None, opcode: int, payload: bytes,
                         skip: set[str] | frozenset[str]) -> int:
        """Build the frame once and queue the same bytes for every target not skipped."""
        if not targets:
            return 0
        frame = encode_frame(opcode, payload)
        sent = 0
        for ws in list(targets.values()):
            if skip and ws.id in skip:
                continue
            if ws.channel.deliver(frame, opcode, payload):
                sent += 1
        return sent

    def _remote_node(self, connection_id: str) -> bytes | None:
        """The other node holding `connection_id`, when a cluster backplane can reach it."""
        if not self._cluster:
            return None
        node = node_of(connection_id)
        return node if node is not None and node != self.node else None

    def _send_to_now(self, connection_id: str, data: Any) -> bool:
        ws = self._connections.get(connection_id)
        if ws is None or ws.closed:
            node = self._remote_node(connection_id)
            if node is None:
                return False
            opcode, payload = encode_message(data)
            self.backplane.publish(self.backplane.channel(Topic(TopicKind.NODE, node.hex())),
                                   encode(Kind.SEND, opcode, self.node, payload, target=connection_id))
            return True
        ws.send_nowait(data)
        return True

    def _close_soon(self, connection_id: str, code: int, reason: str) -> None:
        ws = self._connections.get(connection_id)
        if ws is not None:
            spawn(ws.close(code, reason))
        else:
            self._close_remote(connection_id, code, reason)

    def _close_remote(self, connection_id: str, code: int, reason: str) -> bool:
        node = self._remote_node(connection_id)
        if node is None:
            return False
        self.backplane.publish(self.backplane.channel(Topic(TopicKind.NODE, node.hex())),
                               encode(Kind.CLOSE, 0, self.node, reason.encode("utf-8"), target=connection_id,
                                      code=code))
        return True

    def _received(self, channel: str, data: bytes) -> None:
        """What another node published on a channel we subscribed (the backplane calls it).
        The backplane reads the channel back into a topic; a channel that is not one of this
        cluster's, or an envelope whose kind does not go with its topic, is dropped (WARNING)."""
        topic = self.backplane.topic(channel)
        if topic is None:
            logger.warning("backplane: dropped a message on %r: not a channel of this cluster (prefix %r)",
                           channel, self.backplane.prefix)
            return
        try:
            envelope = decode(data)
        except ValueError as exc:
            logger.warning("backplane: dropped a malformed message on %s: %s", channel, exc)
            return
        if envelope.origin == self.node:
            return  # our own publish: local members had it at once
        kind = envelope.kind
        if topic.kind is TopicKind.NODE:
            if topic.name != self.node.hex():
                self._refuse(channel, kind, "another node's inbox")
            elif kind is Kind.SEND:
                ws = self._connections.get(envelope.target)
                if ws is not None:
                    ws.channel.deliver(encode_frame(envelope.opcode, envelope.payload), envelope.opcode,
                                       envelope.payload)
            elif kind is Kind.CLOSE:
                ws = self._connections.get(envelope.target)
                if ws is not None:
                    spawn(ws.close(envelope.code, envelope.payload.decode("utf-8", "replace")))
            elif kind is not Kind.PROBE:  # a probe is the backplane's own business
                self._refuse(channel, kind, "an inbox")
        elif kind is (Kind.BROADCAST if topic.kind is TopicKind.PATH else Kind.PUBLISH):
            targets = self._paths.get(topic.name) if topic.kind is TopicKind.PATH else self._rooms.get(topic.name)
            self._deliver_encoded(targets, envelope.opcode, envelope.payload, envelope.exclude)
        else:
            self._refuse(channel, kind, f"a {topic.kind}'s channel")

    @staticmethod
    def _refuse(channel: str, kind: Kind, where: str) -> None:
        logger.warning("backplane: dropped a %s envelope on %s: it does not belong on %s", kind.name, channel, where)

    async def broadcast(self, path: str, data: Any, exclude: Exclude = None) -> int:
        """Send `data` to every connection on the concrete `path`; returns how many got it.
        In "wait" mode it waits for slow ones (at most about `send_timeout`, see the module doc)."""
        if not self._waits:
            return self._broadcast_now(path, data, exclude)
        topic = Topic(TopicKind.PATH, path)
        return await self._deliver_waiting(Kind.BROADCAST, topic, self._paths.get(path), data, exclude)

    async def publish(self, room: str, data: Any, exclude: Exclude = None) -> int:
        """Send `data` to every member of `room`; returns how many got it. In "wait" mode it
        waits for slow ones (at most about `send_timeout`, see the module doc)."""
        if not self._waits:
            return self._publish_now(room, data, exclude)
        topic = Topic(TopicKind.ROOM, room)
        return await self._deliver_waiting(Kind.PUBLISH, topic, self._rooms.get(room), data, exclude)

    async def send_to(self, connection_id: str, data: Any) -> bool:
        """Send `data` to one connection; False when no open connection has that id (with a
        cluster backplane: True once it is on its way to the node holding it). In "wait"
        mode a slow local connection is waited for, up to `send_timeout`: False if it was
        closed (1008) instead."""
        ws = self._connections.get(connection_id) if self._waits else None
        if ws is None or ws.closed:
            return self._send_to_now(connection_id, data)
        opcode, payload = encode_message(data)
        frame = encode_frame(opcode, payload)
        queued = ws.channel.deliver_or_wait(frame, opcode, payload)
        if queued is None:
            return await ws.channel.deliver_when_drained(frame, opcode, payload)
        return queued

    async def close(self, connection_id: str, code: int = WS_1000_NORMAL_CLOSURE, reason: str = "") -> bool:
        """Close one connection by id; False when no open connection has that id (with a
        cluster backplane: True once the close is on its way to the node holding it)."""
        ws = self._connections.get(connection_id)
        if ws is None:
            return self._close_remote(connection_id, code, reason)
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

    def broadcast_sync(self, path: str, data: Any, exclude: Exclude = None) -> None:
        """`broadcast` from any thread (returns at once)."""
        self._run_on_loop(self._broadcast_now, path, data, exclude)

    def publish_sync(self, room: str, data: Any, exclude: Exclude = None) -> None:
        """`publish` from any thread (returns at once)."""
        self._run_on_loop(self._publish_now, room, data, exclude)

    def close_sync(self, connection_id: str, code: int = WS_1000_NORMAL_CLOSURE, reason: str = "") -> None:
        """`close` from any thread (returns at once)."""
        self._run_on_loop(self._close_soon, connection_id, code, reason)

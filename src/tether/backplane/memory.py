"""In-process backplanes: the default one (a single node), and named buses that make several
Apps in one process behave as nodes of one cluster (`memory://NAME`; useful in tests).

A named bus delivers a publish on the next loop turn, as a broker would, and never to the
node that published it. Each node hears its own inbox (`send_to`/`close` of its connections)
from its start, as a Redis node does.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Awaitable

from .base import Backplane, BackplaneState, MembersGone, Receive, Snapshot
from .history import HistoryLimits, MemoryHistory, Position, Stored, encode_kept
from .topic import Topic, TopicKind

__all__ = ["LocalBackplane", "MemoryBus", "MemoryBackplane"]


class LocalBackplane(Backplane):
    """The default: one process, no other node (`cluster` is False: the hub never calls
    the cluster methods, so they do nothing)."""

    cluster = False
    state = BackplaneState.LOCAL

    def __init__(self, node: bytes, receive: Receive | None = None) -> None:
        super().__init__(node)
        self._history = MemoryHistory()
        # What a kept message is handed back to: the hub's router passes its callback at once,
        # so history rooms work before start (a hub used without an App); start passes it too.
        if receive is not None:
            self._receive = receive

    async def start(self, receive: Receive, members_gone: MembersGone, snapshot: Snapshot) -> None:
        self._snapshot = snapshot
        self._receive = receive

    async def stop(self) -> None:
        self.state = BackplaneState.STOPPED

    def publish_kept(self, topic: Topic, envelope: bytes, limits: HistoryLimits) -> None:
        """Kept in this process and handed back at once: the only node is this one."""
        epoch, offset = self._history.append(topic.name, envelope, limits)
        self._receive(self.channel(topic), encode_kept(offset, epoch, envelope))

    async def history(self, topic: Topic, since: int | None, limit: int | None) -> tuple[Position, list[Stored]]:
        return self._history.read(topic.name, since, limit)

    def publish(self, channel: str, data: bytes) -> None:
        pass

    def subscribe(self, channel: str) -> Awaitable[None] | None:
        return None

    def unsubscribe(self, channel: str) -> None:
        pass

    def presence_join(self, room: str, connection_id: str, info: str) -> None:
        pass

    def presence_leave(self, room: str, connection_id: str) -> None:
        pass

    async def presence(self, room: str) -> dict[str, str]:
        return dict(self._snapshot().presence.get(room, {}))

    def connections_changed(self, delta: int) -> None:
        pass

    async def count(self) -> int:
        return self._snapshot().connections


class MemoryBus:
    """What the nodes of one named in-process cluster share."""

    buses: dict[str, MemoryBus] = {}

    @classmethod
    def named(cls, name: str) -> MemoryBus:
        if name not in cls.buses:
            cls.buses[name] = MemoryBus()
        return cls.buses[name]

    def __init__(self) -> None:
        self.nodes: list[MemoryBackplane] = []
        self.history = MemoryHistory()  # the cluster's history rooms, as one Redis would keep them
        self.lock = threading.Lock()  # its nodes may run on several threads (each on its loop)


class MemoryBackplane(Backplane):
    """One node of a named in-process cluster."""

    def __init__(self, node: bytes, bus: MemoryBus) -> None:
        super().__init__(node)
        self._bus = bus
        self._channels: set[str] = set()

    async def start(self, receive: Receive, members_gone: MembersGone, snapshot: Snapshot) -> None:
        self._receive, self._snapshot = receive, snapshot
        self._loop = asyncio.get_running_loop()
        self._channels.add(self.channel(Topic(TopicKind.NODE, self.node.hex())))  # its inbox, as Redis's
        self._bus.nodes.append(self)
        self.state = BackplaneState.UP

    async def stop(self) -> None:
        if self in self._bus.nodes:
            self._bus.nodes.remove(self)
        self.state = BackplaneState.STOPPED

    def publish(self, channel: str, data: bytes) -> None:
        for node in self._bus.nodes:
            if node is not self and channel in node._channels:
                node._loop.call_soon_threadsafe(node._receive, channel, data)

    def publish_kept(self, topic: Topic, envelope: bytes, limits: HistoryLimits) -> None:
        """Numbered and kept on the bus, then delivered to every subscribed node, this one
        included, on its next loop turn (in offset order: one loop turn's calls run in order)."""
        channel = self.channel(topic)
        bus = self._bus
        with bus.lock:  # nodes may run on several threads: numbering and sending are one step
            epoch, offset = bus.history.append(topic.name, envelope, limits)
            data = encode_kept(offset, epoch, envelope)
            for node in bus.nodes:
                if channel in node._channels:
                    node._loop.call_soon_threadsafe(node._receive, channel, data)

    async def history(self, topic: Topic, since: int | None, limit: int | None) -> tuple[Position, list[Stored]]:
        with self._bus.lock:
            return self._bus.history.read(topic.name, since, limit)

    def subscribe(self, channel: str) -> Awaitable[None] | None:
        self._channels.add(channel)
        return None

    def unsubscribe(self, channel: str) -> None:
        self._channels.discard(channel)

    def presence_join(self, room: str, connection_id: str, info: str) -> None:
        pass  # each node's snapshot is the truth; presence() asks them all

    def presence_leave(self, room: str, connection_id: str) -> None:
        pass

    async def presence(self, room: str) -> dict[str, str]:
        found: dict[str, str] = {}
        for node in self._bus.nodes:
            found.update(node._snapshot().presence.get(room, {}))
        return found

    def connections_changed(self, delta: int) -> None:
        pass

    async def count(self) -> int:
        return sum(node._snapshot().connections for node in self._bus.nodes)



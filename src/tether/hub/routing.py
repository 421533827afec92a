"""The cluster routing part of the hub: what this node sends other nodes, and what they send it.

The router speaks typed topics (`tether.backplane.topic.Topic`): a path, a room, or a node's
inbox. It owns the backplane, this node's id, and the topics this node follows (has local
members of): `follow` and `unfollow` keep the backplane's subscriptions to them, made again
when a backplane starts. Outbound, it turns a topic and an encoded message into one envelope
(`tether.backplane.envelope`) on the topic's channel (into a history room: handed to the
backplane to number and keep, `publish_kept`); inbound (`received`, the backplane's
callback), it reads the channel back into a topic with the backplane (`Backplane.topic`) and
hands the message to the hub's callbacks, or drops it with a WARNING: a channel that is not
one of this cluster's, an envelope that does not decode, or one whose kind does not go with
its topic (a publish on a path's channel, a send on another node's inbox). Its own echo is
dropped quietly (local members had the message at once), except a history room's: there
every node, the publisher's too, delivers as the numbered messages come back.

Without a cluster backplane (`cluster` False) nothing here touches the backplane.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Set

from ..backplane import Backplane
from ..backplane.base import MembersGone, Snapshot
from ..backplane.envelope import Kind, decode, encode, node_of
from ..backplane.history import HistoryLimits, Position, Stored, decode_kept
from ..backplane.memory import LocalBackplane
from ..backplane.topic import Topic, TopicKind

__all__ = ["ClusterRouter", "ToTopic", "ToConnection", "CloseConnection", "ToKept"]

logger = logging.getLogger("tether")

#: `to_topic(topic, opcode, payload, exclude)`: another node's broadcast (a PATH topic) or
#: publish (a ROOM topic), for this node's connections of it but those in `exclude`.
ToTopic = Callable[[Topic, int, bytes, Set[str]], None]
#: `to_connection(connection_id, opcode, payload)`: another node's send_to one of ours.
ToConnection = Callable[[str, int, bytes], None]
#: `close_connection(connection_id, code, reason)`: another node's close of one of ours.
CloseConnection = Callable[[str, int, str], None]
#: `to_kept(room, position, opcode, payload, exclude)`: a history room's numbered message (any
#: node's, this one's included), for this node's members of the room but those in `exclude`.
ToKept = Callable[[str, Position, int, bytes, Set[str]], None]


class ClusterRouter:
    """Routes between this node and the others over typed topics (see the module doc)."""

    def __init__(self, node: bytes, to_topic: ToTopic, to_connection: ToConnection,
                 close_connection: CloseConnection, to_kept: ToKept) -> None:
        #: 6 random bytes naming this node: the first bytes of every connection id it issues
        self.node = node
        self.backplane: Backplane = LocalBackplane(node, self.received)
        #: True while a cluster backplane is started: only then does the router use it
        self.cluster = False
        self._to_topic = to_topic
        self._to_connection = to_connection
        self._close_connection = close_connection
        self._to_kept = to_kept
        # topic -> its channel on the current backplane, for every topic with local members
        self._following: dict[Topic, str] = {}

    # -- the backplane -----------------------------------------------------------------------
    async def start(self, backplane: Backplane, members_gone: MembersGone, snapshot: Snapshot,
                    resumed: Callable[[], None] | None = None,
                    kept_lost: Callable[[str, str], None] | None = None) -> None:
        """Serve through `backplane`: start it with `received` as its callback (and `resumed`
        as the one it calls when it is back after an outage), then subscribe every topic
        followed so far."""
        backplane.resumed = resumed
        backplane.kept_lost = kept_lost
        self.backplane = backplane
        self.cluster = backplane.cluster
        self._following = {topic: backplane.channel(topic) for topic in self._following}
        await backplane.start(self.received, members_gone, snapshot)
        if self.cluster:
            for channel in list(self._following.values()):
                backplane.subscribe(channel)

    async def stop(self) -> None:
        """Leave the cluster: stop the backplane; the router no longer uses it."""
        await self.backplane.stop()
        self.cluster = False

    # -- subscriptions -----------------------------------------------------------------------
    def follow(self, topic: Topic) -> Awaitable[None] | None:
        """Hear what other nodes send to `topic` (a path or room with local members). Returns
        the subscription's confirmation while it is on its way (to every caller until then,
        so each can wait for it), else None: in force, or no cluster."""
        channel = self._following.get(topic)
        if channel is None:
            channel = self._following[topic] = self.backplane.channel(topic)
        return self.backplane.subscribe(channel) if self.cluster else None

    def unfollow(self, topic: Topic) -> None:
        """Stop hearing `topic` (its last local member left)."""
        channel = self._following.pop(topic, None)
        if channel is not None and self.cluster:
            self.backplane.unsubscribe(channel)

    # -- outbound ------------------------------------------------------------------------------
    def publish(self, topic: Topic, opcode: int, payload: bytes, exclude: Set[str]) -> None:
        """Send a message to the other nodes' connections of a PATH or ROOM topic, but those
        in `exclude` (call only in a cluster)."""
        kind = Kind.BROADCAST if topic.kind is TopicKind.PATH else Kind.PUBLISH
        backplane = self.backplane
        backplane.publish(backplane.channel(topic), encode(kind, opcode, self.node, payload, exclude=exclude))

    def publish_kept(self, room: str, opcode: int, payload: bytes, exclude: Set[str], limits: HistoryLimits) -> None:
        """Publish a message into a history room (on every backplane, the local one too): the
        backplane numbers and keeps it, and it comes back to every node with members of the
        room, this one included (`received`), in offset order."""
        self.backplane.publish_kept(Topic(TopicKind.KEPT, room),
                                    encode(Kind.PUBLISH, opcode, self.node, payload, exclude=exclude), limits)

    async def history(self, room: str, since: int | None, limit: int | None) -> tuple[Position, list[Stored]]:
        """A history room's position and kept messages (`Backplane.history`)."""
        return await self.backplane.history(Topic(TopicKind.KEPT, room), since, limit)

    def inbox_of(self, connection_id: str) -> Topic | None:
        """The inbox of the other node holding `connection_id`, when a cluster backplane can
        reach it (None: no cluster, not an id of ours, or an id of this node)."""
        if not self.cluster:
            return None
        node = node_of(connection_id)
        return Topic(TopicKind.NODE, node.hex()) if node is not None and node != self.node else None

    def send(self, inbox: Topic, connection_id: str, opcode: int, payload: bytes) -> None:
        """Send a message to one connection held by the node of `inbox` (see `inbox_of`)."""
        backplane = self.backplane
        backplane.publish(backplane.channel(inbox),
                          encode(Kind.SEND, opcode, self.node, payload, target=connection_id))

    def close(self, connection_id: str, code: int, reason: str) -> bool:
        """Ask the other node holding `connection_id` to close it; False when no other node
        can be reached for it (see `inbox_of`)."""
        inbox = self.inbox_of(connection_id)
        if inbox is None:
            return False
        backplane = self.backplane
        backplane.publish(backplane.channel(inbox), encode(Kind.CLOSE, 0, self.node, reason.encode("utf-8"),
                                                           target=connection_id, code=code))
        return True

    # -- inbound -------------------------------------------------------------------------------
    def received(self, channel: str, data: bytes) -> None:
        """What another node published on a channel we subscribed (the backplane calls it)."""
        topic = self.backplane.topic(channel)
        if topic is None:
            logger.warning("backplane: dropped a message on %r: not a channel of this cluster (prefix %r)",
                           channel, self.backplane.prefix)
            return
        try:
            if topic.kind is TopicKind.KEPT:
                self._kept_received(channel, topic.name, data)
                return
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
                self._to_connection(envelope.target, envelope.opcode, envelope.payload)
            elif kind is Kind.CLOSE:
                self._close_connection(envelope.target, envelope.code, envelope.payload.decode("utf-8", "replace"))
            elif kind is not Kind.PROBE:  # a probe is the backplane's own business
                self._refuse(channel, kind, "an inbox")
        elif kind is (Kind.BROADCAST if topic.kind is TopicKind.PATH else Kind.PUBLISH):
            self._to_topic(topic, envelope.opcode, envelope.payload, envelope.exclude)
        else:
            self._refuse(channel, kind, f"a {topic.kind}'s channel")

    def _kept_received(self, channel: str, room: str, data: bytes) -> None:
        """A history room's numbered message: every node's, this one's too (its members get
        it now, in offset order). ValueError when malformed."""
        offset, epoch, raw = decode_kept(data)
        envelope = decode(raw)
        if envelope.kind is not Kind.PUBLISH:
            self._refuse(channel, envelope.kind, "a history room's channel")
            return
        self._to_kept(room, Position(epoch, offset), envelope.opcode, envelope.payload, envelope.exclude)

    @staticmethod
    def _refuse(channel: str, kind: Kind, where: str) -> None:
        logger.warning("backplane: dropped a %s envelope on %s: it does not belong on %s", kind.name, channel, where)

"""The seam between the hub and whatever carries messages between nodes.

A node is one process serving connections. The hub hands its backplane what must reach
other nodes as channel + envelope bytes (`tether.backplane.envelope`) and gets back, through
the `receive(channel, data)` callback given to `start`, what other nodes published on the
channels it subscribed. The hub addresses typed topics (`tether.backplane.topic.Topic`);
`channel(topic)` and `topic(channel)` translate, with the backplane's prefix. A backplane
never imports the hub: the hub's side of the contract is the three callbacks of `start`.
"""

from __future__ import annotations

import enum
from abc import ABC, abstractmethod
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

from .history import HistoryLimits, Position, Stored
from .topic import Topic, channel_name, parse_channel

__all__ = ["Backplane", "BackplaneState", "NodeState", "Receive", "MembersGone", "Snapshot"]

#: `receive(channel, envelope)`: a message another node published on a channel we subscribed.
Receive = Callable[[str, bytes], None]
#: `members_gone(room, {connection_id: info_json})`: members of a crashed node, removed.
MembersGone = Callable[[str, dict[str, str]], None]


@dataclass
class NodeState:
    """What this node holds, for a backplane to write again after an outage."""

    connections: int = 0
    presence: dict[str, dict[str, str]] = field(default_factory=dict)  # room -> {id: info_json}


#: `snapshot()`: this node's current NodeState.
Snapshot = Callable[[], NodeState]


class BackplaneState(enum.StrEnum):
    """Where a backplane is; `app.hub.backplane.state`."""

    LOCAL = "local"            #: one process, nothing to reach
    CONNECTING = "connecting"  #: started, not yet connected
    UP = "up"                  #: cluster delivery works
    DOWN = "down"              #: unreachable: local delivery only, cluster messages counted as lost
    STOPPED = "stopped"


class Backplane(ABC):
    """What the hub is handed. `cluster` is False for a backplane with no other node, so the
    hub skips every cluster step (the single-process path pays nothing for the seam)."""

    cluster: bool = True
    state: BackplaneState = BackplaneState.CONNECTING
    #: cluster messages that could not be sent since start (never raised into a handler)
    lost: int = 0
    #: how many times the backplane went down since start
    outages: int = 0

    #: What the backplane calls (on the event loop) when it is UP again after being DOWN: the
    #: hub reads back what its history rooms missed and reports the loss for the others.
    resumed: Callable[[], None] | None = None
    #: What the backplane calls (on the event loop) when a history room's publish from this
    #: node could not be numbered and kept (`kept_lost(room, why)`): the hub tells the room's
    #: members here of the loss. An engine that cannot lose a publish never calls it.
    kept_lost: Callable[[str, str], None] | None = None

    #: what every channel and key name starts with (one cluster's names: several may share a server)
    prefix: str = "tether"

    def __init__(self, node: bytes) -> None:
        self.node = node

    def channel(self, topic: Topic) -> str:
        """The pub/sub channel of `topic` in this cluster (`tether.backplane.topic.channel_name`)."""
        return channel_name(self.prefix, topic)

    def topic(self, channel: str) -> Topic | None:
        """The topic of a channel of this cluster, or None for anything else (another prefix,
        a malformed name): `channel` read back, never guessed at."""
        return parse_channel(self.prefix, channel)

    @abstractmethod
    async def start(self, receive: Receive, members_gone: MembersGone, snapshot: Snapshot) -> None:
        """Connect and start delivering; returns once up (or once it has tried: a backplane
        that cannot connect keeps trying in the background, DOWN meanwhile)."""

    @abstractmethod
    async def stop(self) -> None:
        """Remove this node's entries and disconnect."""

    @abstractmethod
    def publish(self, channel: str, data: bytes) -> None:
        """Send `data` to every node subscribed to `channel`, in call order; never blocks
        and never raises (what cannot be sent is counted in `lost`)."""

    # -- history rooms (tether.backplane.history) --------------------------------------------
    def publish_kept(self, topic: Topic, envelope: bytes, limits: HistoryLimits) -> None:
        """Publish the PUBLISH `envelope` into the history room whose KEPT `topic` this is,
        as one step no other publish into the room comes between: give it the room's next
        offset in the room's epoch (a new epoch when the room's history was lost), keep it
        within `limits`, and send `encode_kept(offset, epoch, envelope)` on the topic's
        channel to every node that subscribed it, this one included, in offset order. Never
        blocks and never raises (what cannot be sent is counted in `lost`)."""
        raise NotImplementedError(f"{type(self).__name__} keeps no history rooms")

    async def history(self, topic: Topic, since: int | None, limit: int | None) -> tuple[Position, list[Stored]]:
        """The history room's current position and its kept messages with an offset over
        `since` (all when None), oldest first, at most `limit` (the oldest of them; a limit
        under 0 counts as 0). ConnectionError when the backplane cannot be reached."""
        raise NotImplementedError(f"{type(self).__name__} keeps no history rooms")

    @abstractmethod
    def subscribe(self, channel: str) -> Awaitable[None] | None:
        """Start receiving `channel`. Returns an awaitable that resolves once the
        subscription is in force (None when it already is, or the backplane is down)."""

    @abstractmethod
    def unsubscribe(self, channel: str) -> None:
        """Stop receiving `channel`."""

    @abstractmethod
    def presence_join(self, room: str, connection_id: str, info: str) -> None:
        """Record a member of `room` held by this node (`info` is JSON text)."""

    @abstractmethod
    def presence_leave(self, room: str, connection_id: str) -> None:
        """Forget a member of `room` held by this node."""

    @abstractmethod
    async def presence(self, room: str) -> dict[str, str]:
        """{connection_id: info JSON} of every member of `room` on every live node."""

    @abstractmethod
    def connections_changed(self, delta: int) -> None:
        """This node holds `delta` more (or fewer) connections."""

    @abstractmethod
    async def count(self) -> int:
        """Connections held by every live node."""

"""The hub's cluster routing part (`tether.hub.routing.ClusterRouter`) between real hubs on an
in-process bus (`MemoryBackplane`, a real backplane; the Redis one is tested end to end in
tests/test_backplane.py): what it hears is read back into a topic by the backplane, and
whatever is not a message of this cluster for that topic is dropped with a WARNING instead of
being delivered somewhere: another prefix's channel, an envelope whose kind does not go with
its topic, another node's inbox, a malformed envelope. Topics followed before the backplane
started are subscribed with its own prefix; send_to and close reach another node's
connection through its inbox."""

from __future__ import annotations

import asyncio
import logging

import pytest

from tether import WebSocketConnection
from tether.backplane import NodeState, Topic, TopicKind
from tether.backplane.envelope import Kind, encode
from tether.backplane.memory import MemoryBackplane, MemoryBus
from tether.hub import Hub
from tether.protocol import OP_TEXT

from .recording import RecordingChannel, async_test, open_connection, settle

WARNING = (logging.WARNING, "tether")


async def memory_cluster(count: int = 2, prefix: str = "tether", hubs: list[Hub] | None = None) -> list[Hub]:
    """`count` hubs (or those given) started as nodes of one new in-process cluster."""
    bus = MemoryBus()
    hubs = hubs or [Hub() for _ in range(count)]
    for hub in hubs:
        hub.bind(asyncio.get_running_loop())
        backplane = MemoryBackplane(hub.node, bus)
        backplane.prefix = prefix
        await hub.start(backplane)
    return hubs


async def outsider(hub: Hub) -> MemoryBackplane:
    """A bare node on `hub`'s bus that publishes whatever a test makes it (it hears nothing)."""
    assert isinstance(hub.backplane, MemoryBackplane)
    node = MemoryBackplane(b"\xee" * 6, hub.backplane._bus)
    await node.start(lambda channel, data: None, lambda room, gone: None, NodeState)
    return node


async def lone_node() -> tuple[Hub, WebSocketConnection, RecordingChannel, MemoryBackplane]:
    """A one-node cluster with a connection on "/p", and an outsider on its bus."""
    (hub,) = await memory_cluster(1)
    ws, channel = await open_connection(hub, path="/p")
    return hub, ws, channel, await outsider(hub)


def warnings(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if (r.levelno, r.name) == WARNING]


# -- every addressing operation reaches the other node -------------------------------------------------
@async_test
async def test_broadcast_publish_send_to_and_close_reach_a_connection_of_the_other_node() -> None:
    a, b = await memory_cluster()
    ws, channel = await open_connection(b, path="/p")
    await ws.join("room")
    assert await a.broadcast("/p", "to the path") == 0  # none of A's own
    assert await a.publish("room", "to the room") == 0
    assert await a.send_to(ws.id, "to you") is True
    a.send_to_sync(ws.id, "to you, sync")
    await settle()
    assert channel.messages() == ["to the path", "to the room", "to you", "to you, sync"]
    assert Hub.routing(ws.id) is b  # the holder first
    assert await a.close(ws.id, 4001, "from A") is True
    await settle()
    assert channel.closes() == [(4001, "from A", True)]
    assert await a.send_to(a.new_id(), "x") is False  # an id of A's own that is not open: no node to ask


@async_test
async def test_a_node_hears_a_path_and_a_room_only_while_it_has_members_of_them() -> None:
    a, b = await memory_cluster()
    ws, channel = await open_connection(b, path="/p")
    await ws.join("room")
    await ws.leave("room")
    await a.publish("room", "after the leave")
    await ws.close()
    ws2, channel2 = await open_connection(b, path="/q")
    await a.broadcast("/p", "after the close")
    await a.broadcast("/q", "to q")
    await settle()
    assert channel.messages() == [] and channel2.messages() == ["to q"]
    assert isinstance(b.backplane, MemoryBackplane)
    assert b.backplane.channel(Topic(TopicKind.PATH, "/q")) in b.backplane._channels
    assert b.backplane.channel(Topic(TopicKind.PATH, "/p")) not in b.backplane._channels
    assert b.backplane.channel(Topic(TopicKind.ROOM, "room")) not in b.backplane._channels


@async_test
async def test_topics_followed_before_the_start_are_subscribed_with_the_backplanes_own_prefix() -> None:
    early = Hub()
    early.bind(asyncio.get_running_loop())
    ws, channel = await open_connection(early, path="/early")
    await ws.join("early room")
    a, b = await memory_cluster(prefix="app1", hubs=[Hub(), early])
    await a.broadcast("/early", "to the path")
    await a.publish("early room", "to the room")
    await settle()
    assert channel.messages() == ["to the path", "to the room"]
    assert isinstance(b.backplane, MemoryBackplane)
    assert "app1:path:/early" in b.backplane._channels and "tether:path:/early" not in b.backplane._channels


# -- what is not a message for this node is dropped, with a WARNING ----------------------------------------
@async_test
async def test_a_channel_of_another_prefix_is_dropped_not_read_as_one_of_ours(caplog) -> None:
    b, ws, channel, node = await lone_node()
    await ws.join("lobby")
    # Sliced at len("tether") + 3, as the hub once did, this channel named our room "lobby".
    b.backplane.subscribe("appsx1:r:lobby")
    node.publish("appsx1:r:lobby", encode(Kind.PUBLISH, OP_TEXT, node.node, b"misread"))
    await settle()
    assert channel.messages() == []
    assert warnings(caplog) == ["backplane: dropped a message on 'appsx1:r:lobby': not a channel of this "
                                "cluster (prefix 'tether')"]


@pytest.mark.parametrize(("topic", "kind", "where"), [
    (Topic(TopicKind.PATH, "/p"), Kind.PUBLISH, "a path's channel"),
    (Topic(TopicKind.ROOM, "/p"), Kind.BROADCAST, "a room's channel"),
    (Topic(TopicKind.ROOM, "/p"), Kind.SEND, "a room's channel"),
    (Topic(TopicKind.PATH, "/p"), Kind.CLOSE, "a path's channel"),
])
@async_test
async def test_an_envelope_whose_kind_does_not_go_with_its_topic_is_dropped(caplog, topic, kind, where) -> None:
    b, ws, channel, node = await lone_node()
    await ws.join("/p")  # a room named as the path: whichever the kind picked, someone would get it
    node.publish(b.backplane.channel(topic), encode(kind, OP_TEXT, node.node, b"x", target=ws.id))
    await settle()
    assert channel.events == []
    assert warnings(caplog) == [f"backplane: dropped a {kind.name} envelope on {b.backplane.channel(topic)}: "
                                f"it does not belong on {where}"]


@async_test
async def test_a_send_on_another_nodes_inbox_or_a_broadcast_on_ours_is_dropped(caplog) -> None:
    b, ws, channel, node = await lone_node()
    others = b.backplane.channel(Topic(TopicKind.NODE, "0a0b0c0d0e0f"))
    b.backplane.subscribe(others)
    node.publish(others, encode(Kind.SEND, OP_TEXT, node.node, b"x", target=ws.id))
    ours = b.backplane.channel(Topic(TopicKind.NODE, b.node.hex()))
    node.publish(ours, encode(Kind.BROADCAST, OP_TEXT, node.node, b"x"))
    node.publish(ours, encode(Kind.PROBE, 0, node.node, b"token"))  # the backplane's own business: quiet
    node.publish(ours, encode(Kind.SEND, OP_TEXT, node.node, b"for you", target=ws.id))
    await settle()
    assert channel.messages() == ["for you"]
    assert warnings(caplog) == [f"backplane: dropped a SEND envelope on {others}: it does not belong on another "
                                "node's inbox",
                                f"backplane: dropped a BROADCAST envelope on {ours}: it does not belong on an inbox"]


@async_test
async def test_a_malformed_envelope_is_dropped_and_an_own_echo_quietly(caplog) -> None:
    b, ws, channel, node = await lone_node()
    path = b.backplane.channel(Topic(TopicKind.PATH, "/p"))
    node.publish(path, b"\x01\x01short")
    node.publish(path, encode(Kind.BROADCAST, OP_TEXT, b.node, b"our own echo"))
    await settle()
    assert channel.events == []
    assert warnings(caplog) == [f"backplane: dropped a malformed message on {path}: envelope of 7 bytes is "
                                "shorter than its header"]


@async_test
async def test_the_router_is_idle_without_a_cluster() -> None:
    hub = Hub()
    hub.bind(asyncio.get_running_loop())
    ws, channel = await open_connection(hub, path="/p")
    assert await hub.close(hub.new_id()) is False  # an id nobody holds, and no node to ask
    assert Hub.routing(RecordingChannel.__name__) is None
    assert await hub.count() == 1

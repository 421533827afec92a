"""The hub's presence part (`tether.hub.presence.Presence`) through `Hub`: who is in a room with
what info, on one node and across two (real hubs on an in-process bus); listeners hear every
join and leave once, sync or async, and one that raises is logged without stopping the others;
a join whose info is not JSON-able changes nothing (no member, no subscription, no report)."""

from __future__ import annotations

import asyncio
import logging

import pytest

from tether.backplane import Topic, TopicKind
from tether.backplane.memory import MemoryBackplane
from tether.hub import Hub

from .recording import async_test, open_connection, settle
from .test_hub_routing import memory_cluster


@async_test
async def test_presence_lists_the_members_of_every_node_with_their_info() -> None:
    a, b = await memory_cluster()
    ann, _ = await open_connection(a)
    bob, _ = await open_connection(b)
    await ann.join("lobby", {"name": "ann"})
    await bob.join("lobby", ["bob", 2])
    everyone = {ann.id: {"name": "ann"}, bob.id: ["bob", 2]}
    assert await a.presence("lobby") == everyone and await b.presence("lobby") == everyone
    assert await a.count() == 2 and len(a) == 1
    await bob.close()
    assert await a.presence("lobby") == {ann.id: {"name": "ann"}}
    assert await a.presence("nobody's") == {}


@async_test
async def test_listeners_hear_each_join_and_leave_sync_or_async_and_a_raising_one_is_logged(caplog) -> None:
    hub = Hub()
    hub.bind(asyncio.get_running_loop())
    heard: list[tuple[str, str, dict, dict]] = []

    @hub.on_presence
    def broken(room, joined, left):
        raise ValueError("boom")

    @hub.on_presence
    def sync_listener(room, joined, left):
        heard.append(("sync", room, joined, left))

    @hub.on_presence
    async def async_listener(room, joined, left):
        heard.append(("async", room, joined, left))

    ws, _ = await open_connection(hub)
    await ws.join("room", {"n": 1})
    await ws.close()  # leaves every room
    await settle()
    changes = [("room", {ws.id: {"n": 1}}, {}), ("room", {}, {ws.id: {"n": 1}})]
    for kind in ("sync", "async"):  # an async one runs as a task of its own, in order
        assert [entry[1:] for entry in heard if entry[0] == kind] == changes
    raised = [r for r in caplog.records if r.levelno == logging.ERROR]
    assert [r.getMessage() for r in raised] == ["presence listener for room 'room' raised"] * 2


@async_test
async def test_a_join_whose_info_is_not_json_able_changes_nothing() -> None:
    (hub,) = await memory_cluster(1)
    heard: list[object] = []
    hub.on_presence(lambda room, joined, left: heard.append(room))
    ws, _ = await open_connection(hub)
    with pytest.raises(TypeError):
        await ws.join("room", info=object())
    assert hub.members("room") == [] and ws.rooms == set() and heard == []
    assert await hub.presence("room") == {}
    assert isinstance(hub.backplane, MemoryBackplane)
    assert hub.backplane.channel(Topic(TopicKind.ROOM, "room")) not in hub.backplane._channels

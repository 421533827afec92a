"""History rooms in the hub (`tether.hub.history`, `Hub.keep_history`, `Hub.history`,
`WebSocket.join(room, since=...)`): numbered messages delivered in offset order, and a join
that catches up whole or not at all. Connections are core WebSockets on recording channels
(tests/recording.py); the backplanes are the real in-memory ones (one process, and a
`memory://` cluster of two hubs)."""

from __future__ import annotations

import asyncio
import copy
import threading
from collections.abc import Callable
from typing import Any

import pytest

from tether.backplane import from_url
from tether.backplane.base import BackplaneState
from tether.backplane.history import NOWHERE, HistoryLimits, MemoryHistory, Position, Stored
from tether.backplane.memory import MemoryBackplane, MemoryBus
from tether.exceptions import InvalidState
from tether.hub import Hub
from tether.hub.history import HistoryPolicy, HistoryRooms, recover

from .recording import async_test, open_connection, settle
from .redisutil import RedisServer, redis_server_fixture  # noqa: F401


def bound_hub() -> Hub:
    hub = Hub()
    hub.bind(asyncio.get_running_loop())
    return hub


# -- declarations ----------------------------------------------------------------------------------
def test_patterns_match_whole_names_and_the_first_declaration_wins() -> None:
    rooms = HistoryRooms()
    small, big = HistoryPolicy(HistoryLimits(5)), HistoryPolicy(HistoryLimits(500))
    rooms.declare("chat:{name}", small)
    rooms.declare("chat:lobby", big)
    rooms.declare("news", big)
    assert rooms.policy("chat:lobby") is small and rooms.policy("chat:a:b") is small
    assert rooms.policy("news") is big
    assert rooms.policy("chat:") is None and rooms.policy("xchat:1") is None and rooms.policy("news2") is None


@async_test
async def test_declaring_history_for_a_room_already_joined_is_refused() -> None:
    hub = bound_hub()
    ws, _ = await open_connection(hub)
    await ws.join("chat:1")
    with pytest.raises(InvalidState, match="before their first member joins"):
        hub.keep_history("chat:{n}")
    hub.keep_history("other:{n}")  # rooms nobody joined yet are fine


# -- one process -------------------------------------------------------------------------------------
@async_test
async def test_publishes_are_numbered_delivered_and_read_back_in_order() -> None:
    hub = bound_hub()
    hub.keep_history("chat:{name}", size=3)
    a, a_channel = await open_connection(hub)
    b, b_channel = await open_connection(hub)
    await a.join("chat:1")
    await b.join("chat:1")
    for n in range(5):
        assert await hub.publish("chat:1", {"n": n}, exclude=b if n == 4 else None) == (1 if n == 4 else 2)
    assert a_channel.messages() == [f'{{"n":{n}}}' for n in range(5)]
    assert b_channel.messages() == [f'{{"n":{n}}}' for n in range(4)]
    position, kept = await hub.history("chat:1")
    assert position.offset == 5 and position.epoch
    assert [(m.offset, m.data) for m in kept] == [(3, '{"n":2}'), (4, '{"n":3}'), (5, '{"n":4}')]  # size 3
    assert [m.offset for m in (await hub.history("chat:1", since=3, limit=1))[1]] == [4]
    with pytest.raises(ValueError, match="keeps no history"):
        await hub.history("plain")


async def member_at(hub: Hub, since: Position, room: str = "chat:1"):
    ws, channel = await open_connection(hub)
    recovery = await ws.join(room, since=since)
    return recovery, channel


@async_test
async def test_a_join_from_a_position_gets_exactly_what_it_missed_then_live_messages() -> None:
    hub = bound_hub()
    hub.keep_history("chat:{name}", size=100)
    for n in range(1, 6):
        await hub.publish("chat:1", n)
    position, _ = await hub.history("chat:1")
    recovery, channel = await member_at(hub, Position(position.epoch, 2))
    assert recovery.recovered and recovery.position == Position(position.epoch, 5)
    await hub.publish("chat:1", 6)
    assert channel.messages() == ["3", "4", "5", "6"]
    fresh, fresh_channel = await member_at(hub, NOWHERE)  # has seen nothing: gets everything kept
    assert fresh.recovered and fresh_channel.messages() == ["1", "2", "3", "4", "5", "6"]


@async_test
async def test_a_join_that_cannot_recover_whole_replays_nothing() -> None:
    hub = bound_hub()
    hub.keep_history("chat:{name}", size=3, max_recover=4)
    hub.keep_history("plain")  # nothing to do with chat:*
    for n in range(1, 7):
        await hub.publish("chat:1", n)
    epoch = (await hub.history("chat:1"))[0].epoch
    trimmed, channel = await member_at(hub, Position(epoch, 1))  # 2 and 3 were trimmed (size 3)
    assert not trimmed.recovered and trimmed.position == Position(epoch, 6) and channel.messages() == []
    other_epoch, channel = await member_at(hub, Position("another", 5))
    assert not other_epoch.recovered and channel.messages() == []
    hub.keep_history("long:{n}", size=100, max_recover=4)
    for n in range(1, 7):
        await hub.publish("long:1", n)
    too_many, channel = await member_at(hub, Position((await hub.history("long:1"))[0].epoch, 1), "long:1")
    assert not too_many.recovered and channel.messages() == []  # 5 missing > max_recover 4
    ws, _ = await open_connection(hub)
    assert (await ws.join("no-history", since=Position(epoch, 1))).recovered is False


@pytest.mark.parametrize(("since", "now", "stored", "expected"), [
    (Position("e", 3), Position("e", 3), [], True),                    # missed nothing
    (Position("e", 3), Position("e", 5), [4, 5], True),
    (Position("e", 3), Position("e", 5), [5], False),                  # 4 was trimmed
    (Position("e", 3), Position("f", 5), [4, 5], False),               # another epoch
    (Position("e", 6), Position("e", 5), [], False),                   # ahead of the room: not this history
    (NOWHERE, Position("f", 2), [1, 2], True),                         # saw nothing: all of it
    (NOWHERE, Position("f", 3), [2, 3], False),
    (Position("e", 0), Position("e", 11), list(range(1, 12)), False),  # over max_recover (10)
])
def test_recover_decides_whole_or_nothing(since: Position, now: Position, stored: list[int], expected: bool) -> None:
    assert recover(since, now, [Stored(n, b"") for n in stored], 10) is expected


# -- a cluster: two hubs on one memory bus -------------------------------------------------------------
async def two_nodes(size: int, first: type[MemoryBackplane] = MemoryBackplane
                    ) -> tuple[Hub, Hub, MemoryBackplane, MemoryBus]:
    """Two hubs on one memory bus, both keeping `size` messages of the rooms `chat:{name}`:
    (a, b, a's backplane, which is a `first`, the bus)."""
    bus = MemoryBus()
    a, b = bound_hub(), bound_hub()
    backplane = first(a.node, bus)
    await a.start(backplane)
    await b.start(MemoryBackplane(b.node, bus))
    for hub in (a, b):
        hub.keep_history("chat:{name}", size=size)
    return a, b, backplane, bus


async def member_in_chat(hub: Hub) -> tuple[Any, list[str]]:
    """A member of `chat:1` on `hub`: (its channel, the reasons `hub`'s loss listeners heard)."""
    losses: list[str] = []
    hub.on_loss(lambda room, reason: losses.append(reason))
    member, channel = await open_connection(hub)
    await member.join("chat:1")
    return channel, losses


class SlowHistory(MemoryBackplane):
    """The in-memory engine, with reads that take a while: publishes land during a join's read."""

    async def history(self, topic, since, limit):
        await asyncio.sleep(0.05)
        return await super().history(topic, since, limit)


@async_test
async def test_a_join_during_a_stream_of_publishes_from_another_node_has_no_gap_and_no_duplicate() -> None:
    a, b, _, _ = await two_nodes(1000, SlowHistory)
    watcher, watcher_channel = await open_connection(a)
    await watcher.join("chat:1")
    publishing = True

    async def publish() -> None:
        n = 0
        while publishing:
            n += 1
            await b.publish("chat:1", n)
            await asyncio.sleep(0.001)

    task = asyncio.ensure_future(publish())
    await asyncio.sleep(0.02)
    epoch = (await a.history("chat:1"))[0].epoch
    recovery, channel = await member_at(a, Position(epoch, 1))
    await asyncio.sleep(0.03)
    publishing = False
    await task
    await settle()
    assert recovery.recovered
    got = [int(m) for m in channel.messages()]
    assert got == list(range(2, got[-1] + 1)) and got[-1] > recovery.position.offset  # whole, in order, live after
    seen = [int(m) for m in watcher_channel.messages()]
    assert seen == list(range(1, seen[-1] + 1)) and seen[-1] == got[-1]  # every node delivers in offset order
    for hub in (a, b):
        await hub.stop()


@async_test
async def test_a_member_still_catching_up_gets_notifications_at_once() -> None:
    """A member that joined from a position this node has not delivered up to yet (the node
    had no members of the room) waits for the node to catch up for numbered messages only:
    a `notify` (the live layer's presence) reaches it at once, and in order with the rest."""
    a, b, _, _ = await two_nodes(10)
    writer, _ = await open_connection(b)
    await writer.join("chat:1")
    for n in range(3):
        await b.publish("chat:1", n)
    await settle()
    position, _ = await b.history("chat:1")
    recovery, channel = await member_at(a, position)
    assert recovery.recovered and recovery.position == position
    a.notify("chat:1", "someone joined")
    await b.publish("chat:1", 3)
    await settle(20)
    assert channel.messages() == ["someone joined", "3"]
    for hub in (a, b):
        await hub.stop()


def test_the_memory_store_bounds_size_and_age_and_forgets_expired_rooms() -> None:
    now = [0.0]
    store = MemoryHistory(clock=lambda: now[0])
    limits = HistoryLimits(size=2, ttl=10)
    for n in range(3):
        store.append("a", b"%d" % n, limits)
    position, kept = store.read("a", None, None)
    assert position.offset == 3 and [s.offset for s in kept] == [2, 3]
    now[0] = 11
    assert store.read("a", None, None) == (NOWHERE, [])  # every message expired: forgotten
    epoch, offset = store.append("a", b"again", limits)
    assert offset == 1 and epoch != position.epoch  # a new epoch: old positions cannot match
    store.append("b", b"x", HistoryLimits(size=5, ttl=1))
    now[0] = 30
    store.append("c", b"y", limits)  # "a" (written least recently) is looked at and forgotten
    store.append("d", b"y", limits)  # then "b"
    assert len(store) == 2


# -- gaps, outages and loss reports ---------------------------------------------------------------------
class Flaky(MemoryBackplane):
    """The in-memory engine, with an outage: while `down`, what the bus delivers to this node
    is dropped (the history still keeps it, as Redis survives a node's lost subscription);
    `up()` ends it as the Redis engine does, calling `resumed`."""

    down = False

    async def start(self, receive, members_gone, snapshot) -> None:
        def unless_down(channel: str, data: bytes) -> None:
            if not self.down:
                receive(channel, data)

        await super().start(unless_down, members_gone, snapshot)

    def up(self) -> None:
        self.down = False
        if self.resumed is not None:
            self.resumed()


@async_test
async def test_after_an_outage_history_rooms_read_back_what_they_missed_and_plain_rooms_report_a_loss() -> None:
    a, b, flaky, _ = await two_nodes(100, Flaky)
    losses: list[tuple[str, str]] = []
    a.on_loss(lambda room, reason: losses.append((room, reason)))
    member, channel = await open_connection(a)
    await member.join("chat:1")
    await member.join("plain")
    await b.publish("chat:1", 1)
    await settle()
    flaky.down = True
    for n in (2, 3, 4):
        await b.publish("chat:1", n)
    await b.publish("plain", "gone")
    await settle()
    assert channel.messages() == ["1"]
    flaky.up()
    await settle()
    assert channel.messages() == ["1", "2", "3", "4"]  # read back at once, with no new message needed
    await b.publish("chat:1", 5)
    await settle()
    assert channel.messages() == ["1", "2", "3", "4", "5"]  # read back, in order, once
    assert [room for room, _ in losses] == ["plain"]  # the room without history says so
    # A gap seen on the next message (no outage was noticed) is repaired the same way.
    flaky.down = True
    await b.publish("chat:1", 6)
    await settle()
    flaky.down = False
    await b.publish("chat:1", 7)
    await settle()
    assert channel.messages()[-3:] == ["5", "6", "7"]
    for hub in (a, b):
        await hub.stop()


@async_test
async def test_a_gap_the_history_no_longer_holds_is_reported_and_delivery_goes_on() -> None:
    a, b, flaky, _ = await two_nodes(2, Flaky)
    channel, losses = await member_in_chat(a)
    await b.publish("chat:1", 1)
    await settle()
    flaky.down = True
    for n in range(2, 7):  # 2..6: the history (size 2) keeps only 5 and 6
        await b.publish("chat:1", n)
    await settle()
    flaky.up()
    await settle()
    assert losses and "no longer holds" in losses[0]
    await b.publish("chat:1", 7)
    await settle()
    assert channel.messages() == ["1", "5", "6", "7"]  # what is still kept, then on
    for hub in (a, b):
        await hub.stop()


@async_test
async def test_offsets_that_go_back_are_reported_and_delivered_not_dropped() -> None:
    a, b, _, bus = await two_nodes(100)
    channel, losses = await member_in_chat(a)
    await b.publish("chat:1", 1)
    await settle()
    older = copy.deepcopy(bus.history)  # the store as it was at offset 1
    for n in (2, 3):
        await b.publish("chat:1", n)
    await settle()
    bus.history = older  # restored from the older copy: the same epoch, offset 1 again
    await b.publish("chat:1", "after the restore")
    await settle()
    assert channel.messages() == ["1", "2", "3", "after the restore"]
    assert len(losses) == 1 and "went back from 3 to 2" in losses[0]
    for hub in (a, b):
        await hub.stop()


@async_test
async def test_offsets_that_went_back_during_an_outage_are_reported_when_it_ends() -> None:
    """A failover to a replica that had not the tail: the history went back while this node
    was down, and was written again meanwhile. The loss is said when the node is back, not
    with some later message, and what comes next is delivered."""
    a, b, flaky, bus = await two_nodes(100, Flaky)
    channel, losses = await member_in_chat(a)
    await b.publish("chat:1", 1)
    await settle()
    older = copy.deepcopy(bus.history)  # the replica's copy: offset 1
    for n in (2, 3):
        await b.publish("chat:1", n)
    await settle()
    flaky.down = True
    bus.history = older  # the failover: offset 1 again, in the same epoch
    await b.publish("chat:1", "on the new master")  # offset 2, while this node is down
    await settle()
    flaky.up()
    await settle()
    assert len(losses) == 1 and "went back from 3 to 2" in losses[0]
    await b.publish("chat:1", "next")  # offset 3: after the reported loss, delivered
    await settle()
    assert channel.messages() == ["1", "2", "3", "next"]
    assert len(losses) == 1
    for hub in (a, b):
        await hub.stop()


@async_test
async def test_publish_sync_from_another_thread_numbers_history_messages_in_call_order() -> None:
    hub = bound_hub()
    hub.keep_history("chat:{name}", size=100)
    member, channel = await open_connection(hub)
    await member.join("chat:1")
    loop = asyncio.get_running_loop()
    await loop.run_in_executor(None, lambda: [hub.publish_sync("chat:1", n) for n in range(20)])
    await settle()
    assert channel.messages() == [str(n) for n in range(20)]
    position, kept = await hub.history("chat:1")
    assert position.offset == 20 and [m.data for m in kept] == [str(n) for n in range(20)]
    assert channel.threads == {threading.get_ident()}  # delivered on the loop's thread only


def test_on_redis_a_publish_that_cannot_be_kept_is_reported_once_and_an_outage_without_a_position_too(
        redis_server: RedisServer) -> None:  # noqa: F811
    """A history room's publish lost because Redis is down reaches nobody: the members here
    hear of it (once until the room delivers again); and when Redis is back, a room this node
    has no position in (nothing delivered here yet, or a failed read-back) is reported too."""
    async def scenario() -> None:
        hub = bound_hub()
        hub.keep_history("chat:{name}", size=10)
        losses: list[tuple[str, str]] = []
        hub.on_loss(lambda room, reason: losses.append((room, reason)))
        await hub.start(from_url(redis_server.url, hub.node))
        ws, _ = await open_connection(hub)
        await ws.join("chat:1")
        redis_server.kill()
        await until(lambda: hub.backplane.state is BackplaneState.DOWN)
        for n in range(3):
            await hub.publish("chat:1", n)
        await until(lambda: losses)
        await until(lambda: hub.backplane.lost >= 3)  # all three lost; reported once
        [(room, reason)] = losses
        assert room == "chat:1" and reason.startswith("a message published into room 'chat:1' on this node was lost: "
                                                      "the backplane ")  # "is down" or "went down"
        redis_server.start()
        await until(lambda: len(losses) == 2)
        assert "no position in room 'chat:1'" in losses[1][1]
        await hub.stop()
    asyncio.run(asyncio.wait_for(scenario(), 30))


async def until(condition: Callable[[], Any], timeout: float = 20) -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    while not condition():
        assert asyncio.get_running_loop().time() < deadline, "the condition did not come true in time"
        await asyncio.sleep(0.01)

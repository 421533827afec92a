"""The hub's one fan-out loop (`tether.hub.fanout`), directly and through each of the five paths
that use it: broadcast, publish, send_to, messages from another node (real hubs on an
in-process bus) and the awaited deliveries of "wait" mode. Each path builds one frame for all
its targets, skips the excluded, and counts only what was queued."""

from __future__ import annotations

import asyncio

from tether import WebSocketConnection
from tether.hub import Hub
from tether.hub.fanout import NOBODY, Waits, delivered, excluded, fan_out
from tether.protocol import OP_BINARY, OP_TEXT, encode_frame

from .recording import RecordingChannel, async_test, open_connection, settle
from .test_hub_routing import memory_cluster


def new_hub() -> Hub:
    hub = Hub()
    hub.bind(asyncio.get_running_loop())
    return hub


async def waiting_connection(hub: Hub, path: str = "/p", *, limit: int = 100,
                             send_timeout: float = 5.0) -> tuple[WebSocketConnection, RecordingChannel]:
    """An accepted connection in "wait" mode whose buffer is over `limit` until the test says."""
    channel = RecordingChannel(max_send_buffer=limit)
    channel.set_slow_client("wait", send_timeout)
    ws = WebSocketConnection(channel, hub, path=path)
    await ws.accept()
    channel.events.clear()
    channel.buffered = limit + 1
    return ws, channel


# -- the loop itself ----------------------------------------------------------------------------------
@async_test
async def test_fan_out_hands_one_frame_to_every_member_not_skipped_and_counts_them() -> None:
    hub = new_hub()
    conns = [await open_connection(hub) for _ in range(3)]
    members = [ws for ws, _ in conns]
    assert fan_out(members, OP_BINARY, b"\x00\x01") == 3
    assert fan_out(members, OP_TEXT, b"hi", skip=excluded([members[1], members[2].id])) == 1
    assert fan_out([], OP_TEXT, b"nobody") == 0
    frames = [channel.frames for _, channel in conns]
    assert frames[0][0] is frames[1][0] is frames[2][0] == encode_frame(OP_BINARY, b"\x00\x01")
    assert [len(f) for f in frames] == [2, 1, 1]


@async_test
async def test_fan_out_without_waits_fails_a_member_over_its_limit_and_goes_on() -> None:
    hub = new_hub()
    (a, ca), (b, cb), (c, cc) = [await open_connection(hub, max_send_buffer=100) for _ in range(3)]
    cb.buffered = 101
    members = hub._registry.paths["/p"].values()  # the registry's own: b leaves it (1008) while the loop runs
    assert fan_out(members, OP_TEXT, b"x") == 2
    assert ca.messages() == ["x"] and cc.messages() == ["x"] and cb.closes()[0][0] == 1008
    assert hub.ids("/p") == [a.id, c.id]


@async_test
async def test_fan_out_with_waits_queues_for_the_others_and_leaves_a_member_over_its_limit_waiting() -> None:
    hub = new_hub()
    fast, cf = await waiting_connection(hub)
    cf.buffered = 0
    slow, cs = await waiting_connection(hub)
    waits: Waits = []
    assert fan_out([fast, slow], OP_TEXT, b"m", NOBODY, waits) == 1
    assert cf.messages() == ["m"] and cs.events == [] and len(waits) == 1
    cs.buffered = 0  # it read
    assert await delivered(waits) == 1
    assert cs.messages() == ["m"] and cs.frames[0] is cf.frames[0]
    assert await delivered([]) == 0


# -- the five paths ------------------------------------------------------------------------------------
@async_test
async def test_broadcast_publish_and_send_to_each_build_one_frame_and_count_what_was_queued() -> None:
    hub = new_hub()
    (a, ca), (b, cb) = [await open_connection(hub, max_send_buffer=100) for _ in range(2)]
    for ws in (a, b):
        await ws.join("room")
    assert await hub.broadcast("/p", "b") == 2
    assert await hub.publish("room", "p", exclude=a) == 1
    hub.broadcast_sync("/p", "bs", exclude=[b])
    hub.publish_sync("room", "ps")
    assert await hub.send_to(a.id, "s") is True
    assert ca.frames[0] is cb.frames[0] and ca.frames[2] is cb.frames[2]
    assert ca.messages() == ["b", "bs", "ps", "s"] and cb.messages() == ["b", "p", "ps"]
    cb.buffered = 101  # send_to is a fan-out to one: the same 1008 rule, and it says so
    assert await hub.send_to(b.id, "too much") is False
    assert cb.closes()[0][0] == 1008 and b.id not in hub


@async_test
async def test_a_message_from_another_node_builds_one_frame_for_this_nodes_members_less_the_excluded() -> None:
    a, b = await memory_cluster()
    local, cl = await open_connection(a, path="/p")
    conns = [await open_connection(b, path="/p") for _ in range(3)]
    for ws, _ in [(local, cl), *conns]:
        await ws.join("room")
    skipped = conns[0][0]
    assert await a.broadcast("/p", "to the path", exclude=skipped.id) == 1
    assert await a.publish("room", {"to": "room"}, exclude=[local, skipped]) == 0
    await settle()
    assert conns[0][1].messages() == []
    for _, channel in conns[1:]:
        assert channel.messages() == ["to the path", '{"to":"room"}']
    assert conns[1][1].frames[0] is conns[2][1].frames[0]  # B built it once for both
    assert cl.messages() == ["to the path"]  # local first, and not again from B


@async_test
async def test_wait_mode_the_envelope_leaves_before_the_wait_for_local_slow_members() -> None:
    a, b = await memory_cluster()
    slow, cs = await waiting_connection(a)
    remote, cr = await open_connection(b, path="/p")
    broadcast = asyncio.ensure_future(a.broadcast("/p", "x"))
    await settle()
    assert cr.messages() == ["x"] and not broadcast.done()  # the other node has it; A still waits
    cs.buffered = 0
    assert await broadcast == 1
    assert cs.messages() == ["x"]


@async_test
async def test_wait_mode_publish_and_send_to_wait_for_a_slow_member_then_give_up_on_it() -> None:
    hub = new_hub()
    slow, cs = await waiting_connection(hub, send_timeout=0.05)
    other, co = await waiting_connection(hub)
    co.buffered = 0
    for ws in (slow, other):
        await ws.join("room")
    assert await hub.publish("room", "p") == 1  # the slow one timed out: failed, not counted
    assert cs.closes()[0][0] == 1008 and co.messages() == ["p"]
    co.buffered = 101
    sending = asyncio.ensure_future(hub.send_to(other.id, "s"))
    await settle()
    assert not sending.done()
    co.buffered = 0
    assert await sending is True and co.messages() == ["p", "s"]
    hub.send_to_sync(other.id, "never waits")  # the twin delivers by the rule for what nobody awaits
    assert co.messages()[-1] == "never waits"

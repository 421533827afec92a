"""The hub (`tether.Hub`) with core connections on recording channels: the registry and
rooms kept true on every close path, deliveries and their counts, close_all, and the
thread-safe `*_sync` twins (see tests/recording.py)."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Awaitable, Callable

import pytest

from tether import ConnectionState, Hub, InvalidState, WebSocketConnection

from .recording import RecordingChannel, async_test, open_connection, settle

CONNECTING, OPEN, CLOSING, CLOSED = ConnectionState


def new_hub() -> Hub:
    hub = Hub()
    hub.bind(asyncio.get_running_loop())
    return hub


def assert_gone(hub: Hub, ws: WebSocketConnection, *rooms: str) -> None:
    """`ws` is in neither the registry nor any room."""
    assert ws.id not in hub and hub.get(ws.id) is None
    assert ws.id not in hub.ids() and ws.id not in hub.ids(ws.path)
    for room in rooms:
        assert ws.id not in hub.members(room)
    assert ws.rooms == set()


# -- the registry -----------------------------------------------------------------------------
@async_test
async def test_accept_registers_the_connection_by_id_and_by_path() -> None:
    hub = new_hub()
    channel = RecordingChannel()
    ws = WebSocketConnection(channel, hub, path="/chat/1")
    assert len(hub) == 0 and ws.id not in hub  # not before accept
    await ws.accept()
    assert len(hub) == 1 and await hub.count() == 1
    assert ws.id in hub and hub.get(ws.id) is ws
    assert hub.ids() == [ws.id] and hub.ids("/chat/1") == [ws.id] and hub.ids("/chat/2") == []
    assert Hub.holding(ws.id) is hub


@async_test
async def test_join_and_leave_keep_room_membership_on_both_sides() -> None:
    hub = new_hub()
    a, _ = await open_connection(hub)
    b, _ = await open_connection(hub)
    await a.join("red")
    await b.join("red")
    await a.join("blue")
    assert sorted(hub.members("red")) == sorted([a.id, b.id]) and hub.members("blue") == [a.id]
    assert a.rooms == {"red", "blue"}
    await a.leave("red")
    await a.leave("never joined")
    assert hub.members("red") == [b.id] and a.rooms == {"blue"}
    await a.leave("blue")
    assert hub.members("blue") == []


async def _server_close(ws: WebSocketConnection, channel: RecordingChannel, hub: Hub) -> None:
    await ws.close(1000)


async def _server_close_answered(ws: WebSocketConnection, channel: RecordingChannel, hub: Hub) -> None:
    await ws.close(1000)
    channel.ended(1000, "")


async def _peer_close(ws: WebSocketConnection, channel: RecordingChannel, hub: Hub) -> None:
    channel.ended(1000, "")


async def _dead_peer(ws: WebSocketConnection, channel: RecordingChannel, hub: Hub) -> None:
    channel.ended(1006, "connection lost")


async def _listener_call(ws: WebSocketConnection, channel: RecordingChannel, hub: Hub) -> None:
    ws.disconnected(1001, "")


async def _fail_1008(ws: WebSocketConnection, channel: RecordingChannel, hub: Hub) -> None:
    channel.buffered = channel.max_send_buffer + 1
    await hub.broadcast(ws.path, "over the limit")


async def _fail_1009(ws: WebSocketConnection, channel: RecordingChannel, hub: Hub) -> None:
    channel.fail(1009, "message too big")


async def _hub_close(ws: WebSocketConnection, channel: RecordingChannel, hub: Hub) -> None:
    assert await hub.close(ws.id, 4000) is True


async def _hub_close_all(ws: WebSocketConnection, channel: RecordingChannel, hub: Hub) -> None:
    await hub.close_all(1001)


async def _hub_close_sync(ws: WebSocketConnection, channel: RecordingChannel, hub: Hub) -> None:
    hub.close_sync(ws.id, 1001)
    await settle()


async def _detach(ws: WebSocketConnection, channel: RecordingChannel, hub: Hub) -> None:
    ws.detach()


CLOSE_PATHS: dict[str, Callable[[WebSocketConnection, RecordingChannel, Hub], Awaitable[None]]] = {
    "server close": _server_close, "server close answered": _server_close_answered,
    "peer close": _peer_close, "dead peer": _dead_peer, "ws.disconnected": _listener_call,
    "fail 1008": _fail_1008, "fail 1009": _fail_1009, "hub.close": _hub_close,
    "hub.close_all": _hub_close_all, "hub.close_sync": _hub_close_sync, "detach": _detach,
}


@pytest.mark.parametrize("path", list(CLOSE_PATHS))
@async_test
async def test_every_close_path_unregisters_and_leaves_every_room(path: str) -> None:
    hub = new_hub()
    ws, channel = await open_connection(hub, path="/p", max_send_buffer=100)
    other, _ = await open_connection(hub, path="/p")
    for room in ("a", "b"):
        await ws.join(room)
        await other.join(room)
    await CLOSE_PATHS[path](ws, channel, hub)
    await settle()
    assert_gone(hub, ws, "a", "b")
    if path == "hub.close_all":
        assert_gone(hub, other, "a", "b")
    else:
        assert len(hub) == 1 and hub.ids("/p") == [other.id]
        assert hub.members("a") == [other.id] and hub.members("b") == [other.id]
        await other.close()
    assert len(hub) == 0 and hub.ids("/p") == [] and hub.members("a") == [] and hub.members("b") == []


@async_test
async def test_a_server_close_leaves_the_registry_and_rooms_before_the_close_callbacks_run() -> None:
    hub = new_hub()
    ws, _ = await open_connection(hub)
    await ws.join("room")
    seen: list[object] = []

    async def on_close() -> None:
        seen.extend([ws.id in hub, hub.members("room"), await hub.broadcast("/p", "late"),
                     await hub.send_to(ws.id, "late")])

    ws.on_close(on_close)
    await ws.close()
    assert seen == [False, [], 0, False]


@pytest.mark.parametrize("how", ["server close", "peer close", "dead peer", "fail"])
@async_test
async def test_join_on_a_closed_connection_raises_invalid_state(how: str) -> None:
    hub = new_hub()
    ws, channel = await open_connection(hub)
    if how == "server close":
        await ws.close()
    elif how == "peer close":
        channel.ended(1000, "")
    elif how == "dead peer":
        channel.ended(1006, "")
    else:
        channel.fail(1008, "")
    with pytest.raises(InvalidState, match="not open") as info:
        await ws.join("room")
    assert isinstance(info.value, RuntimeError)
    assert hub.members("room") == [] and ws.rooms == set()


@async_test
async def test_join_before_accept_raises_invalid_state() -> None:
    hub = new_hub()
    ws = WebSocketConnection(RecordingChannel(), hub, path="/p")
    with pytest.raises(InvalidState):
        await ws.join("room")
    assert hub.members("room") == []


# -- deliveries ---------------------------------------------------------------------------------
@async_test
async def test_broadcast_reaches_every_connection_on_the_concrete_path_and_counts_them() -> None:
    hub = new_hub()
    a, ca = await open_connection(hub, path="/room/1")
    b, cb = await open_connection(hub, path="/room/1")
    c, cc = await open_connection(hub, path="/room/2")
    assert await hub.broadcast("/room/1", "hi") == 2
    assert await hub.broadcast("/nobody", "hi") == 0
    assert ca.messages() == ["hi"] and cb.messages() == ["hi"] and cc.messages() == []


@async_test
async def test_a_broadcast_encodes_the_frame_once_for_every_receiver() -> None:
    hub = new_hub()
    _, ca = await open_connection(hub)
    _, cb = await open_connection(hub)
    await hub.broadcast("/p", {"big": "x" * 1000})
    assert ca.frames[0] is cb.frames[0]


@pytest.mark.parametrize("state", [CONNECTING, CLOSING, CLOSED])
@async_test
async def test_a_broadcast_skips_and_does_not_count_a_connection_that_is_not_open(state: ConnectionState) -> None:
    hub = new_hub()
    a, ca = await open_connection(hub)
    b, cb = await open_connection(hub)
    await a.join("room")
    await b.join("room")
    cb.protocol.state = state  # the road moved on and has not reported it yet
    cb.buffered = 10**9  # not open wins over the 1008 rule
    assert await hub.broadcast("/p", "x") == 1
    assert await hub.publish("room", "y") == 1
    hub.broadcast_sync("/p", "z")
    # send_to is a fan-out to one: the same rule, False (it raised through send_nowait once)
    assert await hub.send_to(b.id, "w") is False
    hub.send_to_sync(b.id, "w")
    assert ca.messages() == ["x", "y", "z"] and cb.events == []


@async_test
async def test_a_broadcast_fails_only_the_client_not_reading_and_does_not_count_it() -> None:
    hub = new_hub()
    a, ca = await open_connection(hub, max_send_buffer=100)
    b, cb = await open_connection(hub, max_send_buffer=100)
    cb.buffered = 101
    assert await hub.broadcast("/p", "x") == 1
    assert ca.messages() == ["x"]
    assert [e[:2] for e in cb.events] == [("close", 1008)]
    assert b.close_code == 1008 and b.id not in hub
    assert await hub.broadcast("/p", "y") == 1


@async_test
async def test_broadcast_and_publish_exclude_by_id_by_connection_or_by_an_iterable() -> None:
    hub = new_hub()
    conns = [await open_connection(hub) for _ in range(3)]
    (a, ca), (b, cb), (c, cc) = conns
    for ws, _ in conns:
        await ws.join("room")
    assert await hub.broadcast("/p", "1", exclude=a.id) == 2
    assert await hub.broadcast("/p", "2", exclude=b) == 2
    assert await hub.publish("room", "3", exclude=[a, c.id]) == 1
    assert await a.broadcast("4", exclude=a) == 2
    assert ca.messages() == ["2"]
    assert cb.messages() == ["1", "3", "4"]
    assert cc.messages() == ["1", "2", "4"]


@async_test
async def test_publish_reaches_only_the_members_of_the_room() -> None:
    hub = new_hub()
    a, ca = await open_connection(hub)
    b, cb = await open_connection(hub, path="/other")
    _, cc = await open_connection(hub)
    await a.join("room")
    await b.join("room")
    assert await hub.publish("room", b"\x01") == 2
    assert await hub.publish("empty", "x") == 0
    assert ca.messages() == [b"\x01"] and cb.messages() == [b"\x01"] and cc.messages() == []


@async_test
async def test_send_to_returns_false_for_an_unknown_or_closed_connection() -> None:
    hub = new_hub()
    ws, channel = await open_connection(hub)
    assert await hub.send_to(ws.id, "x") is True
    assert await hub.send_to("no-such-id", "x") is False
    channel.ended(1000, "")
    assert await hub.send_to(ws.id, "y") is False
    assert await hub.close(ws.id) is False
    assert channel.messages() == ["x"]


# -- close_all ------------------------------------------------------------------------------------
@async_test
async def test_close_all_closes_every_connection_and_runs_each_close_callback_once() -> None:
    hub = new_hub()
    conns = [await open_connection(hub, path=f"/p/{n}") for n in range(3)]
    runs: dict[str, int] = {}
    for ws, _ in conns:
        await ws.join("room")

        async def on_close(ws: WebSocketConnection = ws) -> str:
            runs[ws.id] = runs.get(ws.id, 0) + 1
            return "shutting down"

        ws.on_close(on_close)
    await hub.close_all(1001, "bye")
    for ws, channel in conns:
        assert channel.events == [("message", 1, b"shutting down"), ("close", 1001, "bye", True)]
        assert ws.connection_state is CLOSING and ws.close_code == 1001
        channel.ended(1001, "")
    await hub.close_all(1001)  # nothing left to close
    await settle()
    assert runs == {ws.id: 1 for ws, _ in conns}
    assert len(hub) == 0 and hub.members("room") == [] and hub.ids() == []


@async_test
async def test_close_all_runs_the_close_callbacks_concurrently() -> None:
    hub = new_hub()
    conns = [await open_connection(hub) for _ in range(3)]
    started: list[str] = []
    everyone_started = asyncio.Event()
    for ws, _ in conns:

        async def on_close(ws: WebSocketConnection = ws) -> None:
            started.append(ws.id)
            if len(started) == len(conns):
                everyone_started.set()
            await everyone_started.wait()  # sequential callbacks would never get here

        ws.on_close(on_close)
    await asyncio.wait_for(hub.close_all(1001), 1)
    assert sorted(started) == sorted(ws.id for ws, _ in conns)
    assert all(channel.closes() == [(1001, "", True)] for _, channel in conns)


@async_test
async def test_close_all_still_closes_the_others_when_a_close_callback_raises() -> None:
    hub = new_hub()
    (a, ca), (b, cb) = [await open_connection(hub) for _ in range(2)]

    async def broken() -> None:
        raise ValueError("boom")

    a.on_close(broken)
    await hub.close_all(1012)
    assert ca.closes() == [(1012, "", True)] and cb.closes() == [(1012, "", True)]
    assert len(hub) == 0


# -- the *_sync twins -------------------------------------------------------------------------------
@async_test
async def test_sync_calls_on_the_loop_thread_act_at_once() -> None:
    hub = new_hub()
    ws, channel = await open_connection(hub)
    await ws.join("room")
    hub.send_to_sync(ws.id, "1")
    assert channel.messages() == ["1"]
    hub.broadcast_sync("/p", "2")
    hub.publish_sync("room", "3")
    assert channel.messages() == ["1", "2", "3"]
    hub.send_to_sync("missing", "ignored")
    hub.close_sync("missing")


@async_test
async def test_send_to_sync_and_broadcast_sync_from_another_thread_are_handed_to_the_loop() -> None:
    hub = new_hub()
    loop = asyncio.get_running_loop()
    a, ca = await open_connection(hub)
    b, cb = await open_connection(hub)
    await b.join("room")
    done = asyncio.Event()
    errors: list[BaseException] = []

    def worker() -> None:
        try:
            hub.send_to_sync(a.id, "to a")
            hub.broadcast_sync("/p", "to all", exclude=b.id)
            hub.publish_sync("room", "to room")
            hub.send_to_sync("missing", "ignored")
            hub.close_sync(b.id, 4001, "from a thread")
        except BaseException as exc:  # surfaced below
            errors.append(exc)
        finally:
            loop.call_soon_threadsafe(done.set)  # after every hand-off (the loop runs them in order)

    thread = threading.Thread(target=worker)
    thread.start()
    await asyncio.wait_for(done.wait(), 2)
    await settle()  # close_sync spawns the close
    thread.join(2)
    assert errors == []
    assert ca.messages() == ["to a", "to all"]
    assert cb.messages() == ["to room"] and cb.closes() == [(4001, "from a thread", True)]
    loop_thread = threading.get_ident()
    assert ca.threads == {loop_thread} and cb.threads == {loop_thread}  # never written from the worker
    assert b.id not in hub and a.id in hub


@async_test
async def test_an_unbound_hub_acts_at_once_on_sync_calls() -> None:
    hub = Hub()  # never bound: no loop to hand to
    ws, channel = await open_connection(hub)
    hub.broadcast_sync("/p", "now")
    hub.send_to_sync(ws.id, "also now")
    assert channel.messages() == ["now", "also now"]

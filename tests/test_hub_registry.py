"""The hub's registry part (`tether.hub.registry.Registry`) on its own: connections by id, path
and room, both sides of a membership, and what it tells the hub: a path's first connection,
an unknown connection, a room left by someone who was not in it. A path's or room's entry
exists only while it has members (the hub follows the topic exactly as long)."""

from __future__ import annotations

from tether import WebSocketConnection
from tether.hub import Hub
from tether.hub.registry import Registry

from .recording import RecordingChannel, async_test


async def connection(path: str) -> WebSocketConnection:
    return WebSocketConnection(RecordingChannel(), Hub(), path=path)  # not accepted: no hub records it


@async_test
async def test_add_and_remove_keep_the_id_and_path_entries_and_say_first_and_unknown() -> None:
    registry = Registry()
    a, b, c = await connection("/p"), await connection("/p"), await connection("/q")
    assert [registry.add(ws) for ws in (a, b, c)] == [True, False, True]
    assert registry.connections == {a.id: a, b.id: b, c.id: c}
    assert registry.paths == {"/p": {a.id: a, b.id: b}, "/q": {c.id: c}}
    assert registry.remove(a) is True and registry.remove(a) is False
    assert registry.paths == {"/p": {b.id: b}, "/q": {c.id: c}}
    assert registry.remove(c) is True
    assert registry.paths == {"/p": {b.id: b}} and list(registry.connections) == [b.id]


@async_test
async def test_enter_and_exit_keep_both_sides_of_a_membership() -> None:
    registry = Registry()
    a, b = await connection("/p"), await connection("/p")
    for ws in (a, b):
        registry.add(ws)
        registry.enter(ws, "room")
    registry.enter(a, "other")
    assert registry.rooms == {"room": {a.id: a, b.id: b}, "other": {a.id: a}}
    assert a.rooms == {"room", "other"}
    assert registry.exit(a, "other") is True and "other" not in registry.rooms and a.rooms == {"room"}
    assert registry.exit(a, "never joined") is False and registry.exit(a, "other") is False
    assert registry.exit(a, "room") is True and registry.rooms == {"room": {b.id: b}}
    assert registry.exit(b, "room") is True and registry.rooms == {} and b.rooms == set()

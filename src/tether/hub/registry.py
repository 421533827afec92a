"""The registry part of the hub: this node's open connections, by id, by concrete path and
by room. Bookkeeping only: it sends nothing, subscribes nothing and reports nothing (the hub
does those when `add`, `remove`, `enter` and `exit` say a path or room got its first member
or lost its last)."""

from __future__ import annotations

from typing import Any, Protocol

from ..channel import Channel

__all__ = ["Member", "Registry"]


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


class Registry:
    """This node's connections (see the module doc). The dicts are read directly by the hub;
    only these methods change them. A path's or room's dict exists while it has members."""

    def __init__(self) -> None:
        self.connections: dict[str, Member] = {}
        self.paths: dict[str, dict[str, Member]] = {}  # concrete path -> {id: connection}
        self.rooms: dict[str, dict[str, Member]] = {}  # room -> {id: connection}

    def add(self, ws: Member) -> bool:
        """Record an accepted connection by id and by path; True when it is the first
        connection on its path."""
        self.connections[ws.id] = ws
        peers = self.paths.get(ws.path)
        first = peers is None
        if peers is None:
            peers = self.paths[ws.path] = {}
        peers[ws.id] = ws
        return first

    def remove(self, ws: Member) -> bool:
        """Forget a connection by id and by path (its rooms are left with `exit`, one by
        one); False when it was not recorded."""
        if self.connections.pop(ws.id, None) is None:
            return False
        peers = self.paths.get(ws.path)
        if peers is not None:
            peers.pop(ws.id, None)
            if not peers:
                del self.paths[ws.path]
        return True

    def enter(self, ws: Member, room: str) -> None:
        """Make a recorded connection a member of `room` (on both sides: `ws.rooms` too)."""
        members = self.rooms.get(room)
        if members is None:
            members = self.rooms[room] = {}
        members[ws.id] = ws
        ws.rooms.add(room)

    def exit(self, ws: Member, room: str) -> bool:
        """Take a connection out of `room` (on both sides); False when it was not a member."""
        ws.rooms.discard(room)
        members = self.rooms.get(room)
        if members is None or members.pop(ws.id, None) is None:
            return False
        if not members:
            del self.rooms[room]
        return True

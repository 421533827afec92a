"""Room formats: how a room's messages look on the wire when its members speak a protocol of
their own over the hub (the live layer's rooms, `tether.live`).

A room without a format delivers what was published as it is (`tether.encoding`). A room
with one (`Hub.format_rooms(pattern, format)`) has each published value encoded by
`format.encode` and framed by `format.frame` once per message and node, with the message's
position in a history room (the offset is known only once the backplane numbered it), and
the same bytes go to every member, as for any other room.
"""

from __future__ import annotations

from typing import Any, Protocol

from ..backplane.history import Position

__all__ = ["RoomFormat"]


class RoomFormat(Protocol):
    """The wire form of a formatted room's messages (see the module doc)."""

    def encode(self, data: Any) -> bytes:
        """`data` as the bytes `frame` wraps (TypeError when it cannot be encoded)."""
        ...

    def frame(self, room: str, position: Position | None, encoded: bytes) -> bytes:
        """The text message members of `room` get for one message: `encoded` (what `encode`
        gave), with its `position` in a history room (None in a room without history)."""
        ...

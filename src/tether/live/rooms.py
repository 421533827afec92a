"""A live endpoint's rooms: what each declaration says (`LiveRoom`), and how their messages
look on the wire (`LiveFormat`, the hub's room format for them: `tether.hub.formats`).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from ..backplane.history import Position
from ..encoding import compact_json

__all__ = ["LiveRoom", "LiveFormat", "Hook"]

#: An app's hook: sync or async, called with the connection and the room's parameters.
Hook = Callable[..., Any]


class LiveRoom:
    """The declaration of rooms named like `pattern` (`live.room(...)`): whether they keep
    history, track presence and take clients' publishes; and the app's hooks. Usable as a
    decorator: the function becomes the join hook (`authorize`)."""

    def __init__(self, pattern: str, *, history: int | None, history_ttl: float | None, presence: bool,
                 client_publish: bool) -> None:
        self.pattern = pattern
        self.history = history
        self.history_ttl = history_ttl
        self.presence = presence
        self.client_publish = client_publish
        #: `hook(conn, **params)` authorizing a join; it returns the member's presence info
        #: (None: the client's own), or raises `Refuse`
        self.authorize: Hook | None = None
        #: `hook(conn, **params, data=...)` checking a client's publish; returns the data to publish
        self.check_publish: Hook | None = None

    @property
    def keeps_history(self) -> bool:
        return self.history is not None or self.history_ttl is not None

    def __call__(self, hook: Hook) -> Hook:
        self.authorize = hook
        return hook


class LiveFormat:
    """A live room's messages as the protocol's `message` push: the data as JSON, with the
    offset and epoch in a room with history (docs/live-protocol.md)."""

    def encode(self, data: Any) -> bytes:
        return compact_json(data).encode("utf-8")

    def frame(self, room: str, position: Position | None, encoded: bytes) -> bytes:
        head = b'{"push":"message","room":' + compact_json(room).encode("utf-8")
        if position is not None:
            head += b',"offset":%d,"epoch":%s' % (position.offset, compact_json(position.epoch).encode("utf-8"))
        return head + b',"data":' + encoded + b"}"

"""The presence part of the hub: who is in each room, with what info, and who is told.

This node's members' info is kept here (room -> {connection id: info as JSON text}); in a
cluster each join and leave is also written through the backplane, which answers `presence`
for every node. Listeners (`on_presence`) hear each change once in the cluster: on the node
where it happened, or, for the members of a node that crashed, on the node that removed them
(the backplane calls `gone`).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from typing import Any

from ..tasks import call_listeners
from .routing import ClusterRouter

__all__ = ["Presence", "PresenceListener"]

logger = logging.getLogger("tether")

#: `listener(room, joined, left)`: {connection_id: info} of who joined and who left `room`.
PresenceListener = Callable[[str, dict[str, Any], dict[str, Any]], Any]


class Presence:
    """Room presence (see the module doc); it reaches the cluster through `router`."""

    def __init__(self, router: ClusterRouter) -> None:
        self._router = router
        #: room -> {connection id: info JSON}, this node's members
        self.local: dict[str, dict[str, str]] = {}
        self._listeners: list[PresenceListener] = []

    def on_presence(self, listener: PresenceListener) -> PresenceListener:
        """Call `listener(room, joined, left)` on every change (see `tether.hub.Hub.on_presence`)."""
        self._listeners.append(listener)
        return listener

    def joined(self, room: str, connection_id: str, info: Any, info_json: str) -> None:
        """A member of this node joined `room` with `info` (`info_json` is it as JSON text):
        record it, write it to the cluster, tell the listeners."""
        self.local.setdefault(room, {})[connection_id] = info_json
        if self._router.cluster:
            self._router.backplane.presence_join(room, connection_id, info_json)
        self._changed(room, {connection_id: info}, {})

    def left(self, room: str, connection_id: str) -> None:
        """A member of this node left `room`: forget it, in the cluster too, tell the listeners."""
        present = self.local.get(room, {})
        info_json = present.pop(connection_id, "null")
        if not present:
            self.local.pop(room, None)
        if self._router.cluster:
            self._router.backplane.presence_leave(room, connection_id)
        self._changed(room, {}, {connection_id: json.loads(info_json)})

    def gone(self, room: str, gone: dict[str, str]) -> None:
        """Members of a crashed node, removed from `room` by this node (the backplane's
        `members_gone` callback): tell the listeners."""
        self._changed(room, {}, {key: json.loads(value) for key, value in gone.items()})

    async def of(self, room: str) -> dict[str, Any]:
        """{connection_id: info} for every member of `room` on every node."""
        router = self._router
        entries = await router.backplane.presence(room) if router.cluster else self.local.get(room, {})
        return {key: json.loads(value) for key, value in entries.items()}

    def snapshot(self) -> dict[str, dict[str, str]]:
        """A copy of this node's entries, for a backplane to write again after an outage."""
        return {room: dict(members) for room, members in self.local.items()}

    def _changed(self, room: str, joined: dict[str, Any], left: dict[str, Any]) -> None:
        call_listeners(self._listeners, f"presence listener for room {room!r}", room, joined, left)

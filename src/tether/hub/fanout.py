"""The one fan-out loop of the hub: a message encoded once, handed to many connections.

Every delivery to this node's connections goes through `fan_out`: `broadcast` (a path's
connections), `publish` (a room's members), `send_to` (one connection: a fan-out to one),
what other nodes of a cluster send here, and the awaited deliveries of "wait" mode (the
`slow_client` setting, see `tether.channel`). It builds the frame once and gives the same
bytes to every connection it does not skip.

Nobody waits in the loop itself. A delivery that may wait passes a `Waits` list: a member
over its buffer limit is put there as its pending `deliver_when_drained`, and the caller
awaits them all together with `delivered`, after whatever else it has to do first (the hub
sends the cluster's envelope before waiting).
"""

from __future__ import annotations

import asyncio
from collections.abc import Collection, Coroutine, Iterable, Set
from typing import Any, Protocol, TypeAlias, cast

from ..protocol import encode_frame
from .registry import Member

__all__ = ["Identified", "Exclude", "NOBODY", "Waits", "excluded", "fan_out", "delivered"]


class Identified(Protocol):
    """Anything with a connection id: a core `WebSocket`, a style's face on one."""

    @property
    def id(self) -> str: ...


#: Whom a broadcast or publish skips: nobody (None), one connection or its id, or an
#: iterable of connections and ids.
Exclude: TypeAlias = str | Identified | Iterable[str | Identified] | None

#: The ids of nobody (what `excluded(None)` is).
NOBODY: frozenset[str] = frozenset()

#: The pending deliveries of an awaited fan-out to members over their limit ("wait" mode).
Waits: TypeAlias = list[Coroutine[Any, Any, bool]]


def _id_of(item: str | Identified) -> str:
    return item if isinstance(item, str) else item.id


def excluded(exclude: Exclude) -> Set[str]:
    """The ids `exclude` names (see `Exclude`)."""
    if exclude is None:
        return NOBODY
    if isinstance(exclude, str):
        return {exclude}
    if hasattr(exclude, "id"):  # one connection (a WebSocket is iterable too: its scope's keys)
        return {cast("Identified", exclude).id}
    return {_id_of(item) for item in exclude}


def fan_out(members: Collection[Member], opcode: int, payload: bytes, skip: Set[str] = NOBODY,
            waits: Waits | None = None) -> int:
    """Hand the message (`opcode`, `payload`) to every member whose id is not in `skip`, as
    one frame built once; returns how many queued it.

    Without `waits`, nobody waits: each member's `channel.deliver` queues it, or fails a
    member over its limit (1008). With `waits` (an awaited delivery in "wait" mode), each
    member's `channel.deliver_or_wait` queues it, and a member over `max_send_buffer` is
    appended to `waits` as its `deliver_when_drained` (not counted here: `delivered` counts
    it once awaited). `members` is copied first (less those skipped): a member failed on
    the way leaves the registry while the loop runs."""
    if not members:
        return 0
    frame = encode_frame(opcode, payload)
    sent = 0
    for ws in [member for member in members if member.id not in skip] if skip else list(members):
        if waits is None:
            if ws.channel.deliver(frame, opcode, payload):
                sent += 1
        else:
            channel = ws.channel
            queued = channel.deliver_or_wait(frame, opcode, payload)
            if queued is None:
                waits.append(channel.deliver_when_drained(frame, opcode, payload))
            elif queued:
                sent += 1
    return sent


async def delivered(waits: Waits) -> int:
    """Await the pending deliveries `fan_out` put in `waits`, all together (each gives up on
    its member after that member's `send_timeout`, failing it with 1008); returns how many
    queued the message."""
    if not waits:
        return 0
    if len(waits) == 1:  # the usual case: no task
        return int(await waits[0])
    return sum(await asyncio.gather(*waits))

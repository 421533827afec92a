"""History rooms, as a backplane keeps them: positions, limits, the wire form of a kept
message, and the in-memory store of the local and `memory://` backplanes.

A history room's messages are numbered: each gets the room's next **offset** (1, 2, 3...)
within its **epoch**, a string that changes whenever the room's history is lost (a new
process for the in-memory store; Redis restarted empty or a key evicted). A `Position` is
(epoch, offset): the last message given a number.

A kept message travels on the room's KEPT topic (`tether.backplane.topic`) as
`<offset> <epoch> <envelope>`: the decimal offset, a space, the epoch (no spaces), a space,
then the PUBLISH envelope (`tether.backplane.envelope`) as the publisher encoded it. Redis
builds this in its publish script; `encode_kept` and `decode_kept` are the one definition.
"""

from __future__ import annotations

import math
import os
import time
from collections import OrderedDict, deque
from collections.abc import Callable
from dataclasses import dataclass

__all__ = ["Position", "NOWHERE", "HistoryLimits", "Stored", "encode_kept", "decode_kept", "new_epoch", "MemoryHistory"]


@dataclass(frozen=True, slots=True)
class Position:
    """Where a history room is: the `offset` of its last numbered message, in `epoch`."""

    epoch: str
    offset: int


#: The position of a room with no history yet (no epoch, offset 0): a client that holds it
#: has seen nothing, so the room's whole history, if it is all still there, is what it missed.
NOWHERE = Position("", 0)


@dataclass(frozen=True, slots=True)
class HistoryLimits:
    """How much of a room's history is kept: at most `size` messages, each for at most
    `ttl` seconds (None: as long as the size allows)."""

    size: int
    ttl: float | None = None

    def __post_init__(self) -> None:
        if self.size < 1:
            raise ValueError(f"history size must be at least 1, not {self.size}")
        if self.ttl is not None and self.ttl <= 0:
            raise ValueError(f"history ttl must be positive (seconds), not {self.ttl}")


@dataclass(frozen=True, slots=True)
class Stored:
    """One kept message: its offset and its PUBLISH envelope."""

    offset: int
    envelope: bytes


def new_epoch() -> str:
    """A fresh epoch: 8 random bytes in hex."""
    return os.urandom(8).hex()


def encode_kept(offset: int, epoch: str, envelope: bytes) -> bytes:
    """The message a history room's topic carries (see the module doc)."""
    return b"%d %s %s" % (offset, epoch.encode("ascii"), envelope)


def decode_kept(data: bytes) -> tuple[int, str, bytes]:
    """(offset, epoch, envelope) of a kept message; ValueError when it is not one."""
    head, space, rest = data.partition(b" ")
    epoch, space2, envelope = rest.partition(b" ")
    if not (space and space2 and head.isdigit() and epoch):
        raise ValueError("not a kept message (<offset> <epoch> <envelope>)")
    return int(head), epoch.decode("ascii"), envelope


class _Room:
    __slots__ = ("epoch", "offset", "entries")

    def __init__(self) -> None:
        self.epoch = new_epoch()
        self.offset = 0
        self.entries: deque[tuple[float, Stored]] = deque()  # (expiry time, message), oldest first


class MemoryHistory:
    """History rooms held in this process, each bounded by its limits: the size at every
    append, the age at every append and read. A room whose every message expired is
    forgotten (the least recently written one is looked at on each append), and starts a new
    epoch when written again, so what a client holds can never be mistaken for it."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._rooms: OrderedDict[str, _Room] = OrderedDict()  # least recently written first
        self._clock = clock

    def append(self, room: str, envelope: bytes, limits: HistoryLimits) -> tuple[str, int]:
        """Give the message the room's next offset and keep it; returns (epoch, offset)."""
        rooms = self._rooms
        state = rooms.get(room)
        if state is None:
            state = rooms[room] = _Room()
        else:
            rooms.move_to_end(room)
        state.offset += 1
        now = self._clock()
        state.entries.append((now + limits.ttl if limits.ttl is not None else math.inf,
                              Stored(state.offset, envelope)))
        while len(state.entries) > limits.size:
            state.entries.popleft()
        oldest_name, oldest = next(iter(rooms.items()))
        if oldest is not state and not self._expire(oldest, now):
            del rooms[oldest_name]
        return state.epoch, state.offset

    def read(self, room: str, since: int | None, limit: int | None) -> tuple[Position, list[Stored]]:
        """The room's position and its kept messages with an offset over `since` (all when
        None), oldest first, at most `limit` of them (the oldest). A room never written (or
        forgotten) is at `NOWHERE`."""
        state = self._rooms.get(room)
        if state is None or not self._expire(state, self._clock()):
            self._rooms.pop(room, None)
            return NOWHERE, []
        after = 0 if since is None else since
        found = [stored for _, stored in state.entries if stored.offset > after]
        return Position(state.epoch, state.offset), found if limit is None else found[:max(0, limit)]

    def __len__(self) -> int:
        """How many rooms it holds."""
        return len(self._rooms)

    @staticmethod
    def _expire(state: _Room, now: float) -> int:
        """Drop the room's expired messages; returns how many are left."""
        entries = state.entries
        while entries and entries[0][0] <= now:
            entries.popleft()
        return len(entries)

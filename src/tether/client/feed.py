"""What the live client (`tether.client.live`) hands the application from one room, and the
bookkeeping that keeps it exact.

Events, in the order they happened on the wire:

- `Joined(recovered, position, presence, rejoin)`: after each successful join, the first
  and every rejoin. It comes *before* the messages the server replayed for that join (they
  arrive before the join's reply and are held until it).
- `Message(data, offset, epoch)`: a published message; `offset`/`epoch` are None in a room
  without history.
- `Lost(reason, dropped)`: messages may be missing here: the server's `lost` push, or
  (`reason` "queue_full") messages of a room without history that the client dropped
  because the application did not read them in time (`dropped` counts them).

A `Feed` is the state of one room: its `position` (the epoch and offset of the last
message queued; sent as `since` on every rejoin), `recovered` and `presence` as of the last
join, presence then kept current from the diffs, and a queue of events bounded to
`max_queue` messages. Pushes that arrive while a join is in flight (replayed messages, and
diffs or losses that may be newer than the reply's snapshot) are held and applied, in order,
after the reply: diffs are idempotent, so one the snapshot already holds changes nothing.
Rules:

- **No duplicates.** A message whose offset is not past `position` (same epoch) is dropped.
  After a join the base is the `since` it sent when the reply says `recovered` (the replayed
  messages are exactly what came after it), else the reply's position (messages up to it
  are the past, which the application reloads, e.g. with `Room.history`). After a `lost`
  push the next message is taken whatever its offset: the server reports offsets that went
  back (a history restored from an older copy) that way, and then goes on from there.
- **A full queue.** In a room with history, a message that finds the queue full is not
  queued and the feed falls *behind*: later messages are not queued either (no gap inside
  the queue), and once the application has read the queue down to half, `wants_resync`
  asks the client to join the room again from `position`, which replays what was skipped
  (`Joined(recovered=True)`), or says `recovered=False` when the history no longer reaches
  back. In a room without history the skipped messages are counted and reported by one
  `Lost("queue_full", dropped)` at the gap, as soon as there is room again.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, NamedTuple

from ..backplane.history import Position

__all__ = ["Position", "Message", "Joined", "Lost", "Event", "History", "Feed", "parse_position",
           "position_json"]


@dataclass(frozen=True, slots=True)
class Message:
    """A message of `room`: its `data`, and `offset`/`epoch` in a room with history."""

    room: str
    data: Any
    offset: int | None = None
    epoch: str | None = None


@dataclass(frozen=True, slots=True)
class Joined:
    """A (re)join of `room` succeeded: `recovered` (nothing was missed since the position
    it rejoined from), the room's `position` and `presence` as the reply gave them, and
    `rejoin` (False for the first join)."""

    room: str
    recovered: bool
    position: Position | None
    presence: dict[str, Any] = field(default_factory=dict)
    rejoin: bool = False


@dataclass(frozen=True, slots=True)
class Lost:
    """Messages of `room` may be missing (see the module doc)."""

    room: str
    reason: str
    dropped: int = 0


Event = Joined | Message | Lost


class History(NamedTuple):
    """What `Room.history` read: the room's `position` and the kept `messages`, oldest first."""

    position: Position | None
    messages: list[Message]


def parse_position(value: Any) -> Position | None:
    """A Position from the wire's `{"epoch", "offset"}` (or a Position, or an (epoch, offset)
    pair); None for None."""
    if value is None or isinstance(value, Position):
        return value
    if isinstance(value, Mapping):
        return Position(str(value["epoch"]), int(value["offset"]))
    epoch, offset = value
    return Position(str(epoch), int(offset))


def position_json(position: Position) -> dict[str, Any]:
    return {"epoch": position.epoch, "offset": position.offset}


class Feed:
    """One room's position, presence and event queue (see the module doc)."""

    def __init__(self, room: str, max_queue: int, since: Position | None = None) -> None:
        if max_queue < 1:
            raise ValueError(f"max_queue must be at least 1, not {max_queue}")
        self.room = room
        self.max_queue = max_queue
        self.position = since
        self.recovered = False
        self.presence: dict[str, Any] = {}
        self.joins = 0
        self.lost = 0
        self.joining = False
        self.behind = False
        self._since: Position | None = None
        self._held: list[Mapping[str, Any]] = []
        self._events: deque[Event] = deque()
        self._queued = 0  # Messages in _events (what max_queue bounds)
        self._dropped = 0  # messages of a room without history dropped since the last Lost
        self._rebase = False  # after a `lost` push: the next offset is taken even if not past
        self._readable = asyncio.Event()
        self._ended = False
        self._error: BaseException | None = None

    # -- the connection's side -------------------------------------------------------------------
    def begin_join(self) -> Position | None:
        """A join is being sent: hold the room's pushes until its reply (a replay is at most
        the server's `max_recover` messages). Returns the `since` to send (None: from nothing)."""
        self.joining, self.behind, self._rebase = True, False, False
        self._held.clear()
        self._since = self.position
        return self.position

    def join_failed(self) -> None:
        self.joining = False
        self._held.clear()

    def joined(self, recovered: bool, position: Position | None, presence: Mapping[str, Any] | None) -> Joined:
        """The join's reply: queue the Joined event, then apply the pushes held meanwhile."""
        self.joining = False
        self.joins += 1
        self.recovered = recovered
        self.presence = dict(presence or {})
        self.position = self._since if recovered else position
        event = Joined(self.room, recovered, position, dict(self.presence), self.joins > 1)
        self._put(event)
        held, self._held = self._held, []
        for push in held:
            self._apply(push)
        here = self.position
        if position is not None and not self.behind and (
                here is None or (here.epoch == position.epoch and position.offset > here.offset)):
            self.position = position
        return event

    def push(self, push: Mapping[str, Any]) -> None:
        """A `message`, `presence` or `lost` push for this room (held while joining)."""
        if self.joining:
            self._held.append(push)
        else:
            self._apply(push)

    def _apply(self, push: Mapping[str, Any]) -> None:
        kind = push.get("push")
        if kind == "message":
            self._accept(push)
        elif kind == "presence":
            joined, left = push.get("joined"), push.get("left")
            for member in left if isinstance(left, Mapping) else ():
                self.presence.pop(member, None)
            self.presence.update(joined if isinstance(joined, Mapping) else {})
        elif kind == "lost":
            self.lost += 1
            self._rebase = True
            self._put(Lost(self.room, str(push.get("reason", ""))))

    def end(self, error: BaseException | None = None) -> None:
        """No more events: the reader gets what is queued, then the end (or `error`)."""
        if not self._ended:
            self._ended, self._error = True, error
            self._readable.set()

    def _accept(self, push: Mapping[str, Any]) -> None:
        data, offset, epoch = push.get("data"), push.get("offset"), push.get("epoch")
        if isinstance(offset, int) and isinstance(epoch, str):
            here = self.position
            if here is not None and here.epoch == epoch and offset <= here.offset and not self._rebase:
                return  # seen already (a replay overlapping live messages, or the past)
            if self.behind or self._queued >= self.max_queue:
                self.behind = True  # recovered from `position` by a rejoin
                return
            self.position, self._rebase = Position(epoch, offset), False
            self._put(Message(self.room, data, offset, epoch))
        elif self._queued >= self.max_queue:
            self._dropped += 1
        else:
            self._put(Message(self.room, data))

    def _put(self, event: Event) -> None:
        if isinstance(event, Message):
            self._queued += 1
        elif len(self._events) >= 2 * self.max_queue:
            return  # a reader that never reads: joins and losses stay visible on the Room
        self._events.append(event)
        self._readable.set()

    # -- the application's side ----------------------------------------------------------------
    @property
    def wants_resync(self) -> bool:
        """Behind, and the queue read down to half: time to rejoin from `position`."""
        return self.behind and not self.joining and self._queued <= self.max_queue // 2

    def pending(self) -> int:
        """Events queued and not read yet."""
        return len(self._events)

    async def next(self) -> Event:
        """The next event; StopAsyncIteration after the end (or the error it ended with)."""
        while not self._events:
            if self._ended:
                if self._error is not None:
                    raise self._error
                raise StopAsyncIteration
            self._readable.clear()
            await self._readable.wait()
        event = self._events.popleft()
        if isinstance(event, Message):
            self._queued -= 1
            if self._dropped and self._queued < self.max_queue:
                self.lost += 1
                self._put(Lost(self.room, "queue_full", self._dropped))
                self._dropped = 0
        return event

"""The history part of the hub: the rooms that keep history, and how this node delivers them.

`HistoryKeeper` owns, for the history rooms with members on this node:
- the **position** of the last message delivered here: every node's numbered messages come
  back from the backplane (`delivered`), and each is delivered once, in offset order (the
  backplane sends each once; a read-back that overlaps what came meanwhile is deduplicated
  here, and offsets that go back — a history restored from an older copy — are a loss);
- the **catch-ups** of members that joined from a position (`catch_up`, `tether.hub.history`);
- the **repairs**: a message that comes after a gap (a subscription that missed some, an
  outage the backplane survived) is held while the missing ones are read from the history
  and delivered first; `resumed` (the backplane is back after an outage) starts one for every
  history room with members here;
- the **loss reports** (`on_loss`): when the missing messages cannot be read back whole (the
  epoch changed: the history was lost; or it was trimmed past them), and, after an outage,
  for every room without history that has members here, the listeners hear
  `(room, reason)` — the loss is never silent.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Set
from typing import Any

from ..backplane.envelope import decode
from ..backplane.history import NOWHERE, Position, Stored
from ..exceptions import InvalidState
from ..patterns import RoomPatterns
from ..protocol import OP_TEXT
from ..tasks import call_listeners, spawn
from .fanout import fan_out
from .formats import RoomFormat
from .history import Catchup, HistoryPolicy, HistoryRooms, KeptMessage, Recovery, recover
from .registry import Member, Registry
from .routing import ClusterRouter

__all__ = ["HistoryKeeper", "LossListener"]

logger = logging.getLogger("tether")

#: `listener(room, reason)`: messages of `room` may not have reached this node's members.
LossListener = Callable[[str, str], Any]

# A held message of a room under repair: (position, opcode, payload, exclude).
_Held = tuple[Position, int, bytes, Set[str]]


class HistoryKeeper:
    """The history rooms of one hub (see the module doc)."""

    def __init__(self, registry: Registry, router: ClusterRouter, formats: RoomPatterns[RoomFormat]) -> None:
        self.rooms = HistoryRooms()
        #: True once a room keeps history (until then publish never looks a room up)
        self.active = False
        self._registry = registry
        self._router = router
        self._formats = formats  # the rooms whose messages are framed with their position
        self._positions: dict[str, Position] = {}
        # The offset of the numbered message being fanned out now (None: anything else is,
        # e.g. a notification): what a catchup keeps a message with.
        self._delivering: int | None = None
        # room -> (offset, catchup) of members whose replay went past this node's position
        self._catching_up: dict[str, list[tuple[int, Catchup]]] = {}
        # room under repair -> the messages that came meanwhile, in order
        self._repairing: dict[str, list[_Held]] = {}
        self._loss_listeners: list[LossListener] = []
        # rooms told of a lost publish since they last delivered a message
        self._publishes_lost: set[str] = set()

    # -- declarations -----------------------------------------------------------------------------
    def declare(self, pattern: str, policy: HistoryPolicy) -> None:
        """Rooms named like `pattern` keep history by `policy`; InvalidState when a room it
        names already has members here (its messages travel on another topic)."""
        declared = HistoryRooms()
        declared.declare(pattern, policy)
        used = [room for room in self._registry.rooms if declared.policy(room) and self.rooms.policy(room) is None]
        if used:
            raise InvalidState(f"keep_history({pattern!r}) after room {used[0]!r} was joined: declare history "
                               "rooms before their first member joins")
        self.rooms.declare(pattern, policy)
        self.active = True

    def policy(self, room: str) -> HistoryPolicy | None:
        """The policy of a history room, None for any other."""
        return self.rooms.policy(room) if self.active else None

    async def read(self, room: str, since: int | None, limit: int | None) -> tuple[Position, list[KeptMessage]]:
        """A history room's position and kept messages (ValueError for another room)."""
        if self.policy(room) is None:
            raise ValueError(f"room {room!r} keeps no history (see Hub.keep_history)")
        position, stored = await self._router.history(room, since, limit)
        return position, [KeptMessage.of(entry) for entry in stored]

    # -- joining from a position ----------------------------------------------------------------------
    async def catch_up(self, ws: Member, room: str, since: Position, policy: HistoryPolicy,
                       join: Callable[[], Awaitable[None] | None]) -> Recovery:
        """Join `ws` to the history `room` (`join()` makes it a member) and catch it up from
        `since`: whole, or not at all (see `tether.hub.history`)."""
        catchup = Catchup(ws, lambda: self._delivering)
        waiting = join()
        members = self._registry.rooms[room]
        members[ws.id] = catchup  # live messages wait in it until the replay is done
        last = 0
        try:
            if waiting is not None:
                await asyncio.shield(waiting)
            now, stored = await self._router.history(room, since.offset, policy.max_recover + 1)
            recovered = recover(since, now, stored, policy.max_recover)
            last = catchup.finish(stored if recovered else [], since.offset if recovered else now.offset,
                                  lambda offset, opcode, payload: self._framed(room, Position(now.epoch, offset),
                                                                               opcode, payload))
        finally:
            if members.get(ws.id) is catchup:
                if self._positions.get(room, NOWHERE).offset >= last:
                    members[ws.id] = ws
                else:  # this node has not delivered up to `last` yet: the catchup drops what it had
                    self._catching_up.setdefault(room, []).append((last, catchup))
        return Recovery(recovered, Position(now.epoch, last))

    def forget(self, room: str) -> None:
        """The room's last member here left."""
        self._positions.pop(room, None)
        self._publishes_lost.discard(room)
        self._catching_up.pop(room, None)
        self._repairing.pop(room, None)

    # -- delivering -----------------------------------------------------------------------------------
    def delivered(self, room: str, position: Position, opcode: int, payload: bytes, exclude: Set[str]) -> None:
        """A history room's numbered message came back from the backplane: deliver it to the
        members here, in offset order and once; after a gap, repair first."""
        members = self._registry.rooms.get(room)
        if not members:
            return
        held = self._repairing.get(room)
        if held is not None:
            held.append((position, opcode, payload, exclude))
            return
        last = self._positions.get(room)
        if last is not None and last.epoch == position.epoch:
            if position.offset > last.offset + 1:
                self._repair(room, last, [(position, opcode, payload, exclude)])
                return
            if position.offset <= last.offset:  # the backplane never sends one twice: it went back
                self._lost(room, f"the offsets of room {room!r} went back from {last.offset} to {position.offset} "
                                 "(its history was restored from an older copy)")
        elif last is not None:
            self._lost(room, f"the history of room {room!r} was lost (epoch {last.epoch} -> {position.epoch})")
        self._positions[room] = position
        self._publishes_lost.discard(room)
        self._delivering = position.offset
        try:
            fan_out(members.values(), *self._framed(room, position, opcode, payload), exclude)
        finally:
            self._delivering = None
        if room in self._catching_up:
            self._caught_up(room, members, position.offset)

    def _framed(self, room: str, position: Position, opcode: int, payload: bytes) -> tuple[int, bytes]:
        """The message as the room's members get it: framed with its position by the room's
        format (`tether.hub.formats`), or as it is."""
        room_format = self._formats.get(room) if self._formats else None
        if room_format is None:
            return opcode, payload
        return OP_TEXT, room_format.frame(room, position, payload)

    def _caught_up(self, room: str, members: dict[str, Member], offset: int) -> None:
        """Give their place back to the members a catchup stood for, once this node has
        delivered up to where each of them is."""
        waiting = []
        for last, catchup in self._catching_up.pop(room):
            if members.get(catchup.id) is not catchup:
                continue  # it left meanwhile
            if offset >= last:
                members[catchup.id] = catchup.ws
            else:
                waiting.append((last, catchup))
        if waiting:
            self._catching_up[room] = waiting

    # -- repairing ----------------------------------------------------------------------------------------
    def resumed(self) -> None:
        """The backplane is back after an outage: read back what every history room with
        members here missed; report a loss for every other room with members here."""
        for room in list(self._registry.rooms):
            last = self._positions.get(room)
            if self.policy(room) is None:
                self._lost(room, "the backplane was unreachable: messages published on other nodes meanwhile "
                                 "did not reach this one")
            elif room in self._repairing:
                continue
            elif last is not None:
                self._repair(room, last, [])
            else:  # a failed read-back forgot it (or nothing was delivered here): nothing to read from
                self._lost(room, f"the backplane was unreachable and this node has no position in room {room!r} "
                                 "to read back from")

    def publish_lost(self, room: str, why: str) -> None:
        """A message published into `room` from this node could not be kept (the backplane
        says why): nobody got it, and the members here hear of the loss — once until the
        room delivers again (an outage loses every publish)."""
        if room in self._publishes_lost or room not in self._registry.rooms:
            return
        self._publishes_lost.add(room)
        self._lost(room, f"a message published into room {room!r} on this node was lost: {why}")

    def _repair(self, room: str, last: Position, held: list[_Held]) -> None:
        self._repairing[room] = held
        spawn(self._read_back(room, last))

    async def _read_back(self, room: str, last: Position) -> None:
        """Deliver what `room` missed after `last` from its history, then the messages held
        meanwhile; report a loss when the history cannot give it whole (and deliver what it
        still holds of the same epoch, then go on from there)."""
        now: Position | None
        try:
            now, stored = await self._router.history(room, last.offset, None)
        except Exception as exc:  # the backplane is down again: what was missed is lost
            now, stored = None, []
            self._lost(room, f"the history of room {room!r} could not be read: {exc}")
        went_back = now is not None and now.epoch == last.epoch and now.offset < last.offset
        whole = now is not None and now.epoch == last.epoch and (
            now.offset == last.offset or (bool(stored) and stored[0].offset == last.offset + 1))
        if went_back and now is not None:
            self._lost(room, f"the offsets of room {room!r} went back from {last.offset} to {now.offset} "
                             "(its history was restored from an older copy)")
        elif now is not None and not whole:
            self._lost(room, f"the history of room {room!r} no longer holds what this node missed")
        held = self._repairing.pop(room, None)
        if held is None:
            return  # the room's last member here left meanwhile
        if went_back and now is not None:
            self._positions[room] = now  # reported: go on from the history's own position
        elif not whole:
            self._positions.pop(room, None)  # reported: go on from what comes next
            if now is None or now.epoch != last.epoch:
                stored = []
        for entry in stored:
            self._deliver_stored(room, last.epoch, entry)
        for position, opcode, payload, exclude in held:
            current = self._positions.get(room)
            if current is None or current.epoch != position.epoch or position.offset > current.offset:
                self.delivered(room, position, opcode, payload, exclude)  # else the read held it already

    def _deliver_stored(self, room: str, epoch: str, entry: Stored) -> None:
        envelope = decode(entry.envelope)
        self.delivered(room, Position(epoch, entry.offset), envelope.opcode, envelope.payload, envelope.exclude)

    # -- loss reports ---------------------------------------------------------------------------------------
    def on_loss(self, listener: LossListener) -> LossListener:
        """Call `listener(room, reason)` (sync or async) when messages of `room` may not have
        reached this node's members (see the module doc). Usable as a decorator."""
        self._loss_listeners.append(listener)
        return listener

    def _lost(self, room: str, reason: str) -> None:
        logger.warning("room %s: %s", room, reason)
        call_listeners(self._loss_listeners, f"loss listener for room {room!r}", room, reason)

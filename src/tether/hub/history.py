"""The history part of the hub: which rooms keep history, where each is, and a join that
catches up from a position.

`HistoryRooms` holds the declarations (`Hub.keep_history(pattern, size, ttl, max_recover)`):
a room whose name matches a pattern (`chat:{name}`, or an exact name) keeps history. Its
messages travel on the room's KEPT topic, numbered by the backplane (offset within an
epoch, `tether.backplane.history`), and every node delivers them in offset order, as they
come back from the backplane (the publisher's node too). The hub remembers the position of
the last message it delivered in each history room with members here.

`Catchup` is a member joining with a position: until its replay is done it stands in the
room's member dict in place of the connection, and keeps (with their offsets) the live
messages the room gets meanwhile. `recover` decides — recovered, and exactly the messages
after the position; or not recovered, nothing replayed — and `Catchup.finish` hands the kept
live messages the replay did not hold to the connection. It gives its place back once this
node has delivered up to where the member is (the hub's `_deliver_kept`): until then it
drops what the replay already gave.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from ..backplane.envelope import decode
from ..backplane.history import HistoryLimits, Position, Stored
from ..patterns import RoomPatterns
from ..protocol import OP_TEXT, encode_frame
from .registry import Member

__all__ = ["HistoryPolicy", "HistoryRooms", "Recovery", "KeptMessage", "Catchup", "recover", "DEFAULT_MAX_RECOVER"]

#: A join that misses more than this many messages is not recovered (SPEC §6).
DEFAULT_MAX_RECOVER = 10_000


@dataclass(frozen=True, slots=True)
class HistoryPolicy:
    """How a history room keeps its messages, and how far a join may catch up."""

    limits: HistoryLimits
    max_recover: int = DEFAULT_MAX_RECOVER


@dataclass(frozen=True, slots=True)
class Recovery:
    """What a join with a position got: `recovered` True when every message after the
    position was delivered (in order, then live ones with no gap and no duplicate); False
    when none was (the epoch changed, the history no longer reaches back that far, more
    than `max_recover` were missing, or the room keeps no history). `position` is where the
    member is now: the offset of the last message delivered to it or, when nothing was, of
    the room's last message."""

    recovered: bool
    position: Position


@dataclass(frozen=True, slots=True)
class KeptMessage:
    """One message of a room's history (`Hub.history`): its offset, and the message as its
    members got it (str for text, bytes for binary)."""

    offset: int
    data: str | bytes

    @classmethod
    def of(cls, stored: Stored) -> KeptMessage:
        envelope = decode(stored.envelope)
        payload = envelope.payload
        return cls(stored.offset, payload.decode("utf-8") if envelope.opcode == OP_TEXT else payload)


class HistoryRooms(RoomPatterns[HistoryPolicy]):
    """The rooms that keep history (see the module doc)."""

    def policy(self, room: str) -> HistoryPolicy | None:
        """The policy of `room`, or None for a room without history."""
        return self.get(room)


def recover(since: Position, now: Position, stored: list[Stored], max_recover: int) -> bool:
    """Whether `stored` (what the history holds after `since.offset`, read when the room was
    at `now`) is exactly what a member at `since` missed. A member that has seen nothing
    (offset 0) missed the room's whole history, whatever its epoch; otherwise the epochs
    must be equal."""
    missing = now.offset - since.offset
    if missing < 0 or missing > max_recover:
        return False
    if since.offset and since.epoch != now.epoch:
        return False
    if missing == 0:
        return True
    return len(stored) >= missing and stored[0].offset == since.offset + 1


class _Keeping:
    """The channel of a `Catchup`: what the fan-out hands it is kept, with its offset (None
    for what is not a numbered message: a `Hub.notify`); once the replay is done
    (`forward_after`), what comes after it goes to the connection, notifications at once."""

    __slots__ = ("kept", "_offset", "_after", "_forward")

    def __init__(self, offset: Callable[[], int | None]) -> None:
        self.kept: list[tuple[int | None, int, bytes]] = []  # (offset, opcode, payload)
        self._offset = offset
        self._after = 0
        self._forward: Callable[[bytes, int, bytes], bool] | None = None

    def forward_after(self, after: int, deliver: Callable[[bytes, int, bytes], bool]) -> None:
        self._after, self._forward = after, deliver

    def deliver(self, frame: bytes, opcode: int, payload: bytes) -> bool:
        offset = self._offset()
        if self._forward is None:
            self.kept.append((offset, opcode, payload))
            return True
        if offset is not None and offset <= self._after:
            return True  # the replay held it
        return self._forward(frame, opcode, payload)

    def deliver_or_wait(self, frame: bytes, opcode: int, payload: bytes) -> bool:
        return self.deliver(frame, opcode, payload)


class Catchup:
    """A connection joining a history room from a position (see the module doc): a `Member`
    of the room's dict whose channel keeps the live messages until `finish`."""

    def __init__(self, ws: Member, offset: Callable[[], int | None]) -> None:
        self.ws = ws
        self.id = ws.id
        self.path = ws.path
        self.rooms = ws.rooms
        self.channel: Any = _Keeping(offset)

    @property
    def closed(self) -> bool:
        return self.ws.closed

    def send_nowait(self, data: Any) -> None:
        self.ws.send_nowait(data)

    async def close(self, code: int = 1000, reason: str = "") -> None:
        await self.ws.close(code, reason)

    def finish(self, replay: list[Stored], after: int, framed: Callable[[int, int, bytes], tuple[int, bytes]]) -> int:
        """Deliver `replay` (kept messages, in order, each as `framed(offset, opcode, payload)`
        gives it: the room's format, `tether.hub.formats`), then the live messages kept meanwhile
        with an offset over the last one delivered (and over `after`); returns the offset of
        the last message delivered (`after` when none was). From then on it forwards what
        the room gets past that offset: the history read may have held messages that are
        still on their way to this node, and those must not come twice."""
        channel = self.ws.channel
        last = after
        for stored in replay:
            envelope = decode(stored.envelope)
            if self.id not in envelope.exclude:
                opcode, payload = framed(stored.offset, envelope.opcode, envelope.payload)
                channel.deliver(encode_frame(opcode, payload), opcode, payload)
            last = stored.offset
        keeping = self.channel
        for offset, opcode, payload in keeping.kept:
            if offset is None or offset > last:
                channel.deliver(encode_frame(opcode, payload), opcode, payload)
                last = last if offset is None else offset
        keeping.kept.clear()
        keeping.forward_after(last, channel.deliver)
        return last


"""History rooms on NATS JetStream (the NATS backplane's `publish_kept` and `history`).

Each history room is one stream, `<prefix>-kept-<hash>` (`nats_names.Names`), whose one
subject is `<prefix>.kept-in.<room token>.<epoch>`: the epoch is chosen (`new_epoch()`) by
the node that creates the stream and lives in its subject, so a room's epoch is its
stream's identity. A stream deleted or lost (a server that restarted without its store) is
made again by the next publish with a new epoch, and its sequence starts again at 1. The
stream's sequence is the room's offset; it keeps `max_msgs` = the room's size (discard old)
and `max_age` = its ttl, on file storage.

Delivery: the stream **republishes** every message it stored, in sequence order, to the
room's topic subject `<prefix>.kept.<room token>` with the headers `Nats-Sequence` (the
offset) and `Nats-Subject` (whose last token is the epoch); a node that follows the room
subscribes that subject as any other (`kept_message`), and hands the messages on in offset
order (`InOrder`). So two nodes publishing at once into a room are heard by every node in
the stream's order, numbered by the stream.

Publishing (`KeptRooms.publish`) costs no round trip: the message goes out through the
backplane's writer with a reply subject, and the stream's acknowledgment comes back on it
later. A node remembers each room's epoch; until it knows it (the room's first publish from
this node, or the limits changed), the room's messages wait while the stream is looked up,
made or updated. A publish the stream did not take because nothing captures its subject
(the stream is gone: `503 no responders`) is sent again, in its order, once the stream is
found or made again; one JetStream refused is lost (`lost(room, 1, why)`), as is every
message waiting or unacknowledged when the connection goes (`reset`).
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime
import json
import math
from collections import OrderedDict
from collections.abc import Callable

from nats.aio.client import Client
from nats.aio.msg import Msg
from nats.js import JetStreamContext
from nats.js.api import ConsumerConfig, DeliverPolicy, DiscardPolicy, RePublish, StorageType, StreamConfig, StreamInfo
from nats.js.errors import BadRequestError, NotFoundError

from ..tasks import spawn
from .history import NOWHERE, HistoryLimits, Position, Stored, encode_kept, new_epoch
from .nats_names import Names
from .topic import Topic, TopicKind

__all__ = ["InOrder", "KeptRooms", "kept_message"]

#: messages of one room that may wait for its stream (past it, they are lost)
MAX_WAITING = 100_000
#: rooms whose epoch a node remembers (the least recently published is forgotten first)
MAX_ROOMS = 10_000
#: how often a room's stream may vanish under one batch of its messages before they are lost
MAX_RETRIES = 3
#: bound on one history read
READ_TIMEOUT = 5.0

#: `send(subject, data, on_reply)`: queue a publish whose reply is handed to `on_reply`;
#: False when it cannot be queued
Send = Callable[[str, bytes, Callable[[Msg], None]], bool]
#: `lose(room, count, why)`: `count` messages published into `room` on this node are lost
Lose = Callable[[str, int, str], None]


def kept_message(msg: Msg) -> tuple[int, str, bytes] | None:
    """(offset, epoch, envelope) of a message a room's stream republished, or None when it is
    not one (no sequence or subject header)."""
    headers = msg.headers
    if not headers:
        return None
    sequence, subject = headers.get("Nats-Sequence"), headers.get("Nats-Subject")
    if not sequence or not subject or not sequence.isdigit():
        return None
    return int(sequence), subject.rpartition(".")[2], msg.data


class _Line:
    """Where one room's republished messages are: the last offset handed on, in its epoch,
    and those that came before their turn."""

    __slots__ = ("epoch", "last", "held", "timer")

    def __init__(self, epoch: str, last: int) -> None:
        self.epoch, self.last = epoch, last
        self.held: dict[int, bytes] = {}
        self.timer: asyncio.TimerHandle | None = None


class InOrder:
    """Hands each room's republished messages on (`deliver(channel, encode_kept(...))`) in
    offset order. nats-server may send a stream's republished messages a little out of order
    when several connections publish into it at once (2.9.10 did so in about one run in three
    of two nodes publishing 300 messages each: a few neighbours swapped); a message that comes
    before its turn is held until the ones before it came, at most HOLD seconds, then handed
    on with the gap left (the hub reads a gap back from the history). The first message heard
    of a room, or of a new epoch, starts its line; one whose offset was passed already is
    handed on at once (late)."""

    HOLD = 0.1

    def __init__(self, deliver: Callable[[str, bytes], None]) -> None:
        self._deliver = deliver
        self._lines: dict[str, _Line] = {}

    def arrived(self, channel: str, offset: int, epoch: str, envelope: bytes) -> None:
        line = self._lines.get(channel)
        if line is None or line.epoch != epoch:
            if line is not None:
                self._give_up(channel, line)
            self._lines[channel] = _Line(epoch, offset)
            self._deliver(channel, encode_kept(offset, epoch, envelope))
        elif offset == line.last + 1:
            self._deliver(channel, encode_kept(offset, epoch, envelope))
            line.last = offset
            while (held := line.held.pop(line.last + 1, None)) is not None:
                line.last += 1
                self._deliver(channel, encode_kept(line.last, epoch, held))
            if not line.held and line.timer is not None:
                line.timer.cancel()
                line.timer = None
        elif offset <= line.last:
            self._deliver(channel, encode_kept(offset, epoch, envelope))
        else:
            line.held[offset] = envelope
            if line.timer is None:
                line.timer = asyncio.get_running_loop().call_later(self.HOLD, self._give_up, channel, line)

    def _give_up(self, channel: str, line: _Line) -> None:
        """Hand on what `line` holds, in offset order, past the gap before it."""
        if line.timer is not None:
            line.timer.cancel()
            line.timer = None
        for offset in sorted(line.held):
            line.last = offset
            self._deliver(channel, encode_kept(offset, line.epoch, line.held.pop(offset)))

    def forget(self, channel: str | None = None) -> None:
        """Hand on what is held of `channel` (of every channel when None) and forget its line."""
        for name in [channel] if channel is not None else list(self._lines):
            line = self._lines.pop(name, None)
            if line is not None:
                self._give_up(name, line)


def epoch_of(info: StreamInfo) -> str:
    """The epoch of a room's stream: the last token of its one subject."""
    subjects = info.config.subjects or []
    if len(subjects) != 1 or subjects[0].count(".") != 3:
        raise ValueError(f"stream {info.config.name} is not a tether history room's (subjects {subjects})")
    return subjects[0].rpartition(".")[2]


class _Room:
    """This node's publishing state of one history room."""

    __slots__ = ("epoch", "limits", "in_flight", "failed", "waiting", "resolving", "retries")

    def __init__(self) -> None:
        self.epoch: str | None = None
        self.limits: HistoryLimits | None = None
        self.in_flight: dict[int, bytes] = {}    # reply token -> envelope, sent, not yet acknowledged
        self.failed: list[tuple[int, bytes]] = []  # not taken (no stream): sent again once it is there
        self.waiting: list[tuple[bytes, HistoryLimits]] = []
        self.resolving = False
        self.retries = 0

    def idle(self) -> bool:
        return not (self.in_flight or self.failed or self.waiting or self.resolving)


class KeptRooms:
    """The history rooms this node publishes into and reads (see the module doc)."""

    def __init__(self, names: Names, send: Send, lose: Lose) -> None:
        self.names = names
        self._send_raw = send
        self._lose = lose
        self._rooms: OrderedDict[str, _Room] = OrderedDict()
        self._tokens = 0
        self.js: JetStreamContext | None = None  # set while connected

    # -- publishing ------------------------------------------------------------------------------
    def publish(self, room: str, envelope: bytes, limits: HistoryLimits) -> None:
        state = self._rooms.get(room)
        if state is None:
            state = self._rooms[room] = _Room()
            self._forget_idle()
        else:
            self._rooms.move_to_end(room)
        if state.epoch is None or state.limits != limits or state.resolving or state.failed or state.waiting:
            if len(state.waiting) >= MAX_WAITING:
                self._lose(room, 1, "too many of its messages wait for its stream")
                return
            state.waiting.append((envelope, limits))
            self._maybe_resolve(room, state)
            return
        self._send(room, state, envelope)

    def _forget_idle(self) -> None:
        while len(self._rooms) > MAX_ROOMS:
            name, oldest = next(iter(self._rooms.items()))
            if not oldest.idle():
                break
            del self._rooms[name]

    def _send(self, room: str, state: _Room, envelope: bytes) -> None:
        assert state.epoch is not None
        self._tokens += 1
        token = self._tokens
        state.in_flight[token] = envelope
        if not self._send_raw(self.names.kept_in(room, state.epoch), envelope,
                              lambda msg: self._acknowledged(room, state, token, msg)):
            del state.in_flight[token]
            self._lose(room, 1, "the backplane's queue is full or it is down")

    def _acknowledged(self, room: str, state: _Room, token: int, msg: Msg) -> None:
        envelope = state.in_flight.pop(token, None)
        if envelope is None:
            return  # reset meanwhile: counted lost already
        status = msg.headers.get("Status") if msg.headers else None
        if status == "503":  # nothing captures the subject: the stream is gone
            state.failed.append((token, envelope))
        else:
            try:
                reply = json.loads(msg.data)
                error = reply.get("error") if isinstance(reply, dict) else {"description": "not a JetStream reply"}
            except ValueError:
                error = {"description": f"status {status}" if status else "not a JetStream reply"}
            if error:
                self._lose(room, 1, f"JetStream refused it: {error.get('description', error)}")
            elif not state.failed:
                state.retries = 0
        if not state.in_flight:
            self._maybe_resolve(room, state)

    def _maybe_resolve(self, room: str, state: _Room) -> None:
        """Look the room's stream up (make or update it) when messages wait for it and none is
        in flight any more (those sent again must go after every one sent before them)."""
        if state.resolving or state.in_flight or not (state.failed or state.waiting) or self.js is None:
            return
        state.resolving = True
        spawn(self._resolve(room, state, self.js))

    async def _resolve(self, room: str, state: _Room, js: JetStreamContext) -> None:
        again = [envelope for _, envelope in sorted(state.failed)]
        state.failed = []
        if again:
            state.retries += 1
        try:
            if state.retries > MAX_RETRIES:
                raise ConnectionError(f"its stream vanished {MAX_RETRIES} times in a row")
            limits = state.waiting[-1][1] if state.waiting else state.limits
            assert limits is not None
            state.epoch = await self._stream(js, room, limits)
            state.limits = limits
        except Exception as exc:
            lost = len(again) + len(state.waiting)
            state.waiting.clear()
            state.epoch, state.resolving, state.retries = None, False, 0
            if self.js is js:  # else reset() counted them
                self._lose(room, lost, f"its stream could not be found or made: {type(exc).__name__}: {exc}")
            return
        state.resolving = False
        if self.js is not js:
            return  # the connection went meanwhile: reset() counted them
        waiting = [envelope for envelope, _ in state.waiting]
        state.waiting.clear()
        for envelope in again + waiting:
            self._send(room, state, envelope)

    def _config(self, room: str, epoch: str, limits: HistoryLimits) -> StreamConfig:
        subject = self.names.kept_in(room, epoch)
        return StreamConfig(name=self.names.stream(room), description=f"tether history room {room[:200]!r}",
                            subjects=[subject], max_msgs=limits.size, max_age=limits.ttl or 0,
                            discard=DiscardPolicy.OLD, storage=StorageType.FILE, num_replicas=1,
                            republish=RePublish(src=subject, dest=self.names.subject(Topic(TopicKind.KEPT, room))))

    async def _stream(self, js: JetStreamContext, room: str, limits: HistoryLimits) -> str:
        """The epoch of the room's stream: found, else made (by this node or, when another
        made it meanwhile, that one's), its limits brought to `limits`."""
        name = self.names.stream(room)
        try:
            info = await js.stream_info(name)
        except NotFoundError:
            try:
                info = await js.add_stream(self._config(room, new_epoch(), limits))
            except BadRequestError as exc:
                if exc.err_code != 10058:  # "stream name already in use": another node made it
                    raise
                info = await js.stream_info(name)
        epoch = epoch_of(info)
        max_age = info.config.max_age or 0
        if info.config.max_msgs != limits.size or not math.isclose(max_age, limits.ttl or 0, abs_tol=1e-6):
            await js.update_stream(self._config(room, epoch, limits))
        return epoch

    def reset(self, why: str) -> None:
        """The connection went: every message not yet acknowledged is lost, and every epoch
        is looked up again (the server may have come back without its store)."""
        self.js = None
        for room, state in self._rooms.items():
            lost = len(state.in_flight) + len(state.failed) + len(state.waiting)
            if lost:
                self._lose(room, lost, why)
        self._rooms.clear()

    # -- idle rooms ----------------------------------------------------------------------------
    async def sweep(self, nc: Client, idle: float) -> list[str]:
        """Delete the streams of this cluster's history rooms that nobody wrote for `idle`
        seconds (when their limits set no ttl) or whose every message expired: history
        nobody writes goes away, and a room written again starts a new epoch. Returns the
        names of the streams deleted. One node sweeps at a time (the caller elects it)."""
        now = datetime.datetime.now(datetime.UTC)
        deleted, offset = [], 0
        while True:
            request = json.dumps({"offset": offset, "subject": f"{self.names.prefix}.kept-in.>"}).encode()
            reply = json.loads((await nc.request("$JS.API.STREAM.LIST", request, timeout=READ_TIMEOUT)).data)
            streams = reply.get("streams") or []
            for stream in streams:
                name, state = stream["config"]["name"], stream["state"]
                last = max(datetime.datetime.fromisoformat(stamp)  # RFC 3339 in UTC; a new stream counts as written
                           for stamp in (state.get("last_ts", ""), stream.get("created", "")) if stamp)
                expired = state.get("messages", 0) == 0 and state.get("last_seq", 0) > 0
                unwritten = not stream["config"].get("max_age") and (now - last).total_seconds() > idle
                if self.names.is_stream(name) and (expired or unwritten):
                    await nc.request(f"$JS.API.STREAM.DELETE.{name}", b"", timeout=READ_TIMEOUT)
                    deleted.append(name)
            offset += len(streams)
            if not streams or offset >= reply.get("total", 0):
                return deleted

    # -- reading -------------------------------------------------------------------------------
    async def read(self, room: str, since: int | None, limit: int | None) -> tuple[Position, list[Stored]]:
        """The room's position and kept messages after `since` (see `Backplane.history`). A
        stream whose every message expired is deleted: the room is forgotten, as one never
        written, and starts a new epoch when written again."""
        js = self.js
        if js is None:
            raise ConnectionError("the backplane is down")
        name = self.names.stream(room)
        try:
            info = await js.stream_info(name)
        except NotFoundError:
            return NOWHERE, []
        state = info.state
        if state.messages == 0:
            if state.last_seq > 0:
                with contextlib.suppress(NotFoundError):
                    await js.delete_stream(name)
                self._rooms.pop(room, None)
            return NOWHERE, []
        position = Position(epoch_of(info), state.last_seq)
        first = max(since or 0, state.first_seq - 1) + 1
        want = state.last_seq - first + 1
        if limit is not None:
            want = min(want, max(0, limit))
        if want <= 0:
            return position, []
        return position, await self._fetch(js, info, first, want, state.last_seq)

    async def _fetch(self, js: JetStreamContext, info: StreamInfo, first: int, want: int, last: int) -> list[Stored]:
        """Up to `want` messages of the stream from sequence `first` to `last`, none older than
        its max_age (those the server has not removed yet), through an ordered consumer."""
        assert info.config.name is not None and info.config.subjects
        config = ConsumerConfig(deliver_policy=DeliverPolicy.BY_START_SEQUENCE, opt_start_seq=first,
                                inactive_threshold=READ_TIMEOUT)
        sub = await js.subscribe(info.config.subjects[0], stream=info.config.name, ordered_consumer=True,
                                 config=config)
        oldest = None
        if info.config.max_age:
            oldest = datetime.datetime.now(datetime.UTC) - datetime.timedelta(seconds=info.config.max_age)
        found: list[Stored] = []
        try:
            async with asyncio.timeout(READ_TIMEOUT):
                while len(found) < want:
                    msg = await sub.next_msg(timeout=READ_TIMEOUT)
                    meta = msg.metadata
                    stamp = meta.timestamp.astimezone(datetime.UTC)  # nats-py 2.7 gives a naive local time
                    if oldest is None or stamp > oldest:
                        found.append(Stored(meta.sequence.stream, msg.data))
                    if meta.sequence.stream >= last:
                        break
        except TimeoutError as exc:
            raise ConnectionError(f"reading the history of stream {info.config.name} timed out") from exc
        finally:
            await sub.unsubscribe()
        return found

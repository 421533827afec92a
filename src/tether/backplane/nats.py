"""The NATS backplane: nodes of one cluster meet on a NATS server (or cluster) with JetStream.

`nats://[user:password@]host[:port][,host[:port]...][?prefix=&heartbeat=&probe=]`
(`nats_names.parse_url`). Cluster messages are core NATS messages on one subject per topic;
history rooms are JetStream streams (`nats_kept`); presence, connection counts and node
liveness live in a JetStream KV bucket. Names (`nats_names.Names`):

    <prefix>.path.<token>            core       broadcasts to a concrete path
    <prefix>.room.<token>            core       publishes to a room
    <prefix>.node.<token>            core       a node's inbox: send_to / close of its connections
    <prefix>.kept.<token>            core       a history room's numbered messages (republished by its stream)
    <prefix>.kept-in.<token>.<epoch> JetStream  what a history room's publishes are sent to
    <prefix>-kept-<hash>             stream     a history room's kept messages (sequence = offset)
    KV bucket <prefix> (memory storage, entries live BUCKET_TTL unless written again):
      node.<node hex>                           "<heartbeat ms> <connections>"
      presence.<room token>.<node hex>.<connection id token>   presence info (JSON)
      janitor.<node hex>                        who cleaned up after a dead node
      sweep.<period>                            who swept idle history rooms in a SWEEP_EVERY period

A token is a name's UTF-8 in base64url, so any room or path name fits a subject token.

Per process there is one connection. Everything this node sends goes through one writer
task, in call order, as nats-py's buffered publishes (no round trip per message; nats-py
flushes); a history room's publish carries a reply subject on which JetStream acknowledges
it later. tether supervises the connection itself, so that no gap is hidden: nats-py's own
reconnect (which would buffer publishes made while disconnected and send them late) is off.
When the connection closes (the server went away, an error) or goes deaf (nothing heard for
`probe` seconds, default 1, then a PING unanswered for as long), the backplane is DOWN: cluster
messages are dropped and counted (`lost`), local delivery goes on, one WARNING is logged
when the outage starts and one with the count when it ends. It connects again with jittered
backoff capped at 1 s (each time trying every server of the URL), and is UP once JetStream
answers: it subscribes everything again, writes this node's count and presence again, and
calls `resumed()` (the hub reads back its history rooms). A node heartbeats (writes its
node key) every `heartbeat` seconds (default 5); a node silent for 3 heartbeats is dead, and
the survivor that creates its janitor key first removes its presence entries and reports
them (`members_gone`) (its key is read again from the server first: the node keys this node
follows may lag behind a backlog it is reading).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import random
import time
from collections import deque
from collections.abc import Awaitable, Callable
from typing import Any

import nats
from nats.aio.client import Client
from nats.aio.msg import Msg
from nats.aio.subscription import Subscription
from nats.errors import Error as NatsError
from nats.errors import MaxPayloadError, SlowConsumerError
from nats.js import JetStreamContext
from nats.js.api import StorageType
from nats.js.errors import BadRequestError, KeyNotFoundError, KeyWrongLastSequenceError, ServiceUnavailableError
from nats.js.kv import KeyValue

from ..tasks import cancel_and_wait, close_quietly
from .base import Backplane, BackplaneState, MembersGone, Receive, Snapshot
from .following import Following
from .history import HistoryLimits, Position, Stored
from .loopclock import HeldClock
from .nats_kept import InOrder, KeptRooms, kept_message
from .nats_names import MAX_SUBJECT, Names, parse_url
from .outage import OutageLog
from .topic import Topic, TopicKind

__all__ = ["NatsBackplane"]

logger = logging.getLogger("tether.backplane")

_BACKOFF_FIRST, _BACKOFF_CAP = 0.05, 1.0
_MAX_PENDING = 100_000    # items queued for the writer; past it, messages are lost
_CONNECT_TIMEOUT = 2      # seconds, per server tried
_API_TIMEOUT = 5.0        # a JetStream request (bucket, stream lookups, reads)
_PONG_TICK = 0.05         # how often a PING's answer is looked for (`_answered`)
_PONG_BOUND = 3600        # nats-py's own bound on a PING's answer, never met: `_answered` decides
#: KV entries (presence, node keys, and the markers of deleted ones) not written again for
#: this long go; a node writes its presence again every third of it
BUCKET_TTL = 3600.0
REWRITE_EVERY = BUCKET_TTL / 3
#: a history room's stream nobody published into for this long (and one whose messages all
#: expired) is deleted by the sweep that one node makes every SWEEP_EVERY seconds
HISTORY_IDLE_TTL = 24 * 3600.0
SWEEP_EVERY = 600.0

_PUB, _SUB, _UNSUB, _NODE = range(4)  # what the writer is asked to do


class _Deaf(Exception):
    """The connection hears nothing, not even the answer to a PING."""


class NatsBackplane(Backplane):
    """A node of a cluster whose nodes share a NATS server with JetStream (see the module doc)."""

    def __init__(self, node: bytes, url: str) -> None:
        super().__init__(node)
        self.config = parse_url(url)
        self.prefix = self.config.prefix
        self.names = Names(self.prefix)
        self.heartbeat = self.config.heartbeat
        self.probe = self.config.probe
        self._node_name = node.hex()
        self.inbox = self.channel(Topic(TopicKind.NODE, self._node_name))
        self._kept_head = f"{self.prefix}.kept."
        self._kv_head = f"$KV.{self.names.bucket}."
        self._following = Following()
        self._subs: dict[str, Subscription] = {}
        self._queue: deque[tuple[int, str, bytes, dict[str, str] | None, str]] = deque()
        self._replies: dict[str, Callable[[Msg], None]] = {}
        self._reply_prefix = ""
        self._replies_sent = 0
        self._ready = False          # UP: the writer sends what is queued
        self._kv: KeyValue | None = None
        self._nodes: dict[str, tuple[int, int]] = {}  # the bucket's node keys: node -> (heartbeat ms, connections)
        self._connections = 0
        self._node_queued = False
        self._rewritten = 0.0
        self._swept = int(time.time() // SWEEP_EVERY)  # the first sweep comes with the next period
        self._kept = KeptRooms(self.names, self._send_with_reply, self._lose_kept)
        self._in_order = InOrder(self._deliver)
        self._task: asyncio.Task[None] | None = None
        self._outage = OutageLog("NATS")
        self._failure = "no answer yet"  # why the last session ended (for the start's WARNING)

    def channel(self, topic: Topic) -> str:
        """The topic's subject: `<prefix>.<kind>.<token of the name>` (`nats_names`)."""
        return self.names.subject(topic)

    def topic(self, channel: str) -> Topic | None:
        return self.names.topic(channel)

    # -- lifecycle ---------------------------------------------------------------------------
    async def start(self, receive: Receive, members_gone: MembersGone, snapshot: Snapshot) -> None:
        self._receive, self._members_gone, self._snapshot = receive, members_gone, snapshot
        self._loop = asyncio.get_running_loop()
        self._up = asyncio.Event()
        self._wakeup = asyncio.Event()
        self._task = self._loop.create_task(self._supervise())
        try:
            await asyncio.wait_for(self._up.wait(), timeout=2.0)
        except TimeoutError:
            logger.warning("tether backplane: NATS at %s is not reachable yet (%s); serving with local delivery "
                           "only and retrying", self.config.redacted(), self._failure)

    async def stop(self) -> None:
        kv = self._kv
        if self._ready and kv is not None:  # leave the cluster tidily: our node key goes now
            self._ready = False
            with contextlib.suppress(Exception):
                await asyncio.wait_for(kv.delete(self.names.node_key(self._node_name)), 1.0)
        self._ready = False
        self.state = BackplaneState.STOPPED
        if self._task is not None:
            await cancel_and_wait([self._task])

    async def _supervise(self) -> None:
        """Run sessions forever: each connects, serves until the connection goes, and the
        outage is counted; the next starts after a jittered backoff."""
        delay = _BACKOFF_FIRST
        while True:
            started = time.monotonic()
            try:
                await self._session()
            except asyncio.CancelledError:
                raise
            except (OSError, TimeoutError, NatsError, _Deaf) as exc:  # NATS went away (ConnectionError: an OSError)
                self._went_down(f"{type(exc).__name__}: {exc}".rstrip(": "))
            except Exception as exc:  # a failure of its own: never quiet, and it starts again
                logger.exception("tether backplane: the NATS session failed; starting again")
                self._went_down(f"{type(exc).__name__}: {exc}")
            if self.state is BackplaneState.STOPPED:
                return
            if time.monotonic() - started > 2 * _BACKOFF_CAP:
                delay = _BACKOFF_FIRST  # it had been up: retry quickly
            await asyncio.sleep(delay * random.uniform(0.5, 1.0))
            delay = min(delay * 2, _BACKOFF_CAP)

    async def _connect(self, closed: asyncio.Future[None]) -> Client:
        async def on_closed() -> None:
            if not closed.done():
                closed.set_result(None)

        async def on_error(exc: Exception) -> None:
            if isinstance(exc, SlowConsumerError):
                logger.warning("tether backplane: this node reads too slowly; NATS messages on %s were dropped",
                               exc.subject)
            else:
                logger.debug("tether backplane: NATS: %s: %s", type(exc).__name__, exc)

        config = self.config
        return await nats.connect(
            list(config.servers), user=config.user, password=config.password, name=f"tether node {self._node_name}",
            allow_reconnect=False, max_reconnect_attempts=1, reconnect_time_wait=0, connect_timeout=_CONNECT_TIMEOUT,
            no_echo=True, error_cb=on_error, closed_cb=on_closed)  # nats-py's pings: every 2 min (`_watch` probes)

    async def _session(self) -> None:
        """One connection: set up, UP, serve until it closes (raising why)."""
        closed: asyncio.Future[None] = self._loop.create_future()
        nc = await self._connect(closed)
        tasks: list[asyncio.Task[Any]] = []
        try:
            js = nc.jetstream(timeout=_API_TIMEOUT)
            try:
                kv = await self._bucket(js)
            except ServiceUnavailableError:
                raise ConnectionError("JetStream does not answer: a server started without -js (JetStream), "
                                      "or one still starting it") from None
            self._reply_prefix = nc.new_inbox()
            await nc.subscribe(self._reply_prefix + ".*", cb=self._on_reply)
            watcher = await kv.watch("node.*")
            for channel in (self.inbox, *self._following.channels):
                if len(channel) <= MAX_SUBJECT:  # a longer one was refused (and said) by subscribe()
                    self._subs[channel] = await nc.subscribe(channel, cb=self._on_message)
            await nc.flush(timeout=int(_API_TIMEOUT))
            self._kv, self._kept.js = kv, js
            tasks = [self._loop.create_task(self._write(nc)), self._loop.create_task(self._beat(nc, kv)),
                     self._loop.create_task(self._mirror(watcher)), self._loop.create_task(self._watch(nc))]
            self._became_up()
            done, _ = await asyncio.wait([closed, *tasks], return_when=asyncio.FIRST_COMPLETED)
            if closed in done or nc.is_closed:  # what a task met then is the closing, not its cause
                raise ConnectionError(f"the connection to NATS closed ({nc.last_error or 'by the server'})")
            for finished in done:
                raise finished.exception() or RuntimeError("a task of the session ended")
        finally:
            self._ready = False
            self._kv = None
            self._in_order.forget()
            await cancel_and_wait(tasks)
            self._subs.clear()
            await close_quietly(nc.close())  # a cancellation (stop()) goes through: the session ends

    async def _watch(self, nc: Client) -> None:
        """Raise `_Deaf` when the connection hears nothing for `probe` seconds and then gets no
        answer to a PING for as long (a hung server or a dead link whose TCP has not said so).
        Traffic is life: a node busy reading a backlog is not deaf, however late its PONG."""
        heard = -1
        while True:
            await asyncio.sleep(self.probe)
            if nc.stats["in_msgs"] != heard:
                heard = nc.stats["in_msgs"]
                continue
            await self._answered(nc)

    async def _answered(self, nc: Client) -> None:
        """Return once a PING is answered; raise `_Deaf` when it is not within `probe`
        seconds, not counting the time the event loop was held elsewhere (the PONG may have
        come meanwhile, unread: the reading task could not run either)."""
        loop = asyncio.get_running_loop()
        pong = asyncio.ensure_future(nc.flush(timeout=_PONG_BOUND))
        clock = HeldClock(_PONG_TICK)
        started = loop.time()
        try:
            while not pong.done():
                await asyncio.wait({pong}, timeout=_PONG_TICK)
                clock.held(loop.time())
                if not pong.done() and loop.time() - started - clock.total > self.probe:
                    raise _Deaf(f"nothing heard for {self.probe} s, and no answer to a PING within {self.probe} s")
            pong.result()
        except (TimeoutError, NatsError) as exc:
            raise _Deaf(f"nothing heard for {self.probe} s, and no answer to a PING: {exc!r}") from exc
        finally:
            pong.cancel()

    async def _bucket(self, js: JetStreamContext) -> KeyValue:
        """The cluster's KV bucket, made when missing (memory storage: it holds what nodes
        write again after a restart)."""
        try:
            return await js.create_key_value(bucket=self.names.bucket, history=1, ttl=BUCKET_TTL,
                                             storage=StorageType.MEMORY)
        except BadRequestError as exc:
            if exc.err_code != 10058:  # made by another with another configuration: use it as it is
                raise
            return await js.key_value(self.names.bucket)

    # -- state -------------------------------------------------------------------------------
    def _went_down(self, why: str) -> None:
        self._outage.down(self, why)
        self._up.clear()
        self._failure = why
        self._following.release()  # a join does not wait for a NATS that is down
        # What was queued and never handed to nats-py, and the history rooms' publishes not
        # yet acknowledged, are lost (a late delivery would be out of order).
        while self._queue:
            if self._queue.popleft()[0] == _PUB:
                self._count_lost()
        self._node_queued = False
        self._replies.clear()
        self._kept.reset("the connection to NATS was lost before the message was kept")

    def _became_up(self) -> None:
        was_down = self.state is BackplaneState.DOWN
        self.state = BackplaneState.UP
        self._ready = True
        self._up.set()
        self._resync()  # the server may have restarted empty, or missed writes while we were down
        self._outage.up(self, was_down)

    def _count_lost(self, count: int = 1) -> None:
        self.lost += count
        if not self._ready:
            self._outage.lost(count)

    def _resync(self) -> None:
        """Write this node's key and presence entries again (after connecting; and every
        REWRITE_EVERY, before the bucket's ttl would drop them)."""
        state = self._snapshot()
        self._connections = state.connections
        self._queue_node()
        for room, members in state.presence.items():
            for connection_id, info in members.items():
                self.presence_join(room, connection_id, info)
        self._rewritten = time.monotonic()

    # -- the writer ----------------------------------------------------------------------------
    def _enqueue(self, kind: int, subject: str, data: bytes = b"", headers: dict[str, str] | None = None,
                 reply: str = "") -> bool:
        if not self._ready or len(self._queue) >= _MAX_PENDING:
            if kind == _PUB and not reply:
                self._count_lost()
            return False
        self._queue.append((kind, subject, data, headers, reply))
        self._wakeup.set()
        return True

    async def _write(self, nc: Client) -> None:
        queue = self._queue
        while True:
            if not queue:
                self._wakeup.clear()
                await self._wakeup.wait()
            while queue:
                kind, subject, data, headers, reply = queue.popleft()
                if kind == _PUB:
                    try:
                        await nc.publish(subject, data, reply=reply, headers=headers)
                    except MaxPayloadError:
                        self._refused(nc, subject, len(data), reply)
                    except (OSError, NatsError):  # the connection is going: so is the session
                        self._ready = False  # this message and what follows are the outage's
                        self._count_lost()
                        raise
                elif kind == _NODE:
                    self._node_queued = False
                    await nc.publish(self._kv_head + self.names.node_key(self._node_name),
                                     b"%d %d" % (_now_ms(), self._connections))
                elif kind == _SUB:
                    await self._subscribe_now(nc, subject)
                elif subject not in self._following.channels and (sub := self._subs.pop(subject, None)) is not None:
                    await sub.unsubscribe()

    def _refused(self, nc: Client, subject: str, size: int, reply: str) -> None:
        """A message over the server's max_payload, which nats-py refused to send: lost. One
        that awaited a reply (a history room's, a KV write) gets JetStream's kind of refusal,
        so that its sender counts and reports it as it would any other."""
        why = f"{size} bytes is over the NATS server's max_payload ({nc.max_payload})"
        logger.warning("tether backplane: a message to %.80s is lost: %s", subject, why)
        on_reply = self._replies.pop(reply, None)
        if on_reply is None:
            self.lost += 1
        else:
            on_reply(Msg(nc, subject=reply, data=json.dumps({"error": {"description": why}}).encode()))

    async def _subscribe_now(self, nc: Client, channel: str) -> None:
        if channel in self._following.channels and channel not in self._subs:
            self._subs[channel] = await nc.subscribe(channel, cb=self._on_message)
        waiter = self._following.waiting.get(channel)
        if waiter is not None:
            self._loop.create_task(self._confirm(nc, channel, waiter))

    async def _confirm(self, nc: Client, channel: str, waiter: asyncio.Future[None]) -> None:
        """Resolve `waiter` once the server has the subscription (a PING answered after it)."""
        with contextlib.suppress(Exception):
            await nc.flush(timeout=int(_API_TIMEOUT))
        self._following.confirm(channel, waiter)

    def _send_with_reply(self, subject: str, data: bytes, on_reply: Callable[[Msg], None],
                         headers: dict[str, str] | None = None) -> bool:
        self._replies_sent += 1
        reply = f"{self._reply_prefix}.{self._replies_sent}"
        if not self._enqueue(_PUB, subject, data, headers, reply):
            return False
        self._replies[reply] = on_reply
        return True

    async def _on_reply(self, msg: Msg) -> None:
        on_reply = self._replies.pop(msg.subject, None)
        if on_reply is not None:
            on_reply(msg)

    async def _on_message(self, msg: Msg) -> None:
        subject = msg.subject
        if subject.startswith(self._kept_head):
            kept = kept_message(msg)
            if kept is None:
                logger.warning("tether backplane: dropped a message on %s: not one its stream republished", subject)
            else:
                self._in_order.arrived(subject, *kept)
            return
        self._deliver(subject, msg.data)

    def _deliver(self, channel: str, data: bytes) -> None:
        try:
            self._receive(channel, data)
        except Exception:
            logger.exception("tether backplane: delivering a message from %s failed", channel)

    # -- messages ------------------------------------------------------------------------------
    def publish(self, channel: str, data: bytes) -> None:
        if len(channel) > MAX_SUBJECT:
            self._too_long(channel)
            return
        self._enqueue(_PUB, channel, data)

    def _too_long(self, subject: str) -> None:
        """A message to a name too long for a subject is lost (sent, it would close the connection)."""
        self.lost += 1
        logger.warning("tether backplane: %.60s... is too long a name for a NATS subject (%d characters, at most "
                       "%d); the message is lost", subject, len(subject), MAX_SUBJECT)

    def subscribe(self, channel: str) -> Awaitable[None] | None:
        following = self._following
        if channel in following.channels:
            return following.waiting.get(channel)
        following.channels.add(channel)
        if len(channel) > MAX_SUBJECT:
            logger.warning("tether backplane: %.60s... is too long a name for a NATS subject; other nodes' "
                           "messages to it will not reach this one", channel)
            return None
        if not self._ready:
            return None  # subscribed with everything else when the session starts
        waiter = following.wait(self._loop, channel)
        self._enqueue(_SUB, channel)
        return waiter

    def unsubscribe(self, channel: str) -> None:
        if self._following.remove(channel):
            self._enqueue(_UNSUB, channel)
            self._in_order.forget(channel)

    # -- history rooms -------------------------------------------------------------------------
    def publish_kept(self, topic: Topic, envelope: bytes, limits: HistoryLimits) -> None:
        """Through the writer like a publish, to the room's stream (`nats_kept`); lost (counted,
        and `kept_lost`) when the backplane is down or the stream cannot take it."""
        if not self._ready:
            self._lose_kept(topic.name, 1, "the backplane is down")
        elif len(self.names.kept_in(topic.name, "e" * 16)) > MAX_SUBJECT:
            self._lose_kept(topic.name, 1, f"the room's name is too long for a NATS subject (at most {MAX_SUBJECT})")
        else:
            self._kept.publish(topic.name, envelope, limits)

    def _lose_kept(self, room: str, count: int, why: str) -> None:
        self._count_lost(count)
        if self.kept_lost is not None:
            try:
                self.kept_lost(room, why)
            except Exception:
                logger.exception("tether backplane: the hub's kept_lost() failed")

    async def history(self, topic: Topic, since: int | None, limit: int | None) -> tuple[Position, list[Stored]]:
        """Read from the room's stream (`nats_kept.KeptRooms.read`); ConnectionError when the
        backplane is down or the read fails."""
        try:
            return await self._kept.read(topic.name, since, limit)
        except ConnectionError:
            raise
        except (OSError, TimeoutError, NatsError, ValueError) as exc:
            raise ConnectionError(f"reading the history of {topic.name!r} failed: {exc}") from exc

    # -- presence, counts, liveness --------------------------------------------------------------
    def _kv_write(self, key: str, value: bytes, headers: dict[str, str] | None = None) -> None:
        if len(key) > MAX_SUBJECT:
            logger.warning("tether backplane: %.60s... is too long for a NATS KV key; not written", key)
            return
        self._send_with_reply(self._kv_head + key, value, self._kv_written, headers)

    @staticmethod
    def _kv_written(msg: Msg) -> None:
        status = msg.headers.get("Status") if msg.headers else None
        if status or (msg.data[:1] == b"{" and b'"error"' in msg.data):
            logger.warning("tether backplane: NATS did not store a presence or count entry: %s %s",
                           msg.headers, msg.data[:200])

    def presence_join(self, room: str, connection_id: str, info: str) -> None:
        self._kv_write(self.names.presence_key(room, self._node_name, connection_id), info.encode("utf-8"))

    def presence_leave(self, room: str, connection_id: str) -> None:
        self._kv_write(self.names.presence_key(room, self._node_name, connection_id), b"", {"KV-Operation": "DEL"})

    async def presence(self, room: str) -> dict[str, str]:
        """Every live node's members of `room` from the bucket; this node's as it holds them."""
        own = dict(self._snapshot().presence.get(room, {}))
        kv = self._kv
        if kv is None:
            return own  # down: what this node knows
        try:
            entries = await self._read_keys(kv, self.names.presence_of_room(room))
        except (OSError, TimeoutError, NatsError):
            return own
        live = self._live_nodes()
        found = {}
        for key, value in entries.items():
            parsed = self.names.read_presence_key(key)
            if parsed is not None and parsed[1] in live:
                found[parsed[2]] = value.decode("utf-8", "replace")
        found.update(own)
        return found

    @staticmethod
    async def _read_keys(kv: KeyValue, pattern: str) -> dict[str, bytes]:
        """The current value of every key matching `pattern` (an ordered consumer that the
        server drops a few seconds after the read)."""
        watcher = await kv.watch(pattern, ignore_deletes=True, inactive_threshold=2.0)
        entries = {}
        try:
            while (entry := await watcher.updates(timeout=_API_TIMEOUT)) is not None:  # type: ignore[no-untyped-call]
                entries[entry.key] = entry.value or b""
        finally:
            await watcher.stop()  # type: ignore[no-untyped-call]
        return entries

    def connections_changed(self, delta: int) -> None:
        self._connections += delta
        self._queue_node()

    def _queue_node(self) -> None:
        """Write this node's key (heartbeat and count) soon: once for every change queued meanwhile."""
        if not self._node_queued and self._enqueue(_NODE, ""):
            self._node_queued = True

    async def count(self) -> int:
        if not self._ready:
            return self._snapshot().connections
        cutoff = _now_ms() - int(3000 * self.heartbeat)
        return self._connections + sum(connections for node, (beat, connections) in self._nodes.items()
                                       if node != self._node_name and beat >= cutoff)

    def _live_nodes(self) -> set[str]:
        cutoff = _now_ms() - int(3000 * self.heartbeat)
        return {node for node, (beat, _) in self._nodes.items() if beat >= cutoff} | {self._node_name}

    async def _mirror(self, watcher: Any) -> None:
        """Keep `_nodes` as the bucket's node keys are (forever: `updates` rather than `async
        for`, which older nats-py ends at the end of the initial values)."""
        while True:
            entry = await watcher.updates(timeout=None)
            if entry is None:
                continue  # the end of the initial values
            node = entry.key.partition(".")[2]
            if entry.operation in ("DEL", "PURGE"):
                self._nodes.pop(node, None)
                continue
            beat, _, connections = (entry.value or b"").partition(b" ")
            try:
                self._nodes[node] = (int(beat), int(connections))
            except ValueError:
                logger.warning("tether backplane: node key %s holds %r, not '<ms> <count>'", entry.key, entry.value)

    async def _beat(self, nc: Client, kv: KeyValue) -> None:
        while True:
            await asyncio.sleep(self.heartbeat)
            if time.monotonic() - self._rewritten > REWRITE_EVERY:
                self._resync()
            else:
                self._queue_node()
            try:
                await self._bury_the_dead(kv)
                await self._sweep(nc, kv)
            except (OSError, TimeoutError, NatsError, ValueError, KeyError) as exc:  # next time, then
                logger.warning("tether backplane: cleaning up after dead nodes or idle history rooms failed: %s: %s",
                               type(exc).__name__, exc)

    async def _sweep(self, nc: Client, kv: KeyValue) -> None:
        """Once every SWEEP_EVERY seconds of the clock, one node (the one that creates that
        period's sweep key) deletes the history rooms nobody writes (`KeptRooms.sweep`)."""
        period = int(time.time() // SWEEP_EVERY)
        if period == self._swept:
            return
        self._swept = period
        try:
            await kv.create(f"sweep.{period}", self._node_name.encode())
        except KeyWrongLastSequenceError:
            return  # another node sweeps this period
        deleted = await self._kept.sweep(nc, HISTORY_IDLE_TTL)
        if deleted:
            logger.info("tether backplane: deleted the streams of history rooms nobody wrote for %.0f s or whose "
                        "messages all expired: %s", HISTORY_IDLE_TTL, ", ".join(deleted))

    async def _bury_the_dead(self, kv: KeyValue) -> None:
        """Remove the presence entries and node key of nodes silent for 3 heartbeats,
        reporting their members as gone (once: the node that creates the dead node's janitor
        key does it)."""
        cutoff = _now_ms() - int(3000 * self.heartbeat)
        for node, (beat, _) in list(self._nodes.items()):
            if node == self._node_name or beat >= cutoff or await self._beats_still(kv, node, cutoff):
                continue
            try:
                await kv.create(self.names.janitor_key(node), self.node.hex().encode())
            except KeyWrongLastSequenceError:
                continue  # another survivor does it
            entries = await self._read_keys(kv, self.names.presence_of_node(node))
            gone: dict[str, dict[str, str]] = {}
            for key, value in entries.items():
                parsed = self.names.read_presence_key(key)
                if parsed is not None:
                    gone.setdefault(parsed[0], {})[parsed[2]] = value.decode("utf-8", "replace")
                self._kv_write(key, b"", {"KV-Operation": "DEL"})
            self._kv_write(self.names.node_key(node), b"", {"KV-Operation": "DEL"})
            self._nodes.pop(node, None)
            for room, members in gone.items():
                self._members_gone(room, members)
            logger.warning("tether backplane: node %s stopped heartbeating; removed its members from presence", node)


    async def _beats_still(self, kv: KeyValue, node: str, cutoff: int) -> bool:
        """Whether `node`'s key, read now from the server, says it heartbeats: the mirror may be
        behind (this node reading a backlog), and a node is not buried on a late view of it."""
        try:
            entry = await kv.get(self.names.node_key(node))
        except KeyNotFoundError:
            return False
        beat, _, connections = (entry.value or b"").partition(b" ")
        if not beat.isdigit() or int(beat) < cutoff:
            return False
        self._nodes[node] = (int(beat), int(connections or 0))
        return True


def _now_ms() -> int:
    return int(time.time() * 1000)

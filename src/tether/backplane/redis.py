"""The Redis backplane: nodes of one cluster meet on a Redis server's pub/sub.

Per process there are two connections: one subscriber, and one command connection on which
a single writer task sends everything else (publishes, presence and count writes, heartbeats,
reads) as pipelines of whatever queued up meanwhile: no round trip per message, and FIFO
into Redis, so messages from one sender reach every node in the order sent.

Channels (`tether.backplane.topic`) and keys (`_Keys`), prefix `tether` by default,
`?prefix=` in the URL:

    {prefix}:path:<path>              pub/sub  broadcasts to a concrete path
    {prefix}:room:<room>              pub/sub  publishes to a room
    {prefix}:node:<node>              pub/sub  a node's inbox: send_to / close of its connections, probes
    {prefix}:nodes                    ZSET     node -> last heartbeat (ms)
    {prefix}:count                    HASH     node -> connections it holds
    {prefix}:presence:{<room>}        HASH     connection id -> presence info (JSON), every node's members
    {prefix}:presence-rooms:<node>    SET      rooms where the node has presence entries (for cleanup)
    {prefix}:janitor:<node>           STRING   who cleans up a dead node
    {prefix}:kept:<room>              pub/sub  a history room's numbered messages (`tether.backplane.history`)
    {prefix}:history:{<room>}         STREAM   a history room's kept messages: id <offset>-0, d envelope [x expiry ms]
    {prefix}:history-meta:{<room>}    HASH     a history room's epoch, last offset and size

tether supervises both connections itself, so that no gap is hidden: redis-py's retries are
off, and so are its reconnects (each client connects once: a connection redis-py would
replace on its own, as its pool does for one the server closed, fails instead). On an error,
a Redis restart, a connection closed (CLIENT KILL), or a subscriber that went deaf (nothing
heard for `probe` seconds, then a probe through its own inbox unanswered for as long), the
backplane is DOWN: it closes the connections, reconnects with jittered backoff capped at
1 s, subscribes everything again and writes this node's presence and count again. While DOWN,
local delivery goes on and cluster messages are dropped and counted (`lost`), never queued
without bound, never raised into a handler; one WARNING is logged when an outage starts and
one with the count when it ends; `resumed()` (`Backplane.resumed`, set by the hub) is called
whenever it is UP again after being DOWN. A node heartbeats every `heartbeat` seconds
(`?heartbeat=` in the URL, default 5); a node silent for 3 heartbeats is dead, and the first
survivor to notice removes its presence entries and reports them as leaves.

History rooms (`publish_kept`, `history`) are two Lua scripts, `_PUBLISH_KEPT` and
`_READ_KEPT`, sent with EVALSHA through the same writer (so in call order with everything
else); a script Redis no longer holds (restarted, SCRIPT FLUSH) is loaded again and the
commands that met NOSCRIPT are sent again at once, before anything queued after them.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import hashlib
import logging
import math
import random
import re
import time
from collections import deque
from collections.abc import Awaitable
from typing import Any
from urllib.parse import unquote_plus

import redis.asyncio as redis_asyncio
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import NoScriptError, RedisError

from ..tasks import cancel_and_wait, close_quietly
from .base import Backplane, BackplaneState, MembersGone, Receive, Snapshot
from .envelope import Kind, encode
from .history import NOWHERE, HistoryLimits, Position, Stored, new_epoch
from .loopclock import HeldClock
from .outage import OutageLog
from .topic import Topic, TopicKind

__all__ = ["RedisBackplane"]

logger = logging.getLogger("tether.backplane")

_MAX_BATCH = 1024         # commands per pipeline
_MAX_PENDING = 100_000    # commands queued while the writer is busy; past it, messages are lost
_BACKOFF_FIRST, _BACKOFF_CAP = 0.05, 1.0
_READ_TICK = 0.25         # how often an idle subscriber checks its liveness
_OPTIONS = ("prefix", "heartbeat", "probe")  # tether's own, in the URL's query string
#: how long a history room's keys outlive its last publish when its limits set no ttl: history
#: nobody writes goes away (a room written again after that starts a new epoch)
HISTORY_IDLE_TTL = 24 * 3600.0

# One publish into a history room, atomic (docs/scaling.md, "History rooms").
# KEYS: the room's meta HASH (epoch, offset, size) and its STREAM (<offset>-0: d envelope [x expiry ms]).
# ARGV: channel, envelope, a fresh epoch (used only when the room has none), size, ttl in ms
# (0: none), the keys' ttl in ms, the publish command (PUBLISH; SPUBLISH on a Redis Cluster,
# where the channel is of the keys' slot). Returns the offset. With a ttl it trims at most 16 expired
# messages from the stream's head (two XRANGEs of one entry and an XTRIM when one expired, as
# each publish does in a steady stream; a backlog goes 16 a publish); a read skips the rest.
_PUBLISH_KEPT = """
local meta, stream = KEYS[1], KEYS[2]
local envelope, size, ttl = ARGV[2], ARGV[4], tonumber(ARGV[5])
local known = redis.call('HMGET', meta, 'epoch', 'size')
local epoch = known[1]
if not epoch then
  epoch = ARGV[3]
  redis.call('DEL', stream)
  redis.call('HSET', meta, 'epoch', epoch, 'offset', 0, 'size', size)
elseif known[2] ~= size then
  redis.call('HSET', meta, 'size', size)
end
local offset = string.format('%d', redis.call('HINCRBY', meta, 'offset', 1))
if ttl > 0 then
  local clock = redis.call('TIME')
  local now = clock[1] * 1000 + math.floor(clock[2] / 1000)
  redis.call('XADD', stream, 'MAXLEN', '~', size, offset .. '-0', 'd', envelope,
             'x', string.format('%d', now + ttl))
  local start, last = '-', nil
  for _ = 1, 16 do
    local entry = redis.call('XRANGE', stream, start, '+', 'COUNT', 1)[1]
    local expiry = entry and entry[2][4]
    if not expiry or tonumber(expiry) > now then break end
    last = entry[1]
    start = '(' .. last
  end
  if last then
    redis.call('XTRIM', stream, 'MINID', string.format('%d', tonumber(string.match(last, '^%d+')) + 1) .. '-0')
  end
else
  redis.call('XADD', stream, 'MAXLEN', '~', size, offset .. '-0', 'd', envelope)
end
redis.call('PEXPIRE', meta, ARGV[6])
redis.call('PEXPIRE', stream, ARGV[6])
redis.call(ARGV[7], ARGV[1], offset .. ' ' .. epoch .. ' ' .. envelope)
return tonumber(offset)
"""

# One read of a history room. KEYS: as _PUBLISH_KEPT's. ARGV: since (an offset, 0: from the
# start), limit (-1: none). Returns {} for a room with no epoch, else {epoch, offset, then
# id, envelope of each kept message after since}: the newest `size` only, none expired.
_READ_KEPT = """
local meta = redis.call('HMGET', KEYS[1], 'epoch', 'offset', 'size')
if not meta[1] then return {} end
local top, size = tonumber(meta[2]), tonumber(meta[3])
local since, limit = tonumber(ARGV[1]), tonumber(ARGV[2])
if size and since < top - size then since = top - size end
local reply = {meta[1], top}
if limit == 0 or since >= top then return reply end
local clock = redis.call('TIME')
local now = clock[1] * 1000 + math.floor(clock[2] / 1000)
local start, want = string.format('%d', since + 1) .. '-0', limit
while true do
  local batch
  if limit < 0 then
    batch = redis.call('XRANGE', KEYS[2], start, '+')
  else
    batch = redis.call('XRANGE', KEYS[2], start, '+', 'COUNT', want)
  end
  for _, entry in ipairs(batch) do
    local expiry = entry[2][4]
    if not expiry or tonumber(expiry) > now then
      reply[#reply + 1] = entry[1]
      reply[#reply + 1] = entry[2][2]
    end
  end
  if limit < 0 or #batch < want then break end
  want = limit - (#reply - 2) / 2
  if want <= 0 then break end
  start = '(' .. batch[#batch][1]
end
return reply
"""
_SCRIPTS = {hashlib.sha1(body.encode()).hexdigest(): body for body in (_PUBLISH_KEPT, _READ_KEPT)}
_PUBLISH_KEPT_SHA, _READ_KEPT_SHA = _SCRIPTS


def _split_url(url: str, options: tuple[str, ...] = _OPTIONS) -> tuple[str, dict[str, str]]:
    """(the URL for redis-py, tether's own options `prefix`, `heartbeat` and `probe`, or the
    `options` named): they are
    taken out of the query string, and everything else is passed on as written, so the URL
    keeps its form (the `//` of unix:///path, which redis-py requires, user:password@, the db
    path, redis-py's own options and their percent-encoding)."""
    rest, hash_mark, fragment = url.partition("#")
    base, _, query = rest.partition("?")
    ours, theirs = {}, []
    for field in query.split("&"):
        key, _, value = field.partition("=")
        if unquote_plus(key) in options:
            ours[unquote_plus(key)] = unquote_plus(value)
        elif field:
            theirs.append(field)
    return base + ("?" if theirs else "") + "&".join(theirs) + hash_mark + fragment, ours


def _redacted(url: str) -> str:
    """`url` fit for a log: a password in it (`user:password@`, `?password=`) is shown as `***`."""
    url = re.sub(r"(://[^/?#@:]*):[^/?#@]*@", r"\1:***@", url)
    return re.sub(r"([?&]password=)[^&#]*", r"\1***", url)


class _Deaf(Exception):
    """The subscriber hears nothing, not even its own probe."""


class _Keys:
    """The names of one cluster's Redis keys (the module doc's table): each a word of its own,
    none a channel's kind word (`tether.backplane.topic.TopicKind`)."""

    def __init__(self, prefix: str) -> None:
        self.prefix = prefix
        self.nodes = f"{prefix}:nodes"
        self.count = f"{prefix}:count"

    def room(self, room: str) -> str:
        """What a room's keys end with: `{<room>}`, its name as their hash tag (one Redis
        Cluster slot for all of them)."""
        return f"{{{room}}}"

    def presence(self, room: str) -> str:
        """The room's presence HASH."""
        return f"{self.prefix}:presence:{self.room(room)}"

    def node(self, node: str) -> str:
        """What a node's keys end with: its name (on a Redis Cluster, under a hash tag)."""
        return node

    def presence_rooms(self, node: str) -> str:
        return f"{self.prefix}:presence-rooms:{self.node(node)}"

    def janitor(self, node: str) -> str:
        return f"{self.prefix}:janitor:{self.node(node)}"

    def history(self, room: str) -> str:
        """A history room's STREAM of kept messages (one hash slot with its meta)."""
        return f"{self.prefix}:history:{self.room(room)}"

    def history_meta(self, room: str) -> str:
        """A history room's HASH: `epoch`, `offset` (the last one given), `size`."""
        return f"{self.prefix}:history-meta:{self.room(room)}"


class RedisBackplane(Backplane):
    """A node of a cluster whose nodes share one Redis server (see the module doc)."""

    #: the commands a message is sent and a channel (un)subscribed with (a Redis Cluster's
    #: engine uses the sharded ones)
    _publish_command, _subscribe_command, _unsubscribe_command = "publish", "subscribe", "unsubscribe"

    def __init__(self, node: bytes, url: str) -> None:
        super().__init__(node)
        self.url, options = _split_url(url)
        self.prefix = options.get("prefix", "tether")
        self.keys = _Keys(self.prefix)
        self.heartbeat = float(options.get("heartbeat", 5.0))
        self.probe = float(options.get("probe", 1.0))
        self.inbox = self.channel(Topic(TopicKind.NODE, node.hex()))
        self._node_name = node.hex()
        self._channels: set[str] = set()
        self._subscribed: set[str] = set()  # the channels the subscriber's (last) start subscribed
        self._confirmations: dict[str, asyncio.Future[None]] = {}
        self._queue: deque[tuple[str, tuple[Any, ...], asyncio.Future[Any] | None, bool]] = deque()
        self._wakeup = asyncio.Event()
        self._sub_up = False
        self._pub_up = False
        # False from the subscriber's loss of its connection until the writer's next command
        # came back: the writer's connection, idle meanwhile, may have died with it unnoticed.
        self._writer_checked = True
        self._pubsub: Any = None
        self._tasks: list[asyncio.Task[None]] = []
        self._outage = OutageLog("Redis")
        self._probe_token = b""

    # -- lifecycle ---------------------------------------------------------------------------
    async def start(self, receive: Receive, members_gone: MembersGone, snapshot: Snapshot) -> None:
        self._receive, self._members_gone, self._snapshot = receive, members_gone, snapshot
        self._loop = asyncio.get_running_loop()
        self._up = asyncio.Event()
        self._tasks = [self._loop.create_task(self._supervise(self._listen, "subscriber")),
                       self._loop.create_task(self._supervise(self._write, "publisher")),
                       self._loop.create_task(self._supervise(self._beat, "heartbeat"))]
        try:
            await asyncio.wait_for(self._up.wait(), timeout=2.0)
        except TimeoutError:
            logger.warning("tether backplane: Redis at %s is not reachable yet; serving with local delivery "
                           "only and retrying", _redacted(self.url))

    async def stop(self) -> None:
        if self._pub_up:  # leave the cluster tidily: our count and heartbeat go now
            done = []
            for nodes, count in self._tallies():
                done.append(self._loop.create_future())
                self._command("hdel", (count, self._node_name), None, False)
                self._command("zrem", (nodes, self._node_name), done[-1], False)
            with contextlib.suppress(Exception):
                await asyncio.wait_for(asyncio.gather(*done), timeout=1.0)
        self.state = BackplaneState.STOPPED
        await cancel_and_wait(self._tasks)

    async def _supervise(self, run: Any, name: str) -> None:
        """Run `run()` forever: an error of its own is logged and it starts again."""
        delay = _BACKOFF_FIRST
        while True:
            started = time.monotonic()
            try:
                await run()
            except asyncio.CancelledError:
                raise
            except (OSError, TimeoutError, _Deaf, RedisError) as exc:  # Redis went away
                self._went_down(name, f"{name}: {type(exc).__name__}: {exc}")
            except Exception as exc:  # a failure of its own: never quiet, and it starts again
                logger.exception("tether backplane: the %s failed; restarting it", name)
                self._went_down(name, f"{name}: {type(exc).__name__}: {exc}")
            if self.state is BackplaneState.STOPPED:
                return  # stop() cancelled it and the cancellation was spent on the way out
            if time.monotonic() - started > 2 * _BACKOFF_CAP:
                delay = _BACKOFF_FIRST  # it had been up: retry quickly
            await asyncio.sleep(delay * random.uniform(0.5, 1.0))
            delay = min(delay * 2, _BACKOFF_CAP)

    async def _client(self) -> redis_asyncio.Redis:
        """A client of the Redis server to use: `_client_of(url)` here; an engine that must
        first find its server (Sentinel's) overrides it. Raises what connecting raises."""
        return self._client_of(self.url)

    def _client_of(self, url: str) -> redis_asyncio.Redis:
        """A redis-py client of `url` whose connection connects once. Its retries are off, and a
        reconnect redis-py would make without raising fails instead: its pool replaces a pooled
        connection the server closed (CLIENT KILL, a timeout) when the next command takes it,
        and a pubsub reconnects and subscribes again after an error; either would hide the gap.
        The failure is a Redis outage, and the supervisor starts over with a new client."""
        connected = False

        async def connect_once(connection: Any) -> None:
            nonlocal connected
            if connected:
                raise RedisConnectionError("the connection to Redis was lost (closed by the server or the network)")
            connected = True
            await connection.on_connect()

        options: dict[str, Any] = {"retry": Retry(NoBackoff(), 0), "socket_connect_timeout": 2.0,
                                   "health_check_interval": 0, "redis_connect_func": connect_once}
        if not url.startswith("unix:"):
            options["socket_keepalive"] = True  # TCP only: a half-open connection is found
        return redis_asyncio.Redis.from_url(url, **options)

    # -- state -------------------------------------------------------------------------------
    def _went_down(self, part: str, why: str) -> None:
        """`part` ("subscriber", "publisher", "heartbeat") failed; the other keeps its state."""
        if part == "subscriber":
            self._sub_up = False
        elif part == "publisher":
            self._pub_up = False
        else:
            logger.warning("tether backplane: %s", why)
            return
        self._outage.down(self, why)
        self._up.clear()
        if part == "subscriber":
            if self._pub_up:
                self._writer_checked = False
                self._check_writer()
            for waiter in self._confirmations.values():
                if not waiter.done():
                    waiter.set_result(None)  # a join does not wait for a Redis that is down
            self._confirmations.clear()

    def _maybe_up(self) -> None:
        if not (self._sub_up and self._pub_up and self._writer_checked) or self.state is BackplaneState.UP:
            return
        was_down = self.state is BackplaneState.DOWN
        self.state = BackplaneState.UP
        self._up.set()
        self._resync()  # Redis may have restarted empty, or missed writes while we were down
        self._outage.up(self, was_down)

    def _check_writer(self) -> None:
        """Queue what proves the writer's connection when its batch comes back (`_drain`
        marks it checked) or fails it (an outage of the writer, which reconnects): a PING."""
        self._command("ping", (), None, False)

    # -- the subscriber ------------------------------------------------------------------------
    async def _listen(self) -> None:
        client = await self._client()
        pubsub = client.pubsub()
        try:
            self._subscribed = {self.inbox, *self._channels}
            await pubsub.subscribe(*self._subscribed)
            self._pubsub = pubsub
            await self._read(pubsub, set(self._subscribed))
        finally:
            self._pubsub = None
            self._sub_up = False
            # A cancellation (stop()) that lands during this cleanup goes through: it ends the
            # task, or its supervisor would go on with the next round.
            await close_quietly(pubsub.aclose())
            await close_quietly(client.aclose())

    async def _read(self, pubsub: Any, unconfirmed: set[str], probe: str | None = None) -> None:
        """Deliver what `pubsub` hears until it fails or goes deaf: it is probed through the
        channel `probe` (this node's inbox by default) after `probe` seconds of silence."""
        probe = probe or self.inbox
        loop = self._loop
        heard = loop.time()
        clock = HeldClock(_READ_TICK)
        probe_sent: float | None = None
        receive = self._receive
        while True:
            connection = pubsub.connection
            if connection is not None and not connection.is_connected:
                # Closed under us (a subscribe that failed in another task): the outage it
                # is, said here rather than by the refused reconnect of the next read.
                raise ConnectionError("the subscriber's connection was closed")
            message = await pubsub.get_message(timeout=_READ_TICK)
            now = loop.time()
            held = clock.held(now)  # the loop held elsewhere: nothing was read meanwhile, the
            if held:             # probe's answer included; that silence is not Redis's
                heard += held
                if probe_sent is not None:
                    probe_sent += held
            if message is None:
                if probe_sent is not None:
                    if now - probe_sent > self.probe:
                        raise _Deaf(f"no answer to a probe through its own inbox within {self.probe} s")
                elif now - heard > self.probe and self._pub_up:
                    self._probe_token = random.randbytes(8)
                    self._command(self._publish_command,
                                  (probe, encode(Kind.PROBE, 0, self.node, self._probe_token)), None, False)
                    probe_sent = now
                continue
            heard, probe_sent = now, None
            kind = message["type"]
            channel = message["channel"].decode() if isinstance(message["channel"], bytes) else message["channel"]
            if kind in ("message", "smessage"):
                data = message["data"]
                if channel == probe and data[:1] == b"\x05":
                    continue  # our probe came back: we hear
                try:
                    receive(channel, data)
                except Exception:
                    logger.exception("tether backplane: delivering a message from %s failed", channel)
            elif kind in ("subscribe", "ssubscribe"):
                unconfirmed.discard(channel)
                waiter = self._confirmations.pop(channel, None)
                if waiter is not None and not waiter.done():
                    waiter.set_result(None)
                if channel == probe:
                    self._hears(channel)
            elif kind == "sunsubscribe":
                self._slot_moved(channel)

    def _hears(self, probe: str) -> None:
        """The subscription to the probe channel `probe` is in force: the subscriber is up."""
        if not self._sub_up:
            self._sub_up = True
            self._catch_up_subscriptions()
            self._maybe_up()

    def _catch_up_subscriptions(self) -> None:
        """The subscriber is up: the channels followed since its start chose its channels
        (`_subscribed`) are subscribed now, and those left since are unsubscribed (a
        `subscribe` or `unsubscribe` meanwhile had no subscriber up to send it on)."""
        for channel in self._channels - self._subscribed:
            self._loop.create_task(self._send_subscription(self._pubsub_of(channel), self._subscribe_command, channel))
        for channel in self._subscribed - self._channels - {self.inbox}:
            self._loop.create_task(self._send_subscription(self._pubsub_of(channel), self._unsubscribe_command,
                                                           channel))

    def _slot_moved(self, channel: str) -> None:
        """Redis ended the subscription to the shard channel `channel` (a Redis Cluster slot
        that moved, or a SUNSUBSCRIBE's reply); a single Redis server sends none."""

    def subscribe(self, channel: str) -> Awaitable[None] | None:
        if channel in self._channels:
            return self._confirmations.get(channel)
        self._channels.add(channel)
        pubsub = self._pubsub_of(channel)
        if pubsub is None or not self._sub_up:
            return None  # subscribed with everything else when the subscriber reconnects
        waiter: asyncio.Future[None] = self._loop.create_future()
        self._confirmations[channel] = waiter
        self._loop.create_task(self._send_subscription(pubsub, self._subscribe_command, channel))
        return waiter

    def unsubscribe(self, channel: str) -> None:
        if channel not in self._channels:
            return
        self._channels.discard(channel)
        waiter = self._confirmations.pop(channel, None)
        if waiter is not None and not waiter.done():
            waiter.set_result(None)
        pubsub = self._pubsub_of(channel)
        if pubsub is not None and self._sub_up:
            self._loop.create_task(self._send_subscription(pubsub, self._unsubscribe_command, channel))

    def _pubsub_of(self, channel: str) -> Any:
        """The subscriber connection (a redis-py PubSub) that `channel` is subscribed on, None
        while there is none: the one here (a Redis Cluster's engine has one per shard)."""
        return self._pubsub

    async def _send_subscription(self, pubsub: Any, command: str, channel: str) -> None:
        try:
            await getattr(pubsub, command)(channel)
        except Exception as exc:  # the reader sees the broken connection too and reconnects
            logger.debug("tether backplane: %s %s failed: %s", command, channel, exc)

    # -- the writer ----------------------------------------------------------------------------
    def _command(self, name: str, args: tuple[Any, ...], result: asyncio.Future[Any] | None,
                 is_message: bool) -> None:
        if not self._pub_up or len(self._queue) >= _MAX_PENDING:
            if is_message:
                self.lost += 1
                if not self._pub_up:  # a full queue while up is no outage's loss
                    self._outage.lost(1)
            if result is not None and not result.done():
                result.set_exception(ConnectionError("the backplane is down"))
            return
        self._queue.append((name, args, result, is_message))
        self._wakeup.set()

    async def _write(self) -> None:
        client = await self._client()
        try:
            await client.ping()
            await self._drain(functools.partial(self._send, client))
        finally:
            self._pub_up = False
            self._fail_queue()
            await close_quietly(client.aclose())

    async def _drain(self, send: Any) -> None:
        """Up: hand `send` what is queued, a batch at a time, until it raises."""
        self._pub_up = self._writer_checked = True  # its connection has just answered
        self._maybe_up()
        while True:
            if not self._queue:
                self._wakeup.clear()
                await self._wakeup.wait()
            await send([self._queue.popleft() for _ in range(min(len(self._queue), _MAX_BATCH))])
            if not self._writer_checked:  # a batch came back: the connection works
                self._writer_checked = True
                self._maybe_up()

    async def _send(self, client: redis_asyncio.Redis, batch: list[tuple[str, tuple[Any, ...],
                    asyncio.Future[Any] | None, bool]], load_scripts: bool = False) -> None:
        """Send `batch` as one pipeline and hand each command its reply. The EVALSHAs that
        met NOSCRIPT (Redis restarted, SCRIPT FLUSH) are sent again at once, after loading the
        scripts in the same pipeline, before anything queued after them. A message Redis
        refused (an error reply, as OOM under maxmemory) is lost: counted, and logged."""
        pipe = client.pipeline(transaction=False)
        if load_scripts:
            for body in _SCRIPTS.values():
                pipe.script_load(body)
        for name, args, _, _ in batch:
            getattr(pipe, name)(*args)
        try:
            results = await pipe.execute(raise_on_error=False)
            self._check_replies(results)
        except Exception:
            lost = sum(1 for *_, is_message in batch if is_message)
            self.lost += lost
            self._outage.lost(lost)
            for _, _, result, _ in batch:
                if result is not None and not result.done():
                    result.set_exception(ConnectionError("the backplane went down"))
            raise
        again, refused = [], []
        for command, value in zip(batch, results[len(_SCRIPTS) if load_scripts else 0:], strict=True):
            _, _, result, is_message = command
            if isinstance(value, NoScriptError) and not load_scripts:
                again.append(command)
                continue
            if self._redirected(command, value):
                continue
            if isinstance(value, Exception) and is_message:
                refused.append(value)
            if result is not None and not result.done():
                if isinstance(value, Exception):
                    result.set_exception(value)
                else:
                    result.set_result(value)
        if refused:
            self.lost += len(refused)
            logger.warning("tether backplane: Redis refused %d cluster message(s), which are lost: %s",
                           len(refused), refused[0])
        if again:
            await self._send(client, again, load_scripts=True)

    def _redirected(self, command: tuple[str, tuple[Any, ...], asyncio.Future[Any] | None, bool],
                    reply: Any) -> bool:
        """Whether `reply` sends `command` elsewhere (a Redis Cluster's MOVED, ASK, TRYAGAIN),
        which then takes care of it; a single Redis server redirects nothing."""
        return False

    def _check_replies(self, replies: list[Any]) -> None:
        """Raise when a pipeline's `replies` (errors included) say this server can no longer
        be written to, to make an outage of it (the batch is lost): an engine's hook (the
        Sentinel one's for READONLY); here no reply does, each refusal is the message's own."""

    def _fail_queue(self) -> None:
        while self._queue:
            _, _, result, is_message = self._queue.popleft()
            if is_message:
                self.lost += 1
                self._outage.lost(1)
            if result is not None and not result.done():
                result.set_exception(ConnectionError("the backplane went down"))

    def _resync(self) -> None:
        """Write this node's count, heartbeat and presence again (after a start or an outage;
        Redis may have restarted empty)."""
        state = self._snapshot()
        for nodes, count in self._tallies():
            self._command("zadd", (nodes, {self._node_name: _now_ms()}), None, False)
            self._command("hset", (count, self._node_name, state.connections), None, False)
        for room, members in state.presence.items():
            if members:
                self._command("hset", (self.keys.presence(room), None, None, members), None, False)
                self._command("sadd", (self.keys.presence_rooms(self._node_name), room), None, False)

    async def _call(self, name: str, *args: Any) -> Any:
        """Run one command through the writer's connection and return its reply."""
        result: asyncio.Future[Any] = self._loop.create_future()
        self._command(name, args, result, False)
        return await result

    # -- messages, presence, counts --------------------------------------------------------------
    def publish(self, channel: str, data: bytes) -> None:
        self._command(self._publish_command, (channel, data), None, True)

    def publish_kept(self, topic: Topic, envelope: bytes, limits: HistoryLimits) -> None:
        """One EVALSHA of `_PUBLISH_KEPT`, queued like a publish (in call order, pipelined;
        counted in `lost` when it cannot be sent or Redis refuses it)."""
        ttl = 0 if limits.ttl is None else max(1, math.ceil(limits.ttl * 1000))
        room = topic.name
        result = self._loop.create_future()
        result.add_done_callback(functools.partial(self._kept_or_lost, room))
        self._command("evalsha", (_PUBLISH_KEPT_SHA, 2, self.keys.history_meta(room), self.keys.history(room),
                                  self.channel(topic), envelope, new_epoch(), limits.size, ttl,
                                  ttl or int(HISTORY_IDLE_TTL * 1000), self._publish_command), result, True)

    def _kept_or_lost(self, room: str, result: asyncio.Future[Any]) -> None:
        """A history room's publish was answered: when it failed, tell the hub (`kept_lost`)."""
        if result.cancelled() or self.kept_lost is None:
            return
        error = result.exception()
        if error is not None:
            self.kept_lost(room, str(error) or type(error).__name__)

    async def history(self, topic: Topic, since: int | None, limit: int | None) -> tuple[Position, list[Stored]]:
        """One EVALSHA of `_READ_KEPT` through the writer (after every publish called before
        it). Raises ConnectionError when it cannot read: the backplane is down, or Redis
        refused the read."""
        room = topic.name
        most = -1 if limit is None else max(0, limit)
        try:
            reply = await self._call("evalsha", _READ_KEPT_SHA, 2, self.keys.history_meta(room),
                                     self.keys.history(room), max(0, since or 0), most)
        except RedisError as exc:
            raise ConnectionError(f"reading the history of {room!r} failed: {exc}") from exc
        if not reply:
            return NOWHERE, []
        epoch, top, *kept = reply
        return Position(epoch.decode("ascii"), int(top)), [
            Stored(int(kept[i].partition(b"-")[0]), kept[i + 1]) for i in range(0, len(kept), 2)]

    def presence_join(self, room: str, connection_id: str, info: str) -> None:
        self._command("hset", (self.keys.presence(room), connection_id, info), None, False)
        self._command("sadd", (self.keys.presence_rooms(self._node_name), room), None, False)

    def presence_leave(self, room: str, connection_id: str) -> None:
        self._command("hdel", (self.keys.presence(room), connection_id), None, False)

    async def presence(self, room: str) -> dict[str, str]:
        try:
            entries = await self._call("hgetall", self.keys.presence(room))
            live, _ = await self._live_nodes()
        except ConnectionError:
            return dict(self._snapshot().presence.get(room, {}))  # down: what this node knows
        return {key.decode(): value.decode() for key, value in entries.items()
                if key.decode().replace("-", "")[:12] in live}

    def connections_changed(self, delta: int) -> None:
        for _, count in self._tallies():
            self._command("hincrby", (count, self._node_name, delta), None, False)

    async def count(self) -> int:
        try:
            live, counts = await self._live_nodes()
        except ConnectionError:
            return self._snapshot().connections
        return sum(counts.get(node, 0) for node in live)

    def _tallies(self) -> list[tuple[str, str]]:
        """The (nodes ZSET, count HASH) pairs every node writes its heartbeat and count into:
        the one pair here (a Redis Cluster's engine keeps a copy per shard)."""
        return [(self.keys.nodes, self.keys.count)]

    async def _read_tallies(self) -> tuple[dict[str, float], dict[str, int]]:
        """({node: its last heartbeat in ms, the newest any copy of `_tallies` holds}, {node:
        its count}), every copy read at once. ConnectionError when the backplane is down."""
        futures: list[asyncio.Future[Any]] = []
        for nodes, count in self._tallies():
            for name, args in (("zrange", (nodes, 0, -1, False, True)), ("hgetall", (count,))):
                futures.append(self._loop.create_future())
                self._command(name, args, futures[-1], False)
        replies = await asyncio.gather(*futures)
        beats: dict[str, float] = {}
        for node, beat in (pair for reply in replies[::2] for pair in reply):
            beats[node.decode()] = max(beat, beats.get(node.decode(), beat))
        counts = {key.decode(): int(value) for reply in reversed(replies[1::2]) for key, value in reply.items()}
        return beats, counts

    async def _live_nodes(self) -> tuple[set[str], dict[str, int]]:
        """(the nodes heard within 3 heartbeats, this one included; each node's count)."""
        beats, counts = await self._read_tallies()
        cutoff = _now_ms() - 3000 * self.heartbeat
        return {node for node, beat in beats.items() if beat >= cutoff} | {self._node_name}, counts

    # -- heartbeat and the cleanup of dead nodes -------------------------------------------------
    async def _beat(self) -> None:
        while True:
            await asyncio.sleep(self.heartbeat)
            if not self._pub_up:
                continue
            for nodes, _ in self._tallies():
                self._command("zadd", (nodes, {self._node_name: _now_ms()}), None, False)
            await self._bury_the_dead()

    async def _bury_the_dead(self) -> None:
        """Remove the presence entries and count of nodes silent for 3 heartbeats, reporting
        their members as gone (once: the first node to take the node's janitor lock does it)."""
        cutoff = _now_ms() - 3000 * self.heartbeat
        try:
            beats, _ = await self._read_tallies()
            for node in (node for node, beat in beats.items() if beat < cutoff):
                lock = await self._call("set", self.keys.janitor(node), self._node_name, None, 30_000, True)
                if not lock:
                    continue
                rooms = await self._call("smembers", self.keys.presence_rooms(node))
                for raw_room in rooms:
                    room = raw_room.decode()
                    entries = await self._call("hgetall", self.keys.presence(room))
                    gone = {key.decode(): value.decode() for key, value in entries.items()
                            if key.decode().replace("-", "")[:12] == node}
                    if gone:
                        await self._call("hdel", self.keys.presence(room), *gone)
                        self._members_gone(room, gone)
                await self._call("delete", self.keys.presence_rooms(node))
                for nodes, count in self._tallies():
                    await self._call("hdel", count, node)
                    await self._call("zrem", nodes, node)
                logger.warning("tether backplane: node %s stopped heartbeating; removed its members from "
                               "presence", node)
        except ConnectionError:
            return


def _now_ms() -> int:
    return int(time.time() * 1000)

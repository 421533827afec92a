"""The Redis Cluster backplane: nodes of one cluster meet on a Redis Cluster's sharded pub/sub.

`redis+cluster://[user:password@]host:port[,host:port...]` names some of the cluster's nodes
(any of them: the rest is read from `CLUSTER SHARDS`); `?prefix=&heartbeat=&probe=` as for
`redis://` (`tether.backplane.redis`), whose engine this one extends: the same supervision,
states, counters, WARNINGs, history scripts and liveness rules, with these differences.

Every channel and key of one name (a room, a path, a node's inbox) carries that name's hash
tag (`tether.backplane.slots.tag`, a digest: the name's braces never matter), so it all lives
on one slot, on one shard:

    {prefix}:room:{<tag>}<room>            shard channel  publishes to a room
    {prefix}:kept:{<tag>}<room>            shard channel  a history room's numbered messages
    {prefix}:path:{<tag>}<path>            shard channel  broadcasts to a concrete path
    {prefix}:node:{<tag>}<node>            shard channel  a node's inbox
    {prefix}:history:{<tag>}<room>         STREAM         a history room's kept messages
    {prefix}:history-meta:{<tag>}<room>    HASH           its epoch, last offset and size
    {prefix}:presence:{<tag>}<room>        HASH           the room's members on every node
    {prefix}:presence-rooms:{<tag>}<node>  SET            rooms where the node has members
    {prefix}:janitor:{<tag>}<node>         STRING         who cleans up a dead node
    {prefix}:nodes:{<n>}, {prefix}:count:{<n>}    ZSET, HASH    heartbeats and counts: one
                                             copy per shard (<n> a number on a slot it serves)
    {prefix}:probe:{<n>}<node>             shard channel  a node's probe of its subscriber there

Messages go out with SPUBLISH (the history script too), so they reach only the shard that
serves the channel, and are heard with SSUBSCRIBE. Per process there is one command
connection and one subscriber connection per shard master: the writer splits each batch by
shard and sends the parts as pipelines at once; channels are subscribed a slot at a time. A
node writes its heartbeat and count into every shard's copy and reads them all, so liveness
and counts do not hang on one shard's data. A MOVED reply refreshes the slot map and sends
the command again where it now belongs (ASK and TRYAGAIN, a slot being migrated: again after
10 ms), up to 50 times, after which it is lost (counted). A subscription Redis ends because
its slot moved is made again on the slot's new master (a new master, or a node's probe slot
that moved, starts the subscriber over: an outage).

The whole backplane is DOWN when any shard master cannot be reached (or the cluster says
CLUSTERDOWN): a shard's failover is one outage for every room, counted and logged as with one
server, and over once the replica is promoted and the slot map says so.

The connections are plain redis-py clients, one per master, made by `_client_of` (connect
once, no retries), not redis-py's RedisCluster and ClusterPubSub: those reconnect, retry and
resubscribe on their own (a poll of a node that fails is retried behind the caller's back),
which would hide the gaps this backplane counts and logs.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import re
from typing import Any

import redis.asyncio as redis_asyncio
from redis.exceptions import AskError, ClusterDownError, MovedError, RedisError, TryAgainError

from ..tasks import cancel_and_wait, close_quietly
from .base import BackplaneState
from .redis import RedisBackplane, _Keys, logger
from .slots import Topology, slot_of, tag
from .topic import Topic, channel_name, parse_channel

__all__ = ["RedisClusterBackplane"]

_REDIRECTS = 50          # times a command is sent again after MOVED, ASK or TRYAGAIN
_MIGRATING_PAUSE = 0.01  # seconds before sending again after ASK or TRYAGAIN
_ADDRESS = re.compile(r"(\[[0-9A-Fa-f:.]+\]|[^\[\]:/@?#,\s]+):(\d{1,5})")

Command = tuple[str, tuple[Any, ...], "asyncio.Future[Any] | None", bool]


def parse_url(url: str) -> tuple[str, list[str], str]:
    """(the `user:password@` part or "", the ["host:port", ...] seeds, redis-py's query string
    or "") of a `redis+cluster://` URL whose tether options are already taken out; ValueError
    naming what is wrong."""
    scheme, sep, rest = url.partition("://")
    if scheme.lower() != "redis+cluster" or not sep:
        raise ValueError(f"Redis Cluster backplane {url!r}: the URL must start with redis+cluster://")
    rest, _, query = rest.partition("?")
    auth, at, hosts = rest.rpartition("@")
    if hosts.endswith("/"):
        hosts = hosts[:-1]
    if not hosts:
        raise ValueError(f"Redis Cluster backplane {url!r}: no host:port given")
    seeds = []
    for seed in hosts.split(","):
        match = _ADDRESS.fullmatch(seed)
        if match is None or not 0 < int(match[2]) < 65536:
            raise ValueError(f"Redis Cluster backplane {url!r}: {seed!r} is not host:port (a cluster has no "
                             "database path; every node is named with its port)")
        seeds.append(seed)
    return auth + at, seeds, query


class _ClusterKeys(_Keys):
    """The key names of the module doc: a room's and a node's keys under its name's tag."""

    def room(self, room: str) -> str:
        return f"{{{tag(room)}}}{room}"

    def node(self, node: str) -> str:
        return self.room(node)


class RedisClusterBackplane(RedisBackplane):
    """A node of a cluster whose nodes share a Redis Cluster (see the module doc)."""

    _publish_command, _subscribe_command, _unsubscribe_command = "spublish", "ssubscribe", "sunsubscribe"

    def __init__(self, node: bytes, url: str) -> None:
        super().__init__(node, url)
        self._auth, self._seeds, self._query = parse_url(self.url)
        if "{" in self.prefix or "}" in self.prefix:
            raise ValueError(f"Redis Cluster backplane: prefix {self.prefix!r} holds a brace, which would make "
                             "it every key's hash tag (every room on one slot)")
        if not (self.heartbeat > 0 and self.probe > 0):
            raise ValueError("Redis Cluster backplane: heartbeat and probe must be over 0 seconds")
        self.keys = _ClusterKeys(self.prefix)
        self._writing: Topology | None = None   # the writer's slot map
        self._reading: Topology | None = None   # the subscriber's slot map
        self._pubsubs: dict[str, Any] = {}      # master -> its subscriber connection
        self._probes: dict[str, str] = {}       # master -> this node's probe channel there
        self._heard: set[str] = set()           # probe channels whose subscription is in force
        self._rerouted: list[tuple[Command, RedisError]] = []
        self._moved: set[str] = set()           # channels whose slot moved, to subscribe again
        self._following: asyncio.Task[None] | None = None
        self._stale = False                     # the writer's masters are not the subscriber's
        self._delta = 0                         # connections changed, not yet sent

    # -- names --------------------------------------------------------------------------------
    def channel(self, topic: Topic) -> str:
        """`<prefix>:<kind>:{<tag>}<name>`: the topic's shard channel, on its name's slot."""
        return channel_name(self.prefix, Topic(topic.kind, f"{{{tag(topic.name)}}}{topic.name}"))

    def topic(self, channel: str) -> Topic | None:
        found = parse_channel(self.prefix, channel)
        if found is None or found.name[:1] != "{" or found.name[13:14] != "}":
            return None
        name = found.name[14:]
        return Topic(found.kind, name) if found.name[1:13] == tag(name) else None

    def connections_changed(self, delta: int) -> None:
        """Added up, and sent once per turn of the event loop into every shard's count (a
        thousand connects at once are one HINCRBY per shard, not a thousand)."""
        if not self._delta:
            self._loop.call_soon(self._count_delta)
        self._delta += delta

    def _count_delta(self) -> None:
        delta, self._delta = self._delta, 0
        if delta:
            super().connections_changed(delta)

    def _resync(self) -> None:
        self._delta = 0  # the count written now holds it
        super()._resync()

    def _tallies(self) -> list[tuple[str, str]]:
        """A copy of the heartbeats and counts per shard master (none before the first map)."""
        tags = self._writing.tags.values() if self._writing is not None else ()
        return [(f"{self.prefix}:nodes:{{{n}}}", f"{self.prefix}:count:{{{n}}}") for n in tags]

    # -- the cluster's map -----------------------------------------------------------------------
    def _node_url(self, address: str) -> str:
        return f"redis://{self._auth}{address}" + (f"?{self._query}" if self._query else "")

    async def _topology(self) -> Topology:
        """The slot map, from the first node that answers (the masters last seen, then the URL's)."""
        known = [*(self._reading.masters if self._reading else ()), *(self._writing.masters if self._writing else ())]
        failures = []
        for address in dict.fromkeys([*known, *self._seeds]):
            client = self._client_of(self._node_url(address))
            try:
                reply = client.execute_command("CLUSTER", "SHARDS")  # type: ignore[no-untyped-call]
                return Topology(await asyncio.wait_for(reply, 2.0))
            except (OSError, TimeoutError, RedisError) as exc:
                failures.append(f"{address}: {type(exc).__name__}: {exc}")
            finally:
                await close_quietly(client.aclose())
        raise ConnectionError("no node of the Redis Cluster gave its slot map (" + "; ".join(failures) + ")")

    # -- the writer ---------------------------------------------------------------------------
    async def _write(self) -> None:
        """The writer, on the slot map it reads. Started over on the subscriber's masters
        (`_stale`), it keeps what was queued (the subscriber's probes among it) and sends it
        first; any other end fails what is queued."""
        try:
            self._writing = topology = await self._topology()
        except BaseException:
            self._fail_queue()
            raise
        self._stale = False
        clients: dict[str, redis_asyncio.Redis] = {}
        try:
            for address in topology.masters:
                clients[address] = self._client_of(self._node_url(address))
            await asyncio.gather(*(client.ping() for client in clients.values()))
            await self._drain(functools.partial(self._send_routed, clients))
        finally:
            self._pub_up = False
            if not self._stale or self.state is BackplaneState.STOPPED:
                self._fail_queue()
            for client in clients.values():
                await close_quietly(client.aclose())

    async def _send_routed(self, clients: dict[str, redis_asyncio.Redis], batch: list[Command]) -> None:
        """Send `batch` split by shard, the parts at once; what was redirected again, in order.
        When the subscriber is on other masters (`_stale`), the writer starts over on theirs:
        before `batch`, which goes back to the head of the queue, or right after it (the
        subscriber may have come up while it was out)."""
        if self._stale:
            self._queue.extendleft(reversed(batch))
        else:
            await self._route(batch, clients)
            if not self._stale:
                return
        raise ConnectionError("the Redis Cluster's masters changed")

    async def _route(self, batch: list[Command], clients: dict[str, redis_asyncio.Redis]) -> None:
        for _ in range(_REDIRECTS):
            assert self._writing is not None
            parts: dict[str, list[Command]] = {}
            for command in batch:
                name, args = command[0], command[1]
                parts.setdefault(self._writing.owner(args[2] if name == "evalsha" else args[0]), []).append(command)
            for address in parts.keys() - clients.keys():  # a master the map gained (a migration's target)
                clients[address] = self._client_of(self._node_url(address))
            self._rerouted = []
            outcomes = await asyncio.gather(*(self._send(clients[address], part) for address, part in parts.items()),
                                            return_exceptions=True)
            rerouted, self._rerouted = self._rerouted, []
            failure = next((outcome for outcome in outcomes if isinstance(outcome, BaseException)), None)
            failure = failure or next((why for _, why in rerouted if isinstance(why, ClusterDownError)), None)
            if failure is not None:
                self._drop([command for command, _ in rerouted])
                raise failure
            if not rerouted:
                return
            batch = [command for command, _ in rerouted]
            if any(isinstance(why, MovedError) for _, why in rerouted):
                try:
                    self._writing = await self._topology()
                except ConnectionError:
                    self._drop(batch)
                    raise
            else:
                await asyncio.sleep(_MIGRATING_PAUSE)
        logger.warning("tether backplane: %d command(s) still redirected after %d tries (a slot migration "
                       "under way); cluster messages among them are lost", len(batch), _REDIRECTS)
        self._drop(batch, outage=False)

    def _redirected(self, command: Command, reply: Any) -> bool:
        if isinstance(reply, (MovedError, AskError, TryAgainError, ClusterDownError)):
            self._rerouted.append((command, reply))
            return True
        return False

    def _drop(self, commands: list[Command], outage: bool = True) -> None:
        """`commands` will not be sent: messages among them are lost (in the outage that
        this is the start of, unless `outage` is False), callers told."""
        for _, _, result, is_message in commands:
            if is_message:
                self.lost += 1
                self._outage.lost(int(outage))
            if result is not None and not result.done():
                result.set_exception(ConnectionError("the backplane went down"))

    # -- the subscribers ----------------------------------------------------------------------
    async def _listen(self) -> None:
        self._reading = topology = await self._topology()
        clients: dict[str, redis_asyncio.Redis] = {}
        pubsubs: dict[str, Any] = {}
        tasks: list[asyncio.Task[None]] = []
        try:
            for address in topology.masters:
                clients[address] = self._client_of(self._node_url(address))
                pubsubs[address] = clients[address].pubsub()
            self._probes = {address: f"{self.prefix}:probe:{{{topology.tags[address]}}}{self._node_name}"
                            for address in topology.masters}
            self._heard = set()
            wanted = {address: {probe} for address, probe in self._probes.items()}
            self._subscribed = {self.inbox, *self._channels}
            for channel in self._subscribed:
                wanted[topology.owner(channel)].add(channel)
            for address, channels in wanted.items():
                by_slot: dict[int, list[str]] = {}
                for channel in channels:
                    by_slot.setdefault(slot_of(channel), []).append(channel)
                for group in by_slot.values():
                    await pubsubs[address].ssubscribe(*group)
            self._pubsubs = pubsubs
            tasks = [self._loop.create_task(self._read(pubsubs[address], wanted[address], self._probes[address]))
                     for address in topology.masters]
            done, _ = await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
            for task in done:
                task.result()  # raises what ended it
        finally:
            self._pubsubs = {}
            self._sub_up = False
            await cancel_and_wait(tasks)
            for address, client in clients.items():
                await close_quietly(pubsubs[address].aclose())
                await close_quietly(client.aclose())

    def _check_writer(self) -> None:
        """An EXISTS on every master the writer knows (of a key in its slots): a keyless PING
        would have no shard to go to."""
        assert self._writing is not None  # the writer is up
        for shard_tag in self._writing.tags.values():
            self._command("exists", (f"{self.prefix}:probe:{{{shard_tag}}}",), None, False)

    def _pubsub_of(self, channel: str) -> Any:
        return self._pubsubs.get(self._reading.owner(channel)) if self._reading is not None else None

    def _hears(self, probe: str) -> None:
        """Up once the probe channel of every shard is subscribed; the channels subscribed
        meanwhile (after the start's were chosen, before it was up) are subscribed now, and
        those unsubscribed meanwhile are unsubscribed now (the start subscribed them again)."""
        self._heard.add(probe)
        if not self._sub_up and self._heard >= set(self._probes.values()):
            self._sub_up = True
            self._catch_up_subscriptions()
            self._maybe_up()

    def _maybe_up(self) -> None:
        """Up when both halves are, on the same masters; else the writer starts over on the
        subscriber's (a failover the writer has not met yet: it would fail on its first write)."""
        if self._sub_up and self._pub_up and self._reading is not None and self._writing is not None:
            self._stale = self._reading.masters != self._writing.masters
            if self._stale:
                self._wakeup.set()
                return
        super()._maybe_up()

    def _slot_moved(self, channel: str) -> None:
        """Redis ended a subscription: when it is still wanted, its slot moved; subscribe again."""
        if channel in self._channels or channel == self.inbox or channel in self._probes.values():
            self._moved.add(channel)
            if self._following is None or self._following.done():
                self._following = self._loop.create_task(self._follow())

    async def _follow(self) -> None:
        """Subscribe the channels whose slot moved on their new master (the map read again);
        when that is a master without a subscriber here, or a probe channel moved, the
        subscribers start over (closing them is their outage)."""
        pubsubs = self._pubsubs
        while self._moved and pubsubs is self._pubsubs and pubsubs:
            try:
                topology = await self._topology()
            except ConnectionError as exc:
                logger.debug("tether backplane: %s", exc)
                topology = None
            moved, self._moved = self._moved, set()
            if (topology is None or topology.masters != sorted(pubsubs)
                    or not moved.isdisjoint(self._probes.values())):
                for pubsub in pubsubs.values():
                    with contextlib.suppress(Exception):
                        await pubsub.connection_pool.disconnect()
                return
            self._reading = topology
            for channel in moved:
                if channel in self._channels or channel == self.inbox:
                    await self._send_subscription(pubsubs[topology.owner(channel)], "ssubscribe", channel)

"""History rooms on the backplane (`tether.backplane.history`, `Backplane.publish_kept` and
`Backplane.history`): the contract, run against every engine that keeps history (the local
backplane where one node is enough, the in-process cluster `MemoryBackplane`, and every engine
of tests/engines.py on its real servers); then what only the Redis engine has: its keys and
their TTL, `~` trimming, the epoch when Redis loses the keys, the scripts loaded again after
SCRIPT FLUSH, publishes while Redis is down, and the Redis commands a publish and a read cost
(docs/scaling.md, "History rooms").

The nodes here are bare backplanes, no hub: what a node hears on a history room's channel is
decoded with `decode_kept` and kept per topic.
"""

from __future__ import annotations

import asyncio
import functools
import time
import uuid
from collections import defaultdict
from collections.abc import Callable, Coroutine
from typing import Any
from urllib.parse import parse_qsl, urlencode

import pytest

from tether.backplane import NodeState, Topic, TopicKind, from_url
from tether.backplane.base import Backplane, BackplaneState
from tether.backplane.envelope import Kind, encode, new_node_id
from tether.backplane.history import NOWHERE, HistoryLimits, Position, Stored, decode_kept
from tether.backplane.memory import LocalBackplane, MemoryBackplane, MemoryBus

from .engines import ENGINES, engine_pool_fixture  # noqa: F401
from .redisutil import RedisServer, redis_server_fixture  # noqa: F401

TIMEOUT = 30.0     # a scenario's bound (nothing here is timed but the ttl tests' own sleeps)
LIMITS = HistoryLimits(size=1000)
LOBBY = Topic(TopicKind.KEPT, "lobby")


class Node:
    """A started backplane and what it heard on history rooms' channels, per channel."""

    def __init__(self, backplane: Backplane) -> None:
        self.backplane = backplane
        self.heard: dict[str, list[tuple[int, str, bytes]]] = defaultdict(list)

    def receive(self, channel: str, data: bytes) -> None:
        self.heard[channel].append(decode_kept(data))

    async def follow(self, topic: Topic) -> None:
        waiter = self.backplane.subscribe(self.backplane.channel(topic))
        if waiter is not None:
            await waiter

    def publish(self, envelope: bytes, topic: Topic = LOBBY, limits: HistoryLimits = LIMITS) -> None:
        self.backplane.publish_kept(topic, envelope, limits)

    async def history(self, topic: Topic = LOBBY, since: int | None = None,
                      limit: int | None = None) -> tuple[Position, list[Stored]]:
        return await self.backplane.history(topic, since, limit)

    def kept(self, topic: Topic = LOBBY) -> list[tuple[int, str, bytes]]:
        return self.heard[self.backplane.channel(topic)]

    async def hears(self, count: int, topic: Topic = LOBBY) -> list[tuple[int, str, bytes]]:
        """What it heard on `topic`, once that is `count` messages."""
        await until(lambda: len(self.kept(topic)) >= count, f"{count} messages heard")
        return self.kept(topic)


class Engine:
    """Nodes of one cluster of one kind: `local` (one node), `memory` (an in-process bus), or
    a backplane URL's engine (`url`). On servers of its own (`server`, the Redis-only tests)
    its nodes use the default prefix; on an engine's shared servers (tests/engines.py) they
    name this cluster with a `?prefix=` of its own, so that the clusters sharing them keep apart."""

    def __init__(self, kind: str, url: str | None = None, server: RedisServer | None = None) -> None:
        self.kind, self.url, self.server = kind, url, server
        self.prefix = None if server is not None else f"t{uuid.uuid4().hex[:12]}"
        self.bus = MemoryBus()
        self.nodes: list[Node] = []

    async def node(self, query: str = "") -> Node:
        """A node of this cluster; `query` adds options (or a `prefix` of its own) to the URL's."""
        backplane: Backplane
        if self.kind == "local":
            assert not self.nodes, "the local backplane is one node"
            backplane = LocalBackplane(new_node_id())
        elif self.kind == "memory":
            backplane = MemoryBackplane(new_node_id(), self.bus)
        else:
            assert self.url is not None
            options = dict(parse_qsl(query.lstrip("?")))
            if self.prefix is not None:
                options.setdefault("prefix", self.prefix)
            backplane = from_url(f"{self.url}?{urlencode(options)}" if options else self.url, new_node_id())
        node = Node(backplane)
        self.nodes.append(node)
        await backplane.start(node.receive, lambda room, gone: None, NodeState)
        assert backplane.state in (BackplaneState.LOCAL, BackplaneState.UP)
        return node

    async def close(self) -> None:
        for node in self.nodes:
            await node.backplane.stop()


async def until(condition: Callable[[], Any], what: str, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"not within {timeout} s: {what}")
        await asyncio.sleep(0.005)


async def until_all(state: BackplaneState, nodes: tuple[Node, ...], what: str) -> None:
    await until(lambda: all(node.backplane.state is state for node in nodes), what)


def scenario(fn: Callable[..., Coroutine[Any, Any, None]]) -> Callable[..., None]:
    """Run an async test with asyncio.run (bounded), stopping its engine's nodes after it."""

    @functools.wraps(fn)
    def run(*args: Any, **kwargs: Any) -> None:
        async def main() -> None:
            try:
                await asyncio.wait_for(fn(*args, **kwargs), TIMEOUT)
            finally:
                for value in kwargs.values():
                    if isinstance(value, Engine):
                        await value.close()

        asyncio.run(main())

    return run


def engine_of(request: pytest.FixtureRequest) -> Engine:
    kind = request.param
    if kind in ENGINES:
        return Engine(kind, request.getfixturevalue("engine_pool").servers(kind).url)
    return Engine(kind)


@pytest.fixture(params=["local", "memory", *ENGINES])
def engine(request: pytest.FixtureRequest) -> Engine:
    """Every engine, for what one node shows."""
    return engine_of(request)


@pytest.fixture(params=["memory", *ENGINES])
def cluster(request: pytest.FixtureRequest) -> Engine:
    """The engines with several nodes."""
    return engine_of(request)


@pytest.fixture
def redis(redis_server: RedisServer) -> Engine:  # noqa: F811
    """One redis-server of this test's own, for what only the Redis engine shows."""
    return Engine("redis", redis_server.url, redis_server)


def offsets(stored: list[Stored]) -> list[int]:
    return [message.offset for message in stored]


# -- the contract, on every engine -------------------------------------------------------------------------
@scenario
async def test_every_node_hears_offsets_one_by_one_from_two_nodes_publishing_at_once(cluster: Engine) -> None:
    a, b, listener = await cluster.node(), await cluster.node(), await cluster.node()
    for node in (a, b, listener):
        await node.follow(LOBBY)
    count = 300
    for i in range(count):
        a.publish(b"a%d" % i)
        b.publish(b"b%d" % i)
        if i % 7 == 0:
            await asyncio.sleep(0)  # let both writers send what they have: their batches interleave
    heard = [await node.hears(2 * count) for node in (a, b, listener)]
    assert heard[0] == heard[1] == heard[2]  # the same messages in the same order on every node
    sequence = heard[0]
    assert [offset for offset, _, _ in sequence] == list(range(1, 2 * count + 1))
    assert len({epoch for _, epoch, _ in sequence}) == 1
    for name in (b"a", b"b"):  # each publisher's messages in its call order
        assert [envelope for _, _, envelope in sequence if envelope[:1] == name] == [
            name + b"%d" % i for i in range(count)]
    position, stored = await listener.history()
    assert position == Position(sequence[0][1], 2 * count)
    assert [(message.offset, message.envelope) for message in stored] == [
        (offset, envelope) for offset, _, envelope in sequence]
    await asyncio.sleep(0.05)
    assert all(len(node.kept()) == 2 * count for node in (a, b, listener))  # nothing twice


@scenario
async def test_a_room_never_written_is_nowhere(engine: Engine) -> None:
    node = await engine.node()
    assert await node.history(Topic(TopicKind.KEPT, "never")) == (NOWHERE, [])
    assert await node.history(Topic(TopicKind.KEPT, "never"), since=5, limit=3) == (NOWHERE, [])


@scenario
async def test_since_and_limit_choose_the_messages_read(engine: Engine) -> None:
    node = await engine.node()
    await node.follow(LOBBY)
    for i in range(1, 11):
        node.publish(b"m%d" % i)
    epoch = (await node.hears(10))[0][1]
    position, everything = await node.history()
    assert position == Position(epoch, 10)
    assert everything == [Stored(i, b"m%d" % i) for i in range(1, 11)]
    reads = {(None, None): range(1, 11), (0, None): range(1, 11), (3, None): range(4, 11),
             (None, 2): range(1, 3), (3, 2): range(4, 6), (8, 5): range(9, 11), (9, None): range(10, 11),
             (10, None): range(0), (12, None): range(0), (None, 0): range(0), (3, 100): range(4, 11)}
    for (since, limit), wanted in reads.items():
        assert await node.history(since=since, limit=limit) == (position, [everything[i - 1] for i in wanted]), \
            (since, limit)


@scenario
async def test_history_holds_the_newest_size_messages(engine: Engine) -> None:
    node = await engine.node()
    await node.follow(LOBBY)
    for i in range(1, 13):
        node.publish(b"m%d" % i, limits=HistoryLimits(size=5))
    epoch = (await node.hears(12))[0][1]
    position, stored = await node.history()
    assert position == Position(epoch, 12)
    assert offsets(stored) == [8, 9, 10, 11, 12]
    assert offsets((await node.history(since=2))[1]) == [8, 9, 10, 11, 12]  # what was trimmed is not there
    assert offsets((await node.history(since=2, limit=2))[1]) == [8, 9]
    assert offsets((await node.history(since=10))[1]) == [11, 12]


@scenario
async def test_messages_older_than_the_ttl_are_gone_and_then_so_is_the_room(engine: Engine) -> None:
    node = await engine.node()
    await node.follow(LOBBY)
    # Margins of 0.9 s either way: a slow machine only makes messages older, and the two that
    # must still be there are 1.1 s old (plus whatever the machine adds) of their 2 s.
    limits = HistoryLimits(size=100, ttl=2.0)
    for i in range(1, 4):
        node.publish(b"old%d" % i, limits=limits)
    epoch = (await node.hears(3))[0][1]
    await asyncio.sleep(1.1)
    for i in range(4, 6):
        node.publish(b"new%d" % i, limits=limits)
    await node.hears(5)
    await asyncio.sleep(1.1)  # the first three are 2.2 s old, the last two 1.1 s
    position, stored = await node.history()
    assert position == Position(epoch, 5)
    assert stored == [Stored(4, b"new4"), Stored(5, b"new5")]
    assert await node.history(since=1, limit=1) == (position, [Stored(4, b"new4")])
    await asyncio.sleep(1.1)  # every message expired: the room is forgotten
    assert await node.history() == (NOWHERE, [])
    node.publish(b"again", limits=limits)
    offset, new_epoch, _ = (await node.hears(6))[-1]
    assert (offset, new_epoch != epoch) == (1, True)


@scenario
async def test_rooms_are_numbered_apart(cluster: Engine) -> None:
    a, b = await cluster.node(), await cluster.node()
    other = Topic(TopicKind.KEPT, "other")
    for topic in (LOBBY, other):
        await b.follow(topic)
    for i in range(3):
        a.publish(b"lobby%d" % i)
        a.publish(b"other%d" % i, topic=other)
    lobby_heard, other_heard = await b.hears(3), await b.hears(3, other)
    assert [offset for offset, _, _ in lobby_heard] == [offset for offset, _, _ in other_heard] == [1, 2, 3]
    assert lobby_heard[0][1] != other_heard[0][1]  # an epoch per room
    assert [m.envelope for m in (await b.history(other))[1]] == [b"other0", b"other1", b"other2"]


@scenario
async def test_an_envelope_is_kept_and_heard_byte_for_byte(cluster: Engine) -> None:
    a, b = await cluster.node(), await cluster.node()
    await b.follow(LOBBY)
    envelopes = [encode(Kind.PUBLISH, 2, a.backplane.node, bytes(range(256)) + b" \r\n \x00"),
                 b"", b" ", b"two  spaces", b"\xff" * 3000]
    for envelope in envelopes:
        a.publish(envelope)
    assert [envelope for _, _, envelope in await b.hears(len(envelopes))] == envelopes
    assert [m.envelope for m in (await b.history())[1]] == envelopes


# -- the Redis engine --------------------------------------------------------------------------------------
def hash_tag(key: str) -> str:
    """The part of a key Redis Cluster hashes: between the first `{` and the next `}`."""
    start = key.index("{")
    return key[start + 1:key.index("}", start)]


def stream_ids(server: RedisServer, key: str) -> list[str]:
    return [entry[0] for entry in server.execute("XRANGE", key, "-", "+")]


@scenario
async def test_a_rooms_keys_share_its_hash_tag_and_expire(redis: Engine) -> None:
    from tether.backplane.redis import HISTORY_IDLE_TTL

    node = await redis.node("?prefix=app1")
    server = redis.server
    assert server is not None
    room = Topic(TopicKind.KEPT, "chat:a b")
    node.publish(b"x", topic=room)
    await node.history(room)  # through the same writer: after the publish
    meta, stream = "app1:history-meta:{chat:a b}", "app1:history:{chat:a b}"
    assert hash_tag(meta) == hash_tag(stream) == "chat:a b"
    assert (server.execute("TYPE", meta), server.execute("TYPE", stream)) == ("hash", "stream")
    assert server.execute("HGETALL", meta) == {"epoch": (await node.history(room))[0].epoch, "offset": "1",
                                               "size": "1000"}
    for key in (meta, stream):  # the default: history nobody writes goes away after a day
        assert HISTORY_IDLE_TTL * 1000 - 5000 < server.execute("PTTL", key) <= HISTORY_IDLE_TTL * 1000
    node.publish(b"y", topic=room, limits=HistoryLimits(10, ttl=30))
    await node.history(room)
    for key in (meta, stream):
        assert 25_000 < server.execute("PTTL", key) <= 30_000
    assert stream_ids(server, stream) == ["1-0", "2-0"]  # the offset is the id


@scenario
async def test_the_stream_holds_about_size_messages(redis: Engine) -> None:
    node = await redis.node()
    server = redis.server
    assert server is not None
    limits = HistoryLimits(size=10)
    for i in range(1, 1001):
        node.publish(b"m%d" % i, limits=limits)
        if i % 50 == 0:
            await node.history()
            # `~` trims whole stream nodes (stream-node-max-entries: 100): never more than one more
            assert 10 <= server.execute("XLEN", "tether:history:{lobby}") <= 110
    position, stored = await node.history()
    assert position.offset == 1000
    assert offsets(stored) == list(range(991, 1001))  # a read gives the newest `size`, exactly


@scenario
async def test_a_publish_trims_expired_messages_sixteen_at_the_most(redis: Engine) -> None:
    node = await redis.node()
    server = redis.server
    assert server is not None
    for i in range(20):
        node.publish(b"m%d" % i, limits=HistoryLimits(size=1000, ttl=0.3))
    limits = HistoryLimits(size=1000, ttl=60)  # the room's keys live on (a publish sets their ttl)
    node.publish(b"kept", limits=limits)
    await node.history()
    await asyncio.sleep(0.4)
    node.publish(b"fresh1", limits=limits)
    await node.history()
    assert server.execute("XLEN", "tether:history:{lobby}") == 20 - 16 + 2
    assert (await node.history())[1] == [Stored(21, b"kept"), Stored(22, b"fresh1")]  # a read skips the rest
    node.publish(b"fresh2", limits=limits)
    await node.history()
    assert stream_ids(server, "tether:history:{lobby}") == ["21-0", "22-0", "23-0"]


@pytest.mark.parametrize("loss", ["FLUSHALL", "DEL meta", "DEL both"])
@scenario
async def test_a_room_whose_meta_is_gone_starts_a_new_epoch_at_one(redis: Engine, loss: str) -> None:
    node = await redis.node()
    server = redis.server
    assert server is not None
    await node.follow(LOBBY)
    for i in range(3):
        node.publish(b"before%d" % i)
    epoch = (await node.hears(3))[0][1]
    if loss == "FLUSHALL":
        server.execute("FLUSHALL")
    else:
        server.execute("DEL", "tether:history-meta:{lobby}", *(["tether:history:{lobby}"] if loss == "DEL both" else []))
    assert await node.history() == (NOWHERE, [])
    node.publish(b"after")
    offset, new_epoch, envelope = (await node.hears(4))[-1]
    assert (offset, envelope) == (1, b"after") and new_epoch != epoch
    assert await node.history() == (Position(new_epoch, 1), [Stored(1, b"after")])  # the old stream is gone


@scenario
async def test_a_lost_stream_keeps_the_epoch_and_shows_as_missing_messages(redis: Engine) -> None:
    """The meta is the room's position: a stream lost alone (evicted, deleted) loses messages,
    which a reader sees missing between its position and what is kept."""
    node = await redis.node()
    assert redis.server is not None
    for i in range(3):
        node.publish(b"before%d" % i)
    epoch = (await node.history())[0].epoch
    redis.server.execute("DEL", "tether:history:{lobby}")
    node.publish(b"after")
    assert await node.history(since=1) == (Position(epoch, 4), [Stored(4, b"after")])


@scenario
async def test_scripts_flushed_are_loaded_again_and_order_is_kept(redis: Engine) -> None:
    a, b = await redis.node(), await redis.node()
    assert redis.server is not None
    await b.follow(LOBBY)
    a.publish(b"first")
    await b.hears(1)
    redis.server.execute("SCRIPT", "FLUSH")
    for i in range(50):  # one batch: every EVALSHA meets NOSCRIPT, then goes again
        a.publish(b"m%d" % i)
    heard = await b.hears(51)
    assert [(offset, envelope) for offset, _, envelope in heard[1:]] == [(i + 2, b"m%d" % i) for i in range(50)]
    redis.server.execute("SCRIPT", "FLUSH")
    assert offsets((await b.history(since=49))[1]) == [50, 51]
    assert (a.backplane.lost, b.backplane.lost) == (0, 0)


@scenario
async def test_publishes_while_redis_is_down_are_counted_lost_and_never_raise(redis: Engine) -> None:
    node = await redis.node()
    server = redis.server
    assert server is not None
    resumed: list[BackplaneState] = []
    node.backplane.resumed = lambda: resumed.append(node.backplane.state)
    await node.follow(LOBBY)
    node.publish(b"before")
    epoch = (await node.hears(1))[0][1]
    server.kill()
    await until(lambda: node.backplane.state is BackplaneState.DOWN, "the backplane down")
    for i in range(5):
        node.publish(b"lost%d" % i)  # never raises
    await until(lambda: node.backplane.lost == 5, "5 messages counted lost")
    with pytest.raises(ConnectionError):
        await node.history()
    server.start()  # empty: the room's history is gone with it
    await until(lambda: node.backplane.state is BackplaneState.UP, "the backplane up again")
    assert resumed == [BackplaneState.UP]  # once, when it was up again
    await node.follow(LOBBY)  # subscribed again by the backplane itself; this waits for nothing
    node.publish(b"after")
    offset, new_epoch, envelope = (await node.hears(2))[-1]
    assert (offset, envelope) == (1, b"after") and new_epoch != epoch
    assert node.backplane.lost == 5


@scenario
async def test_idle_nodes_across_a_redis_restart_have_one_outage_and_lose_nothing_after_it(redis: Engine) -> None:
    """A node whose writer was idle while Redis restarted is UP again only once its writer
    has a connection that works: not with the dead one, whose first command afterwards
    would fail (a second outage, and the message that command carried lost)."""
    member, publisher = await redis.node(), await redis.node()
    server = redis.server
    assert server is not None
    await member.follow(LOBBY)
    server.kill()
    await until_all(BackplaneState.DOWN, (member, publisher), "both nodes down (their subscribers saw it)")
    server.start()
    await until_all(BackplaneState.UP, (member, publisher), "both nodes up again")
    publisher.publish(b"first after the restart")
    assert [envelope for _, _, envelope in await member.hears(1)] == [b"first after the restart"]
    assert offsets((await member.history())[1]) == [1]  # the member's writer works too
    assert [(node.backplane.outages, node.backplane.lost, node.backplane.state) for node in (member, publisher)] \
        == [(1, 0, BackplaneState.UP)] * 2


@scenario
async def test_a_node_whose_subscriber_was_cut_reads_back_what_it_missed_when_resumed(redis: Engine) -> None:
    publisher, member = await redis.node(), await redis.node()
    assert redis.server is not None
    await member.follow(LOBBY)
    read_back: list[Stored] = []
    reads: list[asyncio.Task[None]] = []

    async def read_back_after(last: int) -> None:
        position, stored = await member.history(since=last)
        assert position.epoch == member.kept()[0][1]
        read_back.extend(stored)

    def resumed() -> None:
        reads.append(asyncio.get_running_loop().create_task(read_back_after(member.kept()[-1][0])))

    member.backplane.resumed = resumed
    stop = asyncio.Event()

    async def keep_publishing() -> int:
        count = 0
        while not stop.is_set():
            count += 1
            publisher.publish(b"m%d" % count)
            await asyncio.sleep(0.002)
        return count

    publishing = asyncio.get_running_loop().create_task(keep_publishing())
    await member.hears(10)
    assert redis.server.client_kill_pubsub() == 2  # both nodes' subscribers (the member's is the one that matters)
    await until(lambda: reads, "resumed() called")
    await asyncio.sleep(0.05)
    stop.set()
    count = await publishing
    await reads[0]
    await until(lambda: member.kept()[-1][0] == count, "the last message heard")
    heard = [offset for offset, _, _ in member.kept()]
    assert heard == sorted(set(heard))  # in offset order, none twice, with a gap
    missed = set(range(1, count + 1)) - set(heard)
    assert missed, "the publisher published nothing while the member's subscriber was cut"
    assert missed <= {message.offset for message in read_back}  # the history gave back every one


@scenario
async def test_rooms_followed_and_left_while_the_subscriber_restarts_are_subscribed_and_left_once_it_is_up(
        redis: Engine) -> None:
    """A room followed (or left) after the restarting subscriber chose its channels, before
    it heard its own inbox again, is subscribed (or unsubscribed) once it is up: not missed
    for the connection's life (nor heard by a node without members)."""
    member, publisher = await redis.node(), await redis.node()
    server = redis.server
    assert server is not None
    backplane: Any = member.backplane

    async def in_the_window() -> bool:
        """Cut the subscriber; True once its restart sent its channels and has not yet heard
        its inbox back (a turn of the loop at least, unless the answer was read at once: then
        False, once it is up again)."""
        assert server is not None and server.client_kill_pubsub() == 2
        await until(lambda: backplane.state is BackplaneState.DOWN, "the member's subscriber cut")
        deadline = time.monotonic() + 10
        while not (backplane._pubsub is not None and not backplane._sub_up):
            if backplane.state is BackplaneState.UP:
                return False  # up again: the window went by unseen
            assert time.monotonic() < deadline, "the subscriber did not restart"
            await asyncio.sleep(0)
        return True

    for attempt in range(20):
        gone = Topic(TopicKind.KEPT, f"gone {attempt}")
        await member.follow(gone)
        if await in_the_window():
            break
        await until_all(BackplaneState.UP, (member, publisher), "both nodes up again")
    else:
        raise AssertionError("the restart's window was never seen in 20 restarts")
    joined = Topic(TopicKind.KEPT, "joined in the window")
    await member.follow(joined)  # the subscriber is not up: nothing to wait for
    backplane.unsubscribe(backplane.channel(gone))
    await until(lambda: backplane.state is BackplaneState.UP, "the member up again")
    await until(lambda: server.execute("PUBSUB", "NUMSUB", backplane.channel(joined))[1] == 1,
                "the room followed in the window subscribed")
    await until(lambda: server.execute("PUBSUB", "NUMSUB", backplane.channel(gone))[1] == 0,
                "the room left in the window unsubscribed")
    publisher.publish(b"heard", joined)
    assert [envelope for _, _, envelope in await member.hears(1, joined)] == [b"heard"]


@scenario
async def test_a_message_redis_refuses_is_counted_lost(redis: Engine) -> None:
    node = await redis.node()
    server = redis.server
    assert server is not None
    server.execute("SET", "tether:history-meta:{lobby}", "not a hash")  # HMGET fails: WRONGTYPE
    node.publish(b"refused")
    await until(lambda: node.backplane.lost == 1, "the refused message counted lost")
    with pytest.raises(ConnectionError):
        await node.history()
    assert node.backplane.state is BackplaneState.UP


def command_calls(server: RedisServer) -> dict[str, int]:
    return {name.removeprefix("cmdstat_"): stats["calls"] for name, stats in server.info("commandstats").items()}


def calls_since(before: dict[str, int], server: RedisServer) -> dict[str, int]:
    after = command_calls(server)
    return {name: calls - before.get(name, 0) for name, calls in after.items()
            if calls != before.get(name, 0) and name != "info"}  # the helper's INFO of `before`


@scenario
async def test_redis_commands_per_publish_and_per_read(redis: Engine) -> None:
    """The costs docs/scaling.md states, from INFO commandstats (commands a script runs count)."""
    node = await redis.node("?heartbeat=60&probe=60")  # no heartbeat nor probe meanwhile
    server = redis.server
    assert server is not None
    node.publish(b"first")  # the room's first publish: DEL (of no stream) and HSET of the meta too
    await node.history()
    before = command_calls(server)
    for i in range(1000):
        node.publish(b"m%d" % i)
    await node.history(since=0, limit=0)  # the position only: HMGET
    assert calls_since(before, server) == {"evalsha": 1001, "hmget": 1001, "hincrby": 1000, "xadd": 1000,
                                           "pexpire": 2000, "publish": 1000}
    before = command_calls(server)
    for since in range(100):
        await node.history(since=since * 10, limit=10)
    assert calls_since(before, server) == {"evalsha": 100, "hmget": 100, "time": 100, "xrange": 100}
    ttl = Topic(TopicKind.KEPT, "ttl")
    node.publish(b"short", topic=ttl, limits=HistoryLimits(1000, ttl=0.2))
    node.publish(b"long", topic=ttl, limits=HistoryLimits(1000, ttl=60))  # the keys live on
    await node.history(ttl)
    await asyncio.sleep(0.3)
    before = command_calls(server)
    node.publish(b"third", topic=ttl, limits=HistoryLimits(1000, ttl=60))   # trims the expired first one
    node.publish(b"fourth", topic=ttl, limits=HistoryLimits(1000, ttl=60))  # trims nothing
    await node.history(ttl, limit=0)
    assert calls_since(before, server) == {"evalsha": 3, "hmget": 3, "hincrby": 2, "time": 2, "xadd": 2,
                                           "xrange": 2 + 1, "xtrim": 1, "pexpire": 4, "publish": 2}

"""The Redis Cluster backplane (`tether.backplane.cluster`, docs/scaling.md) on a real Redis
Cluster of 3 masters and 3 replicas (tests/clusterutil.py): what only this engine has. Every
channel and key of a room on one slot, whatever the room's name; SPUBLISH and SSUBSCRIBE only
(INFO commandstats, PUBSUB SHARDCHANNELS on the shards), one subscriber connection per shard;
heartbeats and counts on every shard; nodes that are `tether run` processes delivering rooms,
paths and inboxes across; a shard master SIGKILLed (its replica promoted: delivery again, the
outage counted and logged); a slot migrated under a room (delivery follows, no outage).
The contract every engine keeps is tests/test_backplane.py's and test_backplane_history.py's.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest

from tether.backplane import NodeState, Topic, TopicKind, from_url
from tether.backplane.base import BackplaneState
from tether.backplane.cluster import RedisClusterBackplane
from tether.backplane.envelope import new_node_id
from tether.backplane.history import HistoryLimits, decode_kept
from tether.backplane.slots import Topology, slot_of

from .clusterutil import RedisClusterServers, redis_cluster_fixture, redis_cluster_module_fixture  # noqa: F401
from .netutil import wait_until

# clients and start_node are fixtures, taken with request.getfixturevalue (as parameters: F811)
from .test_backplane import BACK, LOST, WAIT, backplane_url, clients, first_after, start_node, tag  # noqa: F401

AWKWARD = ["lobby", "", "}", "{", "}x", "{a}b", "a{}b", "{{}}", "x{", "room:with:colons", "é{ü}", "a" * 300]
QUERY = "?heartbeat=0.5&probe=0.5"
LIMITS = HistoryLimits(size=100)


def naming() -> RedisClusterBackplane:
    """A backplane that is never started: for its channel and key names."""
    return RedisClusterBackplane(new_node_id(), "redis+cluster://127.0.0.1:7000")


# -- names ---------------------------------------------------------------------------------------
@pytest.mark.parametrize("url, problem", [
    ("redis+cluster://", "no host:port"),
    ("redis+cluster://127.0.0.1", "is not host:port"),
    ("redis+cluster://127.0.0.1:7000,h2", "'h2' is not host:port"),
    ("redis+cluster://127.0.0.1:0", "is not host:port"),
    ("redis+cluster://127.0.0.1:70000", "is not host:port"),
    ("redis+cluster://127.0.0.1:7000/0", "no database path"),
    ("redis+cluster://127.0.0.1:7000?prefix=a{b}", "brace"),
    ("redis+cluster://127.0.0.1:7000?heartbeat=0", "heartbeat and probe"),
])
def test_a_malformed_url_is_a_value_error_naming_the_problem(url: str, problem: str) -> None:
    with pytest.raises(ValueError, match=problem.replace("{", r"\{")):
        from_url(url, new_node_id())


def test_a_url_names_its_seeds_credentials_and_options() -> None:
    backplane = from_url("redis+cluster://u:p%40ss@10.0.0.1:7000,[::1]:7001,h:7002/?prefix=chat&heartbeat=2", b"n" * 6)
    assert isinstance(backplane, RedisClusterBackplane)
    assert backplane._seeds == ["10.0.0.1:7000", "[::1]:7001", "h:7002"]
    assert backplane._node_url("h:7002") == "redis://u:p%40ss@h:7002"
    assert (backplane.prefix, backplane.heartbeat) == ("chat", 2.0)


@pytest.mark.parametrize("room", AWKWARD)
def test_every_channel_and_key_of_a_room_is_on_one_slot_whatever_its_name(room: str) -> None:
    backplane = naming()
    names = [backplane.channel(Topic(kind, room)) for kind in (TopicKind.ROOM, TopicKind.KEPT)]
    names += [backplane.keys.presence(room), backplane.keys.history(room), backplane.keys.history_meta(room)]
    assert len({slot_of(name) for name in names}) == 1, names
    for kind in TopicKind:
        assert backplane.topic(backplane.channel(Topic(kind, room))) == Topic(kind, room)


def test_a_channel_whose_tag_is_not_its_names_is_not_read_as_a_topic() -> None:
    backplane = naming()
    channel = backplane.channel(Topic(TopicKind.ROOM, "lobby"))
    assert backplane.topic(channel.replace("lobby", "lobbx")) is None
    assert backplane.topic("tether:room:lobby") is None
    assert backplane.topic("other:" + channel.partition(":")[2]) is None


def test_rooms_spread_over_every_shard() -> None:
    backplane = naming()
    slots = [slot_of(backplane.channel(Topic(TopicKind.ROOM, f"room-{i}"))) for i in range(3000)]
    per_third = [sum(1 for slot in slots if slot * 3 // 16384 == third) for third in range(3)]
    assert all(800 < count < 1200 for count in per_third), per_third


# -- bare backplanes on one cluster ------------------------------------------------------------------
class Bare:
    """A started backplane and what it heard, per channel."""

    def __init__(self, url: str) -> None:
        self.backplane = RedisClusterBackplane(new_node_id(), url)
        self.heard: dict[str, list[bytes]] = {}
        self.gone: list[tuple[str, dict[str, str]]] = []

    async def start(self) -> Bare:
        await self.backplane.start(lambda channel, data: self.heard.setdefault(channel, []).append(data),
                                   lambda room, gone: self.gone.append((room, gone)), NodeState)
        assert self.backplane.state is BackplaneState.UP
        return self

    async def follow(self, topic: Topic) -> str:
        channel = self.backplane.channel(topic)
        waiter = self.backplane.subscribe(channel)
        if waiter is not None:
            await waiter
        return channel


@contextlib.asynccontextmanager
async def started(url: str, count: int) -> AsyncIterator[list[Bare]]:
    """`count` started backplanes of one cluster, stopped after the block."""
    nodes: list[Bare] = []
    try:
        for _ in range(count):
            nodes.append(await Bare(url).start())
        yield nodes
    finally:
        for node in nodes:
            await node.backplane.stop()


async def until(condition: Callable[[], Any], what: str, timeout: float = WAIT) -> Any:
    deadline = time.monotonic() + timeout
    while not (result := condition()):
        if time.monotonic() > deadline:
            raise AssertionError(f"not within {timeout} s: {what}")
        await asyncio.sleep(0.005)
    return result


def run(main: Callable[[], Any]) -> None:
    asyncio.run(asyncio.wait_for(main(), 60))


def commandstats(servers: RedisClusterServers) -> list[dict[str, int]]:
    return [{key.removeprefix("cmdstat_"): value["calls"] for key, value in master.info("commandstats").items()}
            for master in servers.masters]


def test_rooms_go_by_spublish_to_their_shard_only_and_are_heard_with_ssubscribe(redis_cluster_module):
    servers = redis_cluster_module
    url = servers.url + QUERY + f"&prefix={tag()}"

    async def main() -> None:
        async with started(url, 2) as (a, b):
            rooms = [f"room-{i}" for i in range(30)] + AWKWARD
            channels = [await b.follow(Topic(TopicKind.ROOM, room)) for room in rooms]
            kept = await b.follow(Topic(TopicKind.KEPT, "}odd{"))
            for channel in channels:
                a.backplane.publish(channel, channel.encode())
            a.backplane.publish_kept(Topic(TopicKind.KEPT, "}odd{"), b"kept", HistoryLimits(size=10))
            await until(lambda: len(b.heard) == len(channels) + 1, "every room heard")
            assert all(b.heard[channel] == [channel.encode()] for channel in channels)
            assert [decode_kept(data)[::2] for data in b.heard[kept]] == [(1, b"kept")]
            for channel in [*channels, kept]:  # subscribed on the slot's master, and there only
                owner = servers.owner(slot_of(channel))
                for master in servers.masters:
                    listed = master.execute("PUBSUB", "SHARDCHANNELS", channel)
                    assert listed == ([channel] if master is owner else []), (channel, master.port)

    run(main)
    stats = commandstats(servers)
    assert all("publish" not in calls and "subscribe" not in calls for calls in stats), stats
    assert all(calls.get("spublish", 0) > 0 and calls.get("ssubscribe", 0) > 0 for calls in stats), stats


def test_one_subscriber_connection_per_shard_and_channels_of_a_slot_in_one_ssubscribe(redis_cluster_module):
    servers = redis_cluster_module
    url = servers.url + QUERY + f"&prefix={tag()}"
    backplane = naming()
    same_slot = [room for room in (f"r{i}" for i in range(200_000))
                 if slot_of(backplane.channel(Topic(TopicKind.ROOM, room))) == 77][:5]
    assert len(same_slot) == 5

    async def main() -> None:
        before = commandstats(servers)
        node = Bare(url)
        for room in same_slot:  # subscribed before the start: all at once when it connects
            node.backplane.subscribe(node.backplane.channel(Topic(TopicKind.ROOM, room)))
        await node.start()
        try:
            after = commandstats(servers)
            # per shard: its probe channel, and on slot 77's shard one SSUBSCRIBE of the five
            # rooms (the inbox is on some shard too)
            calls = [after[i].get("ssubscribe", 0) - before[i].get("ssubscribe", 0) for i in range(3)]
            assert sum(calls) == 3 + 1 + 1, calls
            name = node.backplane._node_name
            for master in servers.masters:
                mine = [c for c in master.execute("CLIENT", "LIST").split("\n")
                        if c and int(dict(f.split("=", 1) for f in c.split())["ssub"]) > 0]
                assert len(mine) == 1, mine
                owned = master.execute("PUBSUB", "SHARDCHANNELS", f"*{name}*")
                assert len(owned) in (1, 2), owned  # its probe channel, and maybe its inbox
        finally:
            await node.backplane.stop()

    run(main)


def test_heartbeats_and_counts_are_on_every_shard_and_a_lost_copy_changes_no_count(redis_cluster_module):
    servers = redis_cluster_module
    prefix = tag()
    url = servers.url + QUERY + f"&prefix={prefix}"

    async def main() -> None:
        async with started(url, 2) as (a, b):
            a.backplane.connections_changed(3)
            b.backplane.connections_changed(4)
            await until(lambda: all(len(m.execute("KEYS", f"{prefix}:count:*")) == 1 for m in servers.masters),
                        "a count copy on every shard")
            for master in servers.masters:
                [key] = master.execute("KEYS", f"{prefix}:count:*")
                assert await until(lambda key=key, master=master: master.execute("HLEN", key) == 2, "both counts")
            assert await a.backplane.count() == 7
            # one shard loses its copies (a failover that lost writes): the others still say it
            lost = servers.masters[1]
            lost.execute("DEL", *lost.execute("KEYS", f"{prefix}:count:*"), *lost.execute("KEYS", f"{prefix}:nodes:*"))
            assert await a.backplane.count() == 7
            assert await b.backplane.count() == 7

    run(main)


def test_presence_of_a_room_with_an_awkward_name_is_read_from_its_shard(redis_cluster_module):
    servers = redis_cluster_module
    url = servers.url + QUERY + f"&prefix={tag()}"

    async def main() -> None:
        async with started(url, 2) as (a, b):
            member = a.backplane._node_name + "-1"
            rooms = ("}x", "{a}b", "")
            for room in rooms:
                a.backplane.presence_join(room, member, json.dumps({"name": room}))
            assert await a.backplane.presence(rooms[-1])  # after the joins, through the same writer
            for room in rooms:
                assert await b.backplane.presence(room) == {member: json.dumps({"name": room})}
                key = a.backplane.keys.presence(room)
                assert servers.owner(slot_of(key)).execute("HGET", key, member) == json.dumps({"name": room})

    run(main)


# -- nodes: `tether run` processes ------------------------------------------------------------------
def test_rooms_paths_and_inboxes_reach_a_client_on_another_node(redis_cluster_module, request):
    nodes, ws = request.getfixturevalue("start_node"), request.getfixturevalue("clients")
    url = backplane_url(redis_cluster_module.url, prefix=tag())
    a, b = nodes(url), nodes(url)
    a.wait_state("up")
    b.wait_state("up")
    for _ in range(3):  # rooms and paths of different names land on different shards
        t = tag()
        receiver = ws(b, f"/fn/{t}")
        assert a.post("/do/send_to", id=receiver.id, text="sent to you") == {"result": True}
        assert receiver.recv() == "sent to you"
        a.post("/do/broadcast", path=f"/fn/{t}", text="to the path")
        assert receiver.recv() == "to the path"
        receiver.join(f"}}{t}{{")
        a.post("/do/publish", room=f"}}{t}{{", text="to the room")
        assert receiver.recv() == "to the room"
    assert a.get("/count")["count"] == b.get("/count")["count"] == 3


def test_a_shard_master_killed_its_replica_takes_over_and_delivery_comes_back(redis_cluster, request):
    nodes, ws = request.getfixturevalue("start_node"), request.getfixturevalue("clients")
    servers = redis_cluster
    a, b = nodes(backplane_url(servers.url)), nodes(backplane_url(servers.url))
    a.wait_state("up")
    b.wait_state("up")
    t = tag()
    path = f"/fn/{t}"
    remote = ws(b, path)
    shard = servers.masters.index(servers.owner(slot_of(naming().channel(Topic(TopicKind.PATH, path)))))
    a.post("/do/stream/start", path=path, interval=0.02)
    try:
        first_after(remote, time.monotonic(), WAIT)  # the cluster works before the outage
        servers.kill_master(shard)  # the path's shard: B's subscriber and A's writer lose it
        killed = time.monotonic()
        servers.wait_failover()
        promoted = time.monotonic()
        back = first_after(remote, killed, 2 * WAIT)
    finally:
        a.post("/do/stream/stop", path=path)
    print(f"failover: replica promoted {promoted - killed:.2f} s after the kill, "
          f"delivery back {back - killed:.2f} s after it")
    for node in (a, b):
        node.wait_state("up")
        lost_counts = wait_until(lambda node=node: [int(m.group(1)) for m in BACK.finditer(node.log())],
                                 timeout=WAIT, message="the WARNING that Redis is back")
        status = node.status()
        assert status["outages"] == 1 == len(node.warnings(LOST)) == len(lost_counts), status
        assert sum(lost_counts) == status["lost"], (lost_counts, status)
    assert a.status()["lost"] > 0  # A streamed into the dead shard meanwhile
    # after it, every shard serves both nodes again
    t = tag()
    receiver = ws(b, f"/fn/{t}")
    receiver.join(f"room-{t}")
    a.post("/do/publish", room=f"room-{t}", text="after the failover")
    assert receiver.recv() == "after the failover"
    assert a.get("/count")["count"] == 2


def test_a_room_whose_slot_migrates_keeps_delivering_and_its_history_follows(redis_cluster_module):
    servers = redis_cluster_module
    url = servers.url + QUERY + f"&prefix={tag()}"
    room, kept = Topic(TopicKind.ROOM, f"moving-{tag()}"), Topic(TopicKind.KEPT, f"moving-{tag()}")

    async def main() -> None:
        async with started(url, 2) as (a, b):
            channel, kept_channel = await b.follow(room), await b.follow(kept)
            slots = {slot_of(channel), slot_of(kept_channel)}
            sent = 0

            def send(count: int) -> None:
                nonlocal sent
                for _ in range(count):
                    a.backplane.publish(channel, b"%d" % sent)
                    a.backplane.publish_kept(kept, b"%d" % sent, HistoryLimits(size=1000))
                    sent += 1

            send(50)
            await until(lambda: len(b.heard.get(kept_channel, ())) == 50, "the first 50 heard")

            async def keep_sending() -> None:
                while True:
                    send(1)
                    await asyncio.sleep(0.002)

            sending = asyncio.create_task(keep_sending())
            try:
                for slot in slots:  # each to a master that does not serve it, while A publishes
                    target = next(m for m in servers.masters if m is not servers.owner(slot))
                    await asyncio.to_thread(servers.migrate_slot, slot, target)
                    await asyncio.sleep(0.1)
            finally:
                sending.cancel()
            moved = time.monotonic()
            send(50)
            await until(lambda: b.heard.get(channel, [b""])[-1] == b"%d" % (sent - 1), "the last message")
            await until(lambda: decode_kept(b.heard[kept_channel][-1])[2] == b"%d" % (sent - 1), "the last kept")
            for subscribed in (channel, kept_channel):  # at the slot's new master now
                assert servers.owner(slot_of(subscribed)).execute("PUBSUB", "SHARDCHANNELS", subscribed) == [subscribed]
            redirected = sum(m.info("errorstats").get("errorstat_MOVED", {}).get("count", 0) for m in servers.masters)
            assert redirected > 0  # A's writer met MOVED (and sent again: every message numbered once below)
            missed = sent - len(b.heard[channel])
            print(f"slot migration: {missed} of {sent} room messages missed, {redirected} MOVED, "
                  f"delivery after {time.monotonic() - moved:.3f} s")
            position, stored = await b.backplane.history(kept, None, None)
            assert [s.envelope for s in stored] == [b"%d" % i for i in range(sent)]  # numbered once each
            assert position.offset == sent
            assert (a.backplane.outages, b.backplane.outages, a.backplane.lost) == (0, 0, 0)
            heard = [int(data) for data in b.heard[channel]]
            assert heard == sorted(heard)  # in order, each once

    run(main)


def test_the_slot_map_names_each_slots_master_and_a_tag_on_each_shard() -> None:
    def node(ip: str, port: int, role: str = "master", health: str = "online") -> dict[str, Any]:
        return {"id": "x", "port": port, "ip": ip, "endpoint": ip, "role": role, "health": health}

    shards = [{"slots": [0, 99, 200, 16383], "nodes": [node("10.0.0.1", 7000), node("10.0.0.4", 7003, "replica")]},
              {"slots": [100, 199], "nodes": [node("::1", 7001)]}]
    topology = Topology(shards)
    assert topology.masters == ["10.0.0.1:7000", "[::1]:7001"]
    assert [topology.owners[slot] for slot in (0, 99, 100, 199, 200, 16383)] == [
        "10.0.0.1:7000", "10.0.0.1:7000", "[::1]:7001", "[::1]:7001", "10.0.0.1:7000", "10.0.0.1:7000"]
    assert all(topology.owner(tag_) == master for master, tag_ in topology.tags.items())
    shards[1]["nodes"] = [node("::1", 7001, health="fail")]
    with pytest.raises(ConnectionError, match="slots 100-199 has no master online"):
        Topology(shards)
    with pytest.raises(ConnectionError, match="slot 100 is served by no master"):
        Topology(shards[:1])


def test_ten_reconnects_leave_every_masters_connections_flat(redis_cluster_module):
    servers = redis_cluster_module
    url = servers.url + QUERY + f"&prefix={tag()}"

    async def main() -> None:
        async with started(url, 1) as (node,):
            before = [master.connected_clients() for master in servers.masters]
            for outage in range(1, 11):
                for master in servers.masters:  # every shard's subscriber connection cut
                    master.execute("CLIENT", "KILL", "TYPE", "pubsub")
                await until(lambda outage=outage: node.backplane.outages == outage
                            and node.backplane.state is BackplaneState.UP, f"up after outage {outage}")
            await until(lambda: [master.connected_clients() for master in servers.masters] == before,
                        "as many connections on each master as before")

    run(main)


def test_a_thousand_connects_at_once_are_one_hincrby_per_shard(redis_cluster_module):
    servers = redis_cluster_module
    url = servers.url + QUERY + f"&prefix={tag()}"

    async def main() -> None:
        async with started(url, 2) as (a, b):
            before = commandstats(servers)
            for _ in range(1000):
                a.backplane.connections_changed(1)
            a.backplane.connections_changed(-1)
            def hincrbys() -> list[int]:
                after = commandstats(servers)
                return [after[i].get("hincrby", 0) - before[i].get("hincrby", 0) for i in range(3)]

            await until(lambda: sum(hincrbys()) >= 3, "the counts written")
            assert await b.backplane.count() == 999
            assert hincrbys() == [1, 1, 1]

    run(main)


def test_a_history_publish_meeting_ask_mid_migration_is_sent_again_and_kept_once(redis_cluster_module):
    servers = redis_cluster_module
    url = servers.url + QUERY + f"&prefix={tag()}"
    kept = Topic(TopicKind.KEPT, f"asked-{tag()}")

    async def main() -> None:
        async with started(url, 2) as (a, b):
            channel = await b.follow(kept)
            a.backplane.publish_kept(kept, b"before", LIMITS)
            await until(lambda: len(b.heard.get(channel, ())) == 1, "the first message")
            slot = slot_of(channel)
            target = next(m for m in servers.masters if m is not servers.owner(slot))
            asks = sum(m.info("errorstats").get("errorstat_ASK", {}).get("count", 0) for m in servers.masters)
            # the room's keys are on the target, the slot still the source's: its script gets ASK
            source = await asyncio.to_thread(servers.begin_migration, slot, target)
            a.backplane.publish_kept(kept, b"during", LIMITS)
            await until(lambda: sum(m.info("errorstats").get("errorstat_ASK", {}).get("count", 0)
                                    for m in servers.masters) > asks, "an ASK")
            await asyncio.to_thread(servers.end_migration, slot, source, target)
            await until(lambda: len(b.heard[channel]) == 2, "the message sent again")
            assert [decode_kept(data)[::2] for data in b.heard[channel]] == [(1, b"before"), (2, b"during")]
            position, stored = await b.backplane.history(kept, None, None)
            assert [s.envelope for s in stored] == [b"before", b"during"] and position.offset == 2
            assert (a.backplane.lost, a.backplane.outages) == (0, 0)

    run(main)


# -- the subscriber restarting under many rooms ------------------------------------------------------
LOST_LINE, BACK_LINE = "tether backplane: Redis lost", "tether backplane: Redis is back after"


def subscriber_id(master: Any, least: int) -> str:
    """The id of the newest subscriber connection on `master` that holds at least `least`
    shard channels (the many-rooms node's: the other node's holds its probe and maybe its
    inbox; an older one would be a connection of a previous start still closing)."""
    entries = [dict(field.split("=", 1) for field in line.split())
               for line in master.execute("CLIENT", "LIST", "TYPE", "pubsub").splitlines() if line]
    return max((entry["id"] for entry in entries if int(entry["ssub"]) >= least), key=int)


async def delivered(a: Bare, b: Bare, channels: list[str], payload: bytes) -> None:
    """A publishes `payload` into every channel until B heard it in each (what B's subscriber
    had not subscribed again yet when A published is sent again: no timing assumed)."""
    deadline = time.monotonic() + WAIT
    missing = list(channels)
    while missing:
        assert time.monotonic() < deadline, f"{len(missing)} of {len(channels)} rooms not heard again"
        for channel in missing:
            a.backplane.publish(channel, payload)
        await asyncio.sleep(0.5)
        missing = [channel for channel in missing if payload not in b.heard.get(channel, ())]


def test_a_subscriber_restarting_under_thousands_of_rooms_is_up_again_logs_each_outage_once_and_delivers(
        redis_cluster_module, caplog):
    """B follows 3,000 rooms on the three shards. Its subscriber restarts (subscribing them all
    again) when: one shard's connection is killed; one shard is deaf while the others hear
    (CLIENT PAUSE WRITE: the probes through it go unanswered); the writers' connections are
    killed just before or just after it; its event loop is held meanwhile. After each, both
    nodes are UP again within WAIT seconds, every outage was logged once as lost and once as
    back, and every room delivers again."""
    servers = redis_cluster_module
    url = servers.url + QUERY + f"&prefix={tag()}"
    masters = servers.masters

    async def kill_subscriber(shard: int) -> None:
        masters[shard].execute("CLIENT", "KILL", "ID", subscriber_id(masters[shard], 100))

    async def kill_writers(shard: int) -> None:
        masters[shard].execute("CLIENT", "KILL", "TYPE", "normal", "SKIPME", "yes")

    async def main() -> None:
        async with started(url, 2) as (a, b):
            channels = [b.backplane.channel(Topic(TopicKind.ROOM, f"many-{i}")) for i in range(3000)]
            await asyncio.gather(*[w for w in map(b.backplane.subscribe, channels) if w is not None])
            await delivered(a, b, channels, b"before")

            async def one_shard_killed() -> None:
                await kill_subscriber(0)

            async def one_shard_deaf() -> None:
                masters[1].execute("CLIENT", "PAUSE", 3000, "WRITE")

            async def writers_then_subscriber() -> None:
                await kill_writers(2)
                await until(lambda: b.backplane.state is BackplaneState.DOWN, "B down")
                await kill_subscriber(0)

            async def subscriber_then_writers() -> None:
                await kill_subscriber(1)
                await until(lambda: b.backplane.state is BackplaneState.DOWN, "B down")
                await kill_writers(0)

            async def on_a_held_loop() -> None:
                await kill_subscriber(2)
                for _ in range(8):  # the restart runs in the turns between 0.4 s holds
                    time.sleep(0.4)
                    await asyncio.sleep(0)

            for phase in (one_shard_killed, one_shard_deaf, writers_then_subscriber, subscriber_then_writers,
                          on_a_held_loop):
                outages = b.backplane.outages
                await phase()
                await until(lambda outages=outages: b.backplane.outages > outages, f"{phase.__name__}: B's outage")
                await until(lambda: a.backplane.state is b.backplane.state is BackplaneState.UP,
                            f"{phase.__name__}: both up again")
                lines = [record.getMessage() for record in caplog.records]
                total = a.backplane.outages + b.backplane.outages
                assert sum(line.startswith(LOST_LINE) for line in lines) == total, (phase.__name__, lines)
                assert sum(line.startswith(BACK_LINE) for line in lines) == total, (phase.__name__, lines)
                await delivered(a, b, channels, phase.__name__.encode())

    with caplog.at_level(logging.WARNING, logger="tether.backplane"):
        run(main)


def test_rooms_left_while_the_subscriber_restarts_are_not_subscribed_again(redis_cluster_module):
    """The restart subscribes the rooms followed when it began; a room left before it is up
    again (the hub's last member gone) is unsubscribed once it is: not heard any more."""
    servers = redis_cluster_module
    url = servers.url + QUERY + f"&prefix={tag()}"

    async def main() -> None:
        async with started(url, 2) as (a, b):
            channels = [b.backplane.channel(Topic(TopicKind.ROOM, f"leaving-{i}")) for i in range(300)]
            await asyncio.gather(*[w for w in map(b.backplane.subscribe, channels) if w is not None])
            kept, left = channels[:150], channels[150:]
            master = servers.masters[0]
            master.execute("CLIENT", "KILL", "ID", subscriber_id(master, 20))
            await until(lambda: b.backplane.outages == 1, "B's outage")
            # every turn of the loop until the restart has subscribed everything, not yet up
            deadline = time.monotonic() + WAIT
            while not (b.backplane._pubsubs and not b.backplane._sub_up):
                assert time.monotonic() < deadline, "B's subscriber restarting"
                await asyncio.sleep(0)
            for channel in left:
                b.backplane.unsubscribe(channel)
            await until(lambda: b.backplane.state is BackplaneState.UP, "B up again")

            def still_subscribed() -> list[str]:
                return [channel for channel in left
                        if servers.owner(slot_of(channel)).execute("PUBSUB", "SHARDCHANNELS", channel)]

            await until(lambda: not still_subscribed(), "the rooms left unsubscribed")
            await delivered(a, b, kept, b"kept")
            for channel in left:
                a.backplane.publish(channel, b"gone")
            await delivered(a, b, kept, b"after")  # in order per shard: the left rooms' went first
            assert not [channel for channel in left if b"gone" in b.heard.get(channel, ())]

    run(main)


def test_a_master_the_writer_has_not_met_yet_costs_one_outage_and_no_probe_is_dropped(redis_cluster, caplog):
    """A followed room's slot moves to a master the cluster just gained: the subscriber starts
    over on four masters while the writer, its publish held by CLIENT PAUSE WRITE on another
    master, is still on three. The writer then starts over on the four with what was queued
    meanwhile, the subscriber's probe among it (were it dropped, the probe's silence would
    make a second outage): one outage, logged once each way, and delivery on every master."""
    servers = redis_cluster
    # heartbeats far apart: the first command after the subscriber's restart is its probe
    url = servers.url + f"?heartbeat=30&probe=2&prefix={tag()}"
    new = servers.add_master()

    async def main() -> None:
        async with started(url, 1) as (b,):
            room = await b.follow(Topic(TopicKind.ROOM, "moving"))
            slot = slot_of(room)
            held = next(m for m in servers.masters[:3] if m is not servers.owner(slot))
            held_room = next(channel for channel in (b.backplane.channel(Topic(TopicKind.ROOM, f"held-{i}"))
                                                     for i in range(10_000))
                             if servers.owner(slot_of(channel)) is held)
            await b.follow(Topic(TopicKind.ROOM, held_room.rpartition("}")[2]))
            source = await asyncio.to_thread(servers.begin_migration, slot, new)
            held.execute("CLIENT", "PAUSE", 3000, "WRITE")
            b.backplane.publish(held_room, b"held")  # the writer waits on it until the pause ends
            await asyncio.to_thread(servers.end_migration, slot, source, new)
            await until(lambda: b.backplane._stale, "the subscriber on four masters, the writer on three")
            await until(lambda: b.backplane.state is BackplaneState.UP, "up on four masters")
            assert len(b.backplane._writing.masters) == 4
            await asyncio.sleep(2 * b.backplane.probe + 1)  # a dropped probe would be a deafness by now
            assert b.backplane.outages == 1
            lines = [record.getMessage() for record in caplog.records]
            assert [sum(line.startswith(start) for line in lines) for start in (LOST_LINE, BACK_LINE)] == [1, 1]
            for channel in (room, held_room):
                b.backplane.publish(channel, b"after")
                await until(lambda channel=channel: b"after" in b.heard.get(channel, ()), "heard on its master")
            assert b.heard[held_room][0] == b"held"

    with caplog.at_level(logging.WARNING, logger="tether.backplane"):
        run(main)

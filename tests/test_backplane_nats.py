"""The NATS backplane (`tether.backplane.nats`, docs/scaling.md) on a real `nats-server -js`
(tests/natsutil.py): its URL, the names it gives subjects, keys and streams (any room or path
name, awkward ones too, reads back exactly), bare backplanes (history rooms numbered in the
stream's order across nodes publishing at once, presence and counts), and the server
restarted, with node processes (`tether run cluster_app:app --backplane nats://...`, with
tests/test_backplane.py's Node and Client helpers): with its store (delivery resumes, the outage counted and logged, history rooms
keep their epoch and offsets) and without (a new epoch, and the members are told of the loss).
What breaks nothing, and a killed node, run on NATS with every other engine in
tests/test_backplane.py (tests/engines.py).
"""

from __future__ import annotations

import asyncio
import json
import re
import time
from collections.abc import Callable
from typing import Any

import pytest

from tether.backplane import NodeState, Topic, TopicKind, from_url
from tether.backplane.base import Backplane, BackplaneState
from tether.backplane.envelope import new_connection_id, new_node_id
from tether.backplane.history import NOWHERE, HistoryLimits, Position, Stored, decode_kept
from tether.backplane.nats_kept import InOrder
from tether.backplane.nats_names import Names, name_of, parse_url, token
from tether.hub import Hub

from .natsutil import NatsServer, nats_module_server_fixture, nats_server_fixture  # noqa: F401
from .netutil import wait_until
from .recording import open_connection
from .test_backplane import (  # noqa: F401  (start_node, clients: fixtures)
    WAIT,
    Client,
    Node,
    backplane_url,
    clients,
    first_after,
    start_node,
    tag,
)
from .test_backplane_history import Engine, scenario, until
from .test_backplane_history import Node as HistoryNode

AWKWARD = ["lobby", "", "a b", "a.b", "*", ">", "a.*.>", "chat:1/x", "élan ☃ 日本", "=", "-_", "x" * 300,
           "tab\there", "new\nline", "\x00"]
LIMITS = HistoryLimits(size=1000)
TIMEOUT = 30.0
LOST = "tether backplane: NATS lost"
BACK = re.compile(r"WARNING: tether backplane: NATS is back after ([\d.]+) s; (\d+) cluster message\(s\) were lost")


# -- the URL ----------------------------------------------------------------------------------------------
@pytest.mark.parametrize(("url", "servers", "user", "password", "options"), [
    ("nats://127.0.0.1:4222", ["nats://127.0.0.1:4222"], None, None, ("tether", 5.0, 1.0)),
    ("nats://h1", ["nats://h1:4222"], None, None, ("tether", 5.0, 1.0)),
    ("NATS://h1:4223,h2:4224/", ["nats://h1:4223", "nats://h2:4224"], None, None, ("tether", 5.0, 1.0)),
    ("nats://u%40x:p%3Aw@h1,[::1]:5000?prefix=app-1&heartbeat=0.5&probe=2",
     ["nats://h1:4222", "nats://[::1]:5000"], "u@x", "p:w", ("app-1", 0.5, 2.0)),
    ("nats://token-user@h1", ["nats://h1:4222"], "token-user", None, ("tether", 5.0, 1.0)),
])
def test_a_nats_url_names_its_servers_credentials_and_tethers_options(url, servers, user, password, options):
    read = parse_url(url)
    assert (list(read.servers), read.user, read.password) == (servers, user, password)
    assert (read.prefix, read.heartbeat, read.probe) == options
    assert "p:w" not in read.redacted() and "@" not in read.redacted()


@pytest.mark.parametrize(("url", "problem"), [
    ("redis://h1", "not a nats:// URL"),
    ("nats://", "'' is not host[:port]"),
    ("nats://h1,,h2", "'' is not host[:port]"),
    ("nats://h1:port", "is not host[:port]"),
    ("nats://h1:70000", "port 70000 out of range"),
    ("nats://h1/db", "has no path"),
    ("nats://h1?timeout=3", "unknown option 'timeout'"),
    ("nats://h1?prefix=a.b", "prefix 'a.b' must be"),
    ("nats://h1?prefix=", "prefix '' must be"),
    ("nats://h1?heartbeat=0", "heartbeat='0' is not a positive number"),
    ("nats://h1?probe=soon", "probe='soon' is not a positive number"),
    ("nats://h1?heartbeat=inf", "heartbeat='inf' is not a positive number"),
])
def test_a_malformed_nats_url_is_a_value_error_naming_the_problem(url, problem):
    from tether.backplane.nats import NatsBackplane

    with pytest.raises(ValueError, match=re.escape(problem)):
        NatsBackplane(new_node_id(), url)


def test_a_password_in_a_malformed_url_is_not_in_the_error():
    with pytest.raises(ValueError) as raised:
        parse_url("nats://user:secret@h1/path")
    assert "secret" not in str(raised.value) and "user:***@h1" in str(raised.value)


def test_from_url_makes_a_nats_backplane_without_connecting():
    from tether.backplane.nats import NatsBackplane

    backplane = from_url("nats://127.0.0.1:1?prefix=x", new_node_id())
    assert isinstance(backplane, NatsBackplane) and backplane.prefix == "x"
    assert backplane.state is BackplaneState.CONNECTING


# -- names --------------------------------------------------------------------------------------------------
SUBJECT_TOKEN = re.compile(r"[^\s.*>]+")
KV_KEY = re.compile(r"[-/_=.a-zA-Z0-9]+")


@pytest.mark.parametrize("name", AWKWARD)
def test_any_name_is_one_subject_token_and_key_part_that_reads_back(name):
    text = token(name)
    assert SUBJECT_TOKEN.fullmatch(text) and KV_KEY.fullmatch(text)
    assert name_of(text) == name
    names = Names("tether")
    for kind in TopicKind:
        subject = names.subject(Topic(kind, name))
        assert subject.count(".") == 2 and names.topic(subject) == Topic(kind, name)
    connection_id = new_connection_id(new_node_id())
    key = names.presence_key(name, "ab12", connection_id)
    assert KV_KEY.fullmatch(key) and names.read_presence_key(key) == (name, "ab12", connection_id)
    stream = names.stream(name)
    assert re.fullmatch(r"tether-kept-[0-9a-f]{32}", stream)


def test_tokens_of_distinct_names_differ_and_non_tokens_read_back_as_none():
    assert len({token(name) for name in AWKWARD}) == len(AWKWARD)
    assert len({Names("t").stream(name) for name in AWKWARD}) == len(AWKWARD)
    for text in ["", "a.b", "a b", "YQ=", "YR", "Y", "*", "_w"]:  # "YR": not the one spelling of a name
        assert name_of(text) is None, text
    names = Names("tether")
    for subject in ["tether.room", "other.room.YQ", "tether.nope.YQ", "tether.room.YQ.x", "tether.kept-in.YQ.e1"]:
        assert names.topic(subject) is None, subject


def test_republished_messages_are_handed_on_in_offset_order_and_a_gap_after_a_while():
    async def main() -> None:
        handed: list[tuple[int, str, bytes]] = []
        order = InOrder(lambda channel, data: handed.append(decode_kept(data)))
        for offset in (5, 7, 6, 8, 4):  # 5 starts the line; 7 waits for 6; 4 is late: handed on at once
            order.arrived("c", offset, "e1", b"m%d" % offset)
        assert [offset for offset, _, _ in handed] == [5, 6, 7, 8, 4]
        order.arrived("c", 10, "e1", b"m10")  # 9 never comes
        assert len(handed) == 5
        await asyncio.sleep(InOrder.HOLD * 3)
        assert handed[-1] == (10, "e1", b"m10")
        order.arrived("c", 12, "e1", b"m12")
        order.arrived("c", 1, "e2", b"new")  # a new epoch: what was held goes first
        assert [(offset, epoch) for offset, epoch, _ in handed[-2:]] == [(12, "e1"), (1, "e2")]
        order.arrived("c", 3, "e2", b"x")
        order.forget()
        assert handed[-1] == (3, "e2", b"x")

    asyncio.run(main())


# -- bare backplanes ----------------------------------------------------------------------------------------
class Bare(HistoryNode):
    """A started backplane and what it heard, per channel: kept messages decoded, others as sent."""

    def __init__(self, backplane: Backplane) -> None:
        super().__init__(backplane)
        self.gone: list[tuple[str, dict[str, str]]] = []
        self.state = NodeState()

    def receive(self, channel: str, data: bytes) -> None:
        topic = self.backplane.topic(channel)
        assert topic is not None, channel
        self.heard[channel].append(decode_kept(data) if topic.kind is TopicKind.KEPT else data)


class Cluster(Engine):
    """Bare NATS backplanes of one cluster on `server` (the history suite's scenario stops them)."""

    def __init__(self, server: NatsServer, query: str = "?heartbeat=0.5&probe=0.5") -> None:
        super().__init__("nats")
        self.nats, self.query = server, query

    async def node(self, query: str = "") -> Bare:  # type: ignore[override]
        from tether.backplane.nats import NatsBackplane

        bare = Bare(NatsBackplane(new_node_id(), self.nats.url + (query or self.query)))
        self.nodes.append(bare)
        await bare.backplane.start(bare.receive, lambda room, gone: bare.gone.append((room, gone)),
                                   lambda: bare.state)
        assert bare.backplane.state is BackplaneState.UP
        return bare


@pytest.fixture
def cluster(nats_module_server: NatsServer) -> Cluster:  # noqa: F811
    """Bare nodes on the module's server (for what breaks nothing)."""
    return Cluster(nats_module_server)


@pytest.fixture
def own_cluster(nats_server: NatsServer) -> Cluster:  # noqa: F811
    """Bare nodes on a server of the test's own (to restart)."""
    return Cluster(nats_server)


@scenario
async def test_awkward_names_carry_messages_presence_and_history_across_nodes(
        cluster: Cluster) -> None:
    a, b = await cluster.node(), await cluster.node()
    for name in AWKWARD:
        for kind in (TopicKind.ROOM, TopicKind.PATH):
            await b.follow(Topic(kind, name))
            a.backplane.publish(a.backplane.channel(Topic(kind, name)), b"to " + name.encode())
    for name in AWKWARD:
        for kind in (TopicKind.ROOM, TopicKind.PATH):
            assert await b.hears(1, Topic(kind, name)) == [b"to " + name.encode()]
    member = new_connection_id(a.backplane.node)
    a.state.presence = {name: {member: json.dumps(name)} for name in AWKWARD}
    for name in AWKWARD:
        a.backplane.presence_join(name, member, json.dumps(name))
    for name in AWKWARD:
        await until_value(lambda name=name: b.backplane.presence(name), {member: json.dumps(name)})
    for name in ("a.*.>", "élan ☃ 日本", ""):
        topic = Topic(TopicKind.KEPT, name)
        await b.follow(topic)
        a.backplane.publish_kept(topic, name.encode(), LIMITS)
        (offset, epoch, envelope), = await b.hears(1, topic)
        assert (offset, envelope) == (1, name.encode())
        assert await b.backplane.history(topic, None, None) == (Position(epoch, 1), [Stored(1, name.encode())])


@scenario
async def test_a_name_too_long_for_a_subject_is_refused_and_counted_and_the_connection_stays(cluster: Cluster) -> None:
    a, b = await cluster.node(), await cluster.node()
    long = "x" * 2300  # 3,067 characters of token: past MAX_SUBJECT (the server's control line is 4 KiB)
    lost: list[str] = []
    a.backplane.kept_lost = lambda room, why: lost.append(why)
    assert b.backplane.subscribe(b.backplane.channel(Topic(TopicKind.ROOM, long))) is None
    a.backplane.publish(a.backplane.channel(Topic(TopicKind.ROOM, long)), b"lost")
    a.backplane.publish_kept(Topic(TopicKind.KEPT, long), b"lost too", LIMITS)
    a.backplane.presence_join(long, new_connection_id(a.backplane.node), "{}")
    fine = Topic(TopicKind.ROOM, "x" * 2000)  # 2,667 characters: fits
    await b.follow(fine)
    a.backplane.publish(a.backplane.channel(fine), b"arrives")
    assert await b.hears(1, fine) == [b"arrives"]
    assert a.backplane.lost == 2 and len(lost) == 1 and "too long" in lost[0]
    assert (a.backplane.outages, b.backplane.outages) == (0, 0)


@scenario
async def test_a_message_over_max_payload_is_counted_lost_and_the_room_goes_on(cluster: Cluster) -> None:
    a, b = await cluster.node(), await cluster.node()
    room, kept = Topic(TopicKind.ROOM, f"big {tag()}"), Topic(TopicKind.KEPT, f"big {tag()}")
    lost: list[str] = []
    a.backplane.kept_lost = lambda name, why: lost.append(why)
    for topic in (room, kept):
        await b.follow(topic)
    big = b"x" * (2 << 20)  # nats-server's max_payload is 1 MiB by default
    a.backplane.publish(a.backplane.channel(room), big)
    a.backplane.publish(a.backplane.channel(room), b"small")
    assert await b.hears(1, room) == [b"small"]
    a.backplane.publish_kept(kept, b"first", LIMITS)
    a.backplane.publish_kept(kept, big, LIMITS)
    a.backplane.publish_kept(kept, b"after", LIMITS)
    assert [(offset, envelope) for offset, _, envelope in await b.hears(2, kept)] == [(1, b"first"), (2, b"after")]
    await until(lambda: lost, "the big history message reported lost")
    assert a.backplane.lost == 2 and "max_payload" in lost[0] and a.backplane.outages == 0


@scenario
async def test_a_history_room_is_numbered_in_the_streams_order_with_two_nodes_publishing_at_once(
        cluster: Cluster) -> None:
    a, b, listener = await cluster.node(), await cluster.node(), await cluster.node()
    room = Topic(TopicKind.KEPT, f"order {tag()}")
    for node in (a, b, listener):
        await node.follow(room)
    count = 300
    for i in range(count):
        a.backplane.publish_kept(room, b"a%d" % i, LIMITS)
        b.backplane.publish_kept(room, b"b%d" % i, LIMITS)
        if i % 7 == 0:
            await asyncio.sleep(0)
    heard = [await node.hears(2 * count, room) for node in (a, b, listener)]
    assert heard[0] == heard[1] == heard[2]
    assert [offset for offset, _, _ in heard[0]] == list(range(1, 2 * count + 1))
    for name in (b"a", b"b"):
        assert [e for _, _, e in heard[0] if e[:1] == name] == [name + b"%d" % i for i in range(count)]
    epoch = heard[0][0][1]
    # The stream docs/scaling.md names: its sequence is the offset, its subject holds the epoch.
    info = cluster.nats.api(f"STREAM.INFO.{Names('tether').stream(room.name)}")
    assert info["config"]["subjects"] == [f"tether.kept-in.{token(room.name)}.{epoch}"]
    assert info["config"]["republish"]["dest"] == a.backplane.channel(room)
    assert (info["state"]["last_seq"], info["config"]["max_msgs"]) == (2 * count, LIMITS.size)
    position, stored = await listener.backplane.history(room, 2 * count - 3, 2)
    assert position == Position(epoch, 2 * count) and [s.offset for s in stored] == [2 * count - 2, 2 * count - 1]
    assert (a.backplane.lost, b.backplane.lost) == (0, 0)


@scenario
async def test_a_rooms_stream_deleted_under_a_publisher_is_made_again_with_a_new_epoch_and_nothing_lost(
        cluster: Cluster) -> None:
    a, b = await cluster.node(), await cluster.node()
    room = Topic(TopicKind.KEPT, f"deleted {tag()}")
    await b.follow(room)
    a.backplane.publish_kept(room, b"before", LIMITS)
    epoch = (await b.hears(1, room))[0][1]
    cluster.nats.api(f"STREAM.DELETE.{Names('tether').stream(room.name)}")
    for i in range(20):  # a knows the old epoch: these meet no stream, and go again once it is made
        a.backplane.publish_kept(room, b"after%d" % i, LIMITS)
    heard = (await b.hears(21, room))[1:]
    assert [(offset, envelope) for offset, _, envelope in heard] == [(i + 1, b"after%d" % i) for i in range(20)]
    assert {e for _, e, _ in heard} != {epoch} and len({e for _, e, _ in heard}) == 1
    assert a.backplane.lost == 0


@scenario
async def test_history_limits_size_and_ttl_are_the_streams(cluster: Cluster) -> None:
    node = await cluster.node()
    room = Topic(TopicKind.KEPT, f"limits {tag()}")
    await node.follow(room)
    for i in range(1, 13):
        node.backplane.publish_kept(room, b"m%d" % i, HistoryLimits(size=5, ttl=60))
    epoch = (await node.hears(12, room))[0][1]
    position, stored = await node.backplane.history(room, 2, None)
    assert position == Position(epoch, 12) and [s.offset for s in stored] == [8, 9, 10, 11, 12]
    config = cluster.nats.api(f"STREAM.INFO.{Names('tether').stream(room.name)}")["config"]
    assert (config["max_msgs"], config["max_age"], config["discard"]) == (5, 60 * 10**9, "old")
    node.backplane.publish_kept(room, b"m13", HistoryLimits(size=2))  # other limits: the stream follows
    await node.hears(13, room)
    assert [s.offset for s in (await node.backplane.history(room, None, None))[1]] == [12, 13]


@scenario
async def test_presence_and_count_are_every_live_nodes_and_a_stopped_node_leaves_the_count(
        cluster: Cluster) -> None:
    a, b = await cluster.node(), await cluster.node()
    room = f"presence {tag()}"
    ids = [new_connection_id(node.backplane.node) for node in (a, b, b)]
    a.state.presence = {room: {ids[0]: '"a0"'}}
    a.backplane.presence_join(room, ids[0], '"a0"')
    for connection_id, n in zip(ids[1:], (1, 2), strict=True):
        b.state.presence.setdefault(room, {})[connection_id] = f'"b{n}"'
        b.backplane.presence_join(room, connection_id, f'"b{n}"')
    before = await a.backplane.count()
    a.state.connections = 1
    a.backplane.connections_changed(1)
    b.state.connections = 2
    b.backplane.connections_changed(2)
    everyone = {ids[0]: '"a0"', ids[1]: '"b1"', ids[2]: '"b2"'}
    for node in (a, b):
        await until_value(lambda node=node: node.backplane.presence(room), everyone)
        await until_value(node.backplane.count, before + 3)
    b.backplane.presence_leave(room, ids[2])
    del b.state.presence[room][ids[2]]
    del everyone[ids[2]]
    await until_value(lambda: a.backplane.presence(room), everyone)
    await b.backplane.stop()
    await until_value(a.backplane.count, before + 1)


async def until_value(read: Callable[[], Any], wanted: Any, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while (value := await read()) != wanted:
        assert time.monotonic() < deadline, f"{value!r} != {wanted!r} after {timeout} s"
        await asyncio.sleep(0.01)


@scenario
async def test_history_rooms_nobody_writes_and_rooms_whose_messages_expired_go_away(
        own_cluster: Cluster, monkeypatch: pytest.MonkeyPatch) -> None:
    """One node sweeps each period (SWEEP_EVERY, a day's HISTORY_IDLE_TTL here shortened)."""
    import tether.backplane.nats as engine

    monkeypatch.setattr(engine, "SWEEP_EVERY", 0.25)
    monkeypatch.setattr(engine, "HISTORY_IDLE_TTL", 1.0)
    a, b = await own_cluster.node(), await own_cluster.node()
    idle, busy, brief = (Topic(TopicKind.KEPT, name) for name in ("idle", "busy", "brief"))
    for topic in (idle, busy, brief):
        await b.follow(topic)
    a.backplane.publish_kept(idle, b"once", LIMITS)
    a.backplane.publish_kept(brief, b"short-lived", HistoryLimits(size=10, ttl=0.5))
    a.backplane.publish_kept(busy, b"tick", LIMITS)
    epoch = (await b.hears(1, idle))[0][1]
    await b.hears(1, busy)
    names = Names("tether")

    def exists(topic: Topic) -> bool:
        return "error" not in own_cluster.nats.api(f"STREAM.INFO.{names.stream(topic.name)}")

    deadline = time.monotonic() + 15
    while exists(idle) or exists(brief):
        assert time.monotonic() < deadline, "the idle and the expired rooms' streams still there"
        a.backplane.publish_kept(busy, b"tick", LIMITS)
        await asyncio.sleep(0.1)
    assert exists(busy), own_cluster.nats.api(f"STREAM.INFO.{names.stream(busy.name)}")
    assert await b.backplane.history(idle, None, None) == (NOWHERE, [])
    a.backplane.publish_kept(idle, b"again", LIMITS)  # a knows the old epoch: the publish meets no stream, then makes one
    (offset, new_epoch, envelope) = (await b.hears(2, idle))[-1]
    assert (offset, envelope) == (1, b"again") and new_epoch != epoch
    assert a.backplane.lost == 0


def test_a_server_without_jetstream_leaves_the_node_down_with_a_warning_saying_so(caplog):
    from tether.backplane.nats import NatsBackplane

    server = NatsServer(jetstream=False).start()

    async def main() -> None:
        backplane = NatsBackplane(new_node_id(), server.url)
        await backplane.start(lambda channel, data: None, lambda room, gone: None, NodeState)
        try:
            assert backplane.state is not BackplaneState.UP
        finally:
            await backplane.stop()

    try:
        with caplog.at_level("WARNING", logger="tether.backplane"):
            asyncio.run(asyncio.wait_for(main(), TIMEOUT))
    finally:
        server.close()
    [warning] = [r.getMessage() for r in caplog.records if "not reachable yet" in r.getMessage()]
    assert "started without -js (JetStream)" in warning


# -- the server restarted (bare backplanes and hubs) -----------------------------------------------------------
@scenario
async def test_a_restart_that_keeps_the_store_keeps_every_rooms_epoch_and_offsets(own_cluster: Cluster) -> None:
    cluster, nats_server = own_cluster, own_cluster.nats
    a, b = await cluster.node(), await cluster.node()
    room = Topic(TopicKind.KEPT, "kept across")
    resumed: list[BackplaneState] = []
    b.backplane.resumed = lambda: resumed.append(b.backplane.state)
    await b.follow(room)
    for i in range(3):
        a.backplane.publish_kept(room, b"before%d" % i, LIMITS)
    epoch = (await b.hears(3, room))[0][1]
    nats_server.kill()
    await until(lambda: a.backplane.state is BackplaneState.DOWN, "A down")
    a.backplane.publish_kept(room, b"lost", LIMITS)  # never raises: counted
    assert a.backplane.lost == 1
    with pytest.raises(ConnectionError):
        await a.backplane.history(room, None, None)
    nats_server.start()
    await until(lambda: resumed == [BackplaneState.UP] and a.backplane.state is BackplaneState.UP, "both up")
    assert await b.backplane.history(room, 1, None) == (Position(epoch, 3), [
        Stored(2, b"before1"), Stored(3, b"before2")])
    a.backplane.publish_kept(room, b"after", LIMITS)
    assert (await b.hears(4, room))[-1] == (4, epoch, b"after")
    assert (a.backplane.outages, b.backplane.outages) == (1, 1)


@scenario
async def test_a_hung_server_is_noticed_by_its_unanswered_pings_and_the_node_comes_back(own_cluster: Cluster) -> None:
    """probe=0.5: nats-py pings every 0.5 s and the second ping unanswered closes the connection."""
    node = await own_cluster.node()
    server = own_cluster.nats
    server.pause()
    paused = time.monotonic()
    try:
        await until(lambda: node.backplane.state is BackplaneState.DOWN, "the node down", timeout=10)
        noticed = time.monotonic() - paused
    finally:
        server.resume()
    await until(lambda: node.backplane.state is BackplaneState.UP, "the node up again", timeout=10)
    assert node.backplane.outages == 1 and noticed < 5.0, noticed


def test_a_restart_that_loses_the_store_starts_a_new_epoch_and_the_members_are_told(
        nats_server: NatsServer) -> None:  # noqa: F811
    """Two hubs on NATS; a member of a history room on A. The server comes back without its
    store: the room's stream is gone, A reads back from its position and finds another epoch
    (nothing), so its member hears of the loss; the next publish starts the new epoch at 1."""
    async def main() -> None:
        hubs = []
        for _ in range(2):
            hub = Hub()
            hub.bind(asyncio.get_running_loop())
            hub.keep_history("chat:{name}", size=10)
            await hub.start(from_url(nats_server.url + "?heartbeat=0.5&probe=0.5", hub.node))
            hubs.append(hub)
        a, b = hubs
        losses: list[tuple[str, str]] = []
        a.on_loss(lambda room, reason: losses.append((room, reason)))
        member, channel = await open_connection(a)
        await member.join("chat:1")
        await member.join("plain")
        for n in (1, 2):
            await b.publish("chat:1", n)
        await until(lambda: channel.messages() == ["1", "2"], "the first two delivered")
        epoch = (await a.history("chat:1"))[0].epoch
        nats_server.restart(lose_store=True)
        await until(lambda: {room for room, _ in losses} == {"chat:1", "plain"}, "both rooms' losses reported")
        assert "no longer holds" in dict(losses)["chat:1"]
        await until(lambda: b.backplane.state is BackplaneState.UP, "B up")
        await b.publish("chat:1", 3)
        await until(lambda: channel.messages() == ["1", "2", "3"], "the next publish delivered")
        position, kept = await a.history("chat:1")
        assert position.offset == 1 and position.epoch != epoch and [m.data for m in kept] == ["3"]
        for hub in hubs:
            await hub.stop()

    asyncio.run(asyncio.wait_for(main(), TIMEOUT))


# -- node processes (what breaks nothing runs on NATS in tests/test_backplane.py, through tests/engines.py) --------
def test_the_server_killed_and_restarted_local_delivery_goes_on_and_the_cluster_comes_back(
        nats_server, start_node, clients):  # noqa: F811
    """A streams to a path with a client on A and one on B; the server is killed for a second and
    started again on its store. A's client hears every message; B's hears none published while
    NATS was away (none late, none twice), and again within 2 s of the restart; A says so in
    two WARNINGs whose count is its `lost`."""
    url = backplane_url(nats_server.url)
    a, b = start_node(url), start_node(url)
    for node in (a, b):
        node.wait_state("up")
    path = f"/fn/{tag()}"
    local, remote = clients(a, path), clients(b, path)
    a.post("/do/stream/start", path=path, interval=0.02)
    first_after(remote, time.monotonic(), WAIT)
    nats_server.kill()
    wait_until(lambda: a.status()["state"] == "down", timeout=5, interval=0.02, message="A down")
    down = time.monotonic()
    time.sleep(1.0)
    nats_server.start()
    restarted = time.monotonic()
    try:
        assert first_after(remote, restarted, 2.0) - restarted <= 2.0
    finally:
        a.post("/do/stream/stop", path=path)
    heard = [json.loads(message)["seq"] for _, message in remote.log]
    sent = wait_until(lambda: (seqs := [json.loads(message)["seq"] for _, message in local.log])[-1] >= heard[-1]
                      and seqs, message="A's client having every message B's heard")  # each reader is a thread
    assert sent == list(range(sent[0], sent[-1] + 1))  # local delivery never stopped
    assert heard == sorted(set(heard)) and set(heard) < set(sent)
    while_down = {json.loads(message)["seq"] for when, message in local.log if down < when < restarted}
    assert while_down and not while_down & set(heard)  # what A sent while DOWN never reached B later
    status = a.status()
    counts = wait_until(lambda: [int(m.group(2)) for m in BACK.finditer(a.log())], timeout=5,
                        message="A's WARNING that NATS is back")
    assert (status["state"], status["outages"], len(a.warnings(LOST)), counts) == ("up", 1, 1, [status["lost"]])
    assert status["lost"] > 0


def test_a_url_of_several_servers_connects_to_one_that_answers_and_credentials_are_used():
    from tether.backplane.nats import NatsBackplane

    server = NatsServer(user="tether", password="s3cret:/@").start()

    async def state_of(url: str) -> BackplaneState:
        backplane = NatsBackplane(new_node_id(), url)
        await backplane.start(lambda channel, data: None, lambda room, gone: None, NodeState)
        try:
            return backplane.state
        finally:
            await backplane.stop()

    try:
        host = f"127.0.0.1:{server.port}"
        nobody = f"127.0.0.1:{NatsServer().port}"  # reserved, never started: refused
        good = f"nats://tether:s3cret%3A%2F%40@{nobody},{host},{nobody}"
        assert asyncio.run(state_of(good)) is BackplaneState.UP
        assert asyncio.run(state_of(f"nats://tether:wrong@{host}")) is not BackplaneState.UP
    finally:
        server.close()


def test_a_node_started_before_the_server_joins_once_it_answers(tmp_path, start_node, clients):  # noqa: F811
    server = NatsServer()
    try:
        node = start_node(backplane_url(server.url))
        wait_until(lambda: node.try_status(), timeout=15, message="the node serving")
        assert node.status()["state"] in ("connecting", "down")
        server.start()
        node.wait_state("up")
        other = start_node(backplane_url(server.url))
        other.wait_state("up")
        broadcast_reaches(node, other, clients)
    finally:
        server.close()


def broadcast_reaches(a: Node, b: Node, open_client: Callable[[Node, str], Client]) -> None:
    t = tag()
    receiver = open_client(b, f"/fn/{t}")
    a.post("/do/broadcast", path=f"/fn/{t}", text="across")
    assert receiver.recv() == "across"


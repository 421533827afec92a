"""The Redis Sentinel backplane (`tether.backplane.sentinel`, docs/scaling.md): its URL, how it
finds the master, and its own failure, a failover, on real servers (tests/sentinelutil.py: a
master, 2 replicas and 3 sentinels): the master killed (`kill -9`) with two node processes
(tests/test_backplane.py's Node and Client), a `SENTINEL FAILOVER` (the old master demoted,
not killed), a READONLY reply from a master demoted under the backplane, and history rooms
across a failover on two in-process hubs: read back from the new master's stream, or a loss
reported when the killed master took the stream's tail with it.

What the two engines share (delivery, presence, counts, the history contract) is the shared
suites' (tests/test_backplane.py, tests/test_backplane_history.py, parametrized over
tests/engines.py). The nodes here heartbeat every 2 s: a node is then dead after 6 s of
silence, longer than a failover (with the suites' 0.5 s, a node whose reconnection came a
second after another's would be taken for dead by it, and its members reported gone).
"""

from __future__ import annotations

import asyncio
import json
import logging
import re
import threading
import time
from collections.abc import Callable
from typing import Any

import pytest

from tether.backplane import BackplaneState, NodeState, from_url
from tether.backplane.envelope import new_node_id
from tether.backplane.sentinel import SentinelBackplane, SentinelUrl, parse_sentinel_url
from tether.hub import Hub

from . import test_backplane as shared
from .netutil import reserve_port, wait_until
from .recording import open_connection
from .redisutil import RedisServer
from .sentinelutil import Sentinel as SentinelProcess
from .sentinelutil import SentinelGroup, sentinel_group_fixture, shared_sentinel_group_fixture  # noqa: F401

start_node, clients = shared.start_node, shared.clients  # the fixtures, by these names
FAILOVER_BOUND = 5.0  # s, documented: from the master's kill to a message of node A reaching node B again
NODE_OPTIONS = {"heartbeat": "2", "probe": "0.5"}
NODE = bytes(6)


# -- the URL -------------------------------------------------------------------------------------------
@pytest.mark.parametrize(("url", "parts"), [
    ("redis+sentinel://h1:26380,h2,[::1]:26381/main",
     SentinelUrl((("h1", 26380), ("h2", 26379), ("::1", 26381)), "main", 0, "", "", None, None)),
    ("redis+sentinel://u:p%40ss@h1:1/my%20app/3?socket_timeout=2&sentinel_password=s%26p&sentinel_username=su",
     SentinelUrl((("h1", 1),), "my app", 3, "u:p%40ss", "socket_timeout=2", "su", "s&p")),
    ("REDIS+SENTINEL://:secret@h1/main/", SentinelUrl((("h1", 26379),), "main", 0, ":secret", "", None, None)),
])
def test_a_url_names_the_sentinels_the_service_the_db_and_the_credentials(url: str, parts: SentinelUrl) -> None:
    assert parse_sentinel_url(url) == parts


def test_the_master_url_carries_the_masters_credentials_db_and_options_not_the_sentinels() -> None:
    parts = parse_sentinel_url("redis+sentinel://u:p%40ss@h1/main/3?socket_timeout=2&sentinel_password=x")
    assert parts.master_url("10.0.0.7", 6380) == "redis://u:p%40ss@10.0.0.7:6380/3?socket_timeout=2"
    assert parts.master_url("fe80::1", 6379) == "redis://u:p%40ss@[fe80::1]:6379/3?socket_timeout=2"


def test_the_scheme_makes_a_sentinel_backplane_with_tethers_options_taken_out() -> None:
    backplane = from_url("redis+sentinel://h1:26379/main/2?prefix=app&heartbeat=2&probe=0.5&sentinel_password=x",
                         NODE)
    assert isinstance(backplane, SentinelBackplane)
    assert (backplane.prefix, backplane.heartbeat, backplane.probe) == ("app", 2.0, 0.5)
    assert backplane.target.service == "main" and backplane.target.db == 2
    assert backplane.url == "redis+sentinel://h1:26379/main/2"  # what logs show: no sentinel password


@pytest.mark.parametrize(("url", "problem"), [
    ("redis+sentinel:///main", "no sentinel host"),
    ("redis+sentinel://u:p@/main", "no sentinel host"),
    ("redis+sentinel://h1:26379", "no service name"),
    ("redis+sentinel://h1:26379/", "no service name"),
    ("redis+sentinel://h1:26379,:26380/main", "a sentinel address with no host"),
    ("redis+sentinel://h1:26379,h2:/main", "bad sentinel port ''"),
    ("redis+sentinel://h1:port/main", "bad sentinel port 'port'"),
    ("redis+sentinel://h1:70000/main", "bad sentinel port '70000'"),
    ("redis+sentinel://[::1/main", "bad sentinel address"),
    ("redis+sentinel://h1/main/zero", "bad database 'zero'"),
    ("redis+sentinel://h1/main/0/1", "bad database '0/1'"),
])
def test_a_malformed_url_is_a_value_error_naming_the_problem(url: str, problem: str) -> None:
    with pytest.raises(ValueError, match="backplane redis\\+sentinel://") as error:
        from_url(url, NODE)
    assert problem in str(error.value)


def test_a_malformed_url_with_a_password_does_not_show_it() -> None:
    with pytest.raises(ValueError) as error:
        from_url("redis+sentinel://u:secret@h1:port/main", NODE)
    assert "secret" not in str(error.value) and "u:***@" in str(error.value)


def test_no_password_is_logged_while_no_sentinel_answers(caplog: pytest.LogCaptureFixture) -> None:
    nowhere = f"127.0.0.1:{reserve_port()}"
    url = f"redis+sentinel://u:secret@{nowhere}/main?sentinel_password=hidden&heartbeat=0.5"

    async def main() -> None:
        backplane = from_url(url, NODE)
        await backplane.start(lambda channel, data: None, lambda room, gone: None, NodeState)
        assert backplane.state is BackplaneState.DOWN
        await asyncio.sleep(0.5)  # a few retries, each asking the sentinel again
        await backplane.stop()

    with caplog.at_level(logging.DEBUG, logger="tether.backplane"):
        asyncio.run(asyncio.wait_for(main(), 30))
    text = caplog.text
    assert f"redis+sentinel://u:***@{nowhere}/main" in text and "no master of 'main' to use" in text
    assert "secret" not in text and "hidden" not in text


# -- finding the master ----------------------------------------------------------------------------------
class Bare:
    """A started SentinelBackplane and what it heard (channel, data)."""

    def __init__(self, url: str) -> None:
        self.backplane = from_url(url, new_node_id())
        assert isinstance(self.backplane, SentinelBackplane)
        self.heard: list[tuple[str, bytes]] = []

    async def start(self) -> SentinelBackplane:
        await self.backplane.start(lambda channel, data: self.heard.append((channel, data)),
                                   lambda room, gone: None, NodeState)
        assert isinstance(self.backplane, SentinelBackplane)
        return self.backplane


async def until(condition: Callable[[], Any], what: str, timeout: float = shared.WAIT) -> Any:
    deadline = time.monotonic() + timeout
    while not (value := condition()):
        assert time.monotonic() < deadline, f"not within {timeout} s: {what}"
        await asyncio.sleep(0.01)
    return value


async def crosses(a: Bare, b: Bare, channel: str) -> None:
    """A publish of `a` reaches `b` (subscribed to `channel`)."""
    waiting = b.backplane.subscribe(channel)
    if waiting is not None:
        await waiting
    word = f"hello {time.monotonic_ns()}".encode()
    a.backplane.publish(channel, word)
    await until(lambda: (channel, word) in b.heard, f"{word!r} heard")


def test_the_master_is_found_past_a_sentinel_that_is_not_there(shared_sentinel_group: SentinelGroup) -> None:
    nowhere = f"127.0.0.1:{reserve_port()}"
    url = shared_sentinel_group.url.replace("redis+sentinel://", f"redis+sentinel://{nowhere},") + "?prefix=gone"

    async def main() -> None:
        a, b = Bare(url), Bare(url)
        for node in (a, b):
            backplane = await node.start()
            assert backplane.state is BackplaneState.UP and backplane._master == shared_sentinel_group.master_address()
        await crosses(a, b, "gone:path:/x")
        for node in (a, b):
            await node.backplane.stop()

    asyncio.run(asyncio.wait_for(main(), 30))


def test_a_sentinel_that_accepts_and_never_answers_is_not_waited_for(
        shared_sentinel_group: SentinelGroup, caplog: pytest.LogCaptureFixture) -> None:
    """A frozen sentinel (SIGSTOP: its host's kernel accepts, nobody answers): once another
    has answered, it is given 0.1 s more, not the full second, at each connection."""
    frozen = shared_sentinel_group.sentinels[0]
    frozen.freeze()
    try:
        async def main() -> None:
            node = Bare(shared_sentinel_group.url + "?prefix=frozen")
            backplane = await node.start()
            assert backplane.state is BackplaneState.UP
            await backplane.stop()

        with caplog.at_level(logging.DEBUG, logger="tether.backplane"):
            asyncio.run(asyncio.wait_for(main(), 30))
    finally:
        frozen.thaw()
    assert f"sentinel 127.0.0.1:{frozen.port}: no answer within 0.1 s of another's" in caplog.text


def test_a_master_that_is_a_replica_is_not_used(shared_sentinel_group: SentinelGroup) -> None:
    """A sentinel (listed first) that names, as the master of the service, a server that is a
    replica: the backplane asks it ROLE, leaves it, and uses the master the others name."""
    elsewhere = RedisServer().start()
    replica = RedisServer(args=["--replicaof", elsewhere.host, str(elsewhere.port)]).start()
    liar = SentinelProcess(shared_sentinel_group.service, (replica.host, replica.port), down_after_ms=60_000,
                           failover_timeout_ms=60_000).start()
    try:
        said = liar.master(shared_sentinel_group.service)
        assert (said["port"], said["is_master"], said["is_sdown"], said["is_odown"]) == (replica.port, True,
                                                                                         False, False)
        url = shared_sentinel_group.url.replace("redis+sentinel://", f"redis+sentinel://127.0.0.1:{liar.port},")

        async def main() -> None:
            node = Bare(url + "?prefix=liar")
            backplane = await node.start()
            assert backplane.state is BackplaneState.UP and backplane._master == shared_sentinel_group.master_address()
            await backplane.stop()

        asyncio.run(asyncio.wait_for(main(), 30))
        assert replica.info("commandstats")["cmdstat_role"]["calls"] >= 1  # asked, and left
    finally:
        liar.close()
        replica.close()
        elsewhere.close()


def test_the_password_goes_to_the_master_and_the_sentinel_password_to_the_sentinels(
        caplog: pytest.LogCaptureFixture) -> None:
    with SentinelGroup(password="master-secret", sentinel_password="sentinel-secret") as group:
        hosts = group.url.removeprefix("redis+sentinel://")
        master = f"127.0.0.1:{group.master_address()[1]}"

        async def main() -> None:
            good = f"redis+sentinel://:master-secret@{hosts}?sentinel_password=sentinel-secret&prefix=pw"
            a, b = Bare(good), Bare(good)
            for node in (a, b):
                assert (await node.start()).state is BackplaneState.UP
            await crosses(a, b, "pw:path:/x")
            for url in (f"redis+sentinel://:master-secret@{hosts}",  # the sentinels refuse
                        f"redis+sentinel://{hosts}?sentinel_password=sentinel-secret"):  # the master refuses
                node = Bare(url)
                assert (await node.start()).state is BackplaneState.DOWN
                await node.backplane.stop()
            for node in (a, b):
                await node.backplane.stop()

        with caplog.at_level(logging.DEBUG, logger="tether.backplane"):
            asyncio.run(asyncio.wait_for(main(), 60))
    text = caplog.text
    assert re.search(r"sentinel 127\.0\.0\.1:\d+: AuthenticationError", text), text
    assert f"to use: {master}: AuthenticationError" in text, text
    assert "secret" not in text


# -- the master killed: two node processes ------------------------------------------------------------------
def test_the_master_killed_local_delivery_goes_on_and_the_cluster_follows_the_new_master_within_5_s(
        sentinel_group: SentinelGroup, start_node, clients) -> None:
    url = shared.backplane_url(sentinel_group.url, **NODE_OPTIONS)
    a, b = start_node(url), start_node(url)
    for node in (a, b):
        node.wait_state("up")
    t = shared.tag()
    room = f"room-{t}"
    local, remote = clients(a, f"/fn/{t}"), clients(b, f"/fn/{t}")
    local.join(room, {"on": "a"})
    a.post("/do/stream/start", path=f"/fn/{t}", interval=0.02)
    try:
        shared.first_after(remote, time.monotonic(), shared.WAIT)  # the cluster works before
        old = sentinel_group.kill_master()
        killed = time.monotonic()
        # A member joins on B while B is down: written to the new master only by B's rewrite.
        b.wait_state("down")
        late = clients(b, f"/fn/{t}-late")
        late.join(room, {"on": "b"})
        back = shared.first_after(remote, killed, FAILOVER_BOUND + 5)
        print(f"\nfrom the kill to a message of A on B again: {back - killed:.2f} s")
        assert back - killed <= FAILOVER_BOUND
    finally:
        time.sleep(0.3)
        a.post("/do/stream/stop", path=f"/fn/{t}")
    new = sentinel_group.wait_failover(old)
    # Local delivery went on all along: every message, in order, no gap of a second.
    window = [(when, json.loads(message)["seq"]) for when, message in local.log if message.startswith("{\"seq\"")]
    seqs = [seq for _, seq in window]
    assert seqs == list(range(seqs[0], seqs[0] + len(seqs))), "local messages lost or reordered"
    gaps = [later - earlier for (earlier, _), (later, _) in zip(window, window[1:], strict=False)]
    assert window[0][0] < killed < back < window[-1][0] and max(gaps) < 1.0, max(gaps)
    # One outage on each node, logged once at each end, its loss counted; the nodes on the new master.
    for node in (a, b):
        node.wait_state("up")
        lost = wait_until(lambda node=node: [int(m.group(1)) for m in shared.BACK.finditer(node.log())],
                          message="the WARNING that Redis is back")
        status = node.status()
        assert status["outages"] == 1 == len(node.warnings(shared.LOST)) == len(lost), node.log()
        assert lost == [status["lost"]]
        assert f"the master of 'tether' is 127.0.0.1:{new.port}" in node.log()
    assert a.status()["lost"] > 0  # A streamed through the outage
    # Presence and counts are right on the new master: B's member that joined during the outage too.
    everyone = {local.id: {"on": "a"}, late.id: {"on": "b"}}
    for node in (a, b):
        wait_until(lambda node=node: node.get("/presence", room=room) == everyone, timeout=5,
                   message="both members in presence")
        assert node.get("/count")["count"] == 3
    assert {entry["node"] for entry in [a.status(), b.status()]} <= set(new.execute("ZRANGE", "tether:nodes", 0, -1))


def test_a_sentinel_failover_moves_the_nodes_to_the_new_master_at_once(
        sentinel_group: SentinelGroup, start_node, clients) -> None:
    """`SENTINEL FAILOVER`: the old master lives on and Sentinel demotes it some seconds
    after the switch; the nodes leave it at the switch (`+switch-master`, heard from the
    first sentinel of the URL that answers: the one listed first is not there), not then."""
    nowhere = f"127.0.0.1:{reserve_port()}"
    url = shared.backplane_url(sentinel_group.url.replace("//", f"//{nowhere},"), **NODE_OPTIONS)
    a, b = start_node(url), start_node(url)
    for node in (a, b):
        node.wait_state("up")

    def watchers() -> int:
        return sum(1 for sentinel in sentinel_group.sentinels
                   for client in sentinel.client().client_list(_type="pubsub") if not client["name"])

    wait_until(lambda: watchers() == 2, message="both nodes' watchers subscribed")
    t = shared.tag()
    remote = clients(b, f"/fn/{t}")
    old = sentinel_group.failover()
    new = sentinel_group.wait_failover(old)
    switched = time.monotonic()
    stop = threading.Event()
    ticking = shared.keep_broadcasting(a, f"/fn/{t}", stop)
    try:
        shared.first_after(remote, switched, shared.WAIT, prefix="tick")
    finally:
        stop.set()
        ticking.join(5)
    ours = {a.status()["node"], b.status()["node"]}
    for node in (a, b):
        wait_until(lambda node=node: "Sentinel moved the master of 'tether' to" in node.log(), timeout=5,
                   message="the switch heard")
        node.wait_state("up")
        assert node.status()["outages"] == 1
    assert ours <= set(new.execute("ZRANGE", "tether:nodes", 0, -1))
    # Nobody of ours is left on the old master (the sentinels' connections and the helper's aside),
    # which is still a master: Sentinel reconfigures it only later (some 10 s after the switch here).
    helper = str(old.execute("CLIENT", "ID"))
    assert [client for client in old.client_list() if not client["name"].startswith("sentinel-")
            and client["id"] != helper and "S" not in client["flags"]] == []
    assert old.execute("ROLE")[0] == "master"


# -- a READONLY reply --------------------------------------------------------------------------------------------
def test_a_master_demoted_under_the_backplane_is_an_outage_until_it_is_a_master_again(
        sentinel_group: SentinelGroup, caplog: pytest.LogCaptureFixture) -> None:
    """The master made a replica of another server by hand (REPLICAOF: no client is closed,
    and the sentinels still name it): the writer's next write gets READONLY, which is an
    outage, not a message refused for ever; the server is not used while ROLE says replica,
    and is again once it is a master."""
    elsewhere = RedisServer().start()

    async def main() -> None:
        node = Bare(sentinel_group.url + "?prefix=ro&heartbeat=2")
        backplane = await node.start()
        master = sentinel_group.master()
        await asyncio.to_thread(master.execute, "REPLICAOF", elsewhere.host, str(elsewhere.port))
        backplane.presence_join("room", "someone", "{}")
        await until(lambda: backplane.outages == 1, "the outage")
        await asyncio.sleep(1.5)  # retries, each refusing the replica the sentinels name
        assert backplane.state is BackplaneState.DOWN
        await asyncio.to_thread(master.execute, "REPLICAOF", "NO", "ONE")
        await until(lambda: backplane.state is BackplaneState.UP, "up once it is a master again")
        assert await backplane._call("hset", "ro:check", "field", "written") == 1  # writes go through
        assert backplane.outages == 1
        await backplane.stop()

    try:
        with caplog.at_level(logging.DEBUG, logger="tether.backplane"):
            asyncio.run(asyncio.wait_for(main(), 60))
    finally:
        elsewhere.close()
    warnings = [record.getMessage() for record in caplog.records if record.levelno == logging.WARNING]
    assert any("Redis lost" in text and "READONLY" in text for text in warnings), warnings
    assert not any("refused" in text for text in warnings), warnings
    assert f"127.0.0.1:{sentinel_group.master_address()[1]} is a slave, not a master" in caplog.text


# -- history rooms across a failover: two in-process hubs -----------------------------------------------------
class Pair:
    """Hubs A and B keeping history in rooms `chat:{name}`, a member of `chat:1` on A (what it
    got: `channel.messages()`; the losses A reported: `losses`)."""

    async def start(self, group: SentinelGroup, url_a: str, url_b: str) -> Pair:
        """Start them; B publishes 1, 2, 3, which A's member gets and both replicas hold."""
        self.a, self.b = await hub_on(url_a), await hub_on(url_b)
        self.losses: list[tuple[str, str]] = []
        self.a.on_loss(lambda room, reason: self.losses.append((room, reason)))
        member, self.channel = await open_connection(self.a)
        await member.join("chat:1")
        await self.publish(1, 2, 3)
        await until(lambda: self.channel.messages() == ["1", "2", "3"], "1, 2, 3 delivered on A")
        await asyncio.to_thread(replicated, group)
        return self

    async def publish(self, *messages: Any) -> None:
        for message in messages:
            await self.b.publish("chat:1", message)

    async def stop(self) -> None:
        for hub in (self.a, self.b):
            await hub.stop()


async def hub_on(url: str) -> Hub:
    hub = Hub()
    hub.bind(asyncio.get_running_loop())
    hub.keep_history("chat:{name}", size=100)
    await hub.start(from_url(url, hub.node))
    return hub


def replicated(group: SentinelGroup) -> None:
    """Return once both replicas have everything the master has now (WAIT after a write of our own)."""
    master = group.master()
    master.execute("SET", "fence", str(time.monotonic_ns()))
    assert master.execute("WAIT", 2, 10_000) == 2


def test_a_history_room_reads_back_from_the_new_masters_stream_what_it_missed(sentinel_group: SentinelGroup) -> None:
    """Node A finds masters through the third sentinel only, which is frozen (SIGSTOP) over the
    failover: node B is on the new master first and publishes; once A is back, its member
    gets those messages read back from the new master's stream, in order, with no loss."""
    third = sentinel_group.sentinels[2]
    hosts = [f"127.0.0.1:{sentinel.port}" for sentinel in sentinel_group.sentinels]

    async def main() -> None:
        pair = await Pair().start(sentinel_group, f"redis+sentinel://{hosts[2]}/tether",
                                  f"redis+sentinel://{hosts[0]},{hosts[1]}/tether")
        third.freeze()
        try:
            old = sentinel_group.kill_master()
            await asyncio.to_thread(sentinel_group.wait_failover, old)
            await until(lambda: pair.b.backplane.state is BackplaneState.UP, "B up on the new master", timeout=30)
            await pair.publish(4, 5, 6)
            position, _ = await pair.b.history("chat:1")
            assert position.offset == 6
            assert pair.a.backplane.state is BackplaneState.DOWN and pair.channel.messages() == ["1", "2", "3"]
        finally:
            third.thaw()
        await until(lambda: pair.channel.messages() == ["1", "2", "3", "4", "5", "6"], "4, 5, 6 read back on A", 30)
        await pair.publish(7)
        await until(lambda: pair.channel.messages()[-1] == "7", "7 delivered on A")
        assert pair.channel.messages() == [str(n) for n in range(1, 8)] and pair.losses == []
        await pair.stop()

    asyncio.run(asyncio.wait_for(main(), 90))


def test_a_history_rooms_tail_the_replicas_never_had_is_reported_lost(sentinel_group: SentinelGroup) -> None:
    """The replicas cut off (their links closed, and the master's ACL refuses them the commands
    of replication), three more messages go to the master only, then it is killed: the new
    master's stream ends before them, its offsets go back, and the members are told of the
    loss when their node is back."""
    async def main() -> None:
        pair = await Pair().start(sentinel_group, sentinel_group.url, sentinel_group.url)
        master = sentinel_group.master()
        master.execute("ACL", "SETUSER", "default", "-psync", "-sync", "-replconf")
        assert master.execute("CLIENT", "KILL", "TYPE", "replica") == 2
        await pair.publish(4, 5, 6)
        await until(lambda: pair.channel.messages() == [str(n) for n in range(1, 7)], "4, 5, 6 delivered on A")
        stream = "tether:history:{chat:1}"
        assert [server.execute("XLEN", stream) for server in sentinel_group.servers if server is not master] == [3, 3]
        old = sentinel_group.kill_master()
        await asyncio.to_thread(sentinel_group.wait_failover, old)
        await until(lambda: pair.a.backplane.state is BackplaneState.UP and pair.b.backplane.state is BackplaneState.UP,
                    "both up on the new master", timeout=30)
        await until(lambda: pair.losses, "A's loss report, once it is back (no new message needed)")
        [(room, reason)] = pair.losses
        assert room == "chat:1" and "went back from 6 to 3" in reason
        await pair.publish("after")  # numbered 4 by the new master: delivered, and no second report
        await until(lambda: pair.channel.messages()[-1] == "after", "the next message delivered on A")
        assert pair.channel.messages() == ["1", "2", "3", "4", "5", "6", "after"] and len(pair.losses) == 1
        await pair.stop()

    asyncio.run(asyncio.wait_for(main(), 90))

"""A real Redis Cluster for tests: six `redis-server` processes in cluster mode, never a mock.

`RedisClusterServers` starts 3 masters and 3 replicas (`tests.redisutil.RedisServer` each, on
free 127.0.0.1 ports, their cluster bus on a reserved port too, `--cluster-node-timeout`
1000 ms so that a failover takes a second or two), gives the masters the 16384 slots in
three ranges, meets them, makes each replica follow its master, and waits (bounded) until
every node says `cluster_state:ok` with all slots assigned and every replica is in sync. It is
built with cluster commands rather than `redis-cli --cluster create`, which sleeps a second
per step: starting takes well under a second here. Offered:

- `start()` -> self, `url` (`redis+cluster://127.0.0.1:P1,127.0.0.1:P2,127.0.0.1:P3`, the
  masters, no query string), `close()` (idempotent: stops every server it started).
- `masters`, `replicas` (RedisServer lists, a replica `i` follows master `i`), `execute(i, ...)`
  on master i, `owner(slot)` (the index in `nodes` of the live master serving `slot`),
  `nodes` (all six).
- `kill_master(i)` (SIGKILL by PID), `wait_failover()` (until every slot is served by a live
  master again and every live node says ok), `migrate_slot(slot, target)` (SETSLOT
  IMPORTING/MIGRATING, MIGRATE of the slot's keys, SETSLOT NODE on both, as a resharding does;
  its halves `begin_migration(slot, target)` -> source and `end_migration(slot, source, target)`),
  `add_master()` (one more master, no slot yet: a target for `migrate_slot`).

Fixtures `redis_cluster` (a fresh cluster per test) and `redis_cluster_module` (one per module,
for tests that do not break it); a test module imports them by their functions' names:

    from .clusterutil import redis_cluster_fixture  # noqa: F401
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import pytest

from .netutil import reserve_port
from .redisutil import RedisServer

SLOTS = 16384
WAIT = 15.0  # bound on the cluster forming or failing over


def _wait(condition: Any, what: str, timeout: float = WAIT) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            if condition():
                return
        except Exception as exc:  # a node not answering yet
            if time.monotonic() > deadline:
                raise RuntimeError(f"Redis Cluster: not within {timeout} s: {what} ({exc!r})") from exc
        if time.monotonic() > deadline:
            raise RuntimeError(f"Redis Cluster: not within {timeout} s: {what}")
        time.sleep(0.02)


def _info(server: RedisServer) -> dict[str, str]:
    text = server.execute("CLUSTER", "INFO")
    return dict(line.split(":", 1) for line in text.split() if ":" in line)


class RedisClusterServers:
    """Three masters and three replicas; see the module doc."""

    def __init__(self, node_timeout_ms: int = 1000) -> None:
        self.node_timeout_ms = node_timeout_ms
        self.masters: list[RedisServer] = []
        self.replicas: list[RedisServer] = []
        self.ids: dict[int, str] = {}  # port -> node id
        self.buses: dict[int, int] = {}  # port -> cluster bus port

    def _server(self) -> RedisServer:
        bus = reserve_port()
        args = ["--cluster-enabled", "yes", "--cluster-config-file", "nodes.conf",
                "--cluster-node-timeout", str(self.node_timeout_ms), "--cluster-port", str(bus),
                "--repl-diskless-sync-delay", "0"]
        server = RedisServer(unix_socket=False, args=args)
        self.buses[server.port] = bus
        return server

    @property
    def nodes(self) -> list[RedisServer]:
        return self.masters + self.replicas

    @property
    def url(self) -> str:
        return "redis+cluster://" + ",".join(f"{m.host}:{m.port}" for m in self.masters)

    def start(self) -> RedisClusterServers:
        try:
            self.masters = [self._server().start() for _ in range(3)]
            self.replicas = [self._server().start() for _ in range(3)]
            for server in self.nodes:
                self.ids[server.port] = server.execute("CLUSTER", "MYID")
            for i, master in enumerate(self.masters):
                master.execute("CLUSTER", "SET-CONFIG-EPOCH", i + 1)
                first, last = i * SLOTS // 3, (i + 1) * SLOTS // 3 - 1
                master.execute("CLUSTER", "ADDSLOTSRANGE", first, last)
            for server in self.nodes[1:]:
                server.execute("CLUSTER", "MEET", self.masters[0].host, self.masters[0].port,
                               self.buses[self.masters[0].port])
            _wait(lambda: all(len(s.execute("CLUSTER", "NODES").splitlines()) == 6 for s in self.nodes),
                  "every node knows the five others")
            for master, replica in zip(self.masters, self.replicas, strict=True):
                replica.execute("CLUSTER", "REPLICATE", self.ids[master.port])
            self._wait_ok(self.nodes)
            _wait(lambda: all(r.info("replication").get("master_link_status") == "up" for r in self.replicas),
                  "every replica in sync with its master")
        except BaseException:
            self.close()
            raise
        return self

    def _wait_ok(self, servers: list[RedisServer]) -> None:
        def ok() -> bool:
            return all(_info(s)["cluster_state"] == "ok" and _info(s)["cluster_slots_assigned"] == str(SLOTS)
                       for s in servers)
        _wait(ok, "cluster_state:ok with every slot assigned on every node")

    def close(self) -> None:
        for server in self.nodes:
            server.close()

    def execute(self, i: int, *args: Any) -> Any:
        return self.masters[i].execute(*args)

    def live(self) -> list[RedisServer]:
        return [s for s in self.nodes if s.running]

    def owner(self, slot: int) -> RedisServer:
        """The live master serving `slot` (as a live node's CLUSTER SHARDS says)."""
        node = self.live()[0]
        for shard in node.execute("CLUSTER", "SHARDS"):
            ranges = shard["slots"]
            if any(ranges[i] <= slot <= ranges[i + 1] for i in range(0, len(ranges), 2)):
                for member in shard["nodes"]:
                    if member["role"] == "master" and member["health"] == "online":
                        return next(s for s in self.nodes if s.port == member["port"])
        raise LookupError(f"no live master serves slot {slot}")

    def kill_master(self, i: int) -> None:
        """SIGKILL master `i` (a crash): its replica takes over after the node timeout."""
        self.masters[i].kill()

    def wait_failover(self) -> None:
        """Until every slot is served by a live master and every live node says ok."""
        self._wait_ok(self.live())
        _wait(lambda: all(self.owner(slot).running for slot in (0, SLOTS // 2, SLOTS - 1)),
              "a live master serves every slot")

    def add_master(self) -> RedisServer:
        """One more master, serving no slot yet, met by the others (as `redis-cli --cluster
        add-node` does), once every node says ok; `migrate_slot` gives it slots."""
        server = self._server().start()
        self.masters.append(server)
        self.ids[server.port] = server.execute("CLUSTER", "MYID")
        first = self.masters[0]
        server.execute("CLUSTER", "MEET", first.host, first.port, self.buses[first.port])
        _wait(lambda: all(len(s.execute("CLUSTER", "NODES").splitlines()) == len(self.nodes) for s in self.live()),
              "every node knows the new master")
        self._wait_ok(self.live())
        return server

    def migrate_slot(self, slot: int, target: RedisServer) -> None:
        """Move `slot` with its keys to the master `target`, as `redis-cli --cluster reshard` does."""
        source = self.owner(slot)
        if source is not target:
            self.begin_migration(slot, target)
            self.end_migration(slot, source, target)

    def begin_migration(self, slot: int, target: RedisServer) -> RedisServer:
        """The first half of a migration: `slot` IMPORTING on `target`, MIGRATING on its owner,
        and its keys moved; the owner still serves it (a command on a key that moved gets ASK).
        Returns the owner."""
        source = self.owner(slot)
        target.execute("CLUSTER", "SETSLOT", slot, "IMPORTING", self.ids[source.port])
        source.execute("CLUSTER", "SETSLOT", slot, "MIGRATING", self.ids[target.port])
        while keys := source.execute("CLUSTER", "GETKEYSINSLOT", slot, 100):
            source.execute("MIGRATE", target.host, target.port, "", 0, 5000, "KEYS", *keys)
        return source

    def end_migration(self, slot: int, source: RedisServer, target: RedisServer) -> None:
        """The second half: `target` owns `slot` (SETSLOT NODE on both), as every master sees."""
        for server in (target, source):
            server.execute("CLUSTER", "SETSLOT", slot, "NODE", self.ids[target.port])
        _wait(lambda: all(_slot_owner_seen(s, slot) == target.port for s in self.live() if s in self.masters),
              f"every master sees slot {slot} at {target.port}")


def _slot_owner_seen(server: RedisServer, slot: int) -> int:
    for first, last, master, *_ in server.execute("CLUSTER", "SLOTS"):
        if first <= slot <= last:
            return int(master[1])
    return -1


def _servers() -> Iterator[RedisClusterServers]:
    servers = RedisClusterServers().start()
    try:
        yield servers
    finally:
        servers.close()


@pytest.fixture(name="redis_cluster")
def redis_cluster_fixture() -> Iterator[RedisClusterServers]:
    """A fresh Redis Cluster (3 masters, 3 replicas) for this test, stopped after it."""
    yield from _servers()


@pytest.fixture(name="redis_cluster_module", scope="module")
def redis_cluster_module_fixture() -> Iterator[RedisClusterServers]:
    """One Redis Cluster for the tests of a module that do not break it."""
    yield from _servers()

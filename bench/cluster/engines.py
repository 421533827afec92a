"""The backplane engines' servers for bench/cluster.py (--engines, --rooms, --failover).

The servers are started by the project's own test helpers, not a second copy of that code:
    redis     tests/redisutil.py RedisServer       one redis-server           redis://
    sentinel  tests/sentinelutil.py SentinelGroup  master + replicas + sentinels  redis+sentinel://
    cluster   tests/clusterutil.py RedisClusterServers  3 masters + 3 replicas  redis+cluster://
    nats      tests/natsutil.py NatsServer         nats-server -js            nats://
Importing them needs pytest (tests/redisutil.py defines fixtures): run bench/cluster.py with
the project's venv (.venv/bin/python) for these modes.

`start(name, cpu)` starts one engine's servers with this process's CPU affinity set to `cpu`
for the duration of the start (the children inherit it: the engine runs on the server CPU),
and returns an `Engine`: `.url`, `.pids` {pid: command name} of every process it started
(for CPU accounting: each redis-server shard, each sentinel, nats-server), `.helper` (the
test helper itself, e.g. for the failover mode's kill of the master) and `.close()`.
"""
from __future__ import annotations

import contextlib
import importlib
import os
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

#: engine name -> (module under tests/, class); each class: Cls() -> .start() -> self, .url, .close()
HELPERS = {
    "redis": ("redisutil", "RedisServer"),
    "sentinel": ("sentinelutil", "SentinelGroup"),
    "cluster": ("clusterutil", "RedisClusterServers"),
    "nats": ("natsutil", "NatsServer"),
}


def helper_class(name: str):
    """The test helper class of engine `name`; RuntimeError when it cannot be imported (yet)."""
    if name not in HELPERS:
        raise ValueError(f"unknown engine {name!r}; known: {', '.join(HELPERS)}")
    module, cls = HELPERS[name]
    if ROOT not in sys.path:
        sys.path.insert(0, ROOT)
    try:
        return getattr(importlib.import_module(f"tests.{module}"), cls)
    except (ImportError, AttributeError) as exc:
        raise RuntimeError(f"engine {name}: cannot import tests/{module}.py {cls} ({exc}); "
                           "run with the project's venv (.venv/bin/python), which has pytest") from exc


def _children() -> dict[int, str]:
    """{pid: comm} of every descendant of this process."""
    parent, comm = {}, {}
    for d in os.listdir("/proc"):
        if d.isdigit():
            try:
                with open(f"/proc/{d}/stat") as f:
                    text = f.read()
                parent[int(d)] = int(text.rsplit(")", 1)[1].split()[1])
                comm[int(d)] = text[text.index("(") + 1:text.rindex(")")]
            except (OSError, IndexError, ValueError):
                pass
    out, frontier = {}, [os.getpid()]
    while frontier:
        p = frontier.pop()
        for c, pp in parent.items():
            if pp == p and c not in out:
                out[c] = comm[c]
                frontier.append(c)
    return out


class Engine:
    """One engine's running servers (see the module doc)."""

    def __init__(self, name: str, helper, pids: dict[int, str]) -> None:
        self.name, self.helper, self.pids = name, helper, pids
        self.url = helper.url

    def refresh_pids(self, before: dict[int, str]) -> None:
        """Add processes started since `before` (a helper that restarted a server)."""
        for pid, comm in _children().items():
            if pid not in before:
                self.pids.setdefault(pid, comm)

    def close(self) -> None:
        self.helper.close()


def start(name: str, cpu: int | None = None, nice: int = 0, **kw) -> Engine:
    """Start engine `name`'s servers (see the module doc); they inherit CPU `cpu` and `nice`."""
    cls = helper_class(name)
    before = _children()
    old = os.sched_getaffinity(0)
    if cpu is not None:
        os.sched_setaffinity(0, {cpu})
    try:
        helper = cls(**kw).start()
    finally:
        os.sched_setaffinity(0, old)
    pids = {p: c for p, c in _children().items() if p not in before}
    for p in pids:
        if nice:
            with contextlib.suppress(OSError):
                os.setpriority(os.PRIO_PROCESS, p, nice)
    return Engine(name, helper, pids)


def redis_ports(engine: Engine) -> dict[int, int]:
    """{pid: client port} of the engine's running redis-server processes, as its test helper
    knows them (a single server; Sentinel's `servers`; a cluster's `nodes`, whose bus ports
    are reserved apart from their client ports): for INFO per shard. Empty for NATS."""
    helper = engine.helper
    servers = getattr(helper, "nodes", None) or getattr(helper, "servers", None)
    if servers is None:
        servers = [helper] if hasattr(helper, "execute") and hasattr(helper, "port") else []
    return {server.process.pid: server.port for server in servers
            if server.process is not None and server.process.poll() is None}

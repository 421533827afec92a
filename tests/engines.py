"""The backplane engines the shared suites run on, each on real servers (docs/scaling.md).

`ENGINES` names every engine that carries messages between processes and how to start the
servers it needs; each returns a helper that offers `.url` (the backplane URL
to hand tether, without a query string) and `.close()` (stops everything it started):

    redis      one redis-server (tests/redisutil.py)
    sentinel   a master, 2 replicas and 3 redis-sentinels (tests/sentinelutil.py)
    cluster    a Redis Cluster of 3 masters and 3 replicas (tests/clusterutil.py)
    nats       one nats-server with JetStream (tests/natsutil.py)

The shared suites (tests/test_backplane.py's two-node cluster, tests/test_backplane_history.py's
contract) are parametrized over `ENGINES` and take each engine's servers from the module-scoped
fixture `engine_pool`: `engine_pool.servers(name)` starts them on first use, and they stop when
the module's tests are done; the tests that share them keep apart by their own names (random
rooms and paths, a `?prefix=` of their own).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Protocol

import pytest

from .clusterutil import RedisClusterServers
from .natsutil import NatsServer
from .redisutil import RedisServer
from .sentinelutil import SentinelGroup


class EngineServers(Protocol):
    """What the shared suites need of an engine's servers."""

    @property
    def url(self) -> str: ...

    def close(self) -> None: ...


#: engine name -> how to start its servers (each returns once they answer)
ENGINES: dict[str, Callable[[], EngineServers]] = {
    "redis": lambda: RedisServer().start(),
    "sentinel": lambda: SentinelGroup().start(),
    "cluster": lambda: RedisClusterServers().start(),
    "nats": lambda: NatsServer().start(),
}


class EnginePool:
    """Each engine's servers, started on first use and kept until `close()`."""

    def __init__(self) -> None:
        self._started: dict[str, EngineServers] = {}

    def servers(self, name: str) -> EngineServers:
        """The servers of engine `name` (a key of ENGINES), started if they are not yet."""
        if name not in self._started:
            self._started[name] = ENGINES[name]()
        return self._started[name]

    def close(self) -> None:
        for servers in self._started.values():
            servers.close()
        self._started.clear()


@pytest.fixture(name="engine_pool", scope="module")
def engine_pool_fixture() -> Iterator[EnginePool]:
    """The engines' servers a module's tests share (see the module doc)."""
    pool = EnginePool()
    try:
        yield pool
    finally:
        pool.close()

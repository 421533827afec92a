"""A real Redis Sentinel group for tests: a master, 2 replicas and 3 sentinels, never a mock.

`SentinelGroup` starts three `redis-server`s (`tests.redisutil.RedisServer`: 127.0.0.1, free
ports, temp dirs, persistence off), the second and third replicas of the first, waits until
both replicas are in sync, then three `redis-sentinel` processes monitoring the master as
`service` (quorum 2, `down-after-milliseconds` 1500 and `failover-timeout` 2000 by default),
each with a config file of its own in a temp dir (Sentinel rewrites it), and returns once
every sentinel knows the master, both replicas and the two other sentinels: from then on a
killed master is failed over. (With `down-after-milliseconds` 1000 the sentinels here often
took the master they had just promoted for down about a second after the switch and failed
it over again; with 1500, in 6 failovers in a row, never. The failover timeout bounds a
failover whose vote split: it is tried again after twice that.) It offers:

- `url`: `redis+sentinel://127.0.0.1:P1,127.0.0.1:P2,127.0.0.1:P3/<service>` (no query string,
  no credentials: with `password=` the servers require one, with `sentinel_password=` the
  sentinels do);
- `master()`: the server the sentinels name as master now (the first that answers);
  `master_address()` the address itself;
- `kill_master()`: SIGKILL of the master by its PID (returns its `RedisServer`);
  `failover()`: `SENTINEL FAILOVER <service>` (the old master demoted, not killed);
- `wait_failover(old, timeout)`: until every answering sentinel (running, not frozen) names a master other than
  `old` and that server answers ROLE as a master (returns it);
- `revive(server)`: start a killed server again, as a replica of the current master, and
  wait until it is in sync (a group can then lose a master again: one replica is not enough
  for more than one failover in a row);
- `sentinels`: each sentinel's `Sentinel` (`kill()`, `start()`, `freeze()` and `thaw()` (SIGSTOP,
  SIGCONT), `execute(*args)`, `master(service)`, `log_tail()`);
- `close()`: stops everything it started (idempotent).

Every wait is bounded. Fixtures: `sentinel_group` (a group of its own per test, for the tests
that fail one over) and `shared_sentinel_group` (one per module, for tests that break
nothing), imported by their functions' names as in tests/redisutil.py:

    from .sentinelutil import sentinel_group_fixture, shared_sentinel_group_fixture  # noqa: F401
"""

from __future__ import annotations

import shutil
import signal
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import redis

from .netutil import reserve_port, wait_until
from .redisutil import RedisServer

READY_TIMEOUT = 30.0     # a group up, every sentinel knowing every other and both replicas
FAILOVER_TIMEOUT = 30.0  # a failover seen by every sentinel (Sentinel takes a few seconds)


def redis_sentinel_binary() -> str:
    """Path of redis-sentinel (Debian's package redis-sentinel; `make system-deps` installs it)."""
    found = shutil.which("redis-sentinel") or ("/usr/bin/redis-sentinel"
                                                if Path("/usr/bin/redis-sentinel").exists() else None)
    if not found:
        raise RuntimeError("redis-sentinel not found: `apt-get install -y redis-sentinel` (make system-deps)")
    return found


class Sentinel:
    """One redis-sentinel process on a free 127.0.0.1 port, its config file in a temp dir."""

    def __init__(self, service: str, master: tuple[str, int], down_after_ms: int, failover_timeout_ms: int, *,
                 auth_pass: str | None = None, password: str | None = None) -> None:
        self.port = reserve_port()
        self.password = password
        self.dir = Path(tempfile.mkdtemp(prefix="tether-sentinel-"))
        self.config = self.dir / "sentinel.conf"
        self.config.write_text(
            f"port {self.port}\nbind 127.0.0.1\nprotected-mode no\ndaemonize no\ndir {self.dir}\n"
            f"sentinel monitor {service} {master[0]} {master[1]} 2\n"
            f"sentinel down-after-milliseconds {service} {down_after_ms}\n"
            f"sentinel failover-timeout {service} {failover_timeout_ms}\n"
            f"sentinel parallel-syncs {service} 2\n"
            + (f"sentinel auth-pass {service} {auth_pass}\n" if auth_pass is not None else "")
            + (f"requirepass {password}\nsentinel sentinel-pass {password}\n" if password is not None else ""))
        self.log_path = self.dir / "sentinel.log"
        self.process: subprocess.Popen[bytes] | None = None
        self._admin: Any = None
        self.frozen = False

    @property
    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    @property
    def answering(self) -> bool:
        """Running and not frozen."""
        return self.running and not self.frozen

    def freeze(self) -> None:
        """SIGSTOP: it answers nothing (connections are accepted by the kernel, then silence)."""
        assert self.process is not None
        self.process.send_signal(signal.SIGSTOP)
        self.frozen = True

    def thaw(self) -> None:
        """SIGCONT after `freeze`."""
        assert self.process is not None
        self.process.send_signal(signal.SIGCONT)
        self.frozen = False

    def start(self) -> Sentinel:
        with open(self.log_path, "ab") as log:
            self.process = subprocess.Popen([redis_sentinel_binary(), str(self.config)], stdin=subprocess.DEVNULL,
                                            stdout=log, stderr=subprocess.STDOUT)
        wait_until(lambda: self._answers(), timeout=READY_TIMEOUT, interval=0.02,
                   message=f"redis-sentinel on :{self.port} answering PING")
        return self

    def _answers(self) -> bool:
        assert self.process is not None
        if self.process.poll() is not None:
            raise RuntimeError(f"redis-sentinel exited with {self.process.returncode}:\n{self.log_tail()}")
        try:
            return bool(self.execute("PING"))
        except redis.RedisError:
            return False

    def client(self) -> Any:
        """The helper's own redis-py client of this sentinel (replies decoded)."""
        if self._admin is None:
            self._admin = redis.Redis(host="127.0.0.1", port=self.port, socket_timeout=2, socket_connect_timeout=2,
                                      decode_responses=True, password=self.password)
        return self._admin

    def execute(self, *args: Any) -> Any:
        """A command on the helper's own connection."""
        return self.client().execute_command(*args)

    def master(self, service: str) -> dict[str, Any]:
        """`SENTINEL MASTER service` as redis-py parses it (`flags`, `num-other-sentinels`,
        `is_master`, `is_sdown`, `is_odown`...)."""
        return dict(self.client().sentinel_master(service))

    def replicas(self, service: str) -> list[dict[str, Any]]:
        """`SENTINEL REPLICAS service`, each as redis-py parses it."""
        return list(self.client().sentinel_slaves(service))

    def master_address(self, service: str) -> tuple[str, int]:
        """`SENTINEL GET-MASTER-ADDR-BY-NAME service`."""
        host, port = self.client().sentinel_get_master_addr_by_name(service)
        return host, int(port)

    def kill(self) -> None:
        """SIGKILL by PID (thawed first if frozen), and reap."""
        if self._admin is not None:
            self._admin.close()
            self._admin = None
        if self.running:
            assert self.process is not None
            self.process.kill()
            self.process.wait(10)
        self.frozen = False

    def close(self) -> None:
        self.kill()
        shutil.rmtree(self.dir, ignore_errors=True)

    def log_tail(self, lines: int = 30) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no log)"


class SentinelGroup:
    """A master, 2 replicas and 3 sentinels on 127.0.0.1 (see the module doc)."""

    def __init__(self, service: str = "tether", *, down_after_ms: int = 1500, failover_timeout_ms: int = 2000,
                 password: str | None = None, sentinel_password: str | None = None) -> None:
        self.service = service
        self.password, self.sentinel_password = password, sentinel_password
        self.down_after_ms, self.failover_timeout_ms = down_after_ms, failover_timeout_ms
        self.servers: list[RedisServer] = []
        self.sentinels: list[Sentinel] = []

    @property
    def url(self) -> str:
        hosts = ",".join(f"127.0.0.1:{sentinel.port}" for sentinel in self.sentinels)
        return f"redis+sentinel://{hosts}/{self.service}"

    def start(self) -> SentinelGroup:
        try:
            master = RedisServer(password=self.password).start()
            self.servers.append(master)
            for _ in range(2):
                self.servers.append(RedisServer(args=["--replicaof", master.host, str(master.port)],
                                                password=self.password).start())
            for replica in self.servers[1:]:
                self._wait_in_sync(replica)
            for _ in range(3):
                sentinel = Sentinel(self.service, (master.host, master.port), self.down_after_ms,
                                    self.failover_timeout_ms, auth_pass=self.password,
                                    password=self.sentinel_password)
                self.sentinels.append(sentinel)
                sentinel.start()
            wait_until(self._everyone_known, timeout=READY_TIMEOUT, interval=0.05,
                       message="every sentinel knowing the master, 2 replicas and 2 other sentinels")
        except BaseException:
            self.close()
            raise
        return self

    def _everyone_known(self) -> bool:
        for sentinel in self.sentinels:
            state = sentinel.master(self.service)
            healthy = [replica for replica in sentinel.replicas(self.service)
                       if not (replica["is_sdown"] or replica["is_disconnected"])]
            if state["flags"] != "master" or state["num-other-sentinels"] < 2 or len(healthy) < 2:
                return False
        return True

    def _wait_in_sync(self, replica: RedisServer) -> None:
        wait_until(lambda: replica.info("replication").get("master_link_status") == "up", timeout=READY_TIMEOUT,
                   interval=0.02, message=f"replica :{replica.port} in sync")

    def master_address(self) -> tuple[str, int]:
        """(host, port) of the master as the first running sentinel that answers names it."""
        for sentinel in self.sentinels:
            if sentinel.answering:
                try:
                    return sentinel.master_address(self.service)
                except redis.RedisError:
                    continue
        raise RuntimeError("no sentinel answers")

    def server_at(self, port: int) -> RedisServer:
        return next(server for server in self.servers if server.port == port)

    def master(self) -> RedisServer:
        return self.server_at(self.master_address()[1])

    def kill_master(self) -> RedisServer:
        """SIGKILL the current master by its PID; returns it (dead until `revive`)."""
        master = self.master()
        master.kill()
        return master

    def failover(self) -> RedisServer:
        """`SENTINEL FAILOVER service`: a replica promoted, the master demoted; returns the old master."""
        master = self.master()
        next(sentinel for sentinel in self.sentinels if sentinel.answering).client().sentinel_failover(self.service)
        return master

    def wait_failover(self, old: RedisServer, timeout: float = FAILOVER_TIMEOUT) -> RedisServer:
        """Until every answering sentinel names a master other than `old` and it is one (ROLE)."""
        def promoted() -> RedisServer | None:
            ports = {sentinel.master_address(self.service)[1] for sentinel in self.sentinels if sentinel.answering}
            if len(ports) != 1 or old.port in ports:
                return None
            new = self.server_at(ports.pop())
            return new if new.execute("ROLE")[0] == "master" else None

        return wait_until(promoted, timeout=timeout, interval=0.02, message=f"a failover from :{old.port}")

    def revive(self, server: RedisServer) -> RedisServer:
        """Start a killed server again as a replica of the current master; returns once in sync
        and every sentinel counts it as a healthy replica again."""
        master = self.master()
        server.extra_args = ["--replicaof", master.host, str(master.port)]
        server.start()
        self._wait_in_sync(server)
        wait_until(self._everyone_known, timeout=READY_TIMEOUT, interval=0.05,
                   message=f"every sentinel counting :{server.port} as a healthy replica again")
        return server

    def close(self) -> None:
        for sentinel in self.sentinels:
            sentinel.close()
        for server in self.servers:
            server.close()

    def __enter__(self) -> SentinelGroup:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"<SentinelGroup {self.url}>"


@pytest.fixture(name="sentinel_group")
def sentinel_group_fixture() -> Iterator[SentinelGroup]:
    """A Sentinel group of this test's own (for a test that fails its master over)."""
    with SentinelGroup() as group:
        yield group


@pytest.fixture(name="shared_sentinel_group", scope="module")
def shared_sentinel_group_fixture() -> Iterator[SentinelGroup]:
    """One Sentinel group for a module's tests that break nothing."""
    with SentinelGroup() as group:
        yield group

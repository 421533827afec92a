"""Tests of the test helpers themselves: tests/redisutil.py (a real redis-server per test) and
tests/netns.py (hosts in network namespaces). The netns tests skip only with the reason
`netns_available()` gives."""

from __future__ import annotations

import os
import selectors
import socket
import ssl
import subprocess
import sys
import time

import pytest
import redis

from .netns import hosts, netns_available
from .netutil import wait_until
from .redisutil import RedisServer, redis_factory_fixture, redis_server_fixture, tls_supported  # noqa: F401


def readline(process: subprocess.Popen[str], timeout: float = 5.0) -> str:
    """One line of a child's stdout, waiting at most `timeout` s."""
    assert process.stdout is not None
    with selectors.DefaultSelector() as selector:
        selector.register(process.stdout, selectors.EVENT_READ)
        if not selector.select(timeout):
            raise AssertionError(f"no line from {process.args} within {timeout} s")
    return process.stdout.readline()


# --- redisutil ------------------------------------------------------------------------------


def test_server_starts_and_answers_ping(redis_server: RedisServer) -> None:
    assert redis_server.running
    assert redis_server.url == f"redis://127.0.0.1:{redis_server.port}/0"
    client = redis.Redis.from_url(redis_server.url, socket_timeout=5)
    try:
        assert client.ping()
        client.set("k", "v")
    finally:
        client.close()
    unix = redis.Redis.from_url(redis_server.unix_url, socket_timeout=5)
    try:
        assert unix.get("k") == b"v"
    finally:
        unix.close()
    assert redis_server.info("server")["redis_version"]


def test_restart_keeps_port_and_empties_data(redis_server: RedisServer) -> None:
    port, pid = redis_server.port, redis_server.pid
    client = redis_server.client()
    try:
        client.set("k", "v")
        redis_server.restart()
        assert redis_server.port == port and redis_server.pid != pid and redis_server.running
        fresh = redis.Redis.from_url(redis_server.url, socket_timeout=5)
        assert fresh.get("k") is None  # nothing persisted
        fresh.close()
    finally:
        client.close()


def test_kill_and_stop(redis_server: RedisServer) -> None:
    client = redis_server.client(socket_connect_timeout=1, retry_on_error=[])
    try:
        assert client.ping()
        redis_server.kill()
        assert not redis_server.running
        with pytest.raises(redis.ConnectionError):
            client.ping()
        redis_server.start()
        assert client.ping()  # reconnects on the same port
        assert redis_server.stop() == 0  # SIGTERM: a clean exit
    finally:
        client.close()


def test_pause_makes_commands_wait(redis_server: RedisServer) -> None:
    client = redis_server.client()
    try:
        client.ping()
        redis_server.pause(0.3)
        started = time.monotonic()
        client.set("k", "v")
        waited = time.monotonic() - started
        assert 0.25 <= waited < 5, waited
        redis_server.pause(10, mode="WRITE")  # writes wait, reads don't; UNPAUSE ends it
        started = time.monotonic()
        assert client.get("k") == b"v"
        redis_server.unpause()
        client.set("k", "w")
        assert time.monotonic() - started < 1
    finally:
        client.close()


def test_client_kill_pubsub_drops_subscriber(redis_server: RedisServer) -> None:
    client = redis_server.client()
    pubsub = client.pubsub()
    other = redis_server.client()
    try:
        other.ping()  # a normal client, which must survive
        pubsub.subscribe("ch")
        assert pubsub.get_message(timeout=5)["type"] == "subscribe"
        assert len(redis_server.client_list("pubsub")) == 1
        assert redis_server.client_kill_pubsub() == 1
        assert redis_server.client_list("pubsub") == []
        with pytest.raises(redis.ConnectionError):
            pubsub.get_message(timeout=5)
        assert other.ping()
    finally:
        pubsub.close()
        other.close()
        client.close()


def test_connected_clients_counts(redis_server: RedisServer) -> None:
    assert redis_server.connected_clients() == 0  # the helper's own connection is not counted
    clients = [redis_server.client() for _ in range(3)]
    try:
        for client in clients:
            client.ping()
        assert redis_server.connected_clients() == 3
        clients.pop().close()
        wait_until(lambda: redis_server.connected_clients() == 2, timeout=5, message="a client to leave")
    finally:
        for client in clients:
            client.close()


def test_factory_starts_independent_servers(redis_factory) -> None:  # type: ignore[no-untyped-def]
    first, second = redis_factory(), redis_factory(unix_socket=False)
    assert first.port != second.port
    first.execute("SET", "k", "1")
    assert second.execute("GET", "k") is None
    with pytest.raises(AttributeError):
        second.unix_url


def test_raw_resp_backend() -> None:
    with RedisServer(backend="raw") as server:
        assert server.ping()
        assert server.execute("SET", "k", "v") == "OK"
        assert server.execute("GET", "k") == "v"
        assert server.info("keyspace")["db0"]["keys"] == 1
        with socket.create_connection((server.host, server.port), timeout=5):
            wait_until(lambda: server.connected_clients() == 1, timeout=5, message="the socket to count")
        server.pause(0.2)
        started = time.monotonic()
        assert server.client_kill_pubsub() == 0  # waits for the pause: the helper's commands too
        assert time.monotonic() - started >= 0.15


def test_tls_url() -> None:
    supported, reason = tls_supported()
    if not supported:
        pytest.skip(reason)
    with RedisServer(tls=True) as server:
        assert server.tls_url == f"rediss://127.0.0.1:{server.tls_port}/0"
        client = redis.Redis.from_url(server.tls_url, ssl_ca_certs=server.ca_file, socket_timeout=5)
        try:
            assert client.ping()
        finally:
            client.close()
        untrusted = redis.Redis.from_url(server.tls_url, socket_timeout=5, retry_on_error=[])
        with pytest.raises(redis.ConnectionError, match="CERTIFICATE_VERIFY_FAILED"):
            untrusted.ping()
        untrusted.close()


def test_tls_client_certificates() -> None:
    supported, reason = tls_supported()
    if not supported:
        pytest.skip(reason)
    with RedisServer(tls=True, tls_auth_clients=True) as server:
        context = ssl.create_default_context(cafile=server.ca_file)
        assert server.tls_port is not None
        # Without a client certificate: refused (under TLS 1.3 the client's handshake may end
        # first, and the refusal comes at the send or the read).
        with pytest.raises((ssl.SSLError, ConnectionError)), \
                socket.create_connection((server.host, server.tls_port), timeout=5) as raw, \
                context.wrap_socket(raw, server_hostname=server.host) as tls:
            tls.sendall(b"PING\r\n")
            if not tls.recv(64):
                raise ConnectionError("closed")
        client = redis.Redis.from_url(server.tls_url, ssl_ca_certs=server.ca_file, ssl_certfile=server.cert_file,
                                      ssl_keyfile=server.key_file, socket_timeout=5)
        try:
            assert client.ping()
        finally:
            client.close()


# --- netns ----------------------------------------------------------------------------------


def require_netns() -> None:
    ok, reason = netns_available()
    if not ok:
        pytest.skip(reason)


ECHO_SERVER = """
import socket, sys
server = socket.create_server((sys.argv[1], 7000))
print("ready", flush=True)
while True:
    conn, _ = server.accept()
    with conn:
        conn.sendall(conn.recv(1024))
"""

CLIENT = """
import socket, sys
with socket.create_connection((sys.argv[1], 7000), timeout=float(sys.argv[2])) as conn:
    conn.sendall(b"ping")
    print(conn.recv(1024).decode())
"""


def test_netns_available_answers_with_a_reason() -> None:
    ok, reason = netns_available()
    assert isinstance(ok, bool) and isinstance(reason, str)
    assert ok or reason


def test_two_hosts_reach_each_other() -> None:
    require_netns()
    with hosts(2) as net:
        a, b = net
        assert a.label == "a" and b.label == "b" and a.address != b.address
        assert net["b"] is b and net[0] is a
        server = a.popen([sys.executable, "-c", ECHO_SERVER, a.address], stdout=subprocess.PIPE, text=True)
        assert readline(server).strip() == "ready"
        assert b.run([sys.executable, "-c", CLIENT, a.address, "5"]).stdout.strip() == "ping"
        # the test itself, in the root namespace, reaches a host too
        with socket.create_connection((a.address, 7000), timeout=5) as conn:
            conn.sendall(b"root")
            assert conn.recv(1024) == b"root"
        # each host has its own network: the echo server is not on b
        refused = b.run([sys.executable, "-c", CLIENT, b.address, "5"], check=False)
        assert refused.returncode != 0 and "ConnectionRefusedError" in refused.stderr
        names = {a.name, b.name}
    assert server.poll() is not None  # killed by PID at teardown
    listed = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True, timeout=10).stdout
    assert not names & {line.split()[0] for line in listed.splitlines() if line.split()}


def test_disconnect_drops_traffic_silently() -> None:
    require_netns()
    with hosts(2) as net:
        a, b = net
        server = a.popen([sys.executable, "-c", ECHO_SERVER, a.address], stdout=subprocess.PIPE, text=True)
        assert readline(server).strip() == "ready"
        assert b.run([sys.executable, "-c", CLIENT, a.address, "5"]).stdout.strip() == "ping"
        a.disconnect()
        cut = b.run([sys.executable, "-c", CLIENT, a.address, "0.3"], check=False)
        assert cut.returncode != 0 and "TimeoutError" in cut.stderr, cut.stderr  # silence, not a refusal
        a.reconnect()
        assert b.run([sys.executable, "-c", CLIENT, a.address, "5"]).stdout.strip() == "ping"


REDIS_CLIENT = """
import redis, sys
client = redis.Redis.from_url(sys.argv[1], socket_timeout=5, socket_connect_timeout=5)
client.set("from", sys.argv[2])
print(client.get("from").decode())
"""


def test_redis_inside_a_host_is_reachable_from_another() -> None:
    require_netns()
    with hosts(["redis", "a"]) as net:
        redis_host, a = net
        with RedisServer(netns=redis_host) as server:
            assert server.url == f"redis://{redis_host.address}:6379/0"
            assert server.pid in redis_host.pids()
            out = a.run([sys.executable, "-c", REDIS_CLIENT, server.url, "a"]).stdout
            assert out.strip() == "a"
            assert server.connected_clients() == 0  # a's client has gone
            # from the root namespace too, over the root link
            client = server.client()
            try:
                assert client.get("from") == b"a"
            finally:
                client.close()
            server.restart()
            assert server.pid in redis_host.pids()
            assert a.run([sys.executable, "-c", REDIS_CLIENT, server.url, "again"]).stdout.strip() == "again"
        assert os.path.exists(server.dir) is False


def test_hosts_tear_down_after_an_error() -> None:
    require_netns()
    with pytest.raises(RuntimeError, match="boom"), hosts(["solo"]) as net:
        (host,) = net
        sleeper = host.popen(["sleep", "30"])
        # a grandchild that outlives its parent: found inside the namespace and killed by PID
        host.run(["sh", "-c", "sleep 30 >/dev/null 2>&1 &"])
        wait_until(lambda: len(host.pids()) == 2, timeout=5, message="both sleeps inside the host")
        orphan = next(pid for pid in host.pids() if pid != sleeper.pid)
        name = host.name
        raise RuntimeError("boom")
    assert sleeper.poll() is not None
    wait_until(lambda: not os.path.exists(f"/proc/{orphan}") or "Z" in open(f"/proc/{orphan}/stat").read().split()[2],
               timeout=5, message="the orphan to die")
    assert not os.path.exists(f"/run/netns/{name}")

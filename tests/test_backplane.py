"""The backplane (docs/scaling.md) end to end: nodes are real `tether run cluster_app:app
--backplane URL` processes (tests/cluster_app.py: WebSocket routes of three styles and HTTP
endpoints that act on that node), clients are `websockets` clients. The tests that break
nothing run on two nodes of each engine of tests/engines.py in turn (the `cluster` fixture);
the others on a real redis-server (tests/redisutil.py) that they kill, restart, pause and cut
connections of (each other engine's own failures: tests/test_backplane_<engine>.py).

What is checked is what a client of another node sees: every addressing operation started on
node A reaches a client of node B; exclusion; per-sender order; join-then-publish; workers on one
port; outages (kill/restart, CLIENT KILL, CLIENT PAUSE) with local delivery going on, the
WARNINGs and counters, and delivery back within the documented bounds; a SIGKILLed node's members
leaving presence; connections not leaking over reconnects; unix:// and rediss://; separate hosts
(network namespaces); startup errors and a Redis that is not there yet.

The nodes log at `--log-level info` into their folder's tether.log (TETHER_TEST_LOG_LEVEL=debug
for more when a test fails).
"""

from __future__ import annotations

import asyncio
import contextlib
import http.client
import json
import os
import queue
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import pytest
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import connect

from tether import App

from .engines import ENGINES, EnginePool, engine_pool_fixture  # noqa: F401
from .netns import hosts, netns_available
from .netutil import reserve_port, wait_until
from .redisutil import RedisServer, redis_factory_fixture, redis_server_fixture, tls_supported  # noqa: F401
from .test_cli import children

APP_FILE = Path(__file__).with_name("cluster_app.py")
OPTIONS = {"heartbeat": "0.5", "probe": "0.5"}
WAIT = 10.0  # generous bound for "it happens" (no speed asserted); the documented bounds are explicit



def backplane_url(base: str, **extra: str) -> str:
    options = {**OPTIONS, **extra}
    return base + ("&" if "?" in base else "?") + urlencode(options)


# -- HTTP and WebSocket clients ----------------------------------------------------------------------
def http_json(host: str, port: int, method: str, path: str, params: dict[str, Any] | None = None,
              timeout: float = 5) -> Any:
    """One request on a new connection (no proxy: http.client talks to the address itself)."""
    query = urlencode({k: v for k, v in (params or {}).items() if v is not None})
    conn = http.client.HTTPConnection(host, port, timeout=timeout)
    try:
        conn.request(method, path + ("?" + query if query else ""), body=b"" if method == "POST" else None)
        response = conn.getresponse()
        body = response.read()
    finally:
        conn.close()
    assert response.status == 200, (method, path, params, response.status, body)
    return json.loads(body)


CLOSED = object()


class Client:
    """A `websockets` sync client whose messages a background thread collects with their arrival
    time; `hello` is the first message (the connection's id and the serving process's pid)."""

    def __init__(self, url: str) -> None:
        self.url = url
        self._stack = contextlib.ExitStack()
        self.ws = self._stack.enter_context(connect(url, proxy=None, open_timeout=WAIT, max_queue=None))
        self.hello = json.loads(self.ws.recv(timeout=WAIT))
        self.id: str = self.hello["id"]
        self.pid: int = self.hello["pid"]
        self.inbox: queue.Queue[Any] = queue.Queue()
        self.log: list[tuple[float, str]] = []
        self.closed: ConnectionClosed | None = None
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        try:
            while True:
                message = self.ws.recv()
                self.log.append((time.monotonic(), message))
                self.inbox.put(message)
        except ConnectionClosed as exc:
            self.closed = exc
        self.inbox.put(CLOSED)

    def send(self, **command: Any) -> None:
        self.ws.send(json.dumps(command))

    def recv(self, timeout: float = WAIT) -> Any:
        try:
            message = self.inbox.get(timeout=timeout)
        except queue.Empty:
            raise AssertionError(f"{self.url}: no message within {timeout} s") from None
        assert message is not CLOSED, f"{self.url}: closed ({self.closed!r})"
        return message

    def expect(self, wanted: str | Callable[[Any], bool], timeout: float = WAIT) -> list[Any]:
        """Read until `wanted` (a message, or a predicate) arrives; returns what came before it."""
        match = wanted if callable(wanted) else (lambda message: message == wanted)
        deadline = time.monotonic() + timeout
        before = []
        while True:
            message = self.recv(max(0.0, deadline - time.monotonic()))
            if match(message):
                return before
            before.append(message)

    def join(self, room: str, info: Any = None) -> None:
        self.send(op="join", room=room, info=info)
        assert self.expect(json.dumps({"joined": room})) == []

    def wait_closed(self, timeout: float = WAIT) -> ConnectionClosed:
        deadline = time.monotonic() + timeout
        while True:
            try:
                message = self.inbox.get(timeout=max(0.0, deadline - time.monotonic()))
            except queue.Empty:
                raise AssertionError(f"{self.url}: not closed within {timeout} s") from None
            if message is CLOSED:
                assert self.closed is not None
                return self.closed

    def close(self) -> None:
        self._stack.close()
        self._reader.join(5)


class Node:
    """A `tether run cluster_app:app --backplane URL` process (or, with workers, its master) whose
    output goes to a log file; its cwd is a folder holding a copy of tests/cluster_app.py."""

    def __init__(self, folder: Path, backplane: str | None, *, host: str = "127.0.0.1", port: int | None = None,
                 workers: int = 1, popen: Callable[..., subprocess.Popen[Any]] = subprocess.Popen) -> None:
        folder.mkdir(parents=True, exist_ok=True)
        shutil.copy(APP_FILE, folder / "cluster_app.py")
        self.host = host
        self.port = port or reserve_port()
        self.log_path = folder / "tether.log"
        self.backplane = backplane
        argv = [sys.executable, "-m", "tether", "run", "cluster_app:app", "--host", host, "--port", str(self.port),
                "--log-level", os.environ.get("TETHER_TEST_LOG_LEVEL", "info"), "--shutdown-timeout", "1", "--workers", str(workers)]
        if backplane:
            argv += ["--backplane", backplane]
        with open(self.log_path, "w") as log:
            self.process = popen(argv, cwd=folder, stdout=log, stderr=subprocess.STDOUT)

    def get(self, route: str, /, **params: Any) -> Any:
        return http_json(self.host, self.port, "GET", route, params)

    def post(self, route: str, /, **params: Any) -> Any:
        return http_json(self.host, self.port, "POST", route, params)

    def status(self) -> dict[str, Any]:
        return self.get("/status")

    def try_status(self) -> dict[str, Any] | None:
        try:
            return self.status()
        except OSError:
            assert self.process.poll() is None, f"the node exited:\n{self.log()}"
            return None

    def wait_state(self, state: str, timeout: float = 15) -> dict[str, Any]:
        return wait_until(lambda: (s := self.try_status()) is not None and s["state"] == state and s,
                          timeout=timeout, interval=0.02, message=f"backplane state {state!r} on :{self.port}")

    def client(self, route: str) -> Client:
        """A client of `route`, returned once this node hears broadcasts to its path (a broadcast
        from another node right after the connection would race the node's subscription)."""
        client = Client(f"ws://{self.host}:{self.port}{route}")
        if self.backplane:
            self.get("/heard", path=route.partition("?")[0])
        return client

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def warnings(self, containing: str = "") -> list[str]:
        return [line for line in self.log().splitlines() if line.startswith("WARNING") and containing in line]

    def kill(self) -> None:
        """SIGKILL by PID, the process and (a master's) its workers, and reap. The master is stopped
        first: killed after its workers, it could fork a replacement in between, left orphaned."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGSTOP)
            for pid in children(self.process.pid):
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
            self.process.kill()
        self.process.wait(30)


@pytest.fixture
def start_node(tmp_path: Path) -> Iterator[Callable[..., Node]]:
    """`start_node(backplane_url, **Node kwargs)` -> a Node (its own folder); all killed afterwards."""
    started: list[Node] = []

    def start(backplane: str | None, **kw: Any) -> Node:
        node = Node(tmp_path / f"node{len(started)}", backplane, **kw)
        started.append(node)
        return node

    yield start
    for node in started:
        node.kill()


@pytest.fixture
def clients() -> Iterator[Callable[[Node, str], Client]]:
    """`clients(node, route)` -> a connected Client, closed after the test."""
    opened: list[Client] = []

    def open_client(node: Node, route: str) -> Client:
        client = node.client(route)
        opened.append(client)
        return client

    yield open_client
    for client in opened:
        with contextlib.suppress(Exception):
            client.close()


def tag() -> str:
    return uuid.uuid4().hex[:12]


class Cluster:
    """Two nodes, A and B, of one cluster on `engine`'s servers (tests/engines.py)."""

    def __init__(self, engine: str, servers: Any, a: Node, b: Node) -> None:
        self.engine, self.servers, self.a, self.b = engine, servers, a, b


@pytest.fixture(scope="module", params=list(ENGINES))
def cluster(request: pytest.FixtureRequest, engine_pool: EnginePool,
            tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    """Two nodes on each engine's servers in turn, shared by the tests that break nothing."""
    servers = engine_pool.servers(request.param)
    folder = tmp_path_factory.mktemp(f"cluster-{request.param}")
    nodes = [Node(folder / name, backplane_url(servers.url)) for name in ("a", "b")]
    try:
        for node in nodes:
            node.wait_state("up")
        yield Cluster(request.param, servers, *nodes)
    finally:
        for node in nodes:
            node.kill()


def two_nodes(start_node: Callable[..., Node], url: str) -> tuple[Node, Node]:
    a, b = start_node(backplane_url(url)), start_node(backplane_url(url))
    a.wait_state("up")
    b.wait_state("up")
    return a, b


# -- 1. every addressing operation started on A reaches a client of B ---------------------------------
def test_hub_send_to_broadcast_and_publish_reach_a_client_on_another_node(cluster, clients):
    t = tag()
    receiver = clients(cluster.b, f"/fn/{t}")
    assert cluster.a.post("/do/send_to", id=receiver.id, text="sent to you") == {"result": True}
    assert receiver.recv() == "sent to you"
    cluster.a.post("/do/broadcast", path=f"/fn/{t}", text="to the path")
    assert receiver.recv() == "to the path"
    receiver.join(f"room-{t}")
    cluster.a.post("/do/publish", room=f"room-{t}", text="to the room")
    assert receiver.recv() == "to the room"


def test_the_sync_twins_from_another_thread_reach_a_client_on_another_node(cluster, clients):
    t = tag()
    receiver = clients(cluster.b, f"/fn/{t}")
    receiver.join(f"room-{t}")
    for op, params, text in (("send_to", {"id": receiver.id}, "sync send_to"),
                             ("broadcast", {"path": f"/fn/{t}"}, "sync broadcast"),
                             ("publish", {"room": f"room-{t}"}, "sync publish")):
        called = cluster.a.post(f"/do/sync/{op}", text=text, **params)
        assert called["thread"] != called["loop_thread"]  # really from another thread
        assert receiver.recv() == text, op
    cluster.a.post("/do/sync/close", id=receiver.id, code=4002, reason="closed from a thread")
    closed = receiver.wait_closed()
    assert closed.rcvd is not None
    assert (closed.rcvd.code, closed.rcvd.reason) == (4002, "closed from a thread")


def test_hub_close_on_one_node_closes_a_client_of_another_with_its_code_and_reason(cluster, clients):
    receiver = clients(cluster.b, f"/fn/{tag()}")
    assert cluster.a.post("/do/close", id=receiver.id, code=4001, reason="bye from A") == {"result": True}
    closed = receiver.wait_closed()
    assert closed.rcvd is not None
    assert (closed.rcvd.code, closed.rcvd.reason) == (4001, "bye from A")


def test_websocket_broadcast_reaches_the_path_on_every_node(cluster, clients):
    t = tag()
    sender, local = clients(cluster.a, f"/fn/{t}"), clients(cluster.a, f"/fn/{t}")
    remote = clients(cluster.b, f"/fn/{t}")
    other_path = clients(cluster.b, f"/fn/{tag()}")
    sender.send(op="broadcast", text="everyone on the path")
    for client in (sender, local, remote):
        assert client.recv() == "everyone on the path"
    cluster.b.post("/do/send_to", id=other_path.id, text="marker")
    assert other_path.recv() == "marker"  # the broadcast went to its own path only


@pytest.mark.parametrize("op", ["sync_send_to", "async_send_to"])
def test_robyn_send_to_reaches_a_client_on_another_node(cluster, clients, op):
    t = tag()
    sender = clients(cluster.a, f"/robyn/{t}")
    receiver = clients(cluster.b, f"/fn/{t}")
    sender.send(op=op, id=receiver.id, text=f"robyn {op}")
    assert receiver.recv() == f"robyn {op}"


@pytest.mark.parametrize("op", ["sync_broadcast", "async_broadcast"])
def test_robyn_broadcast_reaches_the_path_on_another_node(cluster, clients, op):
    t = tag()
    sender = clients(cluster.a, f"/robyn/{t}")
    receiver = clients(cluster.b, f"/robyn/{t}")
    sender.send(op=op, text=f"robyn {op}")
    assert receiver.recv() == f"robyn {op}"
    assert sender.recv() == f"robyn {op}"  # this one included


def test_panther_send_and_close_reach_a_client_on_another_node(cluster, clients):
    t = tag()
    sender = clients(cluster.a, f"/panther/{t}")
    receiver = clients(cluster.b, f"/fn/{t}")
    sender.send(op="send", id=receiver.id, text="from panther")
    assert receiver.recv() == "from panther"
    sender.send(op="close", id=receiver.id, code=4003, reason="panther says bye")
    closed = receiver.wait_closed()
    assert closed.rcvd is not None
    assert (closed.rcvd.code, closed.rcvd.reason) == (4003, "panther says bye")


def test_count_on_one_node_counts_the_clients_of_the_others(cluster, clients):
    def counts() -> tuple[int, int]:
        a, b = cluster.a.get("/count"), cluster.b.get("/count")
        return a["count"], a["local"] + b["local"]

    before = wait_until(lambda: (c := counts())[0] == c[1] and c, message="a settled count")[0]
    t = tag()
    opened = [clients(cluster.b, f"/fn/{t}") for _ in range(3)] + [clients(cluster.a, f"/fn/{t}")]
    assert cluster.a.get("/count")["local"] >= 1
    wait_until(lambda: cluster.a.get("/count")["count"] == before + 4, interval=0.02, message="A counting B's clients")
    wait_until(lambda: cluster.b.get("/count")["count"] == before + 4, interval=0.02, message="B counting A's client")
    for client in opened:
        client.close()
    wait_until(lambda: cluster.a.get("/count")["count"] == before, interval=0.02, message="the closes counted")


def test_presence_on_one_node_lists_the_members_of_the_others_with_their_info(cluster, clients):
    t = tag()
    room = f"room-{t}"
    bea, bob = clients(cluster.b, f"/fn/{t}"), clients(cluster.b, f"/fn/{t}")
    ann = clients(cluster.a, f"/fn/{t}")
    bea.join(room, {"name": "bea", "tags": [1, 2]})
    bob.join(room, "bob")
    ann.join(room, None)
    expected = {bea.id: {"name": "bea", "tags": [1, 2]}, bob.id: "bob", ann.id: None}
    wait_until(lambda: cluster.a.get("/presence", room=room) == expected, message="A's presence of the room")
    assert cluster.b.get("/presence", room=room) == expected
    bob.close()
    del expected[bob.id]
    wait_until(lambda: cluster.a.get("/presence", room=room) == expected, message="bob gone from A's presence")


@pytest.mark.parametrize("cluster", ["redis"], indirect=True)
def test_redis_holds_the_channels_and_keys_docs_scaling_names_while_they_are_needed(cluster, clients):
    """docs/scaling.md's table, read back from Redis: a node subscribes a path's and a room's
    channel while it has members of them and its own inbox always; a room's presence is a HASH
    of its own word (it once shared `p` with the path channels); nothing is left under the old
    one-letter names."""
    t = tag()
    room, path = f"room-{t}", f"/fn/{t}"
    member = clients(cluster.b, path)
    member.join(room, {"name": "m"})
    redis = cluster.servers
    node_b, node_a = cluster.b.status()["node"], cluster.a.status()["node"]
    assert sorted(redis.execute("PUBSUB", "CHANNELS", f"tether:*{t}")) == [f"tether:path:{path}", f"tether:room:{room}"]
    assert {f"tether:node:{node_a}", f"tether:node:{node_b}"} <= set(redis.execute("PUBSUB", "CHANNELS", "tether:node:*"))
    wait_until(lambda: dict(redis.execute("HGETALL", f"tether:presence:{{{room}}}")) == {member.id: '{"name":"m"}'},
               message="the member's presence entry")  # written by B's writer, after the join's ack
    assert room in redis.execute("SMEMBERS", f"tether:presence-rooms:{node_b}")
    assert redis.execute("TYPE", "tether:nodes") == "zset" and redis.execute("TYPE", "tether:count") == "hash"
    assert {node_a, node_b} <= set(redis.execute("HKEYS", "tether:count"))
    assert [key for key in redis.execute("KEYS", "tether:*") if key.split(":")[1] in ("p", "r", "n", "pn")] == []
    member.close()
    wait_until(lambda: redis.execute("PUBSUB", "CHANNELS", f"tether:*{t}") == [], message="B leaving the topics")
    assert redis.execute("EXISTS", f"tether:presence:{{{room}}}") == 0


def test_room_and_path_names_of_any_text_cross_between_nodes(cluster, clients):
    """Names an engine must carry whatever its own naming rules (NATS subject tokens, Redis
    Cluster hash tags): spaces, dots, wildcards, braces, any Unicode."""
    for name in ("a b.*>", "élan ☃", "x.y", "}{a}b{", "{}"):
        path = f"/fn/{tag()}.*.x"  # a path a URL can hold: dots and stars
        receiver = clients(cluster.b, path)
        cluster.a.post("/do/broadcast", path=path, text=f"path {name}")
        assert receiver.recv() == f"path {name}"
        receiver.join(f"room {name}", {"name": name})
        cluster.a.post("/do/publish", room=f"room {name}", text=f"room {name}")
        assert receiver.recv() == f"room {name}"
        assert cluster.a.get("/presence", room=f"room {name}") == {receiver.id: {"name": name}}


# -- 2. exclude ---------------------------------------------------------------------------------------
@pytest.mark.parametrize("how", ["broadcast", "publish"])
def test_exclude_names_a_client_of_another_node(cluster, clients, how):
    t = tag()
    room = f"room-{t}"
    skipped, reached = clients(cluster.b, f"/fn/{t}"), clients(cluster.b, f"/fn/{t}")
    local = clients(cluster.a, f"/fn/{t}")
    for client in (skipped, reached, local):
        client.join(room)
    target = {"path": f"/fn/{t}"} if how == "broadcast" else {"room": room}
    cluster.a.post(f"/do/{how}", text="not for skipped", exclude=f"{skipped.id},{local.id}", **target)
    assert reached.recv() == "not for skipped"
    cluster.a.post(f"/do/{how}", text="for all", **target)
    # One sender's messages arrive in order: had the first reached them, it would come first.
    assert skipped.recv() == "for all"
    assert local.recv() == "for all"
    assert reached.recv() == "for all"


# -- 3. per-sender order --------------------------------------------------------------------------------
def test_a_burst_from_one_node_arrives_complete_and_in_order_on_every_node(cluster, clients):
    t = tag()
    room = f"room-{t}"
    remote, local = clients(cluster.b, f"/fn/{t}"), clients(cluster.a, f"/fn/{t}")
    remote.join(room)
    local.join(room)
    start = 0
    for n, yield_every in ((400, 0), (400, 7)):  # one tight loop, then interleaved with the loop's other work
        cluster.a.post("/do/burst", room=room, n=n, start=start, yield_every=yield_every)
        for client in (remote, local):
            got = [json.loads(client.recv())["n"] for _ in range(n)]
            assert got == list(range(start, start + n)), f"burst (yield every {yield_every}) out of order or incomplete"
        start += n
    # Nothing more (no duplicate): A's next message comes next on B; on A, B's next message comes
    # after anything Redis still had for A (A's own echo, were it not dropped).
    cluster.a.post("/do/publish", room=room, text="end from A")
    assert remote.expect("end from A") == []
    cluster.b.post("/do/publish", room=room, text="end from B")
    assert local.expect("end from A") == []
    assert local.expect("end from B") == []


# -- 4. join, then publish --------------------------------------------------------------------------------
def test_a_publish_right_after_join_returned_reaches_the_new_member(cluster, clients):
    t = tag()
    member = clients(cluster.b, f"/fn/{t}")
    for i in range(20):
        room = f"room-{t}-{i}"
        member.join(room)  # the ack comes after `await websocket.join(room)` returned on B
        cluster.a.post("/do/publish", room=room, text=f"first in {room}")
        assert member.recv() == f"first in {room}"


# -- 5. workers ----------------------------------------------------------------------------------------------
def test_workers_on_one_port_share_the_hub_through_the_backplane(redis_server, start_node, clients):
    node = start_node(backplane_url(redis_server.url), workers=2)
    wait_until(lambda: node.try_status(), timeout=15, message="the workers serving")
    t = tag()
    opened: list[Client] = []
    for _ in range(60):  # SO_REUSEPORT picks the worker: a dozen at least, until both have some
        opened.append(clients(node, f"/fn/{t}"))
        if len(opened) >= 12 and len({c.pid for c in opened}) == 2:
            break
    pids = {c.pid for c in opened}
    assert len(pids) == 2, f"all {len(opened)} clients on one worker"
    nodes = {uuid.UUID(c.id).bytes[:6] for c in opened}
    node.post("/do/broadcast", path=f"/fn/{t}", text="to every worker's clients")
    deadline = time.monotonic() + 5  # for all of them together
    missed = []
    for client in opened:
        try:
            assert client.recv(timeout=max(0.0, deadline - time.monotonic())) == "to every worker's clients"
        except AssertionError:
            missed.append(client.pid)
    assert missed == [], f"clients of worker(s) {set(missed)} missed the broadcast (node ids: {len(nodes)})"
    assert len(nodes) == 2, "both workers' connection ids name one node"
    # Whichever worker answers, the count is both workers'.
    for _ in range(4):
        wait_until(lambda: node.get("/count")["count"] == len(opened), message="a count of both workers' clients")


# -- 6-8. outages -----------------------------------------------------------------------------------------------
LOST = "tether backplane: Redis lost"
BACK = re.compile(r"WARNING: tether backplane: Redis is back after [\d.]+ s; (\d+) cluster message\(s\) were lost")


def first_after(client: Client, since: float, timeout: float, prefix: str = "") -> float:
    """When `client` first received a message (starting with `prefix`) after `since`; fails past
    `since + timeout`."""
    def found() -> float | None:
        return next((t for t, message in client.log if t > since and message.startswith(prefix)), None)

    return wait_until(found, timeout=max(0.0, since + timeout - time.monotonic()), interval=0.01,
                      message=f"a message after the event, within {timeout} s")


def keep_broadcasting(node: Node, path: str, stop: threading.Event) -> threading.Thread:
    """From the test: one broadcast on `node` every 50 ms until `stop` (each posted after the last)."""
    def run() -> None:
        i = 0
        while not stop.is_set():
            with contextlib.suppress(OSError, AssertionError):
                node.post("/do/broadcast", path=path, text=f"tick {i}")
            i += 1
            stop.wait(0.05)

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread


def test_redis_killed_and_restarted_local_delivery_goes_on_and_the_cluster_comes_back(
        redis_server, start_node, clients):
    a, b = two_nodes(start_node, redis_server.url)
    t = tag()
    local, remote = clients(a, f"/fn/{t}"), clients(b, f"/fn/{t}")
    a.post("/do/stream/start", path=f"/fn/{t}", interval=0.02)
    started = time.monotonic()
    first_after(remote, started, WAIT)  # the cluster works before the outage
    redis_server.kill()
    killed = time.monotonic()
    wait_until(lambda: a.warnings(LOST), timeout=5, interval=0.02, message="A's WARNING that Redis is lost")
    time.sleep(max(0.0, killed + 1.0 - time.monotonic()))  # an outage of a second
    redis_server.start()
    restarted = time.monotonic()
    try:
        back = first_after(remote, restarted, 2.0)  # the documented bound: back within about a second
        assert back - restarted <= 2.0
    finally:
        time.sleep(0.3)
        a.post("/do/stream/stop", path=f"/fn/{t}")
    # Local delivery went on all along: every message, no gap longer than 1 s.
    window = [(when, json.loads(m)["seq"]) for when, m in local.log]
    seqs = [seq for _, seq in window]
    assert seqs == list(range(seqs[0], seqs[0] + len(seqs))), "local messages lost or reordered"
    gaps = [later - earlier for (earlier, _), (later, _) in zip(window, window[1:], strict=False)]
    assert window[0][0] < killed and window[-1][0] > restarted and max(gaps) < 1.0, max(gaps)
    # One WARNING at the start, one at the end with the count; the counters say so too.
    lost_counts = wait_until(lambda: [int(m.group(1)) for m in BACK.finditer(a.log())], timeout=5,
                             message="A's WARNING that Redis is back")
    status = a.status()
    assert status["state"] == "up" and status["outages"] >= 1 and status["lost"] > 0, status
    assert len(a.warnings(LOST)) == status["outages"] == len(lost_counts)
    assert sum(lost_counts) == status["lost"] and lost_counts[0] > 0


def test_client_kill_type_pubsub_cluster_delivery_resumes(redis_server, start_node, clients):
    a, b = two_nodes(start_node, redis_server.url)
    t = tag()
    remote = clients(b, f"/fn/{t}")
    a.post("/do/broadcast", path=f"/fn/{t}", text="before")
    assert remote.recv() == "before"
    assert redis_server.client_kill_pubsub() == 2
    killed = time.monotonic()
    stop = threading.Event()
    ticking = keep_broadcasting(a, f"/fn/{t}", stop)
    try:
        first_after(remote, killed, 2.0)
    finally:
        stop.set()
        ticking.join(5)
    wait_until(lambda: b.status()["state"] == "up", timeout=2, message="B up again")
    assert b.status()["outages"] == 1 and len(b.warnings(LOST)) == 1


def test_a_deaf_subscriber_is_noticed_and_delivery_resumes_after_client_pause(redis_server, start_node, clients):
    a, b = two_nodes(start_node, redis_server.url)
    t = tag()
    remote = clients(b, f"/fn/{t}")
    a.post("/do/broadcast", path=f"/fn/{t}", text="before")
    assert remote.recv() == "before"
    redis_server.pause(1.5)  # every client's commands wait; the connections stay open and silent
    paused_until = time.monotonic() + 1.5
    # The probe (probe=0.5: half a second of silence, then half a second for its own probe) notices.
    wait_until(lambda: b.warnings(LOST), timeout=WAIT, interval=0.02, message="B's WARNING of a deaf subscriber")
    assert b.status()["outages"] >= 1
    time.sleep(max(0.0, paused_until - time.monotonic()))
    resumed = time.monotonic()
    stop = threading.Event()
    ticking = keep_broadcasting(a, f"/fn/{t}", stop)
    try:
        first_after(remote, resumed, 2.0)
    finally:
        stop.set()
        ticking.join(5)
    wait_until(lambda: b.status()["state"] == "up", timeout=2, message="B up again")


def test_a_backplane_client_whose_connection_the_server_closed_fails_rather_than_reconnect(redis_server):
    """redis-py's pool replaces a pooled connection the server closed when the next command
    takes it (ConnectionPool.ensure_connection), without raising; the backplane's clients
    refuse that reconnect, so the gap is an error, which the supervisor makes an outage of."""
    from redis.exceptions import ConnectionError as RedisConnectionError

    from tether.backplane.redis import RedisBackplane

    async def main() -> None:
        client = RedisBackplane(bytes(6), redis_server.url)._client_of(redis_server.url)
        try:
            assert await client.ping()
            assert redis_server.execute("CLIENT", "KILL", "TYPE", "normal") == 1  # not the helper's own
            await asyncio.sleep(0.1)  # the loop sees the end of the stream, as it does on an idle node
            with pytest.raises(RedisConnectionError):
                await client.ping()
        finally:
            await client.aclose()

    asyncio.run(main())


def test_the_command_connection_killed_the_node_comes_back_whole(redis_server, start_node, clients):
    a, b = two_nodes(start_node, redis_server.url)
    t = tag()
    assert redis_server.execute("CLIENT", "KILL", "TYPE", "normal") == 2  # both nodes' command connections
    # Each node notices at its next command: this publish (lost) or a heartbeat.
    for node in (a, b):
        node.post("/do/broadcast", path=f"/fn/{t}-nobody", text="lost")
        wait_until(lambda node=node: node.status()["outages"] == 1, timeout=5, message="the node noticing")
    noticed = time.monotonic()
    # A path and a room that get their first member on A only now: B's messages reach it.
    member = clients(a, f"/fn/{t}")
    member.join(f"room-{t}")
    stop = threading.Event()
    ticking = keep_broadcasting(b, f"/fn/{t}", stop)
    try:
        first_after(member, noticed, 2.0, prefix="tick")
    finally:
        stop.set()
        ticking.join(5)
    for node in (a, b):
        wait_until(lambda node=node: node.status()["state"] == "up", timeout=max(0.0, noticed + 2 - time.monotonic()),
                   message="the node up again")
    b.post("/do/publish", room=f"room-{t}", text="to the new room")
    member.expect("to the new room", timeout=5)
    assert len(a.warnings(LOST)) == 1 and BACK.search(a.log())
    # The publish that found the connection dead was lost before the node knew Redis was gone:
    # the outage's count includes it all the same.
    for node in (a, b):
        lost = node.status()["lost"]
        assert [int(m.group(1)) for m in BACK.finditer(node.log())] == [lost] and lost >= 1


# -- 9. a node killed -------------------------------------------------------------------------------------------
@pytest.mark.parametrize("engine", list(ENGINES))
def test_a_killed_nodes_members_leave_presence_and_are_reported_once_as_leaves(engine, engine_pool, start_node,
                                                                              clients):
    url = backplane_url(engine_pool.servers(engine).url, prefix=f"killed{tag()}")  # a cluster of its own
    a, b, c = start_node(url), start_node(url), start_node(url)
    for node in (a, b, c):
        node.wait_state("up")
    t = tag()
    room = f"room-{t}"
    doomed = [clients(b, f"/fn/{t}") for _ in range(2)]
    survivor = clients(a, f"/fn/{t}")
    for i, client in enumerate(doomed):
        client.join(room, {"name": f"b{i}"})
    survivor.join(room, {"name": "a0"})
    everyone = {doomed[0].id: {"name": "b0"}, doomed[1].id: {"name": "b1"}, survivor.id: {"name": "a0"}}
    wait_until(lambda: a.get("/presence", room=room) == everyone, message="A seeing B's members")
    b.kill()  # SIGKILL: no goodbye to Redis
    killed = time.monotonic()
    wait_until(lambda: a.get("/presence", room=room) == {survivor.id: {"name": "a0"}}, timeout=30, interval=0.05,
               message="B's members gone from A's presence")

    def leaves() -> list[dict[str, Any]]:
        return [entry for node in (a, c) for entry in node.get("/presence_log")
                if entry["room"] == room and entry["left"]]

    def left() -> list[tuple[str, Any]]:
        return sorted((key, info) for entry in leaves() for key, info in entry["left"].items())

    wait_until(lambda: {key for key, _ in left()} >= set(everyone) - {survivor.id},
               timeout=max(0.0, killed + 30 - time.monotonic()), interval=0.05,
               message="the leaves reported by a survivor")
    reported = leaves()
    assert all(entry["joined"] == {} for entry in reported)
    assert left() == sorted((client.id, everyone[client.id]) for client in doomed)  # each once, with its info
    assert c.get("/presence", room=room) == {survivor.id: {"name": "a0"}}
    time.sleep(1.5)  # three more heartbeats: nobody reports them again
    assert leaves() == reported
    wait_until(lambda: a.get("/count")["count"] == 1, message="B's connections gone from the count")


@pytest.mark.parametrize("engine", list(ENGINES))
def test_an_event_loop_held_longer_than_the_probe_is_no_outage(engine, engine_pool, start_node, clients):
    """A node whose own event loop was held (a blocking handler, a storm of joins) for many
    `probe` periods heard nothing meanwhile because it listened to nothing: that silence says
    nothing of the backplane, and is no outage."""
    a = start_node(backplane_url(engine_pool.servers(engine).url, prefix=f"held{tag()}", heartbeat="5"))
    a.wait_state("up")
    path = f"/fn/{tag()}"
    receiver = clients(a, path)
    # Held 0.6 s at a time (over the probe, 0.5 s), six times, a turn of the loop in between:
    # a probe sent in one turn is answered while the loop is held, and read only after.
    assert a.post("/do/block", seconds=0.6, times=6) == {"blocked": 3.6}
    a.post("/do/broadcast", path=path, text="after the hold")
    assert receiver.recv() == "after the hold"
    time.sleep(1.5)  # three probe periods after it: a deafness noticed late would show by now
    status = a.status()
    assert (status["state"], status["outages"], status["lost"]) == ("up", 0, 0), a.warnings()
    assert a.warnings("lost") == []


# -- 10. reconnects leak no connection ---------------------------------------------------------------------------
def test_a_hundred_reconnects_leave_redis_connected_clients_flat(redis_server, start_node):
    """100 reconnects: ten nodes through ten cycles (one node's supervisor backs off up to 1 s between
    quick successive failures, by design, so a hundred cycles of one node would take over a minute)."""
    nodes = [start_node(backplane_url(redis_server.url)) for _ in range(10)]
    for node in nodes:
        node.wait_state("up")
    baseline = redis_server.connected_clients()
    assert baseline == 2 * len(nodes)  # per node: one subscriber, one command connection
    reconnects = 0
    for cycle in range(10):
        outages = [node.status()["outages"] for node in nodes]
        if cycle % 2:
            redis_server.execute("CLIENT", "KILL", "TYPE", "normal")  # command connections (the helper's skipped)
        assert redis_server.client_kill_pubsub() == len(nodes)
        for node, before in zip(nodes, outages, strict=True):
            try:
                wait_until(lambda node=node, before=before: (s := node.status())["outages"] > before
                           and s["state"] == "up", timeout=5, interval=0.01, message=f"recovery {cycle} of :{node.port}")
            except AssertionError as failure:  # once seen in CI (1 run in 5): keep what the node said
                raise AssertionError(f"{failure}; outages before {before}, now {node.try_status()}; "
                                     f"its log ends:\n{node.log()[-4000:]}") from None
            reconnects += 1
    assert reconnects == 100
    # Old connections may take a moment to be closed; a leak would leave dozens.
    wait_until(lambda: redis_server.connected_clients() <= baseline + 2, timeout=5, message="connections closed")


# -- 11. unix:// and rediss:// ----------------------------------------------------------------------------------
@pytest.mark.parametrize("url, logged", [
    ("redis://:s3cret@redis.internal/3", "redis://:***@redis.internal/3"),
    ("rediss://user:p%40ss@10.0.0.5:6380/2?ssl_ca_certs=/x", "rediss://user:***@10.0.0.5:6380/2?ssl_ca_certs=/x"),
    ("unix:///run/redis.sock?db=3&password=pw&x=1", "unix:///run/redis.sock?db=3&password=***&x=1"),
    ("redis://user@host:6379/0", "redis://user@host:6379/0"),
    ("redis://127.0.0.1:6379/0", "redis://127.0.0.1:6379/0"),
])
def test_a_password_in_the_url_is_not_logged(url, logged):
    from tether.backplane.redis import _redacted

    assert _redacted(url) == logged


@pytest.mark.parametrize(("given", "for_redis", "ours"), [
    ("redis://127.0.0.1:6379/0", "redis://127.0.0.1:6379/0", {}),
    ("redis://127.0.0.1:6379/0?prefix=app1&heartbeat=0.5&probe=2", "redis://127.0.0.1:6379/0",
     {"prefix": "app1", "heartbeat": "0.5", "probe": "2"}),
    ("redis://:s3cret@redis.internal/3?socket_timeout=5&prefix=app1", "redis://:s3cret@redis.internal/3?socket_timeout=5",
     {"prefix": "app1"}),
    ("rediss://user:p%40ss@10.0.0.5:6380/2?ssl_ca_certs=/etc/ca.pem&heartbeat=1",
     "rediss://user:p%40ss@10.0.0.5:6380/2?ssl_ca_certs=/etc/ca.pem", {"heartbeat": "1"}),
    ("unix:///run/redis/redis.sock", "unix:///run/redis/redis.sock", {}),
    ("unix:///run/redis/redis.sock?prefix=app1", "unix:///run/redis/redis.sock", {"prefix": "app1"}),
    ("unix:///run/redis/redis.sock?db=3&probe=0.5&password=pw", "unix:///run/redis/redis.sock?db=3&password=pw",
     {"probe": "0.5"}),
    ("unix://user:pw@/run/redis/redis.sock?db=3", "unix://user:pw@/run/redis/redis.sock?db=3", {}),
])
def test_the_url_for_redis_py_is_the_given_one_without_tethers_options(given, for_redis, ours):
    """tether's own query options are taken out; the rest reaches redis-py as written (the
    `//` of unix:///path, user:password@, the db path, redis-py's options and their encoding)."""
    from redis.asyncio.connection import parse_url

    from tether.backplane.redis import _split_url

    assert _split_url(given) == (for_redis, ours)
    assert parse_url(for_redis)  # redis-py takes it (8.x refuses unix:/path, the form urlunsplit gives)


def broadcast_crosses(a: Node, b: Node, open_client: Callable[[Node, str], Client]) -> None:
    t = tag()
    remote = open_client(b, f"/fn/{t}")
    a.post("/do/broadcast", path=f"/fn/{t}", text="across")
    assert remote.recv() == "across"
    assert a.get("/count")["count"] == 1


def test_a_unix_socket_url_connects_the_nodes(redis_server, start_node, clients):
    a, b = start_node(backplane_url(redis_server.unix_url)), start_node(backplane_url(redis_server.unix_url))
    a.wait_state("up", timeout=5)
    b.wait_state("up", timeout=5)
    broadcast_crosses(a, b, clients)
    unix = [entry for entry in redis_server.client_list() if entry.get("addr", "").startswith("/")
            or entry.get("laddr", "").startswith("/")]
    assert len(unix) >= 4  # both nodes' connections (and the helper's) are on the socket


def test_a_rediss_url_connects_the_nodes_over_tls(redis_factory, start_node, clients):
    ok, reason = tls_supported()
    if not ok:
        pytest.skip(reason)
    server = redis_factory(tls=True)
    a, b = two_nodes(start_node, backplane_url(server.tls_url, ssl_ca_certs=server.ca_file))
    broadcast_crosses(a, b, clients)
    tls_port = f":{server.tls_port}"
    over_tls = [entry for entry in server.client_list() if entry.get("laddr", "").endswith(tls_port)]
    assert len(over_tls) == 4


# -- 12. separate hosts ----------------------------------------------------------------------------------------------
def test_nodes_on_separate_hosts_meet_through_redis_on_a_third(tmp_path, clients):
    ok, reason = netns_available()
    if not ok:
        pytest.skip(reason)
    with hosts(["redis", "a", "b"]) as net:
        redis_host, host_a, host_b = net
        server = RedisServer(netns=redis_host).start()
        try:
            url = backplane_url(f"redis://{redis_host.address}:6379/0")
            a = Node(tmp_path / "a", url, host=host_a.address, port=8000, popen=host_a.popen)
            b = Node(tmp_path / "b", url, host=host_b.address, port=8000, popen=host_b.popen)
            a.wait_state("up")
            b.wait_state("up")
            t = tag()
            on_a, on_b = clients(a, f"/fn/{t}"), clients(b, f"/fn/{t}")
            a.post("/do/broadcast", path=f"/fn/{t}", text="from host a")
            assert on_b.recv() == "from host a" and on_a.recv() == "from host a"
            b.post("/do/send_to", id=on_a.id, text="from host b")
            assert on_a.recv() == "from host b"
            addresses = {entry["addr"].rpartition(":")[0] for entry in server.client_list()
                         if not entry["addr"].startswith("/")}
            assert {host_a.address, host_b.address} <= addresses
        finally:
            server.close()


# -- 13. startup ------------------------------------------------------------------------------------------------------
def test_an_unknown_backplane_scheme_is_a_value_error_at_startup():
    app = App(backplane="ftp://x")  # settings are not checked before startup...
    with pytest.raises(ValueError, match="'ftp'"):
        asyncio.run(app.startup())  # ...which names the scheme


def test_the_command_refuses_an_unknown_backplane_scheme(tmp_path):
    shutil.copy(APP_FILE, tmp_path / "cluster_app.py")
    result = subprocess.run([sys.executable, "-m", "tether", "run", "cluster_app:app", "--port", str(reserve_port()),
                             "--backplane", "ftp://x"], cwd=tmp_path, capture_output=True, text=True, timeout=30)
    assert result.returncode == 1
    assert result.stderr.splitlines() == [
        "tether: backplane 'ftp://x': unknown scheme 'ftp' (use redis://, rediss://, unix://, redis+sentinel://, "
        "redis+cluster://, nats:// or memory://)"]


def test_a_redis_that_is_not_there_yet_local_traffic_goes_on_and_the_node_joins_once_it_starts(
        start_node, clients, redis_factory):
    port = reserve_port()  # nothing listens there (and no other process gets it)
    a = start_node(backplane_url(f"redis://127.0.0.1:{port}/0"))
    status = a.wait_state("down", timeout=15)
    assert status["outages"] == 0
    t = tag()
    local = clients(a, f"/fn/{t}")
    assert a.post("/do/broadcast", path=f"/fn/{t}", text="local only") == {"result": 1}
    assert local.recv() == "local only"
    assert a.get("/count")["count"] == 1
    server = redis_factory(port=port)
    a.wait_state("up", timeout=5)
    assert server.connected_clients() == 2
    b = start_node(backplane_url(server.url))
    b.wait_state("up")
    remote = clients(b, f"/fn/{t}")
    a.post("/do/broadcast", path=f"/fn/{t}", text="now the cluster")
    assert remote.recv() == "now the cluster" and local.recv() == "now the cluster"
    wait_until(lambda: b.get("/count")["count"] == 2, message="A's count written once Redis came")


def test_every_join_waits_for_the_rooms_subscription_and_one_given_up_cancels_no_other(redis_server):
    """A second member that joins while the room's subscription is on its way waits for it
    too (it returned at once, so what was published meanwhile could be missed); the joins
    share one confirmation, and a join given up (a timeout around it) must not cancel it
    under the others."""
    from tether.testing import TestClient

    app = App(backplane=backplane_url(redis_server.url))
    outcomes: list[tuple[str, str]] = []

    @app.websocket("/join")
    async def join(websocket, impatient: bool = False):
        who = "impatient" if impatient else "patient"
        try:
            if impatient:
                await asyncio.wait_for(websocket.join("lobby"), 0.2)
            else:
                await websocket.join("lobby")
        except BaseException as exc:
            outcomes.append((who, type(exc).__name__))
            raise
        outcomes.append((who, "joined"))
        await websocket.send_text("joined")
        async for _ in websocket:
            pass

    with TestClient(app, raise_server_exceptions=False) as client:
        wait_until(lambda: str(app.hub.backplane.state) == "up", timeout=5, message="the backplane up")
        redis_server.pause(1.0)  # the room's SUBSCRIBE waits: both joins wait on it
        patient = client.websocket_connect("/join")
        impatient = client.websocket_connect("/join?impatient=1")
        assert patient.receive_text(timeout=10) == "joined"
        assert ("impatient", "TimeoutError") in outcomes and ("patient", "joined") in outcomes
        patient.close()
        impatient.close()

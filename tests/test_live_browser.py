"""tether.js, the browser client of live channels, in headless Chromium against real tether
servers (each its own process on 127.0.0.1, so that it can be killed, stopped and restarted
on the same port), and on Redis where a room's history must outlive a server."""

from __future__ import annotations

import json
import pathlib
import shutil
import signal
import subprocess
import textwrap
import time
import urllib.request

import pytest

from .browser import Browser
from .netutil import wait_until
from .processes import AppProcess, app_processes_fixture  # noqa: F401
from .redisutil import redis_server_fixture  # noqa: F401

ROOT = pathlib.Path(__file__).resolve().parents[1]
STATIC = ROOT / "src" / "tether" / "live" / "static"

# The app every test serves. LIVE_PING and LIVE_EXPIRES come from the environment; the
# backplane from TETHER_BACKPLANE (none: one node, history kept in the process).
APP = textwrap.dedent('''
    import os
    import time

    from tether import App, html
    from tether.live import Authenticated, Refuse

    app = App()
    live = app.live("/live", ping_interval=float(os.environ.get("LIVE_PING", "25")))
    EXPIRES = os.environ.get("LIVE_EXPIRES")


    @live.authenticate
    async def who(token, request):
        if token is None or token.startswith("bad"):
            raise Refuse(f"no entry for {token}")
        if EXPIRES:
            return Authenticated(token, expires_at=time.time() + float(EXPIRES))
        return token


    @live.room("chat:{name}", history=1000, presence=True, client_publish=True)
    async def chat(conn, name):
        return {"user": conn.identity}


    @live.on_publish("chat:{name}")
    async def stamp(conn, name, data):
        return {**data, "by": conn.identity} if isinstance(data, dict) else data


    @live.room("short:{name}", history=3)
    async def short(conn, name):
        return None


    @live.room("news")
    async def news(conn):
        return None


    @app.post("/publish")
    async def publish(request):
        body = await request.json()
        for data in body["messages"]:
            await app.hub.publish(body["room"], data)
        return {}


    @app.get("/")
    def page():
        return html("<!doctype html><title>live</title><p>tether.js under test</p>")
''')

# Installed in each page: `T.connect(key, options)` makes a Client and `T.join(key, room,
# options)` joins a room; everything they emit is recorded in T.log[key] as JSON.
HARNESS = """(async () => {
  const tether = await import('/tether.js');
  const T = window.T = { tether, log: {}, clients: {}, rooms: {} };
  T.connect = (key, options = {}) => {
    const log = T.log[key] = { states: [], stateTimes: [], errors: [], events: [], tokens: [] };
    const token = options.token ?? (() => { const t = `${key}-${log.tokens.length + 1}`; log.tokens.push(t); return t; });
    const client = new tether.Client(`ws://${location.host}/live`,
      { minDelay: 50, maxDelay: 400, connectTimeout: 3000, ...options, token });
    client.on('state', (state) => { log.states.push(state); log.stateTimes.push(Date.now() / 1000); });
    client.on('error', (e) => log.errors.push({ code: e.code, type: e.type, message: e.message }));
    T.clients[key] = client;
    return true;
  };
  T.join = (key, name, options) => {
    const room = T.rooms[`${key} ${name}`] = T.clients[key].join(name, options);
    const events = T.log[key].events;
    room.on('join', (e) => events.push({ room: name, event: 'join', ...e }));
    room.on('message', (m) => events.push({ room: name, event: 'message', data: m.data, offset: m.offset, epoch: m.epoch }));
    room.on('presence', (members) => events.push({ room: name, event: 'presence', members }));
    room.on('lost', (e) => events.push({ room: name, event: 'lost', ...e }));
    room.on('error', (e) => events.push({ room: name, event: 'error', code: e.code, type: e.type, message: e.message }));
    return true;
  };
  // A promise's outcome as JSON: {ok: value} or {error: {code, type, message}}.
  T.settle = (promise) => promise.then((ok) => ({ ok }),
    (e) => ({ error: { code: e.code, type: e.type, message: e.message } }));
  return true;
})()"""


class LiveServer(AppProcess):
    """The app above served by `python -m tether run liveapp:app` in its own process
    (tests/processes.py), on a fixed port so that it can be killed and started again there."""

    def publish(self, room: str, *messages: object) -> None:
        """Server code publishing (app.hub.publish), one call per message, in order."""
        body = json.dumps({"room": room, "messages": list(messages)}).encode()
        request = urllib.request.Request(self.url("/publish"), data=body, method="POST",
                                         headers={"Content-Type": "application/json"})
        with urllib.request.urlopen(request, timeout=10) as response:
            assert response.status in (200, 204)


@pytest.fixture
def servers(app_processes, tmp_path):
    """`servers(port=None, **env)` starts one more LiveServer, ready once GET / answers (all
    killed after the test)."""
    (tmp_path / "liveapp.py").write_text(APP)

    def start(port: int | None = None, **env: str) -> LiveServer:
        return app_processes(tmp_path, "liveapp:app", kind=LiveServer, port=port, env=env, ready="/")

    return start


def js(browser: Browser, expression: str):
    """Evaluate `expression` in the page, awaiting a promise; JS exceptions fail the test."""
    reply = browser.command("Runtime.evaluate", expression=expression, awaitPromise=True, returnByValue=True)
    assert "exceptionDetails" not in reply, reply["exceptionDetails"]
    return reply["result"].get("value")


def open_page(browser: Browser, server: LiveServer) -> None:
    browser.goto(server.url("/"))
    browser.wait_for("document.readyState === 'complete' && location.pathname === '/'")
    assert js(browser, HARNESS) is True


def events(browser: Browser, key: str, kind: str | None = None, room: str | None = None) -> list[dict]:
    return [event for event in js(browser, f"T.log[{json.dumps(key)}].events")
            if (kind is None or event["event"] == kind) and (room is None or event["room"] == room)]


def messages(browser: Browser, key: str, room: str) -> list[tuple]:
    return [(event["data"], event["offset"]) for event in events(browser, key, "message", room)]


def wait_events(browser: Browser, key: str, kind: str, count: int, room: str | None = None,
                timeout: float = 10) -> list[dict]:
    """Wait until `key` has recorded at least `count` events of `kind`; return them."""
    return wait_until(lambda: (found := events(browser, key, kind, room)) and len(found) >= count and found,
                      timeout=timeout, interval=0.05, message=f"{count} {kind} events of {key}")


def states(browser: Browser, key: str) -> list[str]:
    return js(browser, f"T.log[{json.dumps(key)}].states")


@pytest.fixture
def browser():
    with Browser() as page:
        yield page


def test_tether_js_and_its_declarations_are_served(servers):
    server = servers()
    for name, kind in (("tether.js", "javascript"), ("tether.d.ts", "")):
        with urllib.request.urlopen(server.url(f"/{name}"), timeout=10) as response:
            assert response.read() == (STATIC / name).read_bytes()
            assert kind in response.headers["Content-Type"]


def test_join_publish_and_history_round_trip_with_offsets(servers, browser):
    server = servers()
    open_page(browser, server)
    js(browser, "T.connect('a') && T.join('a', 'chat:lobby')")
    [joined] = wait_events(browser, "a", "join", 1)
    assert joined["recovered"] is False
    assert joined["position"]["offset"] == 0  # a room nothing was published into yet
    assert states(browser, "a") == ["connected"]  # it starts "connecting"
    client_id = js(browser, "T.clients.a.id")
    assert isinstance(client_id, str) and client_id
    # Its own presence entry is keyed by its id, with the info the room's hook gave.
    assert js(browser, "T.rooms['a chat:lobby'].presence") == {client_id: {"user": "a-1"}}

    server.publish("chat:lobby", {"text": "from the server"})
    reply = js(browser, "T.settle(T.rooms['a chat:lobby'].publish({text: 'from the page'}))")
    assert reply == {"ok": {}}
    wait_events(browser, "a", "message", 2)
    assert messages(browser, "a", "chat:lobby") == [
        ({"text": "from the server"}, 1), ({"text": "from the page", "by": "a-1"}, 2)]
    [epoch] = {event["epoch"] for event in events(browser, "a", "message")}
    assert isinstance(epoch, str) and epoch
    assert js(browser, "T.rooms['a chat:lobby'].position") == {"epoch": epoch, "offset": 2}

    history = js(browser, "T.rooms['a chat:lobby'].history({since: 1})")
    assert history == {"position": {"epoch": epoch, "offset": 2},
                       "messages": [{"offset": 2, "data": {"text": "from the page", "by": "a-1"}}]}
    history = js(browser, "T.rooms['a chat:lobby'].history({limit: 1})")  # oldest first
    assert [message["offset"] for message in history["messages"]] == [1]

    # A room without history: messages without offsets; client publishing refused there.
    js(browser, "T.join('a', 'news')")
    [joined] = wait_events(browser, "a", "join", 1, room="news")
    assert joined["recovered"] is False and joined["position"] is None
    server.publish("news", "extra", "extra!")
    wait_events(browser, "a", "message", 2, room="news")
    assert messages(browser, "a", "news") == [("extra", None), ("extra!", None)]
    refused = js(browser, "T.settle(T.rooms['a news'].publish('mine'))")
    assert refused["error"]["code"] == 403 and refused["error"]["type"] == "forbidden"

    # A room no declaration matches: the room's error event, and it is given up.
    js(browser, "T.join('a', 'nowhere')")
    [error] = wait_events(browser, "a", "error", 1, room="nowhere")
    assert (error["code"], error["type"]) == (404, "unknown_room")
    gone = js(browser, "T.settle(T.rooms['a nowhere'].publish(1))")
    assert gone["error"]["type"] == "not_joined"

    # Leaving: no more messages of the room.
    assert js(browser, "T.rooms['a news'].leave().then(() => true)") is True
    server.publish("news", "after leaving")
    server.publish("chat:lobby", {"text": "marker"})
    wait_events(browser, "a", "message", 3, room="chat:lobby")
    assert messages(browser, "a", "news") == [("extra", None), ("extra!", None)]
    assert js(browser, "T.log.a.errors") == []

    js(browser, "T.clients.a.close()")
    assert states(browser, "a") == ["connected", "closed"]
    assert js(browser, "T.clients.a.id") is None
    cut = js(browser, "T.settle(T.rooms['a chat:lobby'].publish(1))")
    assert cut["error"]["type"] == "disconnected"


def test_a_refused_connect_stops_the_client(servers, browser):
    server = servers()
    open_page(browser, server)
    js(browser, "T.connect('a', {token: 'bad-token'}) && T.join('a', 'chat:lobby')")
    wait_until(lambda: states(browser, "a") == ["closed"], timeout=10, message="the client to stop")
    [error] = js(browser, "T.log.a.errors")
    assert error["code"] == 4001 and "no entry for bad-token" in error["message"]
    # It does not try again: nothing changes for a few backoff periods (400 ms at most each).
    time.sleep(1)
    assert states(browser, "a") == ["closed"] and events(browser, "a") == []


def test_presence_is_kept_current_across_two_browsers(servers, browser):
    server = servers()
    with Browser() as other:
        open_page(browser, server)
        open_page(other, server)
        js(browser, "T.connect('ada') && T.join('ada', 'chat:lobby')")
        wait_events(browser, "ada", "join", 1)
        ada = js(browser, "T.clients.ada.id")
        members = lambda page, key: js(page, f"T.rooms['{key} chat:lobby'].presence")  # noqa: E731
        last_presence = lambda page, key: events(page, key, "presence")[-1]["members"]  # noqa: E731
        assert members(browser, "ada") == {ada: {"user": "ada-1"}}

        js(other, "T.connect('bob') && T.join('bob', 'chat:lobby', {info: {ignored: true}})")
        wait_events(other, "bob", "join", 1)
        bob = js(other, "T.clients.bob.id")
        both = {ada: {"user": "ada-1"}, bob: {"user": "bob-1"}}
        assert members(other, "bob") == both and last_presence(other, "bob") == both
        wait_until(lambda: members(browser, "ada") == both, timeout=10, message="ada to see bob")
        assert last_presence(browser, "ada") == both

        # bob leaves the room, then joins again, then closes his client.
        js(other, "T.rooms['bob chat:lobby'].leave()")
        wait_until(lambda: members(browser, "ada") == {ada: {"user": "ada-1"}}, timeout=10, message="bob to leave")
        js(other, "T.join('bob', 'chat:lobby')")
        wait_until(lambda: members(browser, "ada") == both, timeout=10, message="bob to come back")
        js(other, "T.clients.bob.close()")
        wait_until(lambda: members(browser, "ada") == {ada: {"user": "ada-1"}}, timeout=10,
                   message="bob's close to show")
        assert last_presence(browser, "ada") == {ada: {"user": "ada-1"}}


@pytest.mark.parametrize("how", ["kill", "stop"])
def test_reconnect_after_a_restart_rejoins_and_recovers_every_message_once(servers, browser, redis_server, how):
    # Two nodes on one Redis: the page's node is killed (or shut down) and started again on
    # its port while the other publishes; the room's history lives in Redis.
    node = servers(TETHER_BACKPLANE=redis_server.url, LIVE_PING="2")
    publisher = servers(TETHER_BACKPLANE=redis_server.url, LIVE_PING="2")
    open_page(browser, node)
    js(browser, "T.connect('a') && T.join('a', 'chat:lobby')")
    wait_events(browser, "a", "join", 1)
    first_id = js(browser, "T.clients.a.id")
    publisher.publish("chat:lobby", *({"n": n} for n in range(1, 4)))
    wait_events(browser, "a", "message", 3)

    getattr(node, how)()
    wait_until(lambda: "disconnected" in states(browser, "a"), timeout=10, message="the page to see the crash")
    publisher.publish("chat:lobby", *({"n": n} for n in range(4, 8)))
    # The page keeps trying meanwhile (backoff up to 400 ms here); it finds the node again.
    node.start()
    joins = wait_events(browser, "a", "join", 2, timeout=20)
    assert [join["recovered"] for join in joins] == [False, True]
    assert joins[1]["position"] == {"epoch": events(browser, "a", "message")[0]["epoch"], "offset": 7}
    assert js(browser, "T.clients.a.id") != first_id  # a new connection
    publisher.publish("chat:lobby", {"n": 8}, {"n": 9})
    wait_events(browser, "a", "message", 9)

    # Every message once, in order, with its offset; the rejoin came before the replay.
    assert messages(browser, "a", "chat:lobby") == [({"n": n}, n) for n in range(1, 10)]
    kinds = [(event["event"], event.get("data")) for event in events(browser, "a") if event["event"] != "presence"]
    assert kinds.index(("join", None), 1) == kinds.index(("message", {"n": 4})) - 1
    assert states(browser, "a")[-1] == "connected" and "closed" not in states(browser, "a")


def test_two_pages_on_two_nodes_through_a_crash_of_one(servers, browser, redis_server):
    """The issue's check: two pages in one room on two nodes (Redis); presence within 1 s of
    a join; the first page's node is SIGKILLed and restarted while the second page keeps
    publishing; the first page reconnects by itself and shows every message once, in order;
    the second page's presence drops the dead node's member within 30 s (3 heartbeats of 2 s)."""
    url = f"{redis_server.url}?heartbeat=2"
    first_node = servers(TETHER_BACKPLANE=url, LIVE_PING="2")
    second_node = servers(TETHER_BACKPLANE=url, LIVE_PING="2")
    with Browser() as second:
        open_page(browser, first_node)
        open_page(second, second_node)
        js(second, "T.connect('bob') && T.join('bob', 'chat:two')")
        wait_events(second, "bob", "join", 1)
        js(browser, "T.connect('ada') && T.join('ada', 'chat:two')")
        joined_at = time.monotonic()
        wait_events(browser, "ada", "join", 1)
        ada = js(browser, "T.clients.ada.id")
        members = lambda: js(second, "T.rooms['bob chat:two'].presence")  # noqa: E731
        wait_until(lambda: ada in members(), timeout=10, message="bob to see ada")
        assert time.monotonic() - joined_at < 1 + 1  # within 1 s of the join (+ the polling's own time)
        publish = lambda n: js(second, f"T.rooms['bob chat:two'].publish({{n: {n}}}).then(() => true)")  # noqa: E731
        for n in (1, 2):
            assert publish(n)
        wait_events(browser, "ada", "message", 2)

        first_node.kill()
        killed_at = time.monotonic()
        wait_until(lambda: "disconnected" in states(browser, "ada"), timeout=10, message="ada to see the crash")
        for n in range(3, 7):
            assert publish(n)
        first_node.start()
        joins = wait_events(browser, "ada", "join", 2, timeout=20)
        assert joins[1]["recovered"] is True
        assert publish(7)
        wait_events(browser, "ada", "message", 7)
        assert [data["n"] for data, _ in messages(browser, "ada", "chat:two")] == list(range(1, 8))
        # The dead node's member leaves bob's list; ada's new connection is in it.
        new_ada = js(browser, "T.clients.ada.id")
        wait_until(lambda: ada not in members() and new_ada in members(), timeout=30,
                   message="the dead node's member to leave the presence")
        assert time.monotonic() - killed_at < 30


def test_a_rejoin_is_not_recovered_when_the_history_was_trimmed(servers, browser, redis_server):
    node = servers(TETHER_BACKPLANE=redis_server.url)
    publisher = servers(TETHER_BACKPLANE=redis_server.url)
    open_page(browser, node)
    js(browser, "T.connect('a') && T.join('a', 'short:x')")
    wait_events(browser, "a", "join", 1)
    publisher.publish("short:x", "one")
    wait_events(browser, "a", "message", 1)

    node.kill()
    wait_until(lambda: "disconnected" in states(browser, "a"), timeout=10, message="the page to see the crash")
    publisher.publish("short:x", "two", "three", "four", "five", "six")  # the room keeps the last 3
    node.start()
    joins = wait_events(browser, "a", "join", 2, timeout=20)
    assert joins[1]["recovered"] is False and joins[1]["position"]["offset"] == 6
    publisher.publish("short:x", "seven")
    wait_events(browser, "a", "message", 2)
    # Nothing replayed (never a partial set); live messages go on from the new position.
    assert messages(browser, "a", "short:x") == [("one", 1), ("seven", 7)]
    assert js(browser, "T.rooms['a short:x'].position.offset") == 7


def test_the_heartbeat_finds_a_server_that_stopped_answering(servers, browser):
    ping = 0.5
    server = servers(LIVE_PING=str(ping))
    open_page(browser, server)
    js(browser, "T.connect('a', {connectTimeout: 2000}) && T.join('a', 'chat:lobby')")
    wait_events(browser, "a", "join", 1)
    server.publish("chat:lobby", "before")
    wait_events(browser, "a", "message", 1)
    # Pings are answered: the connection outlives a few intervals.
    time.sleep(3 * ping)
    assert states(browser, "a") == ["connected"]

    stopped_at = time.time()
    server.signal(signal.SIGSTOP)
    try:
        wait_until(lambda: "disconnected" in states(browser, "a"), timeout=10,
                   message="the page to find the connection dead")
        log = js(browser, "T.log.a")
        noticed_at = log["stateTimes"][log["states"].index("disconnected")]
        # 1.5 intervals of silence after the last ping heard (which came before the stop).
        assert noticed_at - stopped_at <= 2 * ping, noticed_at - stopped_at
    finally:
        server.signal(signal.SIGCONT)
    joins = wait_events(browser, "a", "join", 2, timeout=15)
    assert states(browser, "a")[-1] == "connected"
    assert joins[1]["recovered"] is True  # nothing was published meanwhile: nothing missed
    server.publish("chat:lobby", "still here")
    wait_events(browser, "a", "message", 2)
    assert messages(browser, "a", "chat:lobby") == [("before", 1), ("still here", 2)]


def test_the_token_is_refreshed_before_it_expires(servers, browser):
    expires = 1.0
    server = servers(LIVE_EXPIRES=str(expires))
    open_page(browser, server)
    js(browser, "T.connect('a') && T.join('a', 'chat:lobby')")
    wait_events(browser, "a", "join", 1)
    first_id = js(browser, "T.clients.a.id")
    # At ~80 % of each lifetime the token function gives a new token for `refresh`.
    wait_until(lambda: len(js(browser, "T.log.a.tokens")) >= 4, timeout=10, message="three refreshes")
    assert states(browser, "a") == ["connected"] and js(browser, "T.clients.a.id") == first_id
    assert js(browser, "T.log.a.errors") == []
    # The identity a refresh gave is the one the server now knows.
    js(browser, "T.rooms['a chat:lobby'].publish({text: 'who am I'})")
    [message] = wait_events(browser, "a", "message", 1)
    assert message["data"]["by"] in js(browser, "T.log.a.tokens")[3:]


def test_an_identity_not_refreshed_is_closed_and_the_client_reconnects_with_a_new_token(servers, browser):
    server = servers(LIVE_EXPIRES="1.0")
    open_page(browser, server)
    # The second token (the refresh's) is refused: the old expiry stands, the server closes
    # with 4003, and the client connects again with a third token.
    js(browser, """T.connect('a', {token: () => {
        const log = T.log.a, token = log.tokens.length === 1 ? 'bad-refresh' : `a-${log.tokens.length + 1}`;
        log.tokens.push(token); return Promise.resolve(token);
      }}) && T.join('a', 'chat:lobby')""")
    wait_events(browser, "a", "join", 2, timeout=15)
    log = js(browser, "T.log.a")
    assert log["tokens"][:3] == ["a-1", "bad-refresh", "a-3"]
    assert [error["code"] for error in log["errors"]][:1] == [401]
    assert log["states"][:4] == ["connected", "disconnected", "connecting", "connected"]
    members = js(browser, "T.rooms['a chat:lobby'].presence")
    assert {"user": "a-3"} in members.values()


NODE_SCRIPT = """
const { Client } = await import(process.argv[1]);
const client = new Client(process.argv[2], { token: 'node' });
const room = client.join('chat:lobby');
const joined = new Promise((resolve) => room.on('join', resolve));
const received = new Promise((resolve) => room.on('message', resolve));
setTimeout(() => { console.log('timeout'); process.exit(1); }, 10000).unref();
const { recovered } = await joined;
const reply = await room.publish({ text: 'from node' });
const { data, offset } = await received;
client.close();
console.log(JSON.stringify({ recovered, reply, data, offset, state: client.state }));
"""


@pytest.mark.skipif(shutil.which("node") is None, reason="node is not installed")
def test_node_runs_tether_js_too(servers):
    """Node 22 has a global WebSocket; Node 20 only with --experimental-websocket."""
    server = servers()
    version = subprocess.run(["node", "--version"], capture_output=True, text=True, check=True).stdout
    flags = ["--experimental-websocket"] if int(version.lstrip("v").split(".")[0]) < 22 else []
    result = subprocess.run(["node", *flags, "--input-type=module", "-e", NODE_SCRIPT, "--",
                             str(STATIC / "tether.js"), server.ws_url("/live")],
                            capture_output=True, text=True, timeout=30)
    assert result.returncode == 0, result.stdout + result.stderr
    output = json.loads(result.stdout.strip().splitlines()[-1])
    assert output == {"recovered": False, "reply": {}, "data": {"text": "from node", "by": "node"}, "offset": 1,
                      "state": "closed"}


# A WebSocket the test scripts, for what a real server does not do on demand (duplicates,
# pushes racing a join reply, chosen close codes): `FakeSocket.all[i].serve(message)` hands
# the client a frame, `.drop(code)` closes it; what the client sent is in `.sent`.
FAKE_SOCKET = """(() => {
  class FakeSocket {
    static all = [];
    static times = [];
    constructor(url, protocol) {
      Object.assign(this, { url, protocol, sent: [], closedBy: null, readyState: 0 });
      FakeSocket.all.push(this);
      FakeSocket.times.push(performance.now());
      if (!FakeSocket.refuse) setTimeout(() => { this.readyState = 1; this.onopen?.({}); });
      else setTimeout(() => this.drop(1006));
    }
    send(text) { this.sent.push(JSON.parse(text)); }
    close(code) { this.closedBy = code ?? 'no code'; }
    serve(message) { this.onmessage?.({ data: JSON.stringify(message) }); }
    drop(code, reason = '') { this.readyState = 3; this.onclose?.({ code, reason }); }
  }
  window.FakeSocket = FakeSocket;
  return true;
})()"""


def sent(browser: Browser, socket: int) -> list[dict]:
    return js(browser, f"FakeSocket.all[{socket}].sent")


def serve(browser: Browser, socket: int, *messages: dict) -> None:
    js(browser, f"{json.dumps(list(messages))}.forEach((m) => FakeSocket.all[{socket}].serve(m))")


def wait_sent(browser: Browser, socket: int, count: int) -> list[dict]:
    return wait_until(lambda: js(browser, f"FakeSocket.all[{socket}]?.sent.length >= {count} && FakeSocket.all[{socket}].sent"),
                      timeout=10, interval=0.02, message=f"{count} commands on socket {socket}")


def test_the_client_keeps_order_offsets_and_presence_whatever_the_server_sends(servers, browser):
    open_page(browser, servers())
    js(browser, FAKE_SOCKET)
    js(browser, "T.connect('a', {WebSocket: FakeSocket}) && "
                "T.join('a', 'chat:x', {since: {epoch: 'E', offset: 5}, info: {me: 1}})")
    assert wait_sent(browser, 0, 1) == [{"id": 1, "op": "connect", "token": "a-1"}]
    assert js(browser, "FakeSocket.all[0].protocol") == "tether.live.v1"
    # A command asked while connecting waits for the connection, after the room's join.
    js(browser, "T.early = T.settle(T.rooms['a chat:x'].publish('early')); true")
    serve(browser, 0, {"id": 1, "result": {"client": "c1", "ping": 30, "expires_in": None}})
    assert sent(browser, 0)[1:] == [
        {"id": 2, "op": "join", "room": "chat:x", "info": {"me": 1}, "since": {"epoch": "E", "offset": 5}},
        {"id": 3, "op": "publish", "room": "chat:x", "data": "early"}]
    serve(browser, 0, {"id": 3, "result": {}})
    assert js(browser, "T.early") == {"ok": {}}
    assert states(browser, "a") == ["connected"] and js(browser, "T.clients.a.id") == "c1"

    # The replay comes before the join reply (with a duplicate and a presence diff among it):
    # the app hears the join first, then the snapshot, then the rest in order, once.
    message = lambda offset, epoch="E": {"push": "message", "room": "chat:x", "offset": offset,  # noqa: E731
                                         "epoch": epoch, "data": f"m{offset}"}
    presence = lambda joined, left: {"push": "presence", "room": "chat:x", "joined": joined, "left": left}  # noqa: E731
    serve(browser, 0, message(6), message(6), presence({"c2": 2}, {}), message(7),
          {"id": 2, "result": {"recovered": True, "position": {"epoch": "E", "offset": 7}, "presence": {"c1": 1}}})
    # Live: a duplicate, a diff the state already holds, a leave, a ping; a loss, after which
    # the next offset is taken whatever it is (a history restored from an older copy goes back).
    serve(browser, 0, message(7), message(8), presence({"c1": 1}, {}), presence({}, {"c2": 2}), {"push": "ping"},
          {"push": "lost", "room": "chat:x", "reason": "backplane down"},
          {"push": "message", "room": "elsewhere", "data": "not ours"}, message(3))
    assert [(e["event"], e.get("data") or e.get("members") or e.get("recovered") or e.get("reason"))
            for e in events(browser, "a")] == [
        ("join", True), ("presence", {"c1": 1}), ("message", "m6"), ("presence", {"c1": 1, "c2": 2}),
        ("message", "m7"), ("message", "m8"), ("presence", {"c1": 1, "c2": 2}), ("presence", {"c1": 1}),
        ("lost", "backplane down"), ("message", "m3")]
    assert sent(browser, 0)[3:] == [{"op": "pong"}]
    assert js(browser, "T.rooms['a chat:x'].position") == {"epoch": "E", "offset": 3}

    # A command in flight when the connection drops is rejected; the client reconnects and
    # rejoins from where it is.
    js(browser, "T.pending = T.settle(T.rooms['a chat:x'].publish('x')); true")
    assert sent(browser, 0)[4] == {"id": 4, "op": "publish", "room": "chat:x", "data": "x"}
    js(browser, "FakeSocket.all[0].drop(1006)")
    assert js(browser, "T.pending") == {"error": {"code": 1006, "type": "disconnected", "message": "connection closed (1006)"}}
    assert js(browser, "T.clients.a.id") is None and not js(browser, "T.rooms['a chat:x'].joined")
    wait_sent(browser, 1, 1)
    serve(browser, 1, {"id": 5, "result": {"client": "c9", "ping": 30, "expires_in": None}})
    join = sent(browser, 1)[1]
    assert join["since"] == {"epoch": "E", "offset": 3} and join["op"] == "join"
    # Not recovered: nothing up to the new position is the app's (it reloads); later ones are.
    serve(browser, 1, message(19),
          {"id": join["id"], "result": {"recovered": False, "position": {"epoch": "E", "offset": 20}, "presence": {}}},
          message(21), message(1, "F"))  # history lost: a new epoch starts at 1
    tail = events(browser, "a")[10:]
    assert [(e["event"], e.get("data", e.get("recovered"))) for e in tail] == [
        ("join", False), ("presence", None), ("message", "m21"), ("message", "m1")]
    assert js(browser, "T.rooms['a chat:x'].position") == {"epoch": "F", "offset": 1}

    # An error reply to no command reaches the client's error event; a join refused gives
    # the room up (it is not joined again).
    serve(browser, 1, {"id": None, "error": {"code": 429, "name": "rate_limited", "message": "slow down",
                                             "limit": "commands_per_second"}})
    js(browser, "T.join('a', 'chat:no')")
    refused = sent(browser, 1)[-1]
    serve(browser, 1, {"id": refused["id"], "error": {"code": 403, "name": "forbidden", "message": "members only"}})
    assert events(browser, "a", "error")[0]["type"] == "forbidden"
    assert js(browser, "T.log.a.errors") == [{"code": 429, "type": "rate_limited", "message": "slow down"}]

    # 1001 (a server restarting): reconnect. 4004 (abuse): stop, and say why.
    js(browser, "FakeSocket.all[1].drop(1001, 'restarting')")
    wait_sent(browser, 2, 1)
    serve(browser, 2, {"id": sent(browser, 2)[0]["id"], "result": {"client": "c10", "ping": 30, "expires_in": None}})
    assert [command["room"] for command in sent(browser, 2)[1:]] == ["chat:x"]  # not chat:no
    js(browser, "FakeSocket.all[2].drop(4004, 'too many errors')")
    assert states(browser, "a")[-2:] == ["connected", "closed"]
    assert js(browser, "T.log.a.errors")[-1] == {"code": 4004, "type": "closed", "message": "too many errors"}
    time.sleep(0.5)  # longer than any backoff here: no new socket
    assert js(browser, "FakeSocket.all.length") == 3


def test_reconnects_back_off_exponentially_with_full_jitter_up_to_max_delay(servers, browser):
    open_page(browser, servers())
    js(browser, FAKE_SOCKET)
    # Every attempt fails at once. With Math.random() at its top the delays are the bounds:
    # 40, 80, 160, 320, 320 ms (minDelay 40 doubled each time, up to maxDelay 320).
    js(browser, "FakeSocket.refuse = true; Math.random = () => 0.999999;"
                "T.connect('a', {WebSocket: FakeSocket, minDelay: 40, maxDelay: 320}); true")
    # A command asked meanwhile fails with the attempt (or at once, between two).
    js(browser, "T.join('a', 'r') && (T.asked = T.settle(T.rooms['a r'].publish(1))) && true")
    wait_until(lambda: js(browser, "FakeSocket.all.length") >= 6, timeout=10, message="six attempts")
    assert js(browser, "T.asked")["error"]["type"] == "disconnected"
    js(browser, "T.clients.a.close()")
    times = js(browser, "FakeSocket.times")
    gaps = [later - earlier for earlier, later in zip(times, times[1:])][:5]
    for gap, bound in zip(gaps, [40, 80, 160, 320, 320]):
        assert bound - 2 <= gap <= bound + 1000, gaps  # a timer never fires early
    log = js(browser, "T.log.a")
    assert log["states"][:4] == ["disconnected", "connecting", "disconnected", "connecting"]
    assert log["states"][-1] == "closed" and log["errors"] == []

"""Metrics and readiness (docs/operations.md): a real server on 127.0.0.1, real WebSocket
clients, and the metrics endpoint scraped over HTTP and parsed with prometheus_client's own
parser, so every assertion is about what Prometheus would store."""

from __future__ import annotations

import inspect
import pathlib
import re
import signal
import subprocess
import sys
import textwrap
import time
import urllib.error
import urllib.request

import pytest
from prometheus_client.parser import text_string_to_metric_families
from websockets.exceptions import ConnectionClosed, InvalidStatus
from websockets.sync.client import connect

from tether import App
from tether.testing import TestClient

from .netutil import reserve_port, small_rcvbuf_socket, wait_until
from .rawws import RawWebSocket, http_exchange, upgrade_request

# `serve` (conftest) runs a test once per server listed here; the native server's own tests
# use `serve_native`.
SERVERS = ("uvicorn",)

DOC = pathlib.Path(__file__).resolve().parents[1] / "docs" / "operations.md"
README = pathlib.Path(__file__).resolve().parents[1] / "README.md"


# -- helpers -------------------------------------------------------------------------------
def get(url: str, headers: dict[str, str] | None = None):
    """(status, headers (case-insensitive), body text) of GET url."""
    request = urllib.request.Request(url, headers=headers or {})
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, response.headers, response.read().decode()
    except urllib.error.HTTPError as error:
        return error.code, error.headers, error.read().decode()


class Scrape:
    """One scrape of the metrics endpoint, parsed: `scrape.value(name, **labels)`."""

    def __init__(self, url: str) -> None:
        status, headers, text = get(url)
        assert status == 200, (status, text)
        self.content_type = headers["Content-Type"]
        self.text = text
        self.samples: dict[tuple[str, frozenset], float] = {}
        for family in text_string_to_metric_families(text):
            for sample in family.samples:
                self.samples[(sample.name, frozenset(sample.labels.items()))] = sample.value

    def value(self, name: str, **labels: str) -> float | None:
        return self.samples.get((name, frozenset(labels.items())))

    def labelled(self, name: str) -> dict[frozenset, float]:
        return {labels: value for (sample, labels), value in self.samples.items() if sample == name}

    def traffic(self) -> tuple[float | None, ...]:
        return tuple(self.value(f"tether_websocket_{name}_total") for name in
                     ("messages_received", "received_bytes", "messages_sent", "sent_bytes"))


def scrape(server) -> Scrape:
    return Scrape(server.url("/metrics"))


def eventually(read, expected, timeout: float = 10):
    """Poll `read()` until it equals `expected`; fail showing the last value read."""
    deadline = time.monotonic() + timeout
    while True:
        value = read()
        if value == expected or time.monotonic() > deadline:
            assert value == expected
            return value
        time.sleep(0.02)


def ws_client(url: str, **kw):
    """A websockets client that sends nothing of its own (no pings, no compression)."""
    return connect(url, compression=None, ping_interval=None, **kw)


def metrics_app(**settings) -> App:
    app = App(metrics_path="/metrics", health_path="/healthz", ping_interval=0, **settings)

    @app.websocket("/echo/{room}")
    async def echo(websocket, room: str):
        async for message in websocket:
            await websocket.send(message)

    @app.websocket("/typed")
    async def typed(websocket, n: int):
        await websocket.send_text(str(n))

    @app.websocket("/do")
    async def do(websocket):
        async for command in websocket.iter_text():
            if command == "return":
                return
            if command == "raise":
                raise RuntimeError("a handler bug, on purpose")
            if command == "close":
                await websocket.close(4001, "custom")
                return
            await websocket.send_text(command)

    return app


# -- traffic, connections ----------------------------------------------------------------------
def test_traffic_counters_are_exact_while_open_and_after_the_close(serve_native):
    server = serve_native(metrics_app())
    payloads = ["hi", "x" * 125, "y" * 300, b"\x00" * 70_000]
    # Client frames are masked: 2 header bytes, 2 or 8 more past 125 and 65535 bytes, 4 of mask.
    def header(size: int) -> int:
        return 2 + (0 if size < 126 else 2 if size < 65536 else 8)

    with ws_client(server.ws_url("/echo/lobby")) as ws, ws_client(server.ws_url("/echo/attic")):
        for payload in payloads:
            ws.send(payload)
            assert ws.recv() == payload
        open_now = scrape(server)
        # Both connections on one route pattern: the label is bounded, the concrete path is not.
        assert open_now.labelled("tether_websocket_connections") == {frozenset({("path", "/echo/{room}")}): 2}
        sizes = [len(p) for p in payloads]
        received = sum(header(n) + 4 + n for n in sizes)
        sent = sum(header(n) + n for n in sizes)
        # The echoes reached the client, so the server had parsed and written them: exact now.
        assert open_now.traffic() == (len(payloads), received, len(payloads), sent)
        assert open_now.value("tether_websocket_handshakes_total", outcome="accepted", status="101") == 2
    # The client's close (1000, no reason: 8 bytes masked) and the server's echo (4 bytes), twice;
    # the ended connections' counters moved to the server's totals without a gap or a double.
    closed = (len(payloads) + 2, received + 2 * 8, len(payloads) + 2, sent + 2 * 4)
    eventually(lambda: scrape(server).traffic(), closed)
    after = scrape(server)
    assert after.labelled("tether_websocket_connections") == {}
    assert after.value("tether_websocket_closes_total", code="1000", by="client") == 2


def test_handshakes_are_counted_by_outcome_and_status(serve_native):
    server = serve_native(metrics_app())
    with ws_client(server.ws_url("/echo/a")):
        pass
    refusals = {
        "404": lambda: ws_client(server.ws_url("/nowhere")),
        "403": lambda: ws_client(server.ws_url("/echo/a"), origin="https://elsewhere.example"),
        "400": lambda: ws_client(server.ws_url("/typed?n=abc")),
    }
    for status, attempt in refusals.items():
        with pytest.raises(InvalidStatus) as info:
            attempt()
        assert str(info.value.response.status_code) == status
    # Refused by the HTTP layer before the App sees them: a bad key (400), a wrong version (426).
    assert http_exchange(server.port, upgrade_request("/echo/a", key="short"))[0] == 400
    assert http_exchange(server.port, upgrade_request("/echo/a", version="8"))[0] == 426
    counted = scrape(server).labelled("tether_websocket_handshakes_total")
    assert counted == {
        frozenset({("outcome", "accepted"), ("status", "101")}): 1,
        frozenset({("outcome", "refused"), ("status", "404")}): 1,
        frozenset({("outcome", "refused"), ("status", "403")}): 1,
        frozenset({("outcome", "refused"), ("status", "400")}): 2,
        frozenset({("outcome", "refused"), ("status", "426")}): 1,
    }


def test_close_codes_are_counted_with_who_closed(serve_native):
    server = serve_native(metrics_app())
    with ws_client(server.ws_url("/do")) as ws:           # the client closes with its own code
        ws.close(4000, "leaving")
    for command, code in (("return", 1000), ("raise", 1011), ("close", 4001)):
        with ws_client(server.ws_url("/do")) as ws:
            ws.send(command)
            with pytest.raises(ConnectionClosed) as info:
                ws.recv(timeout=5)
            assert info.value.rcvd.code == code
    raw = RawWebSocket(server.port, "/do")                # vanishes without a close frame
    raw.close()
    raw = RawWebSocket(server.port, "/do")                # breaks the protocol: an unmasked frame
    raw.send_frame(0x1, b"hello", mask=False)
    assert raw.expect_close()[0] == 1002
    raw.close()
    expected = {("4000", "client"): 1, ("1000", "server"): 1, ("1011", "server"): 1,
                ("4001", "server"): 1, ("1006", "client"): 1, ("1002", "client"): 1}

    def closes():
        counted = scrape(server).labelled("tether_websocket_closes_total")
        return {(dict(labels)["code"], dict(labels)["by"]): value for labels, value in counted.items()}

    eventually(closes, expected)
    assert scrape(server).value("tether_websocket_slow_client_closes_total") == 0


def test_a_slow_client_close_is_counted_and_a_full_send_buffer_is_seen(serve_native):
    app = App(metrics_path="/metrics", ping_interval=0, max_send_buffer=64 * 1024)

    @app.websocket("/flood")
    async def flood(websocket):
        # Deliveries nobody awaits: the buffer passes max_send_buffer within this loop turn.
        while True:
            websocket.send_nowait(b"x" * 16384)

    @app.websocket("/stuck")
    async def stuck(websocket):
        while True:                                   # its own sends wait for the client
            await websocket.send_bytes(b"y" * 65536)

    @app.websocket("/policy")
    async def policy(websocket):  # an app's own 1008, whose reason merely sounds like one
        await websocket.close(1008, "send buffer quota of your plan exceeded")

    server = serve_native(app)
    raw = RawWebSocket(server.port, "/flood")
    code, reason = raw.expect_close()
    raw.close()
    assert code == 1008 and "send buffer" in reason
    eventually(lambda: scrape(server).value("tether_websocket_slow_client_closes_total"), 1)
    assert scrape(server).value("tether_websocket_closes_total", code="1008", by="client") == 1
    # Counted by the kind the channel gives its failure, not by the reason's words.
    raw = RawWebSocket(server.port, "/policy")
    assert raw.expect_close() == (1008, "send buffer quota of your plan exceeded")
    raw.close()
    eventually(lambda: scrape(server).value("tether_websocket_closes_total", code="1008", by="server"), 1)
    assert scrape(server).value("tether_websocket_slow_client_closes_total") == 1
    # A client that never reads: once every kernel buffer between them is full, the rest waits
    # in the server's own buffer, which the scrape sees (whatever those kernel sizes are).
    holder = RawWebSocket(server.port, "/stuck", sock=small_rcvbuf_socket())
    try:
        largest = wait_until(lambda: scrape(server).value("tether_websocket_send_buffer_max_bytes"),
                             message="a send buffer the scrape sees")
        assert scrape(server).value("tether_websocket_send_buffer_bytes") >= largest > 0
    finally:
        holder.close()


def test_event_loop_lag_and_stalls_come_from_the_watchdog(serve_native):
    app = App(metrics_path="/metrics", loop_lag_warning=0.25)

    @app.get("/block")
    async def block():
        time.sleep(0.6)  # blocks the loop, on purpose
        return "done"

    server = serve_native(app)
    assert get(server.url("/block"))[0] == 200
    # The watchdog ticks every 0.1 s, so a tick due during the 0.6 s block ran >= 0.5 s late.
    wait_until(lambda: scrape(server).value("tether_event_loop_stalls_total"), message="a stall counted")
    metrics = scrape(server)
    assert metrics.value("tether_event_loop_stalls_total") >= 1
    assert metrics.value("tether_event_loop_lag_max_seconds") >= 0.5
    assert 0 <= metrics.value("tether_event_loop_lag_seconds") <= metrics.value("tether_event_loop_lag_max_seconds")


def test_the_backplane_state_and_lost_messages(serve_native):
    app = App(metrics_path="/metrics", backplane=f"redis://127.0.0.1:{reserve_port()}/0")  # nothing listens

    @app.websocket("/room")
    async def room(websocket):
        async for message in websocket:
            await websocket.broadcast(message)

    server = serve_native(app)
    wait_until(lambda: scrape(server).value("tether_backplane_state", state="down") == 1,
               timeout=15, message="the backplane down")
    with ws_client(server.ws_url("/room")) as ws:
        for n in range(3):
            ws.send(f"local {n}")
            assert ws.recv() == f"local {n}"                   # local delivery goes on
    lost = scrape(server).value("tether_backplane_lost_messages_total")
    assert lost == server.call(_read(lambda: app.hub.backplane.lost)) == 3  # one per broadcast
    metrics = scrape(server)
    assert metrics.value("tether_backplane_state", state="up") == 0
    assert metrics.value("tether_backplane_outages_total") == 0   # never up, so never went down


def test_a_single_process_app_reports_a_local_backplane(serve_native):
    server = serve_native(App(metrics_path="/metrics"))
    states = scrape(server).labelled("tether_backplane_state")
    assert {dict(labels)["state"]: value for labels, value in states.items() if value} == {"local": 1}


async def _read(read):
    return read()


# -- the endpoint itself -------------------------------------------------------------------------
def test_openmetrics_when_asked_and_the_default_registry_is_included(serve_native):
    server = serve_native(App(metrics_path="/metrics"))
    status, headers, text = get(server.url("/metrics"), {"Accept": "application/openmetrics-text; version=1.0.0"})
    assert status == 200 and headers["Content-Type"].startswith("application/openmetrics-text")
    assert text.endswith("# EOF\n") and "tether_websocket_connections" in text
    plain = scrape(server)
    assert plain.content_type.startswith("text/plain")
    assert plain.value("process_resident_memory_bytes") > 0  # prometheus_client's process collector
    assert plain.value("tether_ready") == 1


def test_without_the_settings_there_are_no_endpoints_and_nothing_is_counted(serve_native):
    app = App(ping_interval=0)

    @app.websocket("/echo")
    async def echo(websocket):
        async for message in websocket:
            await websocket.send(message)

    server = serve_native(app)
    with ws_client(server.ws_url("/echo")) as ws:
        ws.send("hi")
        assert ws.recv() == "hi"
    assert get(server.url("/metrics"))[0] == 404 and get(server.url("/healthz"))[0] == 404
    assert app.metrics is None


def test_off_by_default_prometheus_client_is_not_even_imported():
    code = textwrap.dedent("""
        import sys
        from tether import App
        from tether.testing import TestClient
        app = App()
        @app.websocket("/echo")
        async def echo(ws):
            await ws.send(await ws.receive())
        with TestClient(app) as client, client.websocket_connect("/echo") as ws:
            ws.send_text("hi")
            assert ws.receive_text() == "hi"
        print("prometheus_client" in sys.modules)
    """)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert out.stdout.strip() == "False", out.stderr


def test_metrics_without_prometheus_client_installed_is_a_clear_error():
    code = textwrap.dedent("""
        import sys
        sys.modules["prometheus_client"] = None   # as if it were not installed
        from tether import App
        App(health_path="/healthz")               # readiness needs nothing
        try:
            App(metrics_path="/metrics")
        except ImportError as exc:
            print(exc)
    """)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert "pip install 'tether[metrics]'" in out.stdout, out.stderr


def test_the_settings_are_validated():
    with pytest.raises(ValueError, match="metrics_path must be a path"):
        App(metrics_path="metrics")
    with pytest.raises(ValueError, match="shutdown_delay"):
        App(shutdown_delay=-1)


def test_a_path_another_route_serves_is_an_error_at_startup():
    app = App(metrics_path="/metrics")

    @app.get("/metrics")
    def mine():
        return "my own"

    with pytest.raises(ValueError, match="already served"), TestClient(app):
        pass


def test_in_process_the_endpoints_work_and_a_second_startup_adds_nothing():
    app = metrics_app()
    for _ in range(2):  # the same App started twice (two TestClients): no duplicate route
        with TestClient(app) as client:
            with client.websocket_connect("/echo/t") as ws:
                ws.send_text("hi")
                assert ws.receive_text() == "hi"
            assert client.get("/healthz").text == "ready\n"
            text = client.get("/metrics").text
    assert 'tether_websocket_handshakes_total{outcome="accepted",status="101"} 2.0' in text
    assert sum(1 for route in app.routes if route.path in ("/metrics", "/healthz")) == 2
    assert app.ready is False  # shut down


def test_an_app_can_mark_itself_not_ready():
    app = App(health_path="/healthz")
    with TestClient(app) as client:
        assert client.get("/healthz").status_code == 200
        app.ready = False
        response = client.get("/healthz")
        assert (response.status_code, response.text) == (503, "not ready\n")
        assert response.headers.get("cache-control") == "no-store"


HOT_PATH = [
    ("tether.server.channel", "NativeChannel", ("data_received", "write_frame", "send_message", "flush", "drain")),
    ("tether.channel", "ChannelBase", ("deliver",)),
    ("tether.websocket_connection", "WebSocket", ("receive", "_send", "send_nowait", "message_received",
                                                  "send_text", "send_bytes", "send")),
    ("tether.hub", "Hub", ("_deliver", "_deliver_encoded")),
    ("tether.hub.fanout", None, ("fan_out", "delivered")),  # module functions: the one fan-out loop
    ("tether.server.batcher", "WriteBatcher", None),
]


def test_the_message_path_runs_no_metrics_code():
    """Enabling metrics changes nothing per message: the hooks are called once per handshake
    and close only, and none of the per-message functions names them."""
    import importlib

    for module_name, class_name, names in HOT_PATH:
        module = importlib.import_module(module_name)
        owner = module if class_name is None else getattr(module, class_name)
        for name in names or [n for n, v in vars(owner).items() if inspect.isfunction(v)]:
            source = inspect.getsource(getattr(owner, name))
            assert not re.search(r"metric|count_(handshake|close)|watch_server", source), f"{module_name}.{name}"
    # And the hooks are called from where the docs say, and nowhere else.
    src = pathlib.Path(__file__).resolve().parents[1] / "src" / "tether"
    calls = {}
    for path in src.rglob("*.py"):
        if "metrics" in path.parts:
            continue
        for match in re.finditer(r"\b(count_handshake|count_close|watch_server)\(", path.read_text()):
            key = (path.relative_to(src).as_posix(), match.group(1))
            calls[key] = calls.get(key, 0) + 1
    assert calls == {("websocket_connection.py", "count_handshake"): 2,
                     ("websocket_connection.py", "count_close"): 2,
                     ("server/http11.py", "count_handshake"): 1,
                     ("server/serve.py", "watch_server"): 1}


# -- under an ASGI server ------------------------------------------------------------------------
def test_under_an_asgi_server_connections_handshakes_and_closes_are_counted(serve):
    server = serve(metrics_app())
    assert get(server.url("/healthz"))[:1] == (200,)
    with ws_client(server.ws_url("/echo/a")) as ws:
        ws.send("hi")
        assert ws.recv() == "hi"
        metrics = scrape(server)
        assert metrics.labelled("tether_websocket_connections") == {frozenset({("path", "/echo/{room}")}): 1}
    with pytest.raises(InvalidStatus):
        ws_client(server.ws_url("/nowhere"))
    eventually(lambda: scrape(server).value("tether_websocket_closes_total", code="1000", by="client"), 1)
    metrics = scrape(server)
    assert metrics.value("tether_websocket_handshakes_total", outcome="accepted", status="101") == 1
    assert metrics.value("tether_websocket_handshakes_total", outcome="refused", status="404") == 1
    # What only the native server knows is absent, not zero.
    assert metrics.value("tether_websocket_messages_received_total") is None
    assert metrics.value("tether_event_loop_lag_seconds") is None


# -- readiness across a real shutdown --------------------------------------------------------------
OPS_APP = '''
import asyncio
from tether import App

app = App(ping_interval=0)

@app.get("/")
def index():
    return "serving"

@app.websocket("/hold")
async def hold(websocket):
    await websocket.send_text("holding")
    try:
        await asyncio.sleep(3600)
    finally:
        print("hold handler ended", flush=True)
'''


def start_process(tmp_path, *flags):
    (tmp_path / "opsapp.py").write_text(OPS_APP)
    port = reserve_port()
    process = subprocess.Popen([sys.executable, "-m", "tether", "run", "opsapp:app", "--port", str(port), *flags],
                               cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    return process, port


def status_of(port: int, path: str) -> int | None:
    """The HTTP status of GET path, or None when the connection is refused."""
    try:
        return get(f"http://127.0.0.1:{port}{path}")[0]
    except urllib.error.URLError:
        return None


def test_readiness_turns_503_on_sigterm_while_the_server_goes_on_serving(tmp_path):
    process, port = start_process(tmp_path, "--health-path", "/healthz", "--metrics-path", "/metrics",
                                  "--shutdown-delay", "60", "--shutdown-timeout", "1")
    try:
        wait_until(lambda: status_of(port, "/healthz") == 200, timeout=20, message="the server up and ready")
        with ws_client(f"ws://127.0.0.1:{port}/hold") as held:
            assert held.recv() == "holding"
            started = time.monotonic()
            process.send_signal(signal.SIGTERM)
            wait_until(lambda: status_of(port, "/healthz") == 503, message="503 after SIGTERM")
            # Still serving during the delay: new HTTP requests, new WebSockets, the scrape.
            assert get(f"http://127.0.0.1:{port}/")[::2] == (200, "serving")
            with ws_client(f"ws://127.0.0.1:{port}/hold") as late:
                assert late.recv() == "holding"
            assert Scrape(f"http://127.0.0.1:{port}/metrics").value("tether_ready") == 0
            process.send_signal(signal.SIGTERM)              # a second signal: shut down now
            with pytest.raises(ConnectionClosed) as info:
                held.recv(timeout=10)
            assert info.value.rcvd.code == 1001
        assert process.wait(timeout=20) == 0
        assert time.monotonic() - started < 45                # not the 60 s delay
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    assert "tether not ready; shutting down in 60 s" in process.stdout.read()


def test_without_a_delay_the_listener_closes_at_once_while_a_handler_holds_the_drain(tmp_path):
    process, port = start_process(tmp_path, "--health-path", "/healthz", "--shutdown-timeout", "3")
    try:
        wait_until(lambda: status_of(port, "/healthz") == 200, timeout=20, message="the server up and ready")
        with ws_client(f"ws://127.0.0.1:{port}/hold") as held:
            assert held.recv() == "holding"
            process.send_signal(signal.SIGTERM)
            with pytest.raises(ConnectionClosed):
                held.recv(timeout=10)
            # The handler still runs (up to shutdown_timeout): the process is draining, and a
            # probe can no longer connect, which an orchestrator counts as not ready.
            assert process.poll() is None
            assert status_of(port, "/healthz") is None
        assert process.wait(timeout=20) == 0
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    assert "hold handler ended" in process.stdout.read()


# -- the docs' examples ------------------------------------------------------------------------------
def test_the_operations_doc_example_runs_as_written(serve_native):
    blocks = re.findall(r"```python\n(.*?)```", DOC.read_text(), re.S)
    assert len(blocks) == 1
    namespace = {"__name__": "operations_doc"}
    exec(compile(blocks[0], "docs/operations.md block 0", "exec"), namespace)
    server = serve_native(namespace["app"])
    assert get(server.url("/healthz"))[::2] == (200, "ready\n")
    assert get(server.url("/metrics"))[0] == 403                       # the hook guards it
    with ws_client(server.ws_url("/chat/lobby")) as ws:
        ws.send("hello")
        assert ws.recv() == "[lobby] hello"
        status, _, text = get(server.url("/metrics"), {"Authorization": "Bearer scrape-token"})
    assert status == 200 and 'tether_websocket_connections{path="/chat/{room}"} 1.0' in text
    documented = set(re.findall(r"^\| `(tether_\w+)`", DOC.read_text(), re.M))
    exported = {family.name + ("_total" if family.type == "counter" else "")
                for family in text_string_to_metric_families(text) if family.name.startswith("tether_")}
    assert documented == exported  # the table lists exactly what the endpoint serves


def test_the_readme_operations_example_runs(tmp_path):
    """README's "Metrics and readiness": the quick-start app run with the command shown, then
    the two requests shown, with the answers shown."""
    text = README.read_text()
    section = text[text.index("### Metrics and readiness"):]
    block = re.search(r"```sh\n(.*?)```", section, re.S).group(1)
    command = next(line for line in block.splitlines() if line.startswith("tether run"))
    (tmp_path / "main.py").write_text(re.findall(r"```python\n(.*?)```", text, re.S)[0])
    port = reserve_port()
    process = subprocess.Popen([sys.executable, "-m", *command.split("#")[0].split(), "--port", str(port)],
                               cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        wait_until(lambda: status_of(port, "/healthz") == 200, timeout=20, message="the README's server up")
        with ws_client(f"ws://127.0.0.1:{port}/rooms/lobby") as one, ws_client(f"ws://127.0.0.1:{port}/rooms/attic"):
            assert one.recv() == "welcome to lobby"
            for line in block.splitlines():
                curl = re.match(r"curl -s localhost:8080(\S+)(?: \| grep (\S+))?\s+# (.*)", line)
                if curl:
                    path, pattern, shown = curl.groups()
                    _, _, body = get(f"http://127.0.0.1:{port}{path}")
                    if pattern:
                        body = "\n".join(row for row in body.splitlines() if re.search(pattern.strip("'"), row))
                    assert body.strip() == shown.strip(), line
    finally:
        process.send_signal(signal.SIGTERM)
        if "--shutdown-delay" in command:  # a second signal ends the delay
            wait_until(lambda: status_of(port, "/healthz") != 200, message="not ready after SIGTERM")
            process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()

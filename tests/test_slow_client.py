"""`slow_client="close"|"wait"` and `send_timeout`: who waits for a client that does not read,
how long, and how much the server holds for it meanwhile (tether.channel has the rule).

Real servers on 127.0.0.1 (the native one and, through the ASGI face, uvicorn, hypercorn
and granian: the `serve` fixture runs each test on each) with raw clients that stop reading,
and the TestClient, whose in-memory transport makes the buffer sizes exact. What a stalled
client holds is read on the server's loop with `buffered_bytes()`, the figure the rule
itself looks at.
"""

from __future__ import annotations

import asyncio
import itertools
import threading
from typing import Any

import pytest
from websockets.sync.client import connect

from tether import App
from tether.channel import WAIT_MODE_CAP
from tether.exceptions import WebSocketDisconnect
from tether.protocol import OP_BINARY, OP_TEXT, encode_frame
from tether.testing import TestClient

from .netutil import effective_rcvbuf, kernel_send_buffer_bound, small_rcvbuf_socket, wait_until, wait_until_stable
from .rawws import RawWebSocket

SERVERS = ("native", "uvicorn", "hypercorn", "granian")
LIMIT = 256 * 1024
PAYLOAD = b"x" * 65536
FRAME = len(encode_frame(OP_BINARY, PAYLOAD))  # what one delivery adds to a buffer


def subscriber_app(**settings: Any) -> App:
    """Connections on /sub?who=NAME join room "room" and read (and drop) what their client
    sends; each records its close code in `app.state.codes[NAME]`."""
    app = App(max_send_buffer=LIMIT, **settings)
    app.state.codes = {}

    @app.websocket("/sub")
    async def sub(websocket):
        await websocket.join("room")
        try:
            async for _ in websocket:
                pass
        finally:
            app.state.codes[websocket.query_params["who"]] = websocket.close_code

    return app


async def member(app: App, who: str) -> Any:
    """The open connection /sub?who=`who` (waits for its handler to have joined)."""
    for _ in range(1000):
        for connection_id in app.hub.members("room"):
            ws = app.hub.get(connection_id)
            if ws is not None and ws.query_params["who"] == who:
                return ws
        await asyncio.sleep(0.01)
    raise AssertionError(f"no connection {who!r}")


def flood_size(sock: Any) -> int:
    """Messages of PAYLOAD that are twice what the kernels and the limit can absorb between
    the server and a client that reads nothing: a flood that must end in a wait or a close."""
    absorbable = kernel_send_buffer_bound() + effective_rcvbuf(sock) + WAIT_MODE_CAP * LIMIT
    return max(64, 2 * absorbable // len(PAYLOAD))


def on_loop(server: Any, coro: Any) -> Any:
    """Start `coro` on the server's loop; the concurrent future of its result."""
    return asyncio.run_coroutine_threadsafe(coro, server.loop)


# -- "wait": awaited deliveries wait -----------------------------------------------------------
def test_wait_mode_an_awaited_broadcast_waits_for_a_client_that_stopped_reading_until_it_reads(serve):
    app = subscriber_app(slow_client="wait", send_timeout=60)
    server = serve(app)
    raw = RawWebSocket(server.port, "/sub?who=slow", sock=small_rcvbuf_socket(64 * 1024))
    count = flood_size(raw.sock)
    progress: dict[str, Any] = {"delivered": [], "peak": 0}

    async def flood() -> bool:
        slow = await member(app, "slow")
        for _ in range(count):
            progress["peak"] = max(progress["peak"], slow.channel.buffered_bytes())
            progress["delivered"].append(await app.hub.broadcast("/sub", PAYLOAD))
        return slow.closed

    try:
        flooding = on_loop(server, flood())
        sent = wait_until_stable(lambda: len(progress["delivered"]), settle=0.5, timeout=30,
                                 done=lambda n: n >= count)
        assert sent < count and not flooding.done()  # the broadcast waits for the reader...
        assert all(raw.next_event() == (OP_BINARY, PAYLOAD) for _ in range(count))  # ...which reads
        assert flooding.result(30) is False  # never closed
        assert progress["delivered"] == [1] * count
        assert progress["peak"] <= LIMIT + FRAME  # held at the limit: one message over it at most
        assert app.state.codes == {}
    finally:
        raw.close()


def test_wait_mode_a_broadcast_closes_a_stalled_reader_after_send_timeout_and_delivers_to_the_others(serve):
    timeout = 1.0
    app = subscriber_app(slow_client="wait", send_timeout=timeout)
    server = serve(app)
    stalled = RawWebSocket(server.port, "/sub?who=stalled", sock=small_rcvbuf_socket(4096))
    messages = flood_size(stalled.sock)
    got: list[int] = []

    def read_until_end(ws: Any) -> None:
        while (message := ws.recv(timeout=30)) != "end":
            got.append(len(message))

    async def flood() -> tuple[int, list[tuple[int, float]]]:
        loop = asyncio.get_running_loop()
        slow = await member(app, "stalled")
        await member(app, "reader")
        peak, calls = 0, []
        for _ in range(messages):
            peak = max(peak, slow.channel.buffered_bytes())
            start = loop.time()
            delivered = await app.hub.broadcast("/sub", PAYLOAD)
            calls.append((delivered, loop.time() - start))
            if slow.closed:
                break
        await app.hub.broadcast("/sub", "end")
        return peak, calls

    try:
        with connect(server.ws_url("/sub?who=reader"), max_size=None) as reader:
            reading = threading.Thread(target=read_until_end, args=(reader,))
            reading.start()
            peak, calls = on_loop(server, flood()).result(60)
            reading.join(30)
        *before, (delivered, took) = calls
        assert delivered == 1 and timeout <= took < timeout + 5  # waited send_timeout, then gave up on it
        assert all(count == 2 for count, _ in before)  # until then both had every message
        assert len(got) == len(calls)  # the reader had every one
        assert peak <= LIMIT + FRAME
        wait_until(lambda: "stalled" in app.state.codes)
        assert app.state.codes["stalled"] == 1008
    finally:
        stalled.close()


@pytest.mark.parametrize("mode", ["close", "wait"])
def test_own_sends_wait_for_a_client_that_does_not_read_in_both_modes_and_never_time_out(serve, mode):
    chunk = 65536
    sock = small_rcvbuf_socket(64 * 1024)
    count = flood_size(sock)
    progress = {"sent": 0}
    app = App(max_send_buffer=LIMIT, slow_client=mode, send_timeout=0.1)

    @app.websocket("/stream")
    async def stream(websocket):
        for _ in range(count):
            await websocket.send_bytes(b"y" * chunk)
            progress["sent"] += 1

    server = serve(app)
    raw = RawWebSocket(server.port, "/stream", sock=sock)
    try:
        # Stalled for longer than send_timeout: own sends are not bound by it.
        sent = wait_until_stable(lambda: progress["sent"], settle=0.5, timeout=20, done=lambda n: n >= count)
        assert sent < count
        assert all(raw.next_event() == (OP_BINARY, b"y" * chunk) for _ in range(count))
        assert raw.expect_close()[0] == 1000
    finally:
        raw.close()


# -- what cannot wait: the hard cap ------------------------------------------------------------
TWINS = {
    "broadcast_sync": lambda app, ws: app.hub.broadcast_sync("/sub", PAYLOAD),
    "publish_sync": lambda app, ws: app.hub.publish_sync("room", PAYLOAD),
    "send_to_sync": lambda app, ws: app.hub.send_to_sync(ws.id, PAYLOAD),
    "send_nowait": lambda app, ws: ws.send_nowait(PAYLOAD),
}


async def _await_broadcast(app: App, ws: Any) -> None:
    await app.hub.broadcast("/sub", PAYLOAD)


def _flood_until_closed(server: Any, app: App, send: Any, messages: int) -> int:
    """Deliver PAYLOAD to the stalled client with `send(app, ws)` until it is closed; the
    largest buffer it had just before a delivery."""
    async def flood() -> int:
        slow = await member(app, "stalled")
        peak = 0
        for _ in range(messages):
            peak = max(peak, slow.channel.buffered_bytes())
            result = send(app, slow)
            if asyncio.iscoroutine(result):
                await result
            await asyncio.sleep(0)
            if slow.closed:
                return peak
        raise AssertionError(f"still open after {messages} messages")

    return on_loop(server, flood()).result(60)


@pytest.mark.parametrize("twin", list(TWINS))
def test_wait_mode_deliveries_nobody_awaits_close_a_stalled_reader_past_twice_max_send_buffer(serve, twin):
    app = subscriber_app(slow_client="wait", send_timeout=60)
    server = serve(app)
    stalled = RawWebSocket(server.port, "/sub?who=stalled", sock=small_rcvbuf_socket(4096))
    try:
        peak = _flood_until_closed(server, app, TWINS[twin], flood_size(stalled.sock))
        # Let through past max_send_buffer (awaited deliveries would have waited there), closed
        # just past the cap: what it holds is bounded, and by that much.
        assert WAIT_MODE_CAP * LIMIT < peak <= WAIT_MODE_CAP * LIMIT + FRAME
        wait_until(lambda: "stalled" in app.state.codes)
        assert app.state.codes["stalled"] == 1008
    finally:
        stalled.close()


@pytest.mark.parametrize("delivery", ["await broadcast", "broadcast_sync", "send_nowait"])
def test_close_mode_is_unchanged_every_delivery_closes_a_stalled_reader_past_max_send_buffer(serve, delivery):
    app = subscriber_app()  # slow_client="close", the default
    server = serve(app)
    stalled = RawWebSocket(server.port, "/sub?who=stalled", sock=small_rcvbuf_socket(4096))
    send = _await_broadcast if delivery == "await broadcast" else TWINS[delivery]
    try:
        peak = _flood_until_closed(server, app, send, flood_size(stalled.sock))
        assert LIMIT < peak <= LIMIT + FRAME
        wait_until(lambda: "stalled" in app.state.codes)
        assert app.state.codes["stalled"] == 1008
    finally:
        stalled.close()


# -- the TestClient ----------------------------------------------------------------------------
def _testclient_app(limit: int, **settings: Any) -> App:
    """/sub: sends its connection id, then reads; records its close code. /pub: for each
    message "N SIZE", broadcasts N messages of SIZE characters (awaited), counting them in
    `app.state.sent`, and answers with the list of what each broadcast returned."""
    app = App(max_send_buffer=limit, **settings)
    app.state.codes = []
    app.state.sent = 0

    @app.websocket("/sub")
    async def sub(websocket):
        await websocket.send_text(websocket.id)
        try:
            async for _ in websocket:
                pass
        finally:
            app.state.codes.append(websocket.close_code)

    @app.websocket("/pub")
    async def pub(websocket):
        async for message in websocket:
            n, size = map(int, message.split())
            delivered = []
            for _ in range(n):
                delivered.append(await app.hub.broadcast("/sub", "x" * size))
                app.state.sent += 1
            await websocket.send_json(delivered)

    return app


@pytest.mark.parametrize("limit, size", [(1000, 300), (128 * 1024, 16 * 1024)])
def test_testclient_wait_mode_an_awaited_broadcast_waits_until_the_session_reads(limit, size):
    # 1000 bytes is under the transport's high-water mark (no drain event: looked at again),
    # 128 KiB over it (woken by the transport's drain).
    frame = len(encode_frame(OP_TEXT, b"x" * size))
    through = limit // frame + 1  # queued before the buffer is over the limit
    app = _testclient_app(limit, slow_client="wait", send_timeout=60)
    with TestClient(app) as client:
        with client.websocket_connect("/sub") as lazy, client.websocket_connect("/pub") as pub:
            lazy.receive_text()  # its id
            pub.send_text(f"12 {size}")
            assert wait_until_stable(lambda: app.state.sent, settle=0.3) == through
            assert all(lazy.receive_text() == "x" * size for _ in range(12))
            assert pub.receive_json() == [1] * 12
    assert app.state.codes == [1000]


def test_testclient_wait_mode_a_broadcast_closes_a_stalled_session_after_send_timeout():
    app = _testclient_app(1000, slow_client="wait", send_timeout=0.3)
    frame = len(encode_frame(OP_TEXT, b"x" * 300))

    @app.post("/notify")
    async def notify():
        loop = asyncio.get_running_loop()
        start = loop.time()
        delivered = await app.hub.broadcast("/sub", "x" * 300)
        return {"delivered": delivered, "took": loop.time() - start}

    with TestClient(app) as client:
        with client.websocket_connect("/sub") as reader, client.websocket_connect("/sub") as lazy:
            reader.receive_text(), lazy.receive_text()  # their ids
            results = []
            for _ in range(20):
                results.append(client.post("/notify").json())
                assert reader.receive_text() == "x" * 300  # reads: its buffer stays empty
                if results[-1]["delivered"] == 1:
                    break
            *before, last = results
            assert [r["delivered"] for r in before] == [2] * (1000 // frame + 1)
            assert last["delivered"] == 1 and 0.3 <= last["took"] < 5.3
            assert all(lazy.receive_text() == "x" * 300 for _ in before)  # what it held arrives
            with pytest.raises(WebSocketDisconnect) as info:
                lazy.receive_text()
            assert info.value.code == 1008 and "not reading" in info.value.reason
    assert sorted(app.state.codes) == [1000, 1008]


def test_testclient_wait_mode_send_to_waits_then_closes_a_stalled_session():
    app = _testclient_app(1000, slow_client="wait", send_timeout=0.3)

    @app.post("/to/{connection_id}")
    async def to(connection_id: str):
        loop = asyncio.get_running_loop()
        start = loop.time()
        ok = await app.hub.send_to(connection_id, "x" * 300)
        return {"ok": ok, "took": loop.time() - start}

    with TestClient(app) as client:
        with client.websocket_connect("/sub") as lazy:
            connection_id = lazy.receive_text()
            results = [client.post(f"/to/{connection_id}").json() for _ in range(5)]
            assert [r["ok"] for r in results] == [True] * 4 + [False]
            assert 0.3 <= results[-1]["took"] < 5.3
            assert all(lazy.receive_text() == "x" * 300 for _ in range(4))
            with pytest.raises(WebSocketDisconnect) as info:
                lazy.receive_text()
            assert info.value.code == 1008
            assert client.post(f"/to/{connection_id}").json()["ok"] is False  # gone


@pytest.mark.parametrize("mode, cap", [("close", 1), ("wait", WAIT_MODE_CAP)])
def test_testclient_sync_twins_close_a_stalled_session_past_the_cap_of_the_mode(mode, cap):
    limit, frame = 1000, len(encode_frame(OP_TEXT, b"x" * 300))
    app = App(max_send_buffer=limit, slow_client=mode, send_timeout=60)

    @app.websocket("/sub")
    async def sub(websocket):
        async for _ in websocket:
            pass

    @app.websocket("/pub")
    async def pub(websocket):
        await websocket.receive_text()
        lazy = next(app.hub.get(i) for i in app.hub.ids("/sub"))
        peak = 0
        for _ in range(100):
            peak = max(peak, lazy.channel.buffered_bytes())
            app.hub.broadcast_sync("/sub", "x" * 300)
            await asyncio.sleep(0)
            if lazy.closed:
                break
        await websocket.send_json({"peak": peak, "code": lazy.close_code})

    with TestClient(app) as client:
        with client.websocket_connect("/sub"), client.websocket_connect("/pub") as pub:
            pub.send_text("go")
            result = pub.receive_json()
    assert result["code"] == 1008
    assert cap * limit < result["peak"] <= cap * limit + frame


def test_testclient_wait_mode_own_sends_wait_for_the_session_without_a_timeout():
    app = App(slow_client="wait", send_timeout=0.1)
    app.state.sent = 0

    @app.websocket("/flood")
    async def flood(websocket):
        for _ in range(64):
            await websocket.send_bytes(b"z" * 16384)
            app.state.sent += 1

    with TestClient(app) as client, client.websocket_connect("/flood") as ws:
        assert wait_until_stable(lambda: app.state.sent, settle=0.3) < 64  # held back, longer than send_timeout
        assert all(ws.receive_bytes() == b"z" * 16384 for _ in range(64))
        with pytest.raises(WebSocketDisconnect) as info:
            ws.receive()
        assert info.value.code == 1000


_clusters = itertools.count()


def test_wait_mode_across_a_cluster_the_receiving_node_delivers_by_the_rule_for_what_nobody_awaits():
    # Node A's awaited broadcast waits only for A's own slow members: the envelope leaves at
    # once, and node B, where nobody awaits it, lets its stalled member grow to the cap, then
    # closes it (1008).
    backplane = f"memory://slow-client-{next(_clusters)}"
    a = _testclient_app(1000, slow_client="wait", send_timeout=60, backplane=backplane)
    b = _testclient_app(1000, slow_client="wait", send_timeout=60, backplane=backplane)
    frame = len(encode_frame(OP_TEXT, b"x" * 300))
    through = WAIT_MODE_CAP * 1000 // frame + 1

    @a.post("/notify")
    async def notify():
        return {"delivered": await a.hub.broadcast("/sub", "x" * 300)}

    with TestClient(a) as on_a, TestClient(b) as on_b:
        with on_a.websocket_connect("/sub") as reader, on_b.websocket_connect("/sub") as lazy:
            reader.receive_text(), lazy.receive_text()
            for _ in range(through + 3):
                assert on_a.post("/notify").json() == {"delivered": 1}  # A's member only; no wait
                assert reader.receive_text() == "x" * 300
            wait_until(lambda: b.state.codes, message="B closing its stalled member")
            assert b.state.codes == [1008]
            assert all(lazy.receive_text() == "x" * 300 for _ in range(through))
            with pytest.raises(WebSocketDisconnect) as info:
                lazy.receive_text()
            assert info.value.code == 1008


def test_send_timeout_is_a_positive_number_of_seconds():
    assert App().settings.send_timeout == 10.0
    assert App(slow_client="wait", send_timeout=2.5).settings.send_timeout == 2.5
    for bad in (0, -1):
        with pytest.raises(ValueError, match="send_timeout"):
            App(send_timeout=bad)

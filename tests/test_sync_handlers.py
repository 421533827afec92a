"""Where handlers run, on the native server with real clients: a sync `def` HTTP handler (and
hook) runs in tether's thread pool, so it does not stall the loop; WebSocket callbacks run on
the loop, in order; the loop-lag watchdog names whatever blocks the loop (`loop_lag_warning`).
"""

from __future__ import annotations

import http.client
import json
import logging
import threading
import time
from collections.abc import Callable
from typing import Any

import pytest
from websockets.sync.client import connect

from tether import App, WebSocket


def get(server: Any, path: str, timeout: float = 10) -> tuple[int, str]:
    connection = http.client.HTTPConnection("127.0.0.1", server.port, timeout=timeout)
    try:
        connection.request("GET", path)
        response = connection.getresponse()
        return response.status, response.read().decode()
    finally:
        connection.close()


def wait_for(condition: Callable[[], Any], timeout: float = 3.0) -> Any:
    deadline = time.monotonic() + timeout
    while not (found := condition()):
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.02)
    return found


def test_a_blocking_sync_route_does_not_delay_another_connections_websocket_echo(serve_native: Any) -> None:
    app = App()
    started = threading.Event()

    @app.get("/slow")
    def slow() -> str:
        started.set()
        time.sleep(1.5)
        return "slow done"

    @app.websocket("/echo")
    async def echo(websocket: Any) -> None:
        async for message in websocket:
            await websocket.send(message)

    server = serve_native(app)
    answered: list[tuple[int, str]] = []
    with connect(server.ws_url("/echo")) as ws:
        request = threading.Thread(target=lambda: answered.append(get(server, "/slow")))
        request.start()
        assert started.wait(5)
        for i in range(5):
            ws.send(f"ping {i}")
            assert ws.recv(timeout=5) == f"ping {i}"
        assert not answered  # every round trip done while the slow request is still in flight
        request.join(10)
    assert answered == [(200, "slow done")]


def test_sync_route_and_hooks_run_in_the_pool_and_hub_sync_calls_work_from_there(serve_native: Any) -> None:
    app = App()
    threads: dict[str, str] = {}
    events = WebSocket(app, "/events")

    @events.on("connect")
    def connected(ws: Any) -> str:
        threads["ws connect"] = threading.current_thread().name
        return f"id {ws.id}"

    @app.before_request
    def before(request: Any) -> None:
        threads["before_request"] = threading.current_thread().name

    @app.get("/notify/{connection_id}")
    def notify(connection_id: str) -> dict[str, Any]:
        threads["route"] = threading.current_thread().name
        app.hub.send_to_sync(connection_id, "sent from a sync route")
        app.hub.broadcast_sync("/events", "broadcast from a sync route")
        return {"notified": connection_id}

    @app.get("/async")
    async def on_the_loop() -> str:
        threads["async route"] = threading.current_thread().name
        return "ok"

    server = serve_native(app)
    with connect(server.ws_url("/events")) as ws:
        connection_id = ws.recv(timeout=5).removeprefix("id ")
        status, body = get(server, f"/notify/{connection_id}")
        assert (status, json.loads(body)) == (200, {"notified": connection_id})
        assert ws.recv(timeout=5) == "sent from a sync route"
        assert ws.recv(timeout=5) == "broadcast from a sync route"
    assert get(server, "/async") == (200, "ok")
    loop_thread = server._thread.name
    assert threads["route"].startswith("tether-sync") and threads["before_request"].startswith("tether-sync")
    assert threads["async route"] == loop_thread and threads["ws connect"] == loop_thread


def test_a_sync_event_handler_keeps_message_order_and_its_replies(serve_native: Any) -> None:
    app = App()
    events = WebSocket(app, "/web_socket")
    seen: list[str] = []

    @events.on("message")
    def message(ws: Any, msg: str) -> str:
        seen.append(msg)
        if msg.endswith("0"):
            ws.sync_send_to(ws.id, f"also {msg}")  # sent before the return value
        return f"echo: {msg}"

    server = serve_native(app)
    sent = [f"m{i}" for i in range(200)]
    with connect(server.ws_url("/web_socket")) as ws:
        for text in sent:
            ws.send(text)
        replies = [ws.recv(timeout=5) for _ in range(200 + 20)]
    expected = [r for m in sent for r in ([f"also {m}"] if m.endswith("0") else []) + [f"echo: {m}"]]
    assert replies == expected
    assert seen == sent


@pytest.fixture
def warnings(caplog: pytest.LogCaptureFixture) -> pytest.LogCaptureFixture:
    caplog.set_level(logging.WARNING, logger="tether")
    return caplog


def blocked_warnings(caplog: pytest.LogCaptureFixture, naming: str) -> list[str]:
    return [r.getMessage() for r in caplog.records
            if r.levelno == logging.WARNING and "event loop was blocked" in r.getMessage() and naming in r.getMessage()]


def test_the_watchdog_names_an_async_handler_that_blocks_the_loop(serve_native: Any, warnings: Any) -> None:
    app = App()

    @app.get("/blocking")
    async def blocking_async_route() -> str:
        time.sleep(0.6)  # the mistake the watchdog is for
        return "done"

    server = serve_native(app)
    assert get(server, "/blocking") == (200, "done")
    [message] = wait_for(lambda: blocked_warnings(warnings, "blocking_async_route ("))
    assert "test_sync_handlers.py:" in message and "loop_lag_warning = 0.25 s" in message, message


def test_the_watchdog_names_a_sync_websocket_callback_blocking_inline(serve_native: Any, warnings: Any) -> None:
    app = App()
    events = WebSocket(app, "/web_socket")

    @events.on("message")
    def slow_message(ws: Any, msg: str) -> str:
        time.sleep(0.6)
        return msg

    server = serve_native(app)
    with connect(server.ws_url("/web_socket")) as ws:
        ws.send("hi")
        assert ws.recv(timeout=5) == "hi"
    [message] = wait_for(lambda: blocked_warnings(warnings, "slow_message ("))
    assert "test_sync_handlers.py:" in message, message


def test_loop_lag_warning_0_starts_no_watchdog(serve_native: Any) -> None:
    server = serve_native(App(loop_lag_warning=0))
    assert server.server._watchdog is None

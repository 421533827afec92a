"""Defects a review of the source found, pinned so they stay fixed."""

from __future__ import annotations

import asyncio
import gc
import logging

import pytest

from tether import App, GenericWebsocket
from tether.server.serve import Server, new_event_loop
from tether.tasks import spawn
from tether.testing import TestClient


def test_a_plain_class_on_a_path_with_a_parameter_is_a_clear_type_error():
    """It used to raise KeyError('room'): the path's {room} was consumed by str.format()."""
    app = App()

    class NotAnEndpoint:
        pass

    with pytest.raises(TypeError, match=r"route '/rooms/\{room\}': class .*NotAnEndpoint is not a GenericWebsocket"):
        app.websocket("/rooms/{room}")(NotAnEndpoint)


def test_disconnect_runs_once_even_when_receive_raises():
    seen = []

    class Failing(GenericWebsocket):
        async def receive(self, data):
            raise ValueError("bad message")

        async def disconnect(self, code, reason):
            seen.append(code)

    app = App()
    app.websocket("/fail")(Failing)
    with TestClient(app, raise_server_exceptions=False) as client, client.websocket_connect("/fail") as ws:
        ws.send_text("boom")
        with pytest.raises(Exception) as closed:
            ws.receive_text()
        assert getattr(closed.value, "code", None) == 1011
    assert seen == [1011]


def test_a_spawned_task_is_kept_alive_until_it_ends():
    """The loop holds tasks weakly: an unreferenced fire-and-forget task could be collected
    mid-flight. spawn() keeps a reference until the task is done."""
    loop = new_event_loop()
    done = []

    async def background() -> None:
        await asyncio.sleep(0.05)
        done.append(True)

    async def main() -> None:
        spawn(background())  # the result is dropped on purpose
        gc.collect()
        await asyncio.sleep(0.2)

    try:
        loop.run_until_complete(main())
    finally:
        loop.close()
    assert done == [True]


def test_stop_before_serve_makes_serve_return_at_once(caplog):
    """Server.stop() before serve() raised AttributeError; now serve() shuts down as soon
    as it has started."""
    caplog.set_level(logging.INFO, "tether")
    loop = new_event_loop()
    server = Server(App(), "127.0.0.1", 0)
    server.stop()
    try:
        loop.run_until_complete(asyncio.wait_for(server.serve(install_signals=False), 10))
    finally:
        loop.close()
    assert any("shutting down" in record.getMessage() for record in caplog.records)

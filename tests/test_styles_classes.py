"""tether.styles.classes, the class style (`GenericWebsocket`), through the in-process
TestClient (docs/styles.md's example of it runs over real sockets in tests/test_docs.py)."""

from __future__ import annotations

import pytest

from tether import App, GenericWebsocket
from tether.testing import TestClient


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

"""The core connection (`tether.websocket_connection`): what a send after a close tells a
handler, through an App and the in-process TestClient. These belong in
tests/test_core_websocket.py, beside the recording-channel tests of the same two rules
(`test_a_send_after_the_same_task_closed_raises_invalid_state_and_receive_raises_disconnect`,
`test_after_a_peer_close_receive_and_send_raise_websocket_disconnect_with_the_peer_code`);
they wait here while that file is being changed for another part of issue 17."""

from __future__ import annotations

import pytest

from tether import App, InvalidState, WebSocketDisconnect
from tether.testing import TestClient

from .netutil import wait_until


def test_sending_after_ones_own_close_is_a_clear_error():
    app = App()
    seen = []

    @app.websocket("/closer")
    async def closer(websocket):
        await websocket.close(4000, "done")
        try:
            await websocket.send_text("too late")
        except Exception as exc:  # noqa: BLE001 - the test records what the handler saw
            seen.append(exc)

    with TestClient(app) as client, client.websocket_connect("/closer") as ws:
        with pytest.raises(WebSocketDisconnect) as closed:
            ws.receive_text()
        assert closed.value.code == 4000
    wait_until(lambda: seen, timeout=5, message="the handler's send")
    assert isinstance(seen[0], InvalidState)
    assert "send after close()" in str(seen[0])


def test_a_send_after_the_client_left_is_still_a_disconnect():
    app = App()
    seen = []

    @app.websocket("/leaver")
    async def leaver(websocket):
        try:
            await websocket.receive_text()
        except WebSocketDisconnect:
            pass
        try:
            await websocket.send_text("anyone?")
        except Exception as exc:  # noqa: BLE001
            seen.append(exc)

    with TestClient(app) as client, client.websocket_connect("/leaver") as ws:
        ws.close(1000)
    wait_until(lambda: seen, timeout=5, message="the handler's send")
    assert type(seen[0]) is WebSocketDisconnect

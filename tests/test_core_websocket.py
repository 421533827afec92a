"""The core connection (`tether.WebSocketConnection`) driven through a recording channel:
no socket, no server. The test plays the road: it calls `channel.ended(...)`,
`channel.fail(...)`, `ws.message_received(...)` and reads what the core asked the road to do
(`channel.events`, see tests/recording.py). The last tests run a send after a close through
an App and the TestClient."""

from __future__ import annotations

import asyncio
import logging

import pytest

import tether
from tether import App, ConnectionState, Hub, InvalidState, WebSocketConnection, WebSocketDisconnect
from tether.protocol import OP_BINARY, OP_TEXT, encode_frame
from tether.testing import TestClient

from .netutil import wait_until
from .recording import RecordingChannel, async_test, open_connection, settle

CONNECTING, OPEN, CLOSING, CLOSED = ConnectionState


def new_hub() -> Hub:
    hub = Hub()
    hub.bind(asyncio.get_running_loop())
    return hub


def counting_close_callback(ws: WebSocketConnection, reply: object = None) -> list[int]:
    """Register an on_close callback that counts its runs (and returns `reply`)."""
    runs: list[int] = []

    async def on_close() -> object:
        runs.append(1)
        return reply

    ws.on_close(on_close)
    return runs


def test_the_core_connection_is_exported_as_websocket_connection() -> None:
    assert tether.WebSocketConnection is WebSocketConnection
    assert WebSocketConnection.__module__ == "tether.websocket_connection"


# -- every close path runs the close callbacks exactly once ----------------------------------
@async_test
async def test_server_close_runs_close_callbacks_once_and_sends_their_reply_before_the_close_frame() -> None:
    ws, channel = await open_connection(new_hub())
    runs = counting_close_callback(ws, reply="goodbye")
    await ws.close(4000, "done")
    await settle()
    assert runs == [1]
    assert channel.events == [("message", OP_TEXT, b"goodbye"), ("close", 4000, "done", True)]
    channel.ended(4000, "")  # the peer answers the close
    await settle()
    assert runs == [1]
    assert ws.close_code == 4000 and ws.closed_by == "server"


@async_test
async def test_server_close_sends_every_non_empty_reply_in_registration_order_and_skips_empty_ones() -> None:
    ws, channel = await open_connection(new_hub())
    for reply in ("first", None, "", b"", {"bye": True}, b"\x01"):
        counting_close_callback(ws, reply=reply)
    await ws.close()
    assert channel.events == [
        ("message", OP_TEXT, b"first"),
        ("message", OP_TEXT, b'{"bye":true}'),
        ("message", OP_BINARY, b"\x01"),
        ("close", 1000, "", True),
    ]


@async_test
async def test_close_called_twice_runs_close_callbacks_once_and_writes_one_close() -> None:
    ws, channel = await open_connection(new_hub())
    runs = counting_close_callback(ws, reply="x")
    await ws.close(1000)
    await ws.close(1001)
    await settle()
    assert runs == [1]
    assert channel.closes() == [(1000, "", True)]
    assert channel.messages() == ["x"]
    assert ws.close_code == 1000


@async_test
async def test_a_second_close_while_the_first_awaits_its_callback_does_nothing() -> None:
    ws, channel = await open_connection(new_hub())
    release = asyncio.get_running_loop().create_future()
    runs: list[int] = []

    async def slow() -> str:
        runs.append(1)
        await release
        return "last"

    ws.on_close(slow)
    first = asyncio.ensure_future(ws.close(1000))
    await settle()
    assert runs == [1] and not first.done()
    await ws.close(1011)  # returns at once: the close has begun
    assert channel.events == []
    release.set_result(None)
    await first
    assert runs == [1]
    assert channel.events == [("message", OP_TEXT, b"last"), ("close", 1000, "", True)]


@async_test
async def test_client_close_runs_close_callbacks_once_without_sending_their_reply() -> None:
    ws, channel = await open_connection(new_hub())
    runs = counting_close_callback(ws, reply="never sent")
    channel.ended(1000, "")
    await settle()
    assert runs == [1]
    assert channel.events == []
    assert ws.close_code == 1000 and ws.closed_by == "client"
    assert ws.closed
    with pytest.raises(WebSocketDisconnect) as info:
        await ws.receive()
    assert info.value.code == 1000


@async_test
async def test_dead_peer_runs_close_callbacks_once_with_close_code_1006() -> None:
    ws, channel = await open_connection(new_hub())
    runs = counting_close_callback(ws, reply="never sent")
    channel.ended(1006, "connection lost")
    await settle()
    assert runs == [1]
    assert channel.events == []
    assert (ws.close_code, ws.close_reason, ws.closed_by) == (1006, "connection lost", "client")
    assert ws.connection_state is CLOSED


@pytest.mark.parametrize("code", [1002, 1007, 1008, 1009, 1011])
@async_test
async def test_failing_the_connection_writes_a_close_without_waiting_and_runs_close_callbacks_once(code: int) -> None:
    ws, channel = await open_connection(new_hub())
    runs = counting_close_callback(ws, reply="never sent")
    channel.fail(code, "bad")
    assert ws.connection_state is CLOSING
    assert ws.close_code == code
    await settle()
    assert runs == [1]
    channel.ended(1006, "connection lost")  # the road then drops the transport
    await settle()
    assert runs == [1]
    assert channel.events == [("close", code, "bad", False)]
    assert ws.close_code == code  # the first end counts


@async_test
async def test_close_after_the_peer_closed_does_nothing_and_callbacks_ran_once() -> None:
    ws, channel = await open_connection(new_hub())
    runs = counting_close_callback(ws, reply="never sent")
    channel.ended(1001, "going away")
    await ws.close(1000)  # before the spawned callbacks had a turn
    await settle()
    await ws.close(1000)
    await settle()
    assert runs == [1]
    assert channel.events == []
    assert ws.close_code == 1001


@async_test
async def test_the_end_reported_three_times_runs_callbacks_once_and_keeps_the_first_code() -> None:
    ws, channel = await open_connection(new_hub())
    runs = counting_close_callback(ws)
    disconnects: list[int] = []
    ws.on_disconnect(lambda: disconnects.append(1))
    channel.ended(1001, "first")
    channel.fail(1006, "second")
    channel.ended(1000, "third")
    await settle()
    assert runs == [1] and disconnects == [1]
    assert (ws.close_code, ws.close_reason) == (1001, "first")


@async_test
async def test_peer_close_during_the_server_close_callbacks_does_not_run_them_again() -> None:
    ws, channel = await open_connection(new_hub())
    release = asyncio.get_running_loop().create_future()
    runs: list[int] = []

    async def slow() -> str:
        runs.append(1)
        await release
        return "too late"

    ws.on_close(slow)
    closing = asyncio.ensure_future(ws.close(1000))
    await settle()
    channel.ended(1006, "connection lost")
    release.set_result(None)
    await closing
    await settle()
    assert runs == [1]
    assert channel.events == []  # the connection was gone: no reply, no close frame
    assert ws.close_code == 1006


@async_test
async def test_a_raising_close_callback_is_logged_and_the_server_close_still_completes(
        caplog: pytest.LogCaptureFixture) -> None:
    ws, channel = await open_connection(new_hub())

    async def broken() -> None:
        raise ValueError("boom")

    ws.on_close(broken)
    runs = counting_close_callback(ws, reply="after")
    with caplog.at_level(logging.ERROR, logger="tether"):
        await ws.close(1000)
    assert runs == [1]
    assert channel.events == [("message", OP_TEXT, b"after"), ("close", 1000, "", True)]
    assert ws.connection_state is CLOSING
    [record] = [r for r in caplog.records if "on_close callback" in r.getMessage()]
    assert "/p" in record.getMessage()
    assert record.exc_info is not None and isinstance(record.exc_info[1], ValueError)


@async_test
async def test_a_raising_close_callback_is_logged_and_the_client_close_still_runs_the_others(
        caplog: pytest.LogCaptureFixture) -> None:
    ws, channel = await open_connection(new_hub())

    async def broken() -> None:
        raise RuntimeError("boom")

    ws.on_close(broken)
    runs = counting_close_callback(ws)
    with caplog.at_level(logging.ERROR, logger="tether"):
        channel.ended(1000, "")
        await settle()
    assert runs == [1]
    assert any("on_close callback" in r.getMessage() and r.exc_info for r in caplog.records)


# -- on_disconnect: peer-side ends only ----------------------------------------------------
@pytest.mark.parametrize("code", [1000, 1001, 1006])
@async_test
async def test_on_disconnect_is_called_at_once_when_the_peer_closes_or_vanishes(code: int) -> None:
    ws, channel = await open_connection(new_hub())
    calls: list[int | None] = []
    ws.on_disconnect(lambda: calls.append(ws.close_code))
    channel.ended(code, "")
    assert calls == [code]  # synchronously, inside the road's call
    await settle()
    assert calls == [code]


@async_test
async def test_on_disconnect_is_not_called_on_a_server_close() -> None:
    ws, channel = await open_connection(new_hub())
    calls: list[int] = []
    ws.on_disconnect(lambda: calls.append(1))
    await ws.close(1000)
    channel.ended(1000, "")  # the peer answers our close
    await settle()
    assert calls == []


@async_test
async def test_on_disconnect_remover_unregisters_only_that_callback() -> None:
    ws, channel = await open_connection(new_hub())
    calls: list[str] = []
    remove_a = ws.on_disconnect(lambda: calls.append("a"))
    ws.on_disconnect(lambda: calls.append("b"))
    remove_a()
    channel.ended(1001, "")
    assert calls == ["b"]


@async_test
async def test_on_disconnect_runs_before_the_close_callbacks() -> None:
    ws, channel = await open_connection(new_hub())
    order: list[str] = []

    async def on_close() -> None:
        order.append("close")

    ws.on_close(on_close)
    ws.on_disconnect(lambda: order.append("disconnect"))
    channel.ended(1000, "")
    await settle()
    assert order == ["disconnect", "close"]


@async_test
async def test_a_raising_disconnect_callback_does_not_stop_the_close_callbacks() -> None:
    ws, channel = await open_connection(new_hub())
    runs = counting_close_callback(ws)

    def broken() -> None:
        raise ValueError("boom")

    ws.on_disconnect(broken)
    try:
        channel.ended(1006, "connection lost")
    except ValueError:
        pass
    await settle()
    assert runs == [1]


# -- program order --------------------------------------------------------------------------
@async_test
async def test_own_sends_send_nowait_and_hub_deliveries_keep_program_order() -> None:
    hub = new_hub()
    ws, channel = await open_connection(hub)
    await ws.join("room")
    await ws.send_text("1")
    ws.send_nowait("2")
    await hub.send_to(ws.id, "3")
    await ws.send_bytes(b"4")
    await hub.broadcast("/p", "5")
    hub.send_to_sync(ws.id, "6")  # on the loop's thread: at once
    await ws.send_json({"n": 7})
    await hub.publish("room", "8")
    ws.send_nowait(b"9")
    await ws.send([10])
    await ws.broadcast("11")
    assert channel.messages() == ["1", "2", "3", b"4", "5", "6", '{"n":7}', "8", b"9", "[10]", "11"]


@async_test
async def test_deliveries_hand_the_road_a_ready_frame_matching_opcode_and_payload() -> None:
    hub = new_hub()
    ws, channel = await open_connection(hub)
    ws.send_nowait("é")
    await hub.broadcast("/p", b"\x00\x01")
    await hub.send_to(ws.id, {"a": [1]})
    assert channel.frames == [encode_frame(OP_TEXT, "é".encode()), encode_frame(OP_BINARY, b"\x00\x01"),
                              encode_frame(OP_TEXT, b'{"a":[1]}')]


@async_test
async def test_own_send_waits_for_the_drain_future_and_deliveries_do_not() -> None:
    hub = new_hub()
    ws, channel = await open_connection(hub)
    channel.drain_future = asyncio.get_running_loop().create_future()
    sending = asyncio.ensure_future(ws.send_text("paced"))
    await settle()
    assert channel.messages() == ["paced"]  # queued at once; the sender waits for the drain
    assert not sending.done()
    ws.send_nowait("delivered")
    assert await hub.broadcast("/p", "broadcast") == 1
    assert not sending.done()
    channel.drain_future.set_result(None)
    await sending
    assert channel.messages() == ["paced", "delivered", "broadcast"]


# -- limits ---------------------------------------------------------------------------------
@async_test
async def test_deliver_past_max_send_buffer_fails_with_1008_and_returns_false() -> None:
    hub = new_hub()
    ws, channel = await open_connection(hub, max_send_buffer=100)
    runs = counting_close_callback(ws)
    disconnects: list[int] = []
    ws.on_disconnect(lambda: disconnects.append(1))
    channel.buffered = 101
    frame = encode_frame(OP_TEXT, b"x")
    assert channel.deliver(frame, OP_TEXT, b"x") is False
    assert channel.events == [("close", 1008, "send buffer over 100 bytes: the client is not reading", False)]
    assert ws.close_code == 1008 and ws.connection_state is CLOSING
    assert ws.id not in hub
    await settle()
    assert runs == [1] and disconnects == [1]
    assert channel.deliver(frame, OP_TEXT, b"x") is False  # no longer open
    assert channel.closes() == [(1008, "send buffer over 100 bytes: the client is not reading", False)]


@async_test
async def test_deliver_at_exactly_max_send_buffer_is_still_queued() -> None:
    ws, channel = await open_connection(new_hub(), max_send_buffer=100)
    channel.buffered = 100
    assert channel.deliver(encode_frame(OP_TEXT, b"x"), OP_TEXT, b"x") is True
    assert channel.events == [("message", OP_TEXT, b"x")]
    assert ws.connection_state is OPEN


@async_test
async def test_send_nowait_to_a_client_not_reading_closes_with_1008() -> None:
    ws, channel = await open_connection(new_hub(), max_send_buffer=10)
    channel.buffered = 11
    ws.send_nowait("dropped")
    assert [e[:2] for e in channel.events] == [("close", 1008)]
    assert ws.close_code == 1008
    with pytest.raises(WebSocketDisconnect) as info:
        ws.send_nowait("again")
    assert info.value.code == 1008


@async_test
async def test_own_sends_are_not_subject_to_the_1008_rule() -> None:
    ws, channel = await open_connection(new_hub(), max_send_buffer=10)
    channel.buffered = 1000
    await ws.send_text("paced, not dropped")
    assert channel.events == [("message", OP_TEXT, b"paced, not dropped")]
    assert ws.connection_state is OPEN


@pytest.mark.parametrize("state", [CONNECTING, CLOSING, CLOSED])
@async_test
async def test_deliver_to_a_connection_that_is_not_open_writes_nothing_and_returns_false(state: ConnectionState) -> None:
    channel = RecordingChannel()
    WebSocketConnection(channel, new_hub(), path="/p")
    if state is not CONNECTING:  # the state machine's own steps: accept, then close (and the answer)
        channel.protocol.accept()
        channel.protocol.close(1000, "")
        if state is CLOSED:
            channel.protocol.close_received(1000, "")
    assert channel.state is state
    channel.buffered = 10**9  # not open wins over the 1008 rule: no close is written
    assert channel.deliver(encode_frame(OP_TEXT, b"x"), OP_TEXT, b"x") is False
    assert channel.events == []


@async_test
async def test_max_queue_unread_messages_pause_reading_once_and_draining_to_half_resumes_it() -> None:
    ws, channel = await open_connection(new_hub(), max_queue=4)
    for n in range(3):
        ws.message_received(f"m{n}")
    assert channel.events == []
    ws.message_received("m3")
    assert channel.events == [("pause",)]
    ws.message_received("m4")  # a road may still hand over what it had read
    assert channel.events == [("pause",)]
    assert await ws.receive() == "m0"  # 4 left
    assert await ws.receive() == "m1"  # 3 left
    assert channel.events == [("pause",)]
    assert await ws.receive() == "m2"  # 2 left: half of max_queue
    assert channel.events == [("pause",), ("resume",)]
    assert [await ws.receive(), await ws.receive()] == ["m3", "m4"]
    assert channel.events == [("pause",), ("resume",)]
    for n in range(4):
        ws.message_received(f"again{n}")
    assert channel.events == [("pause",), ("resume",), ("pause",)]


@async_test
async def test_a_message_for_a_pending_receive_is_handed_over_without_queueing() -> None:
    ws, channel = await open_connection(new_hub(), max_queue=1)
    receiving = asyncio.ensure_future(ws.receive())
    await settle()
    ws.message_received(b"direct")
    assert await receiving == b"direct"
    assert channel.events == []  # it never counted against max_queue


# -- state ----------------------------------------------------------------------------------
@async_test
async def test_connection_state_goes_connecting_open_closing_closed() -> None:
    channel = RecordingChannel()
    ws = WebSocketConnection(channel, new_hub(), path="/p")
    assert ws.connection_state is CONNECTING and not ws.accepted and not ws.closed
    await ws.accept()
    assert ws.connection_state is OPEN and ws.accepted and not ws.closed
    await ws.close()
    assert ws.connection_state is CLOSING and ws.closed
    channel.ended(1000, "")
    assert ws.connection_state is CLOSED and ws.closed
    assert ws.connection_state is channel.state


@async_test
async def test_a_peer_close_moves_an_open_connection_straight_to_closed() -> None:
    ws, channel = await open_connection(new_hub())
    channel.ended(1000, "")
    assert ws.connection_state is CLOSED and ws.closed


@async_test
async def test_receive_before_accept_raises_invalid_state() -> None:
    ws = WebSocketConnection(RecordingChannel(), new_hub(), path="/p")
    for receive in (ws.receive, ws.receive_text, ws.receive_bytes, ws.receive_json):
        with pytest.raises(InvalidState, match="before accept"):
            await receive()
    assert issubclass(InvalidState, RuntimeError)


@pytest.mark.parametrize("method, data", [("send_text", "x"), ("send_bytes", b"x"), ("send_json", {}),
                                          ("send", "x"), ("send_nowait", "x")])
@async_test
async def test_send_before_accept_raises_invalid_state(method: str, data: object) -> None:
    channel = RecordingChannel()
    ws = WebSocketConnection(channel, new_hub(), path="/p")
    with pytest.raises(InvalidState, match="before accept"):
        result = getattr(ws, method)(data)
        if asyncio.iscoroutine(result):
            await result
    with pytest.raises(RuntimeError):
        await ws.send_text("x")
    assert channel.events == []


@async_test
async def test_after_a_server_close_receive_and_send_raise_websocket_disconnect_with_the_close_code() -> None:
    ws, channel = await open_connection(new_hub())
    await asyncio.ensure_future(ws.close(4001, "bye"))  # closed by another task (a hub, a timer...)
    calls = [ws.receive, lambda: ws.send_text("x"), lambda: ws.send_bytes(b"x"), lambda: ws.send_json(1),
             lambda: ws.send("x")]
    for call in calls:
        with pytest.raises(WebSocketDisconnect) as info:
            await call()
        assert (info.value.code, info.value.reason) == (4001, "bye")
    with pytest.raises(WebSocketDisconnect):
        ws.send_nowait("x")
    channel.ended(4001, "")
    for call in (ws.receive, lambda: ws.send_text("x")):
        with pytest.raises(WebSocketDisconnect) as info:
            await call()
        assert info.value.code == 4001
    assert channel.closes() == [(4001, "bye", True)]
    assert channel.messages() == []


@async_test
async def test_a_send_after_the_same_task_closed_raises_invalid_state_and_receive_raises_disconnect() -> None:
    ws, channel = await open_connection(new_hub())
    await ws.close(4001, "bye")
    for call in (lambda: ws.send_text("x"), lambda: ws.send("x")):
        with pytest.raises(InvalidState, match="send after close"):
            await call()
    with pytest.raises(InvalidState, match="send after close"):
        ws.send_nowait("x")
    with pytest.raises(WebSocketDisconnect) as info:
        await ws.receive()
    assert info.value.code == 4001
    assert channel.messages() == []


@async_test
async def test_after_a_peer_close_receive_and_send_raise_websocket_disconnect_with_the_peer_code() -> None:
    ws, channel = await open_connection(new_hub())
    channel.ended(1001, "going away")
    for call in (ws.receive, lambda: ws.send_text("x")):
        with pytest.raises(WebSocketDisconnect) as info:
            await call()
        assert (info.value.code, info.value.reason) == (1001, "going away")
    assert channel.events == []


@async_test
async def test_a_pending_receive_is_woken_by_a_peer_close() -> None:
    ws, channel = await open_connection(new_hub())
    receiving = asyncio.ensure_future(ws.receive())
    await settle()
    assert not receiving.done()
    channel.ended(1001, "going away")
    with pytest.raises(WebSocketDisconnect) as info:
        await receiving
    assert (info.value.code, info.value.reason) == (1001, "going away")


@async_test
async def test_a_pending_receive_is_woken_by_a_server_close() -> None:
    ws, _ = await open_connection(new_hub())
    receiving = asyncio.ensure_future(ws.receive())
    await settle()
    await ws.close(4002, "shutting down")
    with pytest.raises(WebSocketDisconnect) as info:
        await receiving
    assert (info.value.code, info.value.reason) == (4002, "shutting down")


@async_test
async def test_async_iteration_yields_messages_and_ends_when_the_peer_closes() -> None:
    ws, channel = await open_connection(new_hub())
    ws.message_received("a")
    ws.message_received(b"b")
    got: list[str | bytes] = []

    async def read_all() -> None:
        async for message in ws:
            got.append(message)

    reading = asyncio.ensure_future(read_all())
    await settle()
    assert got == ["a", b"b"] and not reading.done()
    channel.ended(1000, "")
    await reading
    assert got == ["a", b"b"]


@async_test
async def test_typed_receives_refuse_the_other_kind_of_message() -> None:
    ws, _ = await open_connection(new_hub())
    ws.message_received(b"bin")
    with pytest.raises(TypeError, match="receive_text\\(\\) got a binary message"):
        await ws.receive_text()
    ws.message_received("txt")
    with pytest.raises(TypeError, match="receive_bytes\\(\\) got a text message"):
        await ws.receive_bytes()
    ws.message_received('{"a": 1}')
    assert await ws.receive_json() == {"a": 1}


@async_test
async def test_accept_after_the_client_left_during_the_handshake_raises_websocket_disconnect() -> None:
    hub = new_hub()
    channel = RecordingChannel()
    ws = WebSocketConnection(channel, hub, path="/p")
    channel.ended(1001, "gone")
    with pytest.raises(WebSocketDisconnect) as info:
        await ws.accept()
    assert info.value.code == 1001
    assert channel.events == [] and len(hub) == 0


@async_test
async def test_accept_after_the_client_left_before_the_core_was_attached_raises_1006() -> None:
    hub = new_hub()
    channel = RecordingChannel()
    channel.ended(1006, "connection lost")  # no listener yet
    ws = WebSocketConnection(channel, hub, path="/p")
    with pytest.raises(WebSocketDisconnect) as info:
        await ws.accept()
    assert info.value.code == 1006
    assert channel.events == [] and len(hub) == 0


@async_test
async def test_accept_records_the_offered_subprotocol_and_extra_headers() -> None:
    channel = RecordingChannel()
    ws = WebSocketConnection(channel, new_hub(), path="/p", subprotocols=["chat", "json"])
    await ws.accept("json", headers=[("X-Extra", "1")])
    assert channel.events == [("accept", "json", [("X-Extra", "1")])]
    assert ws.subprotocol == "json"


@async_test
async def test_accept_drops_a_subprotocol_the_client_did_not_offer_with_a_warning(
        caplog: pytest.LogCaptureFixture) -> None:
    channel = RecordingChannel()
    ws = WebSocketConnection(channel, new_hub(), path="/p", subprotocols=["chat"])
    with caplog.at_level(logging.WARNING, logger="tether"):
        await ws.accept("json")
    assert channel.events == [("accept", None, [])]
    assert ws.subprotocol is None
    assert any("'json' was not offered" in r.getMessage() for r in caplog.records)


@async_test
async def test_a_second_accept_does_nothing() -> None:
    hub = new_hub()
    ws, channel = await open_connection(hub)
    await ws.accept("chat", headers=[("X-Late", "1")])
    assert channel.events == [] and ws.connection_state is OPEN and ws.subprotocol is None
    assert hub.ids() == [ws.id]


@async_test
async def test_reject_records_a_plain_text_refusal_with_content_type_and_content_length() -> None:
    hub = new_hub()
    channel = RecordingChannel()
    ws = WebSocketConnection(channel, hub, path="/p")
    await ws.reject(401, "non autorisé", headers=[("WWW-Authenticate", "Bearer")])
    body = "non autorisé".encode()
    assert channel.events == [("refuse", 401, [("Content-Type", "text/plain; charset=utf-8"),
                                                ("Content-Length", str(len(body))),
                                                ("WWW-Authenticate", "Bearer")], body)]
    assert len(body) == 13  # bytes, not characters
    assert ws.connection_state is CLOSED and len(hub) == 0
    assert ws.close_code == 1006


@async_test
async def test_reject_defaults_to_403_with_an_empty_body() -> None:
    channel = RecordingChannel()
    ws = WebSocketConnection(channel, new_hub(), path="/p")
    await ws.reject()
    assert channel.events == [("refuse", 403, [("Content-Type", "text/plain; charset=utf-8"),
                                                ("Content-Length", "0")], b"")]


@async_test
async def test_a_second_reject_is_ignored() -> None:
    channel = RecordingChannel()
    ws = WebSocketConnection(channel, new_hub(), path="/p")
    await ws.reject(403, b"no")
    await ws.reject(500, b"again")
    assert channel.kinds() == ["refuse"]


@async_test
async def test_reject_after_accept_raises_invalid_state() -> None:
    ws, channel = await open_connection(new_hub())
    with pytest.raises(InvalidState, match="before accept"):
        await ws.reject(403)
    assert channel.events == [] and ws.connection_state is OPEN


@async_test
async def test_accept_after_reject_is_refused_writes_nothing_and_does_not_register() -> None:
    hub = new_hub()
    channel = RecordingChannel()
    ws = WebSocketConnection(channel, hub, path="/p")
    await ws.reject(403)
    # accept() documents WebSocketDisconnect for a closed connection; exceptions.py says
    # InvalidState for "accept after a refusal": either way, a TetherError.
    with pytest.raises(tether.TetherError):
        await ws.accept()
    assert channel.kinds() == ["refuse"]
    assert len(hub) == 0


@async_test
async def test_close_before_accept_refuses_the_handshake_with_403() -> None:
    hub = new_hub()
    channel = RecordingChannel()
    ws = WebSocketConnection(channel, hub, path="/p")
    await ws.close(1000)
    assert [e[:2] for e in channel.events] == [("refuse", 403)]
    assert ws.connection_state is CLOSED and len(hub) == 0


@async_test
async def test_the_channel_accepts_or_refuses_only_while_connecting() -> None:
    channel = RecordingChannel()
    WebSocketConnection(channel, new_hub(), path="/p")
    channel.reject(403, b"no", [])
    channel.reject(500, b"again", [])
    channel.accept(None, [])
    assert channel.kinds() == ["refuse"] and channel.state is CLOSED
    opened = RecordingChannel()
    WebSocketConnection(opened, new_hub(), path="/p")
    opened.accept("chat", [])
    opened.accept(None, [])
    opened.reject(403, b"", [])
    assert opened.events == [("accept", "chat", [])] and opened.state is OPEN


# -- a send after a close, through an App and the TestClient ------------------------------------
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

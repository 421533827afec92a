"""`tether.client.websocket`: the asyncio client on the client side of the connection state
machine, against real servers on 127.0.0.1 — tether's own, the `websockets` package's, and
raw asyncio servers that break RFC 6455 on purpose."""

from __future__ import annotations

import asyncio
import base64
import hashlib
from collections.abc import Awaitable, Callable

import pytest
import websockets.asyncio.server

from tether import App, WebSocketDisconnect
from tether.client import open_websocket
from tether.exceptions import WebSocketRejected
from tether.protocol import OP_CLOSE, OP_PING, OP_TEXT, FrameParser, HandshakeError, encode_close, encode_frame

from .recording import async_test


def echo_app() -> App:
    app = App()

    @app.websocket("/echo", subprotocols=["chat.v2", "chat.v1"])
    async def echo(websocket):
        async for message in websocket:
            if message == "close please":
                await websocket.close(4001, "as asked")
                return
            await websocket.send(message)

    @app.websocket("/private")
    async def private(websocket):  # it accepts itself: the handshake waits for it
        if websocket.headers.get("x-member") != "yes":
            await websocket.reject(403, "members only")
            return
        await websocket.accept()
        await websocket.send("welcome")

    return app


def test_echo_subprotocol_and_a_client_close_against_tethers_server(serve_native) -> None:
    server = serve_native(echo_app())

    async def run() -> None:
        ws = await open_websocket(server.ws_url("/echo"), subprotocols=["chat.v1"])
        assert ws.subprotocol == "chat.v1"
        assert ws.response_headers["upgrade"].lower() == "websocket"
        await ws.send("héllo")
        await ws.send(b"\x00\x01" * 1000)
        assert await ws.receive() == "héllo"
        assert await ws.receive() == b"\x00\x01" * 1000
        await ws.close(1000, "bye")
        assert (ws.close_code, ws.close_reason, ws.protocol.closed_by) == (1000, "bye", "client")
        with pytest.raises(WebSocketDisconnect):
            await ws.send("after close")

    asyncio.run(asyncio.wait_for(run(), 10))


def test_a_server_close_is_read_after_the_messages_before_it_and_echoed(serve_native) -> None:
    server = serve_native(echo_app())

    async def run() -> None:
        async with await open_websocket(server.ws_url("/echo")) as ws:
            await ws.send("first")
            await ws.send("close please")
            assert await ws.receive() == "first"
            with pytest.raises(WebSocketDisconnect) as closed:
                await ws.receive()
            assert (closed.value.code, closed.value.reason) == (4001, "as asked")
            assert ws.protocol.closed_by == "server"
            assert [message async for message in ws] == []  # iteration simply ends

    asyncio.run(asyncio.wait_for(run(), 10))


def test_a_refused_handshake_raises_with_the_status_and_body(serve_native) -> None:
    server = serve_native(echo_app())

    async def run() -> None:
        with pytest.raises(WebSocketRejected) as refused:
            await open_websocket(server.ws_url("/private"))
        assert refused.value.status_code == 403 and refused.value.body == b"members only"
        async with await open_websocket(server.ws_url("/private"), headers=[("X-Member", "yes")]) as ws:
            assert await ws.receive() == "welcome"
        with pytest.raises(ValueError, match="CR, LF or NUL"):
            await open_websocket(server.ws_url("/private"), headers=[("X-Member", "yes\r\nX-Evil: 1")])
        with pytest.raises(WebSocketRejected) as missing:
            await open_websocket(server.ws_url("/nowhere"))
        assert missing.value.status_code == 404

    asyncio.run(asyncio.wait_for(run(), 10))


def test_interoperates_with_the_websockets_server_and_answers_its_pings() -> None:
    async def echo(connection) -> None:
        async for message in connection:
            await connection.send(message)

    async def run() -> None:
        # The server pings every 50 ms and drops a client that does not answer within 1 s.
        async with websockets.asyncio.server.serve(echo, "127.0.0.1", 0, ping_interval=0.05,
                                                   ping_timeout=1.0) as server:
            port = server.sockets[0].getsockname()[1]
            async with await open_websocket(f"ws://127.0.0.1:{port}/", ping_interval=0) as ws:
                await asyncio.sleep(1.5)  # pings, each answered by the state machine's pong
                await ws.send("still here")
                assert await ws.receive() == "still here"
            assert ws.close_code == 1000

    asyncio.run(asyncio.wait_for(run(), 10))


# -- raw servers that break the rules ---------------------------------------------------------------
async def raw_server(after_handshake: Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]],
                     accept: Callable[[str], str] | None = None) -> asyncio.Server:
    """A server that answers the handshake (with `accept(key)` as Sec-WebSocket-Accept), then
    runs `after_handshake`."""

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        head = await reader.readuntil(b"\r\n\r\n")
        key = next(line.split(b":", 1)[1].strip().decode() for line in head.split(b"\r\n")
                   if line.lower().startswith(b"sec-websocket-key:"))
        good = base64.b64encode(hashlib.sha1((key + "258EAFA5-E914-47DA-95CA-C5AB0DC85B11").encode()).digest())
        value = accept(key) if accept else good.decode()
        writer.write(f"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                     f"Sec-WebSocket-Accept: {value}\r\n\r\n".encode())
        try:
            await after_handshake(reader, writer)
        finally:
            writer.close()

    return await asyncio.start_server(handle, "127.0.0.1", 0)


async def read_frames(reader: asyncio.StreamReader) -> list[tuple[int, object]]:
    """Every frame the client sends until it closes TCP (read with the server's parser)."""
    parser = FrameParser(1 << 20)
    events: list[tuple[int, object]] = []
    while data := await reader.read(65536):
        events += parser.feed(data)
    return events


@async_test
async def test_a_wrong_accept_key_fails_the_handshake() -> None:
    async def nothing(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.read()

    server = await raw_server(nothing, accept=lambda key: "d3Jvbmc=")
    port = server.sockets[0].getsockname()[1]
    with pytest.raises(HandshakeError, match="Sec-WebSocket-Accept"):
        await open_websocket(f"ws://127.0.0.1:{port}/")
    server.close()


@async_test
async def test_a_masked_server_frame_fails_the_connection_with_1002() -> None:
    seen: list[list[tuple[int, object]]] = []

    async def masked(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(encode_frame(OP_TEXT, b"fine") + encode_frame(OP_TEXT, b"masked", mask=b"abcd"))
        seen.append(await read_frames(reader))

    server = await raw_server(masked)
    port = server.sockets[0].getsockname()[1]
    ws = await open_websocket(f"ws://127.0.0.1:{port}/")
    assert await ws.receive() == "fine"
    with pytest.raises(WebSocketDisconnect) as failed:
        await ws.receive()
    assert failed.value.code == 1002 and "server frame is masked" in failed.value.reason
    await asyncio.wait_for(ws.close(), 2)
    while not seen:  # the server reads to the end of TCP on its own task (bounded by async_test)
        await asyncio.sleep(0.01)
    [(kind, (code, _))] = seen[0]
    assert (kind, code) == (OP_CLOSE, 1002)
    server.close()


@async_test
async def test_keepalive_fails_a_silent_server_with_1011_and_pings_an_alive_one() -> None:
    async def silent(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.read()  # reads, never answers

    server = await raw_server(silent)
    port = server.sockets[0].getsockname()[1]
    ws = await open_websocket(f"ws://127.0.0.1:{port}/", ping_interval=0.05, ping_timeout=0.1)
    with pytest.raises(WebSocketDisconnect) as failed:
        await ws.receive()
    assert failed.value.code == 1011 and "keepalive" in failed.value.reason
    server.close()

    pings: list[tuple[int, object]] = []

    async def answering(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        parser = FrameParser(1 << 20)
        while data := await reader.read(65536):
            for event in parser.feed(data):
                pings.append(event)
                if event[0] == OP_PING:
                    writer.write(encode_frame(0xA, event[1]))
                elif event[0] == OP_CLOSE:
                    writer.write(encode_close(1000))
                    return

    server = await raw_server(answering)
    port = server.sockets[0].getsockname()[1]
    ws = await open_websocket(f"ws://127.0.0.1:{port}/", ping_interval=0.05, ping_timeout=2)
    while sum(1 for kind, _ in pings if kind == OP_PING) < 3:  # bounded by async_test
        await asyncio.sleep(0.02)
    assert ws.close_code is None  # answered pings keep it open
    await ws.close()
    assert ws.close_code == 1000
    server.close()


def test_the_client_runs_on_uvloop_too(serve_native) -> None:
    import uvloop

    server = serve_native(echo_app())

    async def run() -> str | bytes:
        async with await open_websocket(server.ws_url("/echo")) as ws:
            await ws.send("on uvloop")
            return await ws.receive()

    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        assert runner.run(asyncio.wait_for(run(), 10)) == "on uvloop"

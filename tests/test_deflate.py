"""permessage-deflate (RFC 7692) on the native server, with real clients: `websockets`,
`aiohttp`, raw sockets for what no library sends, and headless Chromium."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import socket
import zlib

import aiohttp
import pytest
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import connect

from tether import App
from tether.protocol import OP_BINARY, OP_CLOSE, OP_TEXT, RSV1, encode_frame, parse_close_payload
from tether.protocol import deflate as deflate_module

from .apps import echo_app
from .rawws import upgrade_request

JSON_1K = json.dumps([{"id": i, "symbol": "ABC", "price": 101.25, "side": "buy"} for i in range(16)])
assert 900 < len(JSON_1K) < 1200


def broadcast_app(**settings) -> App:
    app = App(**settings)

    @app.websocket("/room")
    async def room(websocket):
        async for message in websocket:
            await websocket.broadcast(message)

    return app


# -- negotiation, with real clients ---------------------------------------------------------
def test_websockets_client_negotiates_and_messages_round_trip(serve_native):
    server = serve_native(echo_app(permessage_deflate=True))
    with connect(server.ws_url("/echo"), compression="deflate") as ws:
        assert ws.response.headers["Sec-WebSocket-Extensions"] == (
            "permessage-deflate; server_no_context_takeover; client_no_context_takeover")
        for message in ["x", JSON_1K, JSON_1K, b"\x00" * 70_000, os.urandom(5000), "é😀" * 500, ""]:
            ws.send(message)
            assert ws.recv(timeout=10) == message


def test_aiohttp_client_negotiates_and_messages_round_trip(serve_native):
    server = serve_native(echo_app(permessage_deflate=True))

    async def run() -> str:
        async with aiohttp.ClientSession() as session:
            async with session.ws_connect(server.ws_url("/echo"), compress=15) as ws:
                for message in [JSON_1K, "small", JSON_1K * 10]:
                    await ws.send_str(message)
                    assert await ws.receive_str() == message
                return ws._response.headers["Sec-WebSocket-Extensions"]  # noqa: SLF001 (no public accessor)

    assert asyncio.run(run()).startswith("permessage-deflate")


def test_context_takeover_when_configured_keeps_history_across_messages(serve_native):
    app = echo_app(permessage_deflate={"server_no_context_takeover": False, "client_no_context_takeover": False})
    server = serve_native(app)
    with connect(server.ws_url("/echo"), compression="deflate") as ws:
        assert ws.response.headers["Sec-WebSocket-Extensions"] == "permessage-deflate"
        for i in range(50):  # each message refers back into the history of the ones before
            message = JSON_1K.replace("ABC", f"A{i}")
            ws.send(message)
            assert ws.recv(timeout=10) == message


def test_without_the_setting_an_offer_is_ignored(serve_native):
    server = serve_native(echo_app())
    with connect(server.ws_url("/echo"), compression="deflate") as ws:
        assert "Sec-WebSocket-Extensions" not in ws.response.headers
        ws.send(JSON_1K)
        assert ws.recv(timeout=10) == JSON_1K


def test_a_client_that_offers_nothing_is_served_uncompressed(serve_native):
    server = serve_native(echo_app(permessage_deflate=True))
    with connect(server.ws_url("/echo"), compression=None) as ws:
        assert "Sec-WebSocket-Extensions" not in ws.response.headers
        ws.send(JSON_1K)
        assert ws.recv(timeout=10) == JSON_1K


# -- raw sockets: the bytes on the wire ---------------------------------------------------------
class RawDeflateClient:
    """A handshake with a chosen Sec-WebSocket-Extensions offer; frames read raw."""

    def __init__(self, port: int, offer: str | None, path: str = "/echo") -> None:
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=10)
        extra = f"Sec-WebSocket-Extensions: {offer}\r\n" if offer is not None else ""
        self.sock.sendall(upgrade_request(path, extra=extra))
        data = b""
        while b"\r\n\r\n" not in data:
            chunk = self.sock.recv(4096)
            if not chunk:
                break
            data += chunk
        head, _, self.buffer = data.partition(b"\r\n\r\n")
        lines = head.decode("latin-1").split("\r\n")
        self.status = int(lines[0].split()[1])
        self.headers = {k.strip().lower(): v.strip() for k, _, v in (line.partition(":") for line in lines[1:])}
        self.body = self.buffer

    def _read(self, n: int) -> bytes:
        while len(self.buffer) < n:
            chunk = self.sock.recv(65536)
            assert chunk, "connection ended"
            self.buffer += chunk
        data, self.buffer = self.buffer[:n], self.buffer[n:]
        return data

    def read_frame(self) -> tuple[int, bool, bytes]:
        """(opcode, rsv1, payload) of the server's next frame."""
        b0, b1 = self._read(2)
        length = b1 & 0x7F
        if length == 126:
            length = int.from_bytes(self._read(2), "big")
        elif length == 127:
            length = int.from_bytes(self._read(8), "big")
        return b0 & 0x0F, bool(b0 & RSV1), self._read(length)

    def send(self, opcode: int, payload: bytes, compressed: bool = False) -> None:
        self.sock.sendall(encode_frame(opcode | (RSV1 if compressed else 0), payload, mask=os.urandom(4)))


def raw_deflate(payload: bytes) -> bytes:
    """Compress as an RFC 7692 client would (raw deflate, sync flush, tail removed)."""
    compressor = zlib.compressobj(wbits=-15)
    return (compressor.compress(payload) + compressor.flush(zlib.Z_SYNC_FLUSH))[:-4]


def raw_inflate(payload: bytes) -> bytes:
    return zlib.decompressobj(-15).decompress(payload + b"\x00\x00\xff\xff")


def test_messages_from_the_threshold_up_are_compressed_and_smaller_ones_are_not(serve_native):
    server = serve_native(echo_app(permessage_deflate={"threshold": 100}))
    client = RawDeflateClient(server.port, "permessage-deflate")
    assert client.status == 101
    client.send(OP_TEXT, b"x" * 99)
    assert client.read_frame() == (OP_TEXT, False, b"x" * 99)
    client.send(OP_TEXT, b"x" * 100)
    opcode, rsv1, payload = client.read_frame()
    assert (opcode, rsv1) == (OP_TEXT, True) and len(payload) < 20 and raw_inflate(payload) == b"x" * 100


def test_a_compressed_message_from_the_client_is_inflated(serve_native):
    server = serve_native(echo_app(permessage_deflate={"threshold": 10**9}))  # replies uncompressed
    client = RawDeflateClient(server.port, "permessage-deflate")
    client.send(OP_BINARY, raw_deflate(JSON_1K.encode()), compressed=True)
    assert client.read_frame() == (OP_BINARY, False, JSON_1K.encode())


def test_rsv1_on_a_connection_without_deflate_is_closed_1002(serve_native):
    server = serve_native(echo_app(permessage_deflate=True))
    client = RawDeflateClient(server.port, None)
    assert client.status == 101 and "sec-websocket-extensions" not in client.headers
    client.send(OP_TEXT, raw_deflate(b"hello"), compressed=True)
    opcode, _, payload = client.read_frame()
    assert opcode == OP_CLOSE and parse_close_payload(payload)[0] == 1002


def test_a_zip_bomb_is_closed_1009_having_inflated_at_most_the_limit(serve_native):
    server = serve_native(echo_app(permessage_deflate=True, max_message_size=1 << 20))
    client = RawDeflateClient(server.port, "permessage-deflate")
    bomb = raw_deflate(b"\x00" * (256 << 20))  # 256 MiB of zeros in about 256 KB
    assert len(bomb) < 300_000
    client.send(OP_BINARY, bomb, compressed=True)
    opcode, _, payload = client.read_frame()
    assert opcode == OP_CLOSE and parse_close_payload(payload)[0] == 1009
    with connect(server.ws_url("/echo"), compression="deflate") as other:  # the server serves on
        other.send(JSON_1K)
        assert other.recv(timeout=10) == JSON_1K


def test_corrupt_compressed_data_is_closed_1007(serve_native):
    server = serve_native(echo_app(permessage_deflate=True))
    client = RawDeflateClient(server.port, "permessage-deflate")
    client.send(OP_TEXT, b"\xff\xff\xff\xff not deflate", compressed=True)
    opcode, _, payload = client.read_frame()
    assert opcode == OP_CLOSE and parse_close_payload(payload)[0] == 1007


def test_a_malformed_extensions_header_is_400_when_deflate_is_on(serve_native):
    server = serve_native(echo_app(permessage_deflate=True))
    client = RawDeflateClient(server.port, "permessage-deflate; =oops")
    assert client.status == 400 and b"Sec-WebSocket-Extensions" in client.body


def test_an_offer_with_an_unknown_parameter_is_declined_and_the_connection_proceeds(serve_native):
    server = serve_native(echo_app(permessage_deflate=True))
    client = RawDeflateClient(server.port, "permessage-deflate; mystery=1, x-webkit-deflate-frame")
    assert client.status == 101 and "sec-websocket-extensions" not in client.headers
    client.send(OP_TEXT, b"plain")
    assert client.read_frame() == (OP_TEXT, False, b"plain")


def test_the_second_acceptable_offer_is_taken_when_the_first_is_not(serve_native):
    server = serve_native(echo_app(permessage_deflate=True))
    client = RawDeflateClient(server.port, "permessage-deflate; server_max_window_bits=20, "
                                           "permessage-deflate; client_max_window_bits")
    assert client.status == 101
    assert client.headers["sec-websocket-extensions"].startswith("permessage-deflate")


def test_a_bad_setting_is_refused_when_the_app_is_made():
    with pytest.raises(ValueError, match="server_max_window_bits must be 8..15, got 20"):
        App(permessage_deflate={"server_max_window_bits": 20})
    with pytest.raises(ValueError, match="unknown option 'level'"):
        App(permessage_deflate={"level": 1})


# -- broadcast compresses once ------------------------------------------------------------------
@pytest.fixture
def compress_calls(monkeypatch):
    """Counts the real zlib compressions (the original method is still what runs)."""
    calls = []
    original = deflate_module.Compressor.compress

    def counted(self, payload):
        calls.append(len(payload))
        return original(self, payload)

    monkeypatch.setattr(deflate_module.Compressor, "compress", counted)
    return calls


def test_a_broadcast_to_many_deflate_clients_is_compressed_once(serve_native, compress_calls):
    server = serve_native(broadcast_app(permessage_deflate=True))
    with contextlib.ExitStack() as stack:
        clients = [stack.enter_context(connect(server.ws_url("/room"), compression="deflate")) for _ in range(20)]
        compress_calls.clear()
        clients[0].send(JSON_1K)
        assert all(client.recv(timeout=10) == JSON_1K for client in clients)
        assert compress_calls == [len(JSON_1K)]


def test_with_context_takeover_a_broadcast_is_compressed_per_connection(serve_native, compress_calls):
    server = serve_native(broadcast_app(permessage_deflate={"server_no_context_takeover": False}))
    with contextlib.ExitStack() as stack:
        clients = [stack.enter_context(connect(server.ws_url("/room"), compression="deflate")) for _ in range(5)]
        compress_calls.clear()
        for _ in range(3):
            clients[0].send(JSON_1K)
            assert all(client.recv(timeout=10) == JSON_1K for client in clients)
        assert compress_calls == [len(JSON_1K)] * 15


def test_deflate_and_plain_clients_share_a_broadcast(serve_native):
    server = serve_native(broadcast_app(permessage_deflate=True))
    with connect(server.ws_url("/room"), compression="deflate") as a, \
            connect(server.ws_url("/room"), compression=None) as b:
        b.send(JSON_1K)
        assert a.recv(timeout=10) == JSON_1K and b.recv(timeout=10) == JSON_1K


def test_a_closed_deflate_connection_gets_nothing_and_raises_nothing(serve_native):
    server = serve_native(broadcast_app(permessage_deflate=True))
    with connect(server.ws_url("/room"), compression="deflate") as a:
        with connect(server.ws_url("/room"), compression="deflate"):
            pass
        a.send(JSON_1K)
        assert a.recv(timeout=10) == JSON_1K
        with pytest.raises(TimeoutError):
            a.recv(timeout=0.2)
    with pytest.raises(ConnectionClosed):
        a.recv(timeout=1)


# -- a browser ----------------------------------------------------------------------------------
def test_chromium_offers_deflate_and_the_chat_demo_works_compressed(serve_native):
    from tether.server.compression import DeflateChannel

    from .browser import Browser
    from .test_example_chat import LOG, STATUS, load_chat_module, log_in_with_the_form, login, say_in_the_page

    app = load_chat_module().app
    app.settings.permessage_deflate = True
    chat = serve_native(app)
    _, body = login(chat.url("").rstrip("/"), "python")
    with connect(chat.ws_url("/live"), subprotocols=["tether.live.v1"], compression="deflate") as bot, \
            Browser() as browser:
        bot.send(json.dumps({"op": "connect", "id": 1, "token": body["token"]}))
        bot.send(json.dumps({"op": "join", "id": 2, "room": "chat:lobby"}))

        def next_push(kind):
            while True:
                message = json.loads(bot.recv(timeout=10))
                if message.get("push") == kind:
                    return message

        log_in_with_the_form(browser, chat.url("/"), "browser")
        browser.wait_for(f"{STATUS} === 'connected to lobby as browser'")
        while "browser" not in [info["name"] for info in next_push("presence")["joined"].values()]:
            pass
        # Both offers were accepted: every live connection's channel compresses.
        connections = [ws for connection_id in app.hub.ids("/live") if (ws := app.hub.get(connection_id))]
        assert len(connections) >= 2, connections  # the page's and the bot's (and any the page is replacing)
        assert all(isinstance(ws.channel, DeflateChannel) for ws in connections), [ws.channel for ws in connections]
        long_text = "compressible " * 40  # past the threshold: sent compressed both ways
        say_in_the_page(browser, long_text)
        assert next_push("message")["data"] == {"name": "browser", "text": long_text.strip()}
        bot.send(json.dumps({"op": "publish", "id": 3, "room": "chat:lobby", "data": {"text": "hello " * 40}}))
        browser.wait_for(f"{LOG}.includes('hello hello')")


# -- the TestClient -------------------------------------------------------------------------------
def test_the_test_client_negotiates_deflate_and_runs_the_compressed_path(compress_calls):
    from tether.testing import TestClient

    with TestClient(broadcast_app(permessage_deflate=True)) as client:
        with client.websocket_connect("/room") as one, client.websocket_connect("/room") as two:
            assert one.headers["sec-websocket-extensions"].startswith("permessage-deflate")
            compress_calls.clear()
            one.send_text(JSON_1K)  # compressed by the session, inflated by the server
            assert one.receive_text() == JSON_1K and two.receive_text() == JSON_1K
            # The session's own compression, then the server's one for the broadcast.
            assert compress_calls == [len(JSON_1K), len(JSON_1K)]


def test_the_test_client_enforces_the_inflated_size_limit():
    from tether.testing import TestClient

    with TestClient(echo_app(permessage_deflate=True, max_message_size=1000)) as client:
        with client.websocket_connect("/echo") as ws:
            ws.send_text("x" * 1001)  # a few bytes compressed, over the limit inflated
            with pytest.raises(Exception) as closed:
                ws.receive_text()
            assert getattr(closed.value, "code", None) == 1009


def test_the_test_client_does_not_offer_deflate_when_the_app_has_it_off():
    from tether.testing import TestClient

    with TestClient(echo_app()) as client, client.websocket_connect("/echo") as ws:
        assert "sec-websocket-extensions" not in ws.headers
        ws.send_text(JSON_1K)
        assert ws.receive_text() == JSON_1K

"""`TestClient`: drive an App in process, without a socket, from ordinary (sync) tests.

The app runs on an event loop in a background thread, through the same entry points the
native server uses (`App.handle_http`, `App.serve_websocket`); WebSocket sessions talk to it
over an in-memory channel. Every receive takes a `timeout` (default 5 s), so a test fails
instead of hanging. Several sessions can be open at once.

    with TestClient(app) as client:
        assert client.get("/").status_code == 200
        with client.websocket_connect("/echo") as ws:
            ws.send_text("hi")
            assert ws.receive_text() == "hi"
"""

from __future__ import annotations

import asyncio
import base64
import json as jsonlib
import os
import queue
import threading
from typing import Any
from urllib.parse import unquote, urlencode

from .app import App
from .datastructures import Headers
from .http import Request
from .protocol import OP_TEXT
from .connection import WebSocketDisconnect

__all__ = ["TestClient", "TestResponse", "WebSocketTestSession", "WebSocketRejected"]

DEFAULT_TIMEOUT = 5.0


class WebSocketRejected(Exception):
    """The app refused the handshake with an HTTP response (`status_code`, `body`)."""

    def __init__(self, status_code: int, body: bytes, headers: list[tuple[str, str]]) -> None:
        super().__init__(f"WebSocket handshake rejected with HTTP {status_code}: {body.decode('utf-8', 'replace')}")
        self.status_code = status_code
        self.body = body
        self.headers = Headers(headers)


class TestResponse:
    """A complete HTTP response: `status_code`, `headers`, `content`, `text`, `json()`."""

    def __init__(self, status_code: int, headers: Headers, content: bytes) -> None:
        self.status_code = status_code
        self.headers = headers
        self.content = content

    @property
    def text(self) -> str:
        return self.content.decode("utf-8", "replace")

    def json(self) -> Any:
        return jsonlib.loads(self.content)

    def __repr__(self) -> str:
        return f"<TestResponse {self.status_code}>"


class _MemoryChannel:
    """The in-process road: what the core sends lands in a thread-safe queue for the test."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        self.events: queue.Queue[tuple[Any, ...]] = queue.Queue()

    def accept(self, subprotocol: str | None, headers: list[tuple[str, str]]) -> None:
        self.events.put(("accept", subprotocol, headers))

    def reject(self, status: int, body: bytes, headers: list[tuple[str, str]]) -> None:
        self.events.put(("reject", status, body, headers))

    def send_message(self, opcode: int, payload: bytes) -> None:
        self.events.put(("message", payload.decode("utf-8") if opcode == OP_TEXT else payload))

    def send_prepared(self, frame: bytes, opcode: int, payload: bytes) -> None:
        self.send_message(opcode, payload)

    def close(self, code: int, reason: str) -> None:
        self.events.put(("close", code, reason))

    def pause_reading(self) -> None:
        pass

    def resume_reading(self) -> None:
        pass

    def drain(self) -> None:
        return None


class WebSocketTestSession:
    """The client side of one in-process WebSocket (use as a context manager)."""

    def __init__(self, client: TestClient, channel: _MemoryChannel, done: Any, subprotocol: str | None,
                 headers: list[tuple[str, str]]) -> None:
        self._client = client
        self._channel = channel
        self._done = done
        self.subprotocol = subprotocol
        self.headers = Headers(headers)
        self.close_code: int | None = None
        self.close_reason = ""

    def __enter__(self) -> WebSocketTestSession:
        return self

    def __exit__(self, *exc_info: Any) -> None:
        self.close()

    # -- sending --------------------------------------------------------------------------
    def _deliver(self, message: str | bytes) -> None:
        if self.close_code is not None:
            raise WebSocketDisconnect(self.close_code, self.close_reason)
        size = len(message.encode("utf-8") if isinstance(message, str) else message)
        ws = self._channel.websocket
        if size > self._client.app.settings.max_message_size:  # what the frame parser would do
            reason = f"message over the {self._client.app.settings.max_message_size}-byte limit"
            self._channel.close(1009, reason)
            self._client._loop.call_soon_threadsafe(ws._on_disconnect, 1009, reason)
            return
        self._client._loop.call_soon_threadsafe(ws._on_message, message)

    def send_text(self, data: str) -> None:
        self._deliver(str(data))

    def send_bytes(self, data: bytes) -> None:
        self._deliver(bytes(data))

    def send_json(self, data: Any, mode: str = "text") -> None:
        text = jsonlib.dumps(data, separators=(",", ":"))
        self._deliver(text if mode == "text" else text.encode("utf-8"))

    def send(self, data: str | bytes) -> None:
        self._deliver(data)

    # -- receiving ------------------------------------------------------------------------
    def receive(self, timeout: float = DEFAULT_TIMEOUT) -> str | bytes:
        """The next message; WebSocketDisconnect when the server closed; TimeoutError after `timeout`."""
        if self.close_code is not None:
            raise WebSocketDisconnect(self.close_code, self.close_reason)
        try:
            event = self._channel.events.get(timeout=timeout)
        except queue.Empty:
            raise TimeoutError(f"no message from the server within {timeout} s") from None
        if event[0] == "close":
            self.close_code, self.close_reason = event[1], event[2]
            raise WebSocketDisconnect(event[1], event[2])
        return event[1]

    def receive_text(self, timeout: float = DEFAULT_TIMEOUT) -> str:
        message = self.receive(timeout)
        if not isinstance(message, str):
            raise TypeError(f"expected a text message, got {len(message)} bytes of binary")
        return message

    def receive_bytes(self, timeout: float = DEFAULT_TIMEOUT) -> bytes:
        message = self.receive(timeout)
        if not isinstance(message, bytes):
            raise TypeError(f"expected a binary message, got text {message!r}")
        return message

    def receive_json(self, timeout: float = DEFAULT_TIMEOUT) -> Any:
        return jsonlib.loads(self.receive(timeout))

    def close(self, code: int = 1000, reason: str = "", timeout: float = DEFAULT_TIMEOUT) -> None:
        """Close from the client side and wait until the server side has finished."""
        if self.close_code is None:
            self.close_code, self.close_reason = code, reason
            self._client._loop.call_soon_threadsafe(self._channel.websocket._on_disconnect, code, reason)
        try:
            self._done.result(timeout)
        except Exception:
            pass  # the app logged it; a test asserts on what the client saw


class TestClient:
    """Runs `app` on a background event loop; HTTP calls and WebSocket sessions in process."""

    __test__ = False  # not a pytest test class

    def __init__(self, app: App, base_url: str = "http://testserver", timeout: float = DEFAULT_TIMEOUT) -> None:
        self.app = app
        self.host = base_url.split("://", 1)[-1].rstrip("/")
        self.timeout = timeout
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None

    # -- lifecycle ------------------------------------------------------------------------
    def __enter__(self) -> TestClient:
        self._start()
        return self

    def __exit__(self, *exc_info: Any) -> None:
        self.close()

    def _start(self) -> None:
        if self._loop is not None:
            return
        loop = asyncio.new_event_loop()
        ready = threading.Event()

        def run() -> None:
            asyncio.set_event_loop(loop)
            self.app.hub._bind(loop)
            ready.set()
            loop.run_forever()

        self._thread = threading.Thread(target=run, name="tether-testclient", daemon=True)
        self._thread.start()
        ready.wait()
        self._loop = loop
        self._run(self.app.startup())

    def close(self) -> None:
        """Run the shutdown hooks and stop the loop."""
        if self._loop is None:
            return
        loop, self._loop = self._loop, None
        try:
            asyncio.run_coroutine_threadsafe(self.app.shutdown(), loop).result(self.timeout)
        finally:
            loop.call_soon_threadsafe(loop.stop)
            assert self._thread is not None
            self._thread.join(self.timeout)
            loop.close()

    def _run(self, coro: Any) -> Any:
        assert self._loop is not None
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result(self.timeout)

    # -- HTTP -----------------------------------------------------------------------------
    def request(self, method: str, url: str, *, params: Any = None, headers: dict[str, str] | None = None,
                json: Any = None, data: Any = None, content: bytes | str | None = None,
                cookies: dict[str, str] | None = None) -> TestResponse:
        """Send one request through the app and return the complete response."""
        self._start()
        path, _, query = url.partition("?")
        if params:
            query = "&".join(filter(None, [query, urlencode(params, doseq=True)]))
        header_list = [("host", self.host), ("user-agent", "tether-testclient")]
        body = b""
        if json is not None:
            body = jsonlib.dumps(json).encode("utf-8")
            header_list.append(("content-type", "application/json"))
        elif isinstance(data, dict):
            body = urlencode(data, doseq=True).encode("utf-8")
            header_list.append(("content-type", "application/x-www-form-urlencoded"))
        elif content is not None or data is not None:
            raw = content if content is not None else data
            body = raw.encode("utf-8") if isinstance(raw, str) else bytes(raw)
        if body:
            header_list.append(("content-length", str(len(body))))
        if cookies:
            header_list.append(("cookie", "; ".join(f"{k}={v}" for k, v in cookies.items())))
        header_list += list((headers or {}).items())
        request = Request(method.upper(), unquote(path) or "/", query, Headers(header_list), body,
                          ("testclient", 50000))

        async def respond() -> tuple[Any, bytes]:
            response = await self.app.handle_http(request)
            chunks = [chunk async for chunk in response.body_chunks()]
            return response, b"".join(chunks)

        response, content_bytes = self._run(respond())
        if request.method == "HEAD":
            content_bytes = b""
        return TestResponse(response.status_code, Headers(response.header_list()), content_bytes)

    def get(self, url: str, **kwargs: Any) -> TestResponse:
        return self.request("GET", url, **kwargs)

    def head(self, url: str, **kwargs: Any) -> TestResponse:
        return self.request("HEAD", url, **kwargs)

    def post(self, url: str, **kwargs: Any) -> TestResponse:
        return self.request("POST", url, **kwargs)

    def put(self, url: str, **kwargs: Any) -> TestResponse:
        return self.request("PUT", url, **kwargs)

    def patch(self, url: str, **kwargs: Any) -> TestResponse:
        return self.request("PATCH", url, **kwargs)

    def delete(self, url: str, **kwargs: Any) -> TestResponse:
        return self.request("DELETE", url, **kwargs)

    def options(self, url: str, **kwargs: Any) -> TestResponse:
        return self.request("OPTIONS", url, **kwargs)

    # -- WebSocket ------------------------------------------------------------------------
    def websocket_connect(self, url: str, subprotocols: list[str] | None = None,
                          headers: dict[str, str] | None = None, timeout: float | None = None) -> WebSocketTestSession:
        """Open a session; raise WebSocketRejected (with the HTTP status) if the app refuses it."""
        self._start()
        assert self._loop is not None
        path, _, query = url.partition("?")
        header_list = [("host", self.host), ("upgrade", "websocket"), ("connection", "Upgrade"),
                       ("sec-websocket-version", "13"),
                       ("sec-websocket-key", base64.b64encode(os.urandom(16)).decode("ascii"))]
        if subprotocols:
            header_list.append(("sec-websocket-protocol", ", ".join(subprotocols)))
        header_list += list((headers or {}).items())
        channel = _MemoryChannel(self._loop)
        done = asyncio.run_coroutine_threadsafe(self.app.serve_websocket(
            channel, path=unquote(path) or "/", query_string=query, headers=Headers(header_list),
            client=("testclient", 50000), subprotocols=subprotocols or ()), self._loop)
        wait = timeout if timeout is not None else self.timeout
        try:
            event = channel.events.get(timeout=wait)
        except queue.Empty:
            raise TimeoutError(f"the app neither accepted nor rejected {url} within {wait} s") from None
        if event[0] == "reject":
            raise WebSocketRejected(event[1], event[2], event[3])
        return WebSocketTestSession(self, channel, done, event[1], event[2])

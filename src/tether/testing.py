"""`TestClient`: drive an App in process, without a socket, from ordinary (sync) tests.

The app runs on an event loop in a background thread behind tether's own server protocol
stack (`tether.server`), exactly as `tether run` serves it, except that the connections are
in-memory transports instead of TCP sockets. The test client only moves bytes: it writes
HTTP requests and masked WebSocket frames, and parses what comes back (httptools for HTTP,
the sans-I/O frame parser for WebSocket). So request limits (413/431), HEAD/204/304 without
a body, the upgrade handshake checks, the message-size limit (1009), the slow-reader rule
(1008), flow control and the closing handshake are the real server's.

Every receive takes a `timeout` (default 5 s), so a test fails instead of hanging. Several
sessions can be open at once.

With `raise_server_exceptions=True` (the default), an exception a handler raised, that the
App answered with a 500 or a close 1011, is re-raised in the test (once): from the request
call, from `websocket_connect` (a handler that raised before accepting), or from the
session's `receive*` that would have seen the 1011 (else from its `close()`). Answers such as
an `HTTPException` or a 400 for a bad parameter are not errors and are returned as they are.
With `raise_server_exceptions=False` the test sees the 500 or the 1011, as a client would.

    with TestClient(app) as client:
        assert client.get("/").status_code == 200
        with client.websocket_connect("/echo") as ws:
            ws.send_text("hi")
            assert ws.receive_text() == "hi"

A session is a client like any other: it answers the server's pings and close frames while
the test receives (or closes), and what the test does not read stays buffered and counts
against the server's send limits, as unread bytes on a socket would.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import contextvars
import json as jsonlib
import os
import sys
import threading
import time
from collections import deque
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, cast
from urllib.parse import quote, urlencode, urlsplit

import httptools

from .client.response import ResponseReader
from .datastructures import Headers
from .exceptions import WebSocketDisconnect, WebSocketRejected
from .protocol import OP_BINARY, OP_CLOSE, OP_PING, OP_TEXT, PROTOCOL_ERROR, FrameParser, accept_key
from .protocol.codes import WS_1011_INTERNAL_ERROR
from .protocol.connection import CLOSED, OPEN, Connection, Side
from .protocol.deflate import Compressor, Decompressor, DeflateOptions, client_params
from .server.http11 import HttpProtocol
from .server.serve import ServerState

if TYPE_CHECKING:
    from . import App

__all__ = ["TestClient", "TestResponse", "WebSocketRejected", "WebSocketTestSession"]

DEFAULT_TIMEOUT = 5.0
SHUTDOWN_GRACE = 1.0  # seconds handlers get to finish once TestClient.close() dropped their connections
PEERNAME = ("testclient", 50000)

# Flow control of an in-memory transport: bytes the server wrote that the test has not read
# yet. Past the high mark the server's protocol is paused (pause_writing), below the low mark
# it resumes, as asyncio does for a socket's buffer.
HIGH_WATER = 64 * 1024
LOW_WATER = 16 * 1024

_EOF = object()  # the client's end of the stream, queued after its bytes

# The connection whose bytes the server is handling: set while the transport feeds its
# protocol, so the tasks the server starts for it (an HTTP request's, a WebSocket session's)
# inherit it, and an exception the App reports from one of them names its connection.
_connection: contextvars.ContextVar[_MemoryTransport | None] = contextvars.ContextVar(
    "tether_testclient_connection", default=None)


class TestResponse:
    """A complete HTTP response: `status_code`, `headers`, `content`, `text`, `json()`."""

    __test__ = False

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


# -- the in-memory transport ------------------------------------------------------------------
class _MemoryTransport(asyncio.Transport):
    """One client connection: an asyncio.Transport for the server's protocol on the loop
    thread, and a byte pipe for the test on its own thread.

    Loop side (the server): `write`, `close`, `abort`, `pause_reading`/`resume_reading`,
    `set_protocol`, `get_write_buffer_size`, as a socket transport. Test side: `send` bytes
    (delivered in order, buffered while the server has reading paused), `read` what the
    server wrote (blocking, with a timeout), `send_eof` and `drop`.
    """

    def __init__(self, client: TestClient, loop: asyncio.AbstractEventLoop, state: ServerState) -> None:
        super().__init__({"peername": PEERNAME, "sockname": ("testserver", 80), "sslcontext": None})
        self._client = client
        self._loop = loop
        self._state = state
        self._protocol: asyncio.BaseProtocol | None = None
        self._first_protocol: asyncio.BaseProtocol | None = None
        # loop thread only
        self._closing = False
        self._reading_paused = False
        self._writing_paused = False
        self._inbox: deque[Any] = deque()
        self.tasks: set[asyncio.Task[Any]] = set()  # server tasks started by this connection's bytes
        # shared with the test thread, under _cond
        self._cond = threading.Condition()
        self._outbox = bytearray()
        self._eof = False
        self.lost = threading.Event()  # connection_lost has been called

    # -- asyncio.Transport (loop thread) --------------------------------------------------
    def connect(self, protocol: asyncio.Protocol) -> None:
        self._protocol = self._first_protocol = protocol
        self._client._transports.add(self)
        protocol.connection_made(self)

    def get_protocol(self) -> asyncio.BaseProtocol:
        assert self._protocol is not None
        return self._protocol

    def set_protocol(self, protocol: asyncio.BaseProtocol) -> None:
        self._protocol = protocol

    def is_closing(self) -> bool:
        return self._closing

    def is_reading(self) -> bool:
        return not self._reading_paused and not self._closing

    def pause_reading(self) -> None:
        self._reading_paused = True

    def resume_reading(self) -> None:
        if self._reading_paused:
            self._reading_paused = False
            if self._inbox:
                self._loop.call_soon(self._deliver)

    def write(self, data: bytes | bytearray | memoryview) -> None:
        if self.lost.is_set() or not data:
            return  # as a socket transport after the connection is gone: dropped
        with self._cond:
            self._outbox += data
            size = len(self._outbox)
            self._cond.notify_all()
        if size > HIGH_WATER and not self._writing_paused:
            self._writing_paused = True
            self.get_protocol().pause_writing()

    def writelines(self, list_of_data: Any) -> None:
        self.write(b"".join(list_of_data))

    def can_write_eof(self) -> bool:
        return False

    def get_write_buffer_size(self) -> int:
        with self._cond:
            return len(self._outbox)

    def get_write_buffer_limits(self) -> tuple[int, int]:
        return LOW_WATER, HIGH_WATER

    def close(self) -> None:
        if self._closing:
            return
        self._closing = True
        self._inbox.clear()  # no more reading, as asyncio's close()
        self._loop.call_soon(self._connection_lost)

    def abort(self) -> None:
        # What the server wrote is already "on the wire" here (the test can still read it).
        self.close()

    def _connection_lost(self) -> None:
        if self.lost.is_set():
            return
        with self._cond:
            self._eof = True
            self._cond.notify_all()
        self._client._transports.discard(self)
        try:
            self.get_protocol().connection_lost(None)
        finally:
            self.lost.set()

    # -- inbound (loop thread) ------------------------------------------------------------
    def _feed(self, data: Any) -> None:
        if self._closing:
            return
        self._inbox.append(data)
        if not self._reading_paused:
            self._deliver()

    def _deliver(self) -> None:
        token = _connection.set(self)  # inherited by the tasks the protocol starts
        try:
            self._deliver_inbox()
        finally:
            _connection.reset(token)

    def _deliver_inbox(self) -> None:
        inbox = self._inbox
        while inbox and not self._reading_paused and not self._closing:
            data = inbox.popleft()
            protocol = cast(asyncio.Protocol, self.get_protocol())
            try:
                if data is _EOF:
                    if not protocol.eof_received():
                        self.close()
                    return
                protocol.data_received(data)
                if (protocol is self._first_protocol and isinstance(protocol, HttpProtocol)
                        and protocol.websocket_task is not None):
                    # Upgraded: closing the session waits for the task serving it.
                    self.tasks.add(protocol.websocket_task)
            except Exception as exc:  # as asyncio's transports: report it, end the connection
                self._loop.call_exception_handler({
                    "message": "Fatal error: protocol.data_received() call failed.",
                    "exception": exc, "transport": self, "protocol": protocol})
                self.close()
                return

    def _consumed(self) -> None:
        if self._writing_paused and not self.lost.is_set() and self.get_write_buffer_size() <= LOW_WATER:
            self._writing_paused = False
            self.get_protocol().resume_writing()

    # -- the test's side (any thread but the loop's) ---------------------------------------
    def _threadsafe(self, callback: Callable[..., Any], *args: Any) -> bool:
        try:
            self._loop.call_soon_threadsafe(callback, *args)
        except RuntimeError:  # the client was closed: its loop is gone
            return False
        return True

    def send(self, data: bytes) -> None:
        """Bytes from the client to the server."""
        self._threadsafe(self._feed, data)

    def send_eof(self) -> None:
        """The client is done sending (as a socket's shutdown(SHUT_WR) or close())."""
        self._threadsafe(self._feed, _EOF)

    def drop(self) -> None:
        """The client vanishes (as a reset connection)."""
        self._threadsafe(self.close)

    def read(self, timeout: float | None) -> bytes | None:
        """Everything the server wrote and the test has not read yet: b"" once the connection
        is closed and drained, None if nothing arrived within `timeout` seconds."""
        with self._cond:
            if not self._cond.wait_for(lambda: self._outbox or self._eof, timeout):
                return None
            data = bytes(self._outbox)
            self._outbox.clear()
        if data:
            self._threadsafe(self._consumed)
        return data


# -- HTTP on the wire -------------------------------------------------------------------------
def _read_response(transport: _MemoryTransport, deadline: float, *, head_only: bool = False,
                   what: str = "a response") -> tuple[int, list[tuple[str, str]], bytes, bytes]:
    """Read one HTTP response: (status, headers, body, bytes after it if it upgraded)."""
    reader = ResponseReader()
    parser = httptools.HttpResponseParser(reader)
    leftover = b""
    while not reader.complete and not (head_only and reader.head_complete):
        data = transport.read(max(0.0, deadline - time.monotonic()))
        if data is None:
            transport.drop()
            raise TimeoutError(f"no complete response within the timeout ({what})")
        if not data:  # the server closed the connection
            names = {name.lower() for name, _ in reader.headers}
            if reader.head_complete and not names & {"content-length", "transfer-encoding"}:
                break  # a body delimited by the end of the connection
            raise ConnectionError(f"the server closed the connection before the end of {what}")
        try:
            parser.feed_data(data)
        except httptools.HttpParserUpgrade as exc:
            offset = exc.args[0] if exc.args else len(data)
            leftover = data[offset:]
            break
        except httptools.HttpParserError as exc:
            if head_only and reader.head_complete:
                break  # bytes after a HEAD response's head: kept in the body, for the test to see
            raise ConnectionError(f"malformed HTTP response from the server ({what}): {exc}") from None
    return parser.get_status_code(), reader.headers, bytes(reader.body), leftover


def _encode_head(start_line: str, headers: list[tuple[str, str]]) -> bytes:
    lines = [start_line]
    for name, value in headers:
        name, value = str(name), str(value)
        if any(c in name + value for c in "\r\n\0") or not name or ":" in name:
            raise ValueError(f"invalid header {name!r}: {value!r}")
        lines.append(f"{name}: {value}")
    text = "\r\n".join(lines) + "\r\n\r\n"
    try:
        return text.encode("latin-1")
    except UnicodeEncodeError:
        return text.encode("utf-8")


def _host(url: str, default: str) -> str:
    """The Host header for `url`: an absolute URL's host and port, else the client's base URL's."""
    return urlsplit(url).netloc or default if "://" in url else default


def _target(url: str, params: Any = None) -> str:
    """The request target for `url` (a path, or an absolute URL whose path is used)."""
    if "://" in url:
        parts = urlsplit(url)
        url = parts.path + ("?" + parts.query if parts.query else "")
    url = url.partition("#")[0]
    path, _, query = url.partition("?")
    if params:
        query = "&".join(filter(None, [query, urlencode(params, doseq=True)]))
    path = quote(path or "/", safe="/%:@!$&'()*+,;=~")
    if not path.startswith("/"):
        path = "/" + path
    query = quote(query, safe="/%:@!$&'()*+,;=~?[]")
    return path + ("?" + query if query else "")


def _with_defaults(defaults: list[tuple[str, str]], given: dict[str, str] | None) -> list[tuple[str, str]]:
    """`defaults`, minus those the caller gave a value for, then the caller's headers."""
    given = dict(given or {})
    names = {name.lower() for name in given}
    return [(n, v) for n, v in defaults if n.lower() not in names] + list(given.items())


# -- WebSocket sessions -----------------------------------------------------------------------
class WebSocketTestSession:
    """The client side of one in-process WebSocket (use as a context manager).

    `subprotocol` is the one the server selected, `headers` those of its 101 response;
    after a close, `close_code` / `close_reason` are the code and reason the test saw (or sent).
    When the app has `permessage_deflate` on, the session offers it as a browser does, and
    once agreed (`headers["sec-websocket-extensions"]`) compresses what it sends and inflates
    what it receives, so tests run the server's compressed path.
    """

    __test__ = False

    def __init__(self, client: TestClient, transport: _MemoryTransport, subprotocol: str | None,
                 headers: list[tuple[str, str]], leftover: bytes = b"") -> None:
        self._client = client
        self._transport = transport
        self.headers = Headers(headers)
        # permessage-deflate, when the server agreed to it: the session compresses every
        # message it sends and inflates the server's, as a browser does.
        compressor = inflater = None
        extension = self.headers.get("sec-websocket-extensions")
        if extension:
            params = client_params(extension).mirrored()
            compressor = Compressor(params, DeflateOptions())
            inflater = Decompressor(params)
        # The client side of the connection's state machine: it reads unmasked frames, masks
        # and compresses what the session sends, and owns the state and the close.
        self._protocol = Connection(
            Side.CLIENT, FrameParser(max_message_size=sys.maxsize, require_mask=False, reject_mask=True,
                                     inflater=inflater),
            compressor=compressor)
        self._protocol.accept()  # the 101 was checked by websocket_connect
        self._messages: deque[str | bytes] = deque()
        self._close_seen = False  # the test reached the close (receive raised, or it closed)
        self.subprotocol = subprotocol
        if leftover:
            self._absorb(leftover)

    @property
    def close_code(self) -> int | None:
        """The code of the close the test saw (or sent); None before."""
        return self._protocol.close_code if self._close_seen else None

    @property
    def close_reason(self) -> str:
        """The reason of that close ("" before)."""
        return self._protocol.close_reason if self._close_seen else ""

    def __enter__(self) -> WebSocketTestSession:
        return self

    def __exit__(self, *exc_info: Any) -> None:
        self.close()

    # -- the wire -------------------------------------------------------------------------
    def _send_frame(self, frame: bytes | None) -> None:
        """Write what the state machine made (None: nothing to write in its state)."""
        if frame is not None:
            self._transport.send(frame)

    def _absorb(self, data: bytes) -> None:
        """Parse bytes from the server (b"": it ended the connection), answering pings and
        close frames through the state machine as a client does."""
        protocol = self._protocol
        if not data:
            protocol.connection_lost()
            return
        for event in protocol.receive_data(data):  # narrowed on event[0] (see FrameEvent)
            if event[0] == OP_TEXT or event[0] == OP_BINARY:
                self._messages.append(event[1])
            elif event[0] == OP_PING:
                self._send_frame(protocol.pong(event[1]))
            elif event[0] == OP_CLOSE:
                self._send_frame(protocol.close_received(*event[1]))
            elif event[0] == PROTOCOL_ERROR:  # the server broke RFC 6455: fail as a client would
                error = event[1]
                self._send_frame(protocol.fail(error.code, f"server protocol error: {error.reason}"))
                self._transport.drop()

    def _pump(self, deadline: float) -> bool:
        """Read and parse what the server sent, waiting until `deadline`; False on timeout."""
        data = self._transport.read(max(0.0, deadline - time.monotonic()))
        if data is None:
            return False
        self._absorb(data)
        return True

    # -- sending --------------------------------------------------------------------------
    def _send_message(self, opcode: int, payload: bytes) -> None:
        if self._close_seen:
            raise WebSocketDisconnect(self._protocol.close_code or 1006, self._protocol.close_reason)
        if self._protocol.state is not OPEN:
            return  # the server closed (not yet received by the test): nothing may follow a close frame
        self._send_frame(self._protocol.send(opcode, payload))

    def send_text(self, data: str) -> None:
        self._send_message(OP_TEXT, str(data).encode("utf-8"))

    def send_bytes(self, data: bytes) -> None:
        self._send_message(OP_BINARY, bytes(data))

    def send_json(self, data: Any, mode: str = "text") -> None:
        text = jsonlib.dumps(data, separators=(",", ":"))
        if mode == "text":
            self.send_text(text)
        else:
            self.send_bytes(text.encode("utf-8"))

    def send(self, data: str | bytes) -> None:
        if isinstance(data, str):
            self.send_text(data)
        else:
            self.send_bytes(data)

    # -- receiving ------------------------------------------------------------------------
    def receive(self, timeout: float = DEFAULT_TIMEOUT) -> str | bytes:
        """The next message; WebSocketDisconnect when the server closed; TimeoutError after `timeout`."""
        deadline = time.monotonic() + timeout
        while True:
            if self._messages:
                return self._messages.popleft()
            protocol = self._protocol
            if protocol.close_code is not None:
                self._close_seen = True
                # The handler's exception, if the App closed for one, else the close as it came.
                self._client._raise_server_exception(self._transport,
                                                     fallback=protocol.close_code == WS_1011_INTERNAL_ERROR)
                raise WebSocketDisconnect(protocol.close_code, protocol.close_reason)
            if not self._pump(deadline):
                raise TimeoutError(f"no message from the server within {timeout} s")

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

    def receive_json(self, timeout: float = DEFAULT_TIMEOUT, *, mode: str | None = None) -> Any:
        """The next message decoded as JSON: text or binary, or only the kind `mode` names
        ("text" or "binary", Starlette's TestClient argument; TypeError for the other kind)."""
        if mode is None:
            return jsonlib.loads(self.receive(timeout))
        if mode == "text":
            return jsonlib.loads(self.receive_text(timeout))
        if mode == "binary":
            return jsonlib.loads(self.receive_bytes(timeout))
        raise ValueError(f'receive_json(mode=...) takes "text" or "binary", not {mode!r}')

    # -- closing --------------------------------------------------------------------------
    def close(self, code: int = 1000, reason: str = "", timeout: float = DEFAULT_TIMEOUT) -> None:
        """Close from the client side (closing handshake) and wait until the server side has
        finished: its close frame, the end of the connection and the handler's task. Then
        re-raise the handler's exception if it raised one the test has not received yet."""
        protocol = self._protocol
        self._send_frame(protocol.close(code, reason))
        self._close_seen = True
        if self._client._loop is None:
            return  # the client is closed: its connections are gone
        deadline = time.monotonic() + timeout
        transport = self._transport
        while protocol.state is not CLOSED:  # messages still on their way are dropped
            if not self._pump(deadline):
                break
        self._messages.clear()
        if not transport.lost.wait(max(0.0, deadline - time.monotonic())):
            transport.drop()  # the server did not end the connection: the client does
        self._client._wait_tasks(transport, max(0.0, deadline - time.monotonic()))
        self._client._raise_server_exception(transport)


# -- the client -------------------------------------------------------------------------------
class TestClient:
    """Runs `app` behind tether's server protocol stack on a background event loop; HTTP
    requests and WebSocket sessions go through in-memory connections.

    With `raise_server_exceptions` (the default) an exception a handler raised, which the App
    answered with a 500 or a close 1011, is re-raised in the test instead (see the module doc).
    """

    __test__ = False  # not a pytest test class

    def __init__(self, app: App, base_url: str = "http://testserver", timeout: float = DEFAULT_TIMEOUT,
                 raise_server_exceptions: bool = True) -> None:
        self.app = app
        self.host = base_url.split("://", 1)[-1].rstrip("/")
        self.timeout = timeout
        self.raise_server_exceptions = raise_server_exceptions
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._state: ServerState | None = None
        self._transports: set[_MemoryTransport] = set()  # open connections (loop thread)
        self._start_lock = threading.Lock()
        # (connection or None if unknown, exception) the App reported, not re-raised yet
        self._errors: list[tuple[_MemoryTransport | None, BaseException]] = []
        self._errors_lock = threading.Lock()
        self._listening = False

    # -- lifecycle ------------------------------------------------------------------------
    def __enter__(self) -> TestClient:
        self._start()
        return self

    def __exit__(self, *exc_info: Any) -> None:
        self.close()

    def _start(self) -> None:
        with self._start_lock:
            if self._loop is not None:
                return
            loop = asyncio.new_event_loop()
            ready = threading.Event()

            def run() -> None:
                asyncio.set_event_loop(loop)
                ready.set()
                loop.run_forever()

            self._thread = threading.Thread(target=run, name="tether-testclient", daemon=True)
            self._thread.start()
            ready.wait()
            self._loop = loop
            if self.raise_server_exceptions:
                self.app.add_error_listener(self._server_exception)
                self._listening = True

            async def startup() -> None:
                self._state = ServerState(self.app, loop)
                await self.app.startup()  # binds the hub to this loop

            self._run(startup())

    def close(self) -> None:
        """Drop the open connections (their handlers see 1006), give the handlers up to
        SHUTDOWN_GRACE seconds to finish (then cancel them), run the shutdown hooks, cancel
        what is left on the loop and stop it."""
        if self._loop is None:
            return
        loop = self._loop

        async def shutdown() -> None:
            for transport in list(self._transports):
                transport.close()  # the client goes away: handlers see 1006
            state = self._state
            pending = set(state.tasks) if state is not None else set()
            if pending:  # handlers get a moment to see the disconnect and finish, then are cancelled
                await asyncio.wait(pending, timeout=min(SHUTDOWN_GRACE, self.app.settings.shutdown_timeout))
            try:
                await self.app.shutdown()
            finally:
                current = asyncio.current_task()
                leftover = [task for task in asyncio.all_tasks() if task is not current]
                for task in leftover:
                    task.cancel()
                if leftover:
                    await asyncio.wait(leftover, timeout=1)

        try:
            asyncio.run_coroutine_threadsafe(shutdown(), loop).result(2 * self.timeout + 2)
        finally:
            self._loop = None
            loop.call_soon_threadsafe(loop.stop)
            assert self._thread is not None
            self._thread.join(self.timeout)
            loop.close()
            if self._listening:
                self._listening = False
                with contextlib.suppress(ValueError):
                    self.app.remove_error_listener(self._server_exception)
        # What no request or session re-raised (a handler that raised once the client had
        # dropped its connection, a session the test never closed): the first one, here.
        with self._errors_lock:
            left, self._errors = self._errors, []
        if left:
            first = left[0][1]
            if len(left) > 1:
                first.add_note(f"(the app reported {len(left) - 1} more handler exception(s) after it, "
                               "logged on the 'tether' logger)")
            raise first

    # -- the handlers' exceptions ---------------------------------------------------------
    def _server_exception(self, exc: BaseException) -> None:
        """The App's error listener (loop thread): record `exc` for the connection it came from."""
        transport = _connection.get()
        if transport is not None and transport._client is not self:
            return  # another TestClient's connection to the same app
        with self._errors_lock:
            self._errors.append((transport, exc))

    def _raise_server_exception(self, transport: _MemoryTransport, *, fallback: bool = False) -> None:
        """Raise the first exception recorded for `transport` (forgetting its others: a request
        or a session raises once); with `fallback`, else the first one whose connection is
        unknown. Nothing recorded: return."""
        with self._errors_lock:
            found = next((i for i, (t, _) in enumerate(self._errors) if t is transport), None)
            if found is None and fallback:
                found = next((i for i, (t, _) in enumerate(self._errors) if t is None), None)
            if found is None:
                return
            exc = self._errors[found][1]
            self._errors = [(t, e) for i, (t, e) in enumerate(self._errors) if i != found and t is not transport]
        raise exc

    def _run(self, coro: Any, timeout: float | None = None) -> Any:
        assert self._loop is not None
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result(
            self.timeout if timeout is None else timeout)

    def _connect(self) -> _MemoryTransport:
        """A new in-memory connection to the server."""
        self._start()
        loop, state = self._loop, self._state
        assert loop is not None and state is not None
        transport = _MemoryTransport(self, loop, state)

        async def connect() -> None:
            transport.connect(state.new_connection())

        self._run(connect())
        return transport

    def _wait_tasks(self, transport: _MemoryTransport, timeout: float) -> None:
        """Wait (up to `timeout`) for the server tasks the connection started."""
        if self._loop is None:
            return

        async def wait() -> None:
            tasks = [task for task in transport.tasks if not task.done()]
            if tasks:
                await asyncio.wait(tasks, timeout=timeout)

        with contextlib.suppress(Exception):  # the app logged it; a test asserts on what the client saw
            self._run(wait(), timeout + 1)

    # -- HTTP -----------------------------------------------------------------------------
    def request(self, method: str, url: str, *, params: Any = None, headers: dict[str, str] | None = None,
                json: Any = None, data: Any = None, content: bytes | str | None = None,
                cookies: dict[str, str] | None = None) -> TestResponse:
        """Send one request (on a new connection) and return the complete response."""
        method = method.upper()
        defaults = [("host", _host(url, self.host)), ("user-agent", "tether-testclient")]
        body = b""
        if json is not None:
            body = jsonlib.dumps(json).encode("utf-8")
            defaults.append(("content-type", "application/json"))
        elif isinstance(data, dict):
            body = urlencode(data, doseq=True).encode("utf-8")
            defaults.append(("content-type", "application/x-www-form-urlencoded"))
        elif content is not None or data is not None:
            raw = content if content is not None else data
            body = raw.encode("utf-8") if isinstance(raw, str) else bytes(raw)
        if body:
            defaults.append(("content-length", str(len(body))))
        if cookies:
            defaults.append(("cookie", "; ".join(f"{k}={v}" for k, v in cookies.items())))
        head = _encode_head(f"{method} {_target(url, params)} HTTP/1.1", _with_defaults(defaults, headers))
        transport = self._connect()
        try:
            transport.send(head + body)
            status, response_headers, content_bytes, _ = _read_response(
                transport, time.monotonic() + self.timeout, head_only=method == "HEAD",
                what=f"{method} {url}")
        finally:
            transport.send_eof()  # done with this connection: the server closes it
        self._raise_server_exception(transport, fallback=status == 500)  # instead of its 500
        return TestResponse(status, Headers(response_headers), content_bytes)

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
        """Open a session; raise WebSocketRejected (with the HTTP status) if the app refuses it
        (or the handler's exception, if it raised before accepting and raise_server_exceptions)."""
        key = base64.b64encode(os.urandom(16)).decode("ascii")
        defaults = [("host", _host(url, self.host)), ("upgrade", "websocket"), ("connection", "Upgrade"),
                    ("sec-websocket-version", "13"), ("sec-websocket-key", key)]
        if subprotocols:
            defaults.append(("sec-websocket-protocol", ", ".join(subprotocols)))
        if self.app.settings.permessage_deflate:  # offer it as browsers do (a test may set its own)
            defaults.append(("sec-websocket-extensions", "permessage-deflate; client_max_window_bits"))
        request_headers = _with_defaults(defaults, headers)
        key = Headers(request_headers).get("sec-websocket-key", key)  # the test may set its own
        head = _encode_head(f"GET {_target(url)} HTTP/1.1", request_headers)
        wait = timeout if timeout is not None else self.timeout
        transport = self._connect()
        transport.send(head)
        try:
            status, response_headers, body, leftover = _read_response(
                transport, time.monotonic() + wait, what=f"the WebSocket handshake for {url}")
        except TimeoutError:
            raise TimeoutError(f"the app neither accepted nor rejected {url} within {wait} s") from None
        response = Headers(response_headers)
        if status != 101:
            transport.send_eof()
            self._raise_server_exception(transport, fallback=status == 500)  # raised before accepting
            raise WebSocketRejected(status, body, response_headers)
        if response.get("sec-websocket-accept") != accept_key(key):
            transport.drop()
            raise ConnectionError(f"bad Sec-WebSocket-Accept in the server's 101 response for {url}")
        return WebSocketTestSession(self, transport, response.get("sec-websocket-protocol"),
                                    response_headers, leftover)

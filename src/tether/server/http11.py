"""HTTP/1.1 on an asyncio transport: keep-alive, pipelining, and the hand-over to WebSocket.

Requests are parsed by httptools, answered one at a time in arrival order, and bounded:
a request's head by `max_header_size` (431; every byte of it: see `tether.server.heads`), bodies by
`max_body_size` (413), a request by `handshake_timeout` from its first byte (or the
connection's start) to its end, whatever arrives meanwhile, and an idle keep-alive
connection by `keepalive_timeout`. A response counts against the send bound: the next
pipelined request is answered only once the transport has drained, so a client that does
not read makes the server hold about one response (plus the transport's high-water mark)
and stop reading once `_MAX_PIPELINED` requests wait (the rest of a read that brought more
waits unparsed, as bytes).

A connection is in one `Phase`, which says what becomes of what it reads and what follows
the responses in progress (those of `_task`, which answers the queued requests one at a
time; with none in progress, what a phase waits for is done at once). Every change of phase
goes through `_step`, along `_TRANSITIONS`; any other is a bug and raises `IllegalTransition`.

    READING      requests are read and answered in order; between them, the keep-alive wait
    HALF_CLOSED  the client ended its sending side (`nc -N`): what it sent is answered, then
                 the close
    UPGRADING    a WebSocket upgrade was read: nothing after it is answered; once the
                 responses before it are written, the hand-over to a `NativeChannel` (no
                 HTTP timer survives it)
    REFUSING     a request is refused (400, 413, 431): nothing more is read; once the
                 responses before it are written, its error response, then the close
    CLOSING      the server shuts down: the response in progress is the last, then the close
    UPGRADED     the connection is the NativeChannel's (this protocol forwards its loss)
    CLOSED       closed, by this side or the client

A refusal or an upgrade is acted on at the end of the read that brought it: the rest of the
read is still parsed after an upgrade (httptools parses on past one without `Connection:
Upgrade`), and a refusal there wins. The first refusal wins over later ones; an upgrade to
another protocol (h2c) is answered as plain HTTP, and what follows it is read on.
"""

from __future__ import annotations

import asyncio
import enum
import logging
from collections import deque
from collections.abc import Sequence
from typing import TYPE_CHECKING, Final, Literal, cast
from urllib.parse import unquote

import httptools

from ..datastructures import Headers
from ..http import Request, Response, body_allowed
from ..metrics import count_handshake
from ..protocol import HandshakeError, header_tokens, is_upgrade_request, validate_upgrade
from .channel import NativeChannel
from .compression import open_channel
from .flow import WriteFlowControl
from .heads import HeadMeter
from .wire import http_response

if TYPE_CHECKING:
    from .state import ServerContext

__all__ = ["HttpProtocol", "Phase", "IllegalTransition"]

access_log = logging.getLogger("tether.access")
logger = logging.getLogger("tether")

_MAX_PIPELINED = 16


class Phase(enum.Enum):
    """Where an HTTP connection is in its life (see the module doc). Each phase says whether
    it `answers` requests (reads them, queues them and answers them in order) and whether
    the parser is still `fed` what arrives."""

    answers: bool
    fed: bool

    def __init__(self, label: str, answers: bool, fed: bool) -> None:
        self.answers = answers
        self.fed = fed

    READING = ("reading", True, True)
    HALF_CLOSED = ("half-closed", True, True)
    UPGRADING = ("upgrading", False, True)  # fed on: what follows the upgrade may be refused
    REFUSING = ("refusing", False, False)
    CLOSING = ("closing", False, False)
    UPGRADED = ("upgraded", False, False)
    CLOSED = ("closed", False, False)


READING: Final = Phase.READING
HALF_CLOSED: Final = Phase.HALF_CLOSED
UPGRADING: Final = Phase.UPGRADING
REFUSING: Final = Phase.REFUSING
CLOSING: Final = Phase.CLOSING
UPGRADED: Final = Phase.UPGRADED
CLOSED: Final = Phase.CLOSED


# What moves a connection from one phase to another: a request is refused, a WebSocket
# upgrade request is read, the client ends its sending side, the server shuts down, the
# upgrade is handed over to its channel, the connection is closed (by either side).
_Event = Literal["refusal", "upgrade", "EOF", "shutdown", "hand-over", "close"]

# Every legal move: phase -> {event: next phase}. A move to the phase it is in means the
# event changes nothing there (the first refusal wins; a closing or closed connection ends anyway).
_TRANSITIONS: Final[dict[Phase, dict[_Event, Phase]]] = {
    READING: {"refusal": REFUSING, "upgrade": UPGRADING, "EOF": HALF_CLOSED, "shutdown": CLOSING, "close": CLOSED},
    HALF_CLOSED: {"refusal": REFUSING, "upgrade": UPGRADING, "shutdown": CLOSING, "close": CLOSED},
    UPGRADING: {"refusal": REFUSING, "EOF": UPGRADING, "shutdown": CLOSING, "hand-over": UPGRADED, "close": CLOSED},
    REFUSING: {"refusal": REFUSING, "EOF": REFUSING, "shutdown": CLOSING, "close": CLOSED},
    CLOSING: {"refusal": CLOSING, "EOF": CLOSING, "shutdown": CLOSING, "close": CLOSED},
    UPGRADED: {"shutdown": UPGRADED, "close": CLOSED},
    CLOSED: {"refusal": CLOSED, "EOF": CLOSED, "shutdown": CLOSED, "close": CLOSED},
}


class IllegalTransition(RuntimeError):
    """An event the connection's phase has no move for: a bug in the server, not the client's
    doing (whatever a client sends moves only along `_TRANSITIONS`)."""


class _RequestError(Exception):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


class HttpProtocol(WriteFlowControl, asyncio.Protocol):
    """One client connection while it speaks HTTP."""

    def __init__(self, server: ServerContext) -> None:
        super().__init__()
        self.server = server
        self.loop = server.loop
        self.settings = server.settings
        # None until connection_made, which asyncio calls before any other method: the
        # methods that run later assert it for the type checker.
        self.transport: asyncio.Transport | None = None
        self.client: tuple[str, int] | None = None
        self.scheme = "http"
        self.parser = httptools.HttpRequestParser(self)
        self._url = b""
        self._headers: list[tuple[str, str]] = []
        self._body: list[bytes] = []
        self._body_size = 0
        self._head = HeadMeter(self.settings.max_header_size)
        self._phase = READING  # changed by `_step` only
        self._queue: deque[tuple[Request, bool]] = deque()
        self._task: asyncio.Task[None] | None = None  # answers the queue; None: no response in progress
        self._unparsed = b""  # the rest of a read, past _MAX_PIPELINED waiting requests
        self._refusal: _RequestError | None = None  # REFUSING's answer
        self._upgrade: Request | None = None  # UPGRADING's request
        self._leftover = b""  # what followed the upgrade request
        self._websocket: NativeChannel | None = None  # UPGRADED's channel
        #: The task serving the WebSocket this connection was upgraded to, once it was.
        self.websocket_task: asyncio.Task[object] | None = None
        self._timer: asyncio.TimerHandle | None = None

    @property
    def phase(self) -> Phase:
        """Where the connection is in its life (see the module doc)."""
        return self._phase

    def _step(self, event: _Event) -> bool:
        """Move to the phase `event` leads to from this one (`_TRANSITIONS`); False when that is
        the phase it is in. IllegalTransition when the phase has no move for it."""
        moves = _TRANSITIONS[self._phase]
        if event not in moves:
            raise IllegalTransition(f"HTTP connection {self.client}: {event} in phase {self._phase.name}")
        phase = moves[event]
        moved = phase is not self._phase
        self._phase = phase
        return moved

    # -- connection -----------------------------------------------------------------------
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # A stream server's transports (and the TestClient's in-memory one) are Transports.
        self.transport = cast(asyncio.Transport, transport)
        peer = transport.get_extra_info("peername")
        self.client = (peer[0], peer[1]) if isinstance(peer, tuple) else None
        self.scheme = "https" if transport.get_extra_info("sslcontext") else "http"
        self.server.connections.add(self)
        self._set_timer(self.settings.handshake_timeout)

    def connection_lost(self, exc: Exception | None) -> None:
        upgraded = self._phase is UPGRADED
        self._step("close")
        self.server.connections.discard(self)
        self._cancel_timer()
        if self._task is not None:
            self._task.cancel()
        if upgraded:
            assert self._websocket is not None
            self._websocket.connection_lost(exc)
        self._release_drain()
        self._unparsed = b""  # nothing more is parsed (a `_read_on` still scheduled finds nothing)
        self._drop_parser()

    def _drop_parser(self) -> None:
        """End of the connection's HTTP life (it closed, or became a WebSocket): drop the
        parser. It holds this protocol's bound methods, a reference cycle that only the
        collector's full passes free: kept, the protocol and what it parsed (a refused head's
        headers: about 1 MiB of objects for 64 KiB of short lines) would pile up until one."""
        if hasattr(self, "parser"):
            del self.parser

    def _close(self) -> None:
        self._step("close")
        assert self.transport is not None
        self.transport.close()

    def eof_received(self) -> bool | None:
        """The client ended its sending side (a half-close, as `nc -N` does): the requests
        already received are still answered, then the connection closes (True keeps the
        transport open for writing meanwhile). Nothing to answer, or TLS (which cannot stay
        half-open): close now."""
        self._step("EOF")
        if self._task is None:
            self._answered_all()
        return self._task is not None and self.scheme == "http"

    def _set_timer(self, seconds: float) -> None:
        self._cancel_timer()
        if seconds > 0:
            self._timer = self.loop.call_later(seconds, self._timed_out)

    def _cancel_timer(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def _timed_out(self) -> None:
        self._timer = None
        self._close()

    def shutdown(self) -> None:
        """Server shutdown: close now if idle, else after the response in progress."""
        self._step("shutdown")
        if self._task is None:
            self._answered_all()

    # -- parsing --------------------------------------------------------------------------
    def data_received(self, data: bytes) -> None:
        head = self._head
        view: memoryview | None = None  # the pieces of a read that is cut are fed without copies
        pos = 0
        end = len(data)
        try:
            while pos < end and self._phase.fed and not head.over and len(self._queue) <= _MAX_PIPELINED:
                stop = head.next_piece(data, pos, end, self._body_size)
                if stop == pos:
                    break  # over the limit, where it is
                if pos == 0 and stop == end:  # the whole read: the usual case
                    self.parser.feed_data(data)
                else:
                    view = view or memoryview(data)
                    self.parser.feed_data(view[pos:stop])
                head.piece_fed(data, stop)
                pos = stop
        except httptools.HttpParserUpgrade as exc:
            rest = data[pos + exc.args[0]:]
            if self._phase is UPGRADING:
                self._leftover = rest
            elif rest and self._phase.answers:
                # An upgrade to another protocol (h2c), answered as plain HTTP: go on after it.
                assert self.transport is not None
                self.transport.pause_reading()  # the socket's next bytes come after these
                self._unparsed = rest
                self.loop.call_soon(self._read_on)
            pos = end
        except httptools.HttpParserError as exc:
            self._refuse(400, f"malformed HTTP request: {exc}")
        if head.over:
            self._head_over()
        if not self._phase.answers:
            # Nothing more is read; what stopped it is carried out once the responses before it are written.
            assert self.transport is not None
            self.transport.pause_reading()
            self._cancel_timer()
            if self._task is None:
                self._answered_all()
        elif pos < end and len(self._queue) > _MAX_PIPELINED:
            self._unparsed = data[pos:]  # reading is paused: parsed once the queue is half empty

    def _refuse(self, status: int, message: str) -> None:
        """Refuse the connection's current request (the first refusal wins): answered once the
        responses before it are written, then the connection closes."""
        if self._step("refusal"):
            self._refusal = _RequestError(status, message)

    def _head_over(self) -> None:
        """Refuse the request whose head passes max_header_size."""
        self._refuse(431, f"request head over {self.settings.max_header_size} bytes")

    def on_message_begin(self) -> None:
        # A request gets handshake_timeout from its first byte to its end; more data does not
        # extend it (a client trickling bytes must not hold the connection forever).
        self._set_timer(self.settings.handshake_timeout)
        self._head.message_begun()
        self._url = b""
        self._headers = []
        self._body = []
        self._body_size = 0

    def on_url(self, url: bytes) -> None:
        if self._head.seen(len(url)):
            self._url += url
        else:
            self._head_over()

    def on_header(self, name: bytes, value: bytes) -> None:
        if self._head.seen(len(name) + len(value) + 3):  # "name:value\r\n" at the least
            self._headers.append((name.decode("latin-1"), value.decode("latin-1")))
        else:
            self._head_over()

    def on_headers_complete(self) -> None:
        self._head.head_ended(self._headers)

    def on_body(self, body: bytes) -> None:
        self._body_size += len(body)
        if self._body_size > self.settings.max_body_size:
            self._refuse(413, f"request body over {self.settings.max_body_size} bytes")
            return
        self._body.append(body)

    def on_message_complete(self) -> None:
        self._head.message_ended(self._body_size)
        if not self._phase.answers:
            # After an upgrade the connection is no longer HTTP's (or it is refused or
            # closing): what httptools parsed past one it did not see as such goes unanswered.
            return
        raw_path, _, query = self._url.decode("latin-1").partition("?")
        request = Request(
            self.parser.get_method().decode("ascii"), unquote(raw_path) or "/", query,
            Headers(self._headers), b"".join(self._body), self.client,
            http_version=self.parser.get_http_version(), scheme=self.scheme)
        if is_upgrade_request(request.headers.joined()):
            self._step("upgrade")
            self._upgrade = request
            return
        self._queue.append((request, self.parser.should_keep_alive()))
        if len(self._queue) > _MAX_PIPELINED:
            assert self.transport is not None
            self.transport.pause_reading()
        self._cancel_timer()  # complete: answering it has no deadline (the keep-alive one follows)
        if self._task is None:
            self._task = self.loop.create_task(self._process())

    # -- answering ------------------------------------------------------------------------
    async def _process(self) -> None:
        try:
            transport = self.transport
            assert transport is not None
            while self._queue:
                request, keep_alive = self._queue.popleft()
                if len(self._queue) == _MAX_PIPELINED // 2 and self._phase.answers:
                    self._read_on()
                response = await self.server.app.handle_http(request)
                if self._phase is not READING and self._last_response():
                    keep_alive = False  # (it says so: Connection: close)
                try:
                    await self._write_response(request, response, keep_alive)
                except Exception:
                    # The head is out, so no error response is possible: log, and end the
                    # connection so the client sees a cut-off body instead of waiting.
                    logger.exception("%s %s failed while sending its response", request.method, request.path)
                    self._close()
                    return
                if not keep_alive:
                    self._close()
                    return
                # The response counts against the send bound: the next request is answered
                # once the transport has drained (see the module doc).
                if self._write_paused:
                    await self._drain()
        finally:
            self._task = None
        self._answered_all()

    def _last_response(self) -> bool:
        """Whether the response about to be written is the connection's last, whatever its
        request asked: the server shuts down, the connection is closed, or the client ended
        its sending side and no request waits behind this one."""
        phase = self._phase
        return phase is CLOSING or phase is CLOSED or (phase is HALF_CLOSED and not self._queue)

    def _read_on(self) -> None:
        """Go on reading: first the rest of the read that filled the queue, then the socket
        (unless that rest filled it again)."""
        unparsed, self._unparsed = self._unparsed, b""
        if unparsed:
            self.data_received(unparsed)
        if len(self._queue) <= _MAX_PIPELINED and self._phase.answers:
            assert self.transport is not None
            self.transport.resume_reading()

    def _answered_all(self) -> None:
        """Every response so far is written (or none was in progress): carry out what the
        phase has waiting behind them."""
        phase = self._phase
        if phase is READING:
            if not self._head.in_message:  # one that has begun keeps its handshake_timeout
                self._set_timer(self.settings.keepalive_timeout)
        elif phase is REFUSING:
            assert self._refusal is not None
            self._respond_error(self._refusal)
        elif phase is UPGRADING:
            request, self._upgrade = self._upgrade, None
            leftover, self._leftover = self._leftover, b""
            assert request is not None
            self._start_websocket(request, leftover)
        elif phase is HALF_CLOSED or phase is CLOSING:
            self._close()
        # UPGRADED: the channel has the connection; CLOSED: nothing is left to answer

    async def _write_response(self, request: Request, response: Response, keep_alive: bool) -> None:
        headers = response.header_list()
        if not keep_alive:
            headers.append(("Connection", "close"))
        assert self.transport is not None
        write = self.transport.write
        no_body = not body_allowed(request.method, response.status_code)
        target = f"{request.path}?{request.query_string}" if request.query_string else request.path
        access_log.info('%s:%s - "%s %s HTTP/%s" %d', *(self.client or ("-", "-")), request.method,
                        target, request.http_version, response.status_code)
        chunks = response.body_chunks()
        try:
            if response.is_streaming:
                headers.append(("Transfer-Encoding", "chunked"))
                write(http_response(response.status_code, headers))
                if no_body:
                    return
                async for chunk in chunks:
                    if chunk:
                        write(b"%x\r\n%b\r\n" % (len(chunk), chunk))
                        await self._drain()
                write(b"0\r\n\r\n")
                return
            first = b"" if no_body else await anext(chunks, b"")
            write(http_response(response.status_code, headers, first))
            if not no_body:
                async for chunk in chunks:
                    write(chunk)
                    await self._drain()
        finally:
            await chunks.aclose()

    async def _drain(self) -> None:
        waiter = self.writable()
        if waiter is not None:
            assert self.transport is not None
            if not self.transport.is_closing():
                await waiter

    def _respond_error(self, error: _RequestError, headers: Sequence[tuple[str, str]] = ()) -> None:
        """Answer a request that cannot be served, then close the connection."""
        body = (error.message + "\n").encode("utf-8")
        head = [("Content-Type", "text/plain; charset=utf-8"), ("Content-Length", str(len(body))),
                ("Connection", "close"), *headers]
        access_log.warning('%s:%s - refused %d: %s', *(self.client or ("-", "-")), error.status, error.message)
        assert self.transport is not None
        self.transport.write(http_response(error.status, head, body))
        self._close()

    # -- WebSocket ------------------------------------------------------------------------
    def _start_websocket(self, request: Request, leftover: bytes) -> None:
        joined = request.headers.joined()
        try:
            key = validate_upgrade(request.method, joined)
            assert self.transport is not None
            channel = open_channel(self.server, self.transport, key, leftover,
                                   joined.get("sec-websocket-extensions"))
        except HandshakeError as exc:
            count_handshake(self.server.app, exc.status)
            self._respond_error(_RequestError(exc.status, exc.message), exc.headers)
            return
        self._step("hand-over")
        self._cancel_timer()
        assert self.transport is not None
        self.transport.pause_reading()
        self.server.connections.discard(self)  # the channel tracks itself once accepted
        self._drop_parser()
        self._websocket = channel
        task = self.loop.create_task(self.server.app.serve_websocket(
            channel, path=request.path, query_string=request.query_string, headers=request.headers,
            client=self.client, subprotocols=header_tokens(joined.get("sec-websocket-protocol")),
            scheme="wss" if self.scheme == "https" else "ws"))
        self.server.track(task)
        self.websocket_task = task

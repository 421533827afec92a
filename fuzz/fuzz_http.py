"""Fuzz target: the native server's HTTP request path (`tether.server.http11.HttpProtocol`),
and, past a valid upgrade, its WebSocket channel, over an in-memory transport.

`check(data)` opens one connection to a small App (routes below), sends it the input's bytes
and ends it, all on one event loop in this thread, and raises when the server did something
other than answer or close: an exception out of a protocol callback, an exception reported
to the loop (a task that failed with nobody to see it), an ERROR logged (the App's handlers
never fail, so one is the server's own), output that is not an HTTP response, or anything
of the connection left behind once it ended (a task, an entry in the server's connection
set). The input is

    byte 0   client: bit 0 set = it never reads (the transport's buffer fills and the server
             is paused, as a socket is); bit 1 set = it half-closes (EOF) before it goes;
             bit 2 set = the loop runs between the pieces (else they arrive in one burst)
    byte 1   seed of the split points (seed 0: one byte at a time)
    rest     the bytes the client sends
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import deque
from typing import Any

from pieces import cut  # fuzz/ is on sys.path: run.py and the tests put it there

from tether import App, TetherError
from tether.http import Response, StreamingResponse
from tether.server.serve import ServerState

MAX_LEN = 4096  # libFuzzer's -max_len for this target
HIGH_WATER = 16 * 1024  # a client that does not read pauses the server past this many bytes
SETTLE_TURNS = 500  # loop turns one settle may take: a server still busy after that is a finding


def build_app() -> App:
    """The App under fuzz: small limits, so that 413, 431, 1009 and 1008 are reachable, and
    permessage-deflate on, so that an offer is negotiated and compressed frames are inflated."""
    app = App(max_header_size=1024, max_body_size=2048, max_message_size=512, max_send_buffer=8192,
              max_queue=2, permessage_deflate=True)

    @app.get("/")
    async def index() -> str:
        return "hello"

    @app.get("/items/{item_id}")
    async def item(item_id: int, detail: bool = False) -> dict[str, Any]:
        return {"id": item_id, "detail": detail}

    @app.post("/echo")
    async def echo_body(request: Any) -> Response:
        return Response(await request.body(), media_type="application/octet-stream")

    @app.get("/big")
    async def big() -> str:
        return "x" * 100_000

    @app.get("/stream")
    async def stream() -> StreamingResponse:
        async def chunks() -> Any:
            for n in range(3):
                yield f"chunk {n}\n" * 500
                await asyncio.sleep(0)
        return StreamingResponse(chunks(), media_type="text/plain")

    @app.websocket("/ws", subprotocols=["chat"])
    async def ws_echo(websocket: Any) -> None:
        try:
            async for message in websocket:
                await websocket.send(message)
        except TetherError:  # the client went or broke the protocol: not the server's fault
            pass

    return app


class FakeTransport(asyncio.Transport):
    """A socket transport's behaviour, in memory and synchronous: bytes in (`feed`, held
    while reading is paused), what the server writes kept in `written`, flow control on the
    server's side when the client does not read, `close()` ending the connection on the
    next loop turn as asyncio's transports do."""

    def __init__(self, loop: asyncio.AbstractEventLoop, reads: bool) -> None:
        super().__init__({"peername": ("fuzz", 50000), "sockname": ("fuzz", 80), "sslcontext": None})
        self.loop = loop
        self.reads = reads
        self.protocol: Any = None
        self.closing = False
        self.lost = False
        self.paused = False
        self.writing_paused = False
        self.inbox: deque[bytes | None] = deque()  # None: the client's EOF
        self.written = bytearray()
        self.unread = 0

    def set_protocol(self, protocol: Any) -> None:
        self.protocol = protocol

    def get_protocol(self) -> Any:
        return self.protocol

    def is_closing(self) -> bool:
        return self.closing

    def is_reading(self) -> bool:
        return not self.paused and not self.closing

    def pause_reading(self) -> None:
        self.paused = True

    def resume_reading(self) -> None:
        # A socket transport reads again in the loop's next I/O phase: after the callbacks
        # already scheduled (in asyncio's and uvloop's loops alike), hence two hops.
        if self.paused:
            self.paused = False
            self.loop.call_soon(self.loop.call_soon, self.deliver)

    def write(self, data: Any) -> None:
        if self.lost:
            return
        self.written += data
        if not self.reads:
            self.unread += len(data)
            if self.unread > HIGH_WATER and not self.writing_paused:
                self.writing_paused = True
                self.protocol.pause_writing()

    def writelines(self, list_of_data: Any) -> None:
        self.write(b"".join(list_of_data))

    def get_write_buffer_size(self) -> int:
        return self.unread

    def get_write_buffer_limits(self) -> tuple[int, int]:
        return HIGH_WATER // 4, HIGH_WATER

    def can_write_eof(self) -> bool:
        return False

    def close(self) -> None:
        if not self.closing:
            self.closing = True
            self.inbox.clear()
            self.loop.call_soon(self.lose)

    def abort(self) -> None:
        self.close()

    def lose(self) -> None:
        if not self.lost:
            self.lost = True
            self.closing = True
            self.protocol.connection_lost(None)

    def feed(self, data: bytes | None) -> None:
        if not self.closing:
            self.inbox.append(data)
            self.deliver()

    def deliver(self) -> None:
        while self.inbox and not self.paused and not self.closing:
            data = self.inbox.popleft()
            if data is None:
                if not self.protocol.eof_received():
                    self.close()
                return
            self.protocol.data_received(data)


class _ErrorLog(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.ERROR)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


class Harness:
    """One App (`build_app()` unless given), its server state and an event loop, kept for
    every input: connections come and go on it as on a long-running server."""

    def __init__(self, app: App | None = None) -> None:
        self.loop = asyncio.new_event_loop()
        self.app = app if app is not None else build_app()
        self.state = ServerState(self.app, self.loop)
        self.loop_errors: list[dict[str, Any]] = []
        self.loop.set_exception_handler(lambda loop, context: self.loop_errors.append(context))
        self.log = _ErrorLog()

    def close(self) -> None:
        """Drop the loop and whatever is still on it."""
        for task in asyncio.all_tasks(self.loop):
            task.cancel()
        with contextlib.suppress(BaseException):  # the input failed already: that is the report
            self.settle()
        self.loop.close()

    def settle(self) -> None:
        """Run the loop until nothing is ready to run (timers are not waited for)."""
        self.loop.run_until_complete(self._settle())

    async def _settle(self) -> None:
        ready = getattr(self.loop, "_ready", None)  # asyncio's run queue: empty means idle
        for _ in range(SETTLE_TURNS):
            await asyncio.sleep(0)
            if ready is not None and not ready:
                return
        if ready is not None:
            raise AssertionError(f"the server is still busy after {SETTLE_TURNS} loop turns")

    def run(self, data: bytes) -> FakeTransport:
        """Serve one connection the input describes and end it; return its transport."""
        mode, seed, stream = data[0], data[1], data[2:]
        transport = FakeTransport(self.loop, reads=not mode & 1)
        protocol = self.state.new_connection()
        transport.set_protocol(protocol)
        protocol.connection_made(transport)
        for piece in cut(stream, seed):
            transport.feed(piece)
            if mode & 4:
                self.settle()
        self.settle()
        if mode & 2:
            transport.feed(None)
            self.settle()
        transport.lose()  # the client goes (a reset, or its close after the EOF)
        self.settle()
        return transport

    def check(self, data: bytes) -> None:
        """Serve one input and raise if the server did anything but answer or close. After
        a failure the harness is closed: make a new one for the next input."""
        if len(data) < 2:
            return
        root = logging.getLogger()
        root.addHandler(self.log)
        try:
            try:
                transport = self.run(data)
            finally:
                root.removeHandler(self.log)
            errors, self.loop_errors = self.loop_errors, []
            records, self.log.records = self.log.records, []
            if errors:
                context = errors[0]
                exc = context.get("exception")
                raise AssertionError(f"reported to the loop: {context.get('message')}: {exc!r}") from exc
            if records:
                record = records[0]
                exc = record.exc_info[1] if record.exc_info else None
                raise AssertionError(f"logged at {record.levelname} by {record.name}: {record.getMessage()}") from exc
            self.check_clean(transport)
        except BaseException:
            self.close()
            raise

    def check_clean(self, transport: FakeTransport) -> None:
        """Nothing of an ended connection may stay behind."""
        assert not self.state.connections, f"connections left in the server: {self.state.connections!r}"
        current = asyncio.current_task(self.loop) if self.loop.is_running() else None
        left = [task for task in asyncio.all_tasks(self.loop) if task is not current]
        assert not left, f"tasks left after the connection ended: {left!r}"
        out = bytes(transport.written)
        if out:
            assert out[:9] in (b"HTTP/1.1 ", b"HTTP/1.0 ") and out[9:12].isdigit() and out[12:13] == b" ", \
                f"the server wrote something other than an HTTP response: {out[:80]!r}"


_current: list[Harness] = []  # the module's harness, once made


def check(data: bytes) -> None:
    """One fuzz input (see the module docstring), on the module's harness (made on first use)."""
    if not _current:
        _current.append(Harness())
    try:
        _current[0].check(data)
    except BaseException:
        _current.clear()  # what the failed input left behind must not spill into the next one
        raise

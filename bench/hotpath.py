"""The native server's message path in process, for instruction counts (bench/callgrind_ab.sh).

    python bench/hotpath.py echo N     # one connection echoes N 64-byte messages, 8 per read
    python bench/hotpath.py bc N       # one sender's N messages broadcast to 200 connections
    python bench/hotpath.py pub N      # one sender's N messages published into a room of 200 members
    python bench/hotpath.py get N      # N keep-alive GET requests on one connection, one per read
    python bench/hotpath.py get8 N     # the same, 8 pipelined requests per read

Bytes go through the real HttpProtocol (upgrade) and the WebSocket channel, with a transport
that only counts what is written: no socket, no syscall, so `valgrind --tool=callgrind`
counts the same instructions run after run. Works with any tether revision that has
tether.server.serve.ServerState and tether.server.http11.HttpProtocol. `pub` uses only the
public API (`websocket.join`, `app.hub.publish`) and a room without history, so it measures
the same thing on revisions before and after history rooms (issue 18).
"""
import asyncio, base64, os, sys, time
import uvloop
from tether import App
from tether.server.serve import ServerState
from tether.server.http11 import HttpProtocol
from tether.protocol import encode_frame, OP_TEXT

class T(asyncio.Transport):
    def __init__(self): super().__init__(); self.out = 0; self.proto = None; self.closing = False
    def write(self, data): self.out += len(data)
    def get_write_buffer_size(self): return 0
    def set_protocol(self, p): self.proto = p
    def get_protocol(self): return self.proto
    def pause_reading(self): pass
    def resume_reading(self): pass
    def is_closing(self): return self.closing
    def close(self): self.closing = True
    def abort(self): self.closing = True
    def get_extra_info(self, name, default=None): return ("127.0.0.1", 1) if name == "peername" else default

class HT(T):
    """Counts the responses too."""
    def __init__(self): super().__init__(); self.responses = 0
    def write(self, data): self.out += len(data); self.responses += data.count(b"HTTP/1.1 200 ")

async def http(n, batch):
    app = App()

    @app.route("/hello")
    async def hello(request):  # async: answered on the loop (a sync one would go to a thread)
        return "hello"

    loop = asyncio.get_running_loop()
    await app.startup()
    state = ServerState(app, loop)
    t = HT(); p = HttpProtocol(state); t.proto = p; p.connection_made(t)
    chunk = b"GET /hello HTTP/1.1\r\nHost: x\r\nUser-Agent: hotpath\r\nAccept: */*\r\n\r\n" * batch
    t0 = time.perf_counter()
    for i in range(n // batch):
        p.data_received(chunk)
        for _ in range(3): await asyncio.sleep(0)
    dt = time.perf_counter() - t0
    assert t.responses == n // batch * batch and not t.closing, (t.responses, t.closing)
    print(f"get {dt / n * 1e6:.3f} us/request  out={t.out}")

async def main(n, batch, mode):
    if mode in ("get", "get8"):
        return await http(n, 8 if mode == "get8" else 1)
    app = App(allowed_origins=["*"])
    if mode == "echo":
        @app.websocket("/echo")
        async def echo(ws):
            async for m in ws:
                await ws.send(m)
    elif mode == "pub":
        @app.websocket("/echo")
        async def pub(ws):
            await ws.join("room")
            async for m in ws:
                await app.hub.publish("room", m)
    else:
        @app.websocket("/echo")
        async def bc(ws):
            async for m in ws:
                await ws.broadcast(m)
    loop = asyncio.get_running_loop()
    if hasattr(app.hub, "_bind"): app.hub._bind(loop)
    await app.startup()
    state = ServerState(app, loop)
    conns = []
    nconn = 1 if mode == "echo" else 200
    for _ in range(nconn):
        t = T(); p = HttpProtocol(state); t.proto = p; p.connection_made(t)
        key = base64.b64encode(os.urandom(16)).decode()
        p.data_received(f"GET /echo HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n".encode())
        conns.append(t)
    for _ in range(20): await asyncio.sleep(0)
    if mode == "pub":
        assert len(app.hub.members("room")) == nconn, len(app.hub.members("room"))
    frame = encode_frame(OP_TEXT, b"x" * 64, mask=b"abcd")
    chunk = frame * batch
    t0 = time.perf_counter()
    sender = conns[0]
    for i in range(n // batch):
        sender.proto.data_received(chunk)
        for _ in range(3): await asyncio.sleep(0)
    dt = time.perf_counter() - t0
    total = sum(t.out for t in conns)
    if mode != "echo":  # every connection got every message (the sender too)
        per = len(encode_frame(OP_TEXT, b"x" * 64))
        assert all(t.out >= n // batch * batch * per for t in conns), [t.out for t in conns[:3]]
    print(f"{mode} {dt / n * 1e6:.3f} us/msg  out={total}")

mode = sys.argv[1] if len(sys.argv) > 1 else "echo"
N = int(sys.argv[2]) if len(sys.argv) > 2 else 200_000
uvloop.run(main(N, 8, mode))

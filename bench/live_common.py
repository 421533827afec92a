"""What the live-channel benchmarks share (bench/live_fanout.py, live_drops.py, live_storm.py):
the server app they run, a minimal raw WebSocket client, and process helpers.

The server app (`python -m tether run live_common:app` from bench/, built when BENCH_LIVE_APP
is set) has:

  /live        app.live("/live", ping_interval=BENCH_LIVE_PING (default 25 s)) with the rooms
                 fan     no history, no presence                  (fan-out, `live`)
                 fanh    history=BENCH_LIVE_HISTORY, no presence  (fan-out, `live-history`)
                 h:{n}   history=BENCH_LIVE_HISTORY, presence=BENCH_LIVE_PRESENCE (default off)
                         (drops and the reconnect storm)
  /ws/room     a plain WebSocket route: each connection joins the plain hub room "plain",
               then is sent "ready"                                  (fan-out, `ws-room`)
  /ws/path     the same without a room: "ready" at once; a path broadcast reaches it
                                                                     (fan-out, `ws-broadcast`)
  /control     JSON orders from the benchmark driver, run by server code:
                 {"op": "burst", "target", "n", "size", "per_tick"}: publish n messages of
                   `size` bytes of JSON ({"k": i, "p": "xx.."}, i = 0..n-1) into the target's
                   room (app.hub.publish) or path (app.hub.broadcast; the plain routes get the
                   same JSON as text), yielding to the loop after every `per_tick`;
                   answers {"op": "burst", "t0", "t1"} (time.monotonic() around the loop)
                 {"op": "ticker", "room", "rate", "count"}: publish {"k": k}, k = 1..count,
                   `rate` a second on a fixed schedule; answers {"op": "ticker", ...} when done
                 {"op": "publish", "rooms", "from", "to"}: publish {"k": k} for k = from..to
                   into every room (room by room); answers {"op": "published", ...}
                 {"op": "position", "room"}: the room's history position
                 {"op": "hello"}: {"op": "hello", "pid"}
Every `burst` payload is built before the clock starts, so only the publishing is timed.
"""
from __future__ import annotations

import asyncio
import base64
import contextlib
import datetime
import json
import os
import signal
import socket
import subprocess
import sys
import time

BENCH = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(BENCH)
SUBPROTOCOL = "tether.live.v1"


def payload(k: int, size: int) -> dict:
    """The burst's message k: {"k": k, "p": "xx.."} whose compact JSON is `size` bytes
    (at least its minimum)."""
    base = len(json.dumps({"k": k, "p": ""}, separators=(",", ":")))
    return {"k": k, "p": "x" * max(0, size - base)}


# ------------------------------------------------------------------ the server app

def make_app():
    from tether import App
    from tether.encoding import compact_json

    history = int(os.environ.get("BENCH_LIVE_HISTORY", "10000"))
    presence = os.environ.get("BENCH_LIVE_PRESENCE", "0") == "1"
    app = App(allowed_origins=["*"])
    live = app.live("/live", ping_interval=float(os.environ.get("BENCH_LIVE_PING", "25")))
    live.room("fan", presence=False)
    live.room("fanh", history=history, presence=False)
    live.room("h:{name}", history=history, presence=presence)
    hub = app.hub

    @app.websocket("/ws/room")
    async def ws_room(websocket):
        await websocket.join("plain")
        await websocket.send_text("ready")
        async for _ in websocket:
            pass

    @app.websocket("/ws/path")
    async def ws_path(websocket):
        await websocket.send_text("ready")
        async for _ in websocket:
            pass

    async def burst(websocket, order):
        n, size, per_tick, target = order["n"], order["size"], max(1, order.get("per_tick", 1)), order["target"]
        datas = [payload(k, size) for k in range(n)]
        if target in ("live", "live-history"):
            room = "fan" if target == "live" else "fanh"
            items, send = datas, (lambda item: hub.publish(room, item))
        elif target == "ws-room":
            items, send = [compact_json(d) for d in datas], (lambda item: hub.publish("plain", item))
        elif target == "ws-broadcast":
            items, send = [compact_json(d) for d in datas], (lambda item: hub.broadcast("/ws/path", item))
        else:
            raise ValueError(target)
        t0 = time.monotonic()
        for i, item in enumerate(items, 1):
            await send(item)
            if i % per_tick == 0:
                await asyncio.sleep(0)
        t1 = time.monotonic()
        await websocket.send_text(json.dumps({"op": "burst", "t0": t0, "t1": t1}))

    async def ticker(websocket, order):
        room, rate, count = order["room"], float(order["rate"]), int(order["count"])
        loop = asyncio.get_running_loop()
        start = loop.time() + 0.01
        late = 0.0
        t0 = time.monotonic()
        for k in range(1, count + 1):
            at = start + (k - 1) / rate
            delay = at - loop.time()
            if delay > 0:
                await asyncio.sleep(delay)
            else:
                late = max(late, -delay)
            await hub.publish(room, {"k": k})
        position, _ = await hub.history(room, since=2**62, limit=0)
        await websocket.send_text(json.dumps({"op": "ticker", "published": count, "t0": t0, "t1": time.monotonic(),
                                              "late_max_s": round(late, 4), "epoch": position.epoch,
                                              "offset": position.offset}))

    async def publish(websocket, order):
        t0 = time.monotonic()
        for k in range(order["from"], order["to"] + 1):
            for room in order["rooms"]:
                await hub.publish(room, {"k": k})
            await asyncio.sleep(0)
        await websocket.send_text(json.dumps({"op": "published", "t0": t0, "t1": time.monotonic()}))

    @app.websocket("/control")
    async def control(websocket):
        tasks = set()
        async for text in websocket:
            order = json.loads(text)
            op = order["op"]
            if op == "hello":
                await websocket.send_text(json.dumps({"op": "hello", "pid": os.getpid()}))
            elif op == "position":
                position, _ = await hub.history(order["room"], since=2**62, limit=0)
                await websocket.send_text(json.dumps({"op": "position", "epoch": position.epoch,
                                                      "offset": position.offset}))
            else:
                run = {"burst": burst, "ticker": ticker, "publish": publish}[op]
                task = asyncio.ensure_future(run(websocket, order))
                tasks.add(task)
                task.add_done_callback(tasks.discard)

    return app


if os.environ.get("BENCH_LIVE_APP"):
    app = make_app()


# ------------------------------------------------------------------ a minimal raw client

def masked_text(text: str) -> bytes:
    """A masked client text frame."""
    data = text.encode()
    n = len(data)
    if n < 126:
        head = bytes((0x81, 0x80 | n))
    elif n < 65536:
        head = bytes((0x81, 0xFE)) + n.to_bytes(2, "big")
    else:
        head = bytes((0x81, 0xFF)) + n.to_bytes(8, "big")
    key = os.urandom(4)
    if not n:
        return head + key
    mask = int.from_bytes((key * (n // 4 + 1))[:n], "big")
    return head + key + (int.from_bytes(data, "big") ^ mask).to_bytes(n, "big")


CLOSE_1000 = bytes((0x88, 0x82)) + b"\0\0\0\0" + (1000).to_bytes(2, "big")


class RawWS(asyncio.Protocol):
    """A minimal WebSocket client: the handshake (offering `subprotocol`), then every text
    frame to `on_text(payload bytes)`; pings are answered. `on_text` may return True: from
    then on every byte that arrives goes, unparsed, to `on_stream(data)` (the fan-out
    receivers' CRC mode). `opened` and `lost` are futures."""

    def __init__(self, port: int, path: str, subprotocol: str | None = None) -> None:
        loop = asyncio.get_running_loop()
        self.opened, self.lost = loop.create_future(), loop.create_future()
        extra = f"Sec-WebSocket-Protocol: {subprotocol}\r\n" if subprotocol else ""
        self.request = (f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nUpgrade: websocket\r\n"
                        f"Connection: Upgrade\r\nSec-WebSocket-Key: {base64.b64encode(os.urandom(16)).decode()}\r\n"
                        f"Sec-WebSocket-Version: 13\r\n{extra}\r\n").encode()
        self.subprotocol = subprotocol
        self.buf = bytearray()
        self.transport = None
        self.streaming = False
        self.close_code = None
        self.close_reason = ""
        self.errors: list[str] = []

    # hooks
    def on_open(self) -> None:
        """The server's 101 was read: frames may be sent from now on (RFC 6455 4.1: a client
        waits for the handshake's answer before it sends anything more)."""

    def on_text(self, payload: bytes):
        return None

    def on_stream(self, data: bytes) -> None:
        pass

    def on_lost(self, exc) -> None:
        pass

    # asyncio.Protocol
    def connection_made(self, transport) -> None:
        self.transport = transport
        transport.write(self.request)

    def data_received(self, data: bytes) -> None:
        if self.streaming:
            self.on_stream(data)
            return
        buf = self.buf
        buf += data
        if not self.opened.done():
            end = buf.find(b"\r\n\r\n")
            if end < 0:
                return
            head = bytes(buf[:end]).decode("latin-1")
            status = head.split("\r\n", 1)[0]
            if " 101 " not in status + " ":
                self.opened.set_exception(OSError(f"handshake refused: {status}"))
                self.transport.close()
                return
            if self.subprotocol and f"sec-websocket-protocol: {self.subprotocol}" not in head.lower():
                self.opened.set_exception(OSError(f"subprotocol {self.subprotocol} not accepted"))
                self.transport.close()
                return
            del buf[:end + 4]
            self.opened.set_result(True)
            self.on_open()
        pos = 0
        while (found := next_frame(buf, pos)) is not None:
            b0, frame, pos = found
            op = b0 & 0x0F
            if not b0 & 0x80 or op == 0:
                self.errors.append("fragmented frame")
            elif op == 1:
                if self.on_text(frame):
                    self.streaming = True
                    rest = bytes(buf[pos:])
                    buf.clear()
                    if rest:
                        self.on_stream(rest)
                    return
            elif op == 8:
                self.close_code = int.from_bytes(frame[:2], "big") if len(frame) >= 2 else 1005
                self.close_reason = frame[2:].decode(errors="replace")
                if not self.transport.is_closing():
                    self.transport.write(CLOSE_1000)
                    self.transport.close()
            elif op == 9:
                self.transport.write(bytes((0x8A, 0x80 | len(frame))) + b"\0\0\0\0" + frame)
            elif op != 10:
                self.errors.append(f"opcode {op}")
        del buf[:pos]

    def connection_lost(self, exc) -> None:
        if not self.opened.done():
            self.opened.set_exception(exc or OSError("closed during the handshake"))
        if not self.lost.done():
            self.lost.set_result(exc)
        self.on_lost(exc)

    def send_text(self, text: str) -> None:
        if self.transport is not None and not self.transport.is_closing():
            self.transport.write(masked_text(text))

    def close(self) -> None:
        if self.transport is not None and not self.transport.is_closing():
            self.transport.write(CLOSE_1000)
            self.transport.close()


async def open_ws(factory, port: int, timeout: float = 10.0):
    """Connect a RawWS made by `factory()` to 127.0.0.1:port and wait for its handshake."""
    loop = asyncio.get_running_loop()
    proto = factory()
    await asyncio.wait_for(loop.create_connection(lambda: proto, "127.0.0.1", port), timeout)
    await asyncio.wait_for(asyncio.shield(proto.opened), timeout)
    return proto


class Control(RawWS):
    """The driver's /control connection: every JSON answer into a queue."""

    def __init__(self, port: int) -> None:
        super().__init__(port, "/control")
        self.answers: asyncio.Queue = asyncio.Queue()

    def on_text(self, payload: bytes):
        self.answers.put_nowait(json.loads(payload))

    async def ask(self, order: dict, op: str, timeout: float) -> dict:
        self.send_text(json.dumps(order))
        return await self.wait(op, timeout)

    async def wait(self, op: str, timeout: float) -> dict:
        deadline = time.monotonic() + timeout
        while True:
            answer = await asyncio.wait_for(self.answers.get(), max(0.01, deadline - time.monotonic()))
            if answer.get("op") == op:
                return answer


# ------------------------------------------------------------------ processes

def cluster():
    """bench/cluster.py's helpers: processes (stop, tree, CpuTracker, proc_ticks), ports
    (PortPool), Redis (start_redis, redis_cmdstats), machine load (wait_quiet)."""
    if BENCH not in sys.path:
        sys.path.insert(0, BENCH)
    import cluster as cl
    return cl


def next_frame(buf: bytearray, pos: int) -> tuple[int, bytes, int] | None:
    """The server frame (unmasked) that starts at `pos` in `buf`: (its first byte, its payload,
    where the next one starts), or None when it is not whole yet."""
    size = len(buf)
    if size - pos < 2:
        return None
    b0, n = buf[pos], buf[pos + 1] & 0x7F
    head = 2
    if n == 126:
        if size - pos < 4:
            return None
        n, head = int.from_bytes(buf[pos + 2:pos + 4], "big"), 4
    elif n == 127:
        if size - pos < 10:
            return None
        n, head = int.from_bytes(buf[pos + 2:pos + 10], "big"), 10
    if size - pos < head + n:
        return None
    return b0, bytes(buf[pos + head:pos + head + n]), pos + head + n


def prepare_run(name: str, out: str | None, port_base: int, nice: int):
    """What every live benchmark does before its runs: this process (the clients' parent) on
    CLIENT_CPU with the file limit raised, SIGTERM taken as Ctrl-C, the results folder
    (`bench-results/<name>-<stamp>/`, or `out`) with its logs/, and the port pool.
    Returns (the cluster module, the port pool, the logs folder, the results.jsonl path)."""
    cl = cluster()
    cl.NICE = nice
    with contextlib.suppress(OSError):
        os.sched_setaffinity(0, {int(cl.CLIENT_CPU)})
    cl.raise_nofile()

    def _term(signum, frame):
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, _term)
    stamp = datetime.datetime.now().strftime("%Y%m%d-%H%M%S")
    out = out or os.path.join(os.getcwd(), "bench-results", f"{name}-{stamp}")
    logdir = os.path.join(out, "logs")
    os.makedirs(logdir, exist_ok=True)
    return cl, cl.PortPool(port_base), logdir, os.path.join(out, "results.jsonl")


def server_argv(python: str, port: int, backplane: str | None = None, extra: tuple = ()) -> list[str]:
    argv = [python, "-m", "tether", "run", "live_common:app", "--host", "127.0.0.1", "--port", str(port),
            "--log-level", "warning", *extra]
    if backplane:
        argv += ["--backplane", backplane]
    return argv


def pinned(cl, cpu: str | None, argv: list[str]) -> list[str]:
    """`argv` on CPU `cpu`, at bench/cluster.py's NICE. No preexec_fn (the drivers run
    threads): a child inherits this process's RLIMIT_NOFILE, raised by cl.raise_nofile()."""
    pre = ["taskset", "-c", cpu] if cpu is not None else []
    if cl.NICE:
        pre += ["nice", "-n", str(cl.NICE)]
    return [*pre, *argv]


def start_server(cl, argv: list[str], env: dict, logf, cpu: str | None = None) -> subprocess.Popen:
    return subprocess.Popen(pinned(cl, cpu, argv), cwd=BENCH, env={**os.environ, "BENCH_LIVE_APP": "1", **env},
                            stdout=logf, stderr=subprocess.STDOUT)


def wait_listening(port: int, proc: subprocess.Popen, limit: float = 30.0) -> float:
    """Wait until 127.0.0.1:port accepts a TCP connection; returns the time.monotonic() it did."""
    deadline = time.monotonic() + limit
    while True:
        if proc.poll() is not None:
            raise RuntimeError(f"server exited with {proc.returncode} during start-up")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return time.monotonic()
        except OSError:
            if time.monotonic() > deadline:
                raise RuntimeError(f"server not listening on {port} within {limit:.0f} s") from None
            time.sleep(0.02)


def proc_status(pid: int) -> dict:
    """VmHWM and VmRSS of a process, in KiB (empty when it is gone)."""
    out = {}
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith(("VmHWM:", "VmRSS:")):
                    key, value = line.split(":", 1)
                    out[key] = int(value.split()[0])
    except OSError:
        pass
    return out


def listen_overflows() -> dict:
    """The machine's TcpExt ListenOverflows and ListenDrops (/proc/net/netstat): SYNs or
    handshakes dropped because a listening socket's accept queue was full."""
    with open("/proc/net/netstat") as f:
        lines = f.read().splitlines()
    for names, values in zip(lines[::2], lines[1::2], strict=False):
        if names.startswith("TcpExt:"):
            table = dict(zip(names.split()[1:], map(int, values.split()[1:]), strict=False))
            return {k: table.get(k, 0) for k in ("ListenOverflows", "ListenDrops")}
    return {}


def run_loop(coro):
    """uvloop when importable."""
    try:
        import uvloop
    except ImportError:
        return asyncio.run(coro)
    return uvloop.run(coro)


def pct(values, p):
    if not values:
        return None
    values = sorted(values)
    return values[min(len(values) - 1, round(p / 100 * (len(values) - 1)))]

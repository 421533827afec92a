"""Soak and abuse run against a live `tether run` server (issue 11; not part of `make test`).

    python bench/soak.py                       # soak 10 min + churn + every flood
    python bench/soak.py --minutes 1 --idle 2000 --phases soak,floods   # a quick look

Phases (each prints its result; the exit status is 1 if a bound is broken):

- soak: `--idle` connections that only answer pings, plus `--active` connections each
  echoing a message every 100 ms, for `--minutes`. Every echo is checked. Bounds: no error
  (a refused connection, an unexpected close, a wrong or missing echo), and server RSS at the
  end within 2 % of RSS after the first minute (warm-up).
- churn: 50 clients connect, echo once and close, over and over: 15 s of warm-up, then 60 s.
  Bounds: no error, RSS after the 60 s within 2 % of RSS after the warm-up.
- floods: each abuse of issue 11 runs for 10 s against the server while a control client
  sends an echo every 10 ms: empty continuations, one-byte fragments, pings by a client that
  never reads, empty pongs, pipelined `GET /big` never read, and a 180 KB request head.
  Bounds: the control client's p99 round trip under 50 ms and no control error.

The server is pinned to CPU 0 and this script to CPU 1 when the machine has two CPUs (as
../shared/bench does); both on loopback, port 18950.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

import uvloop

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "src"))
from tether.protocol import (  # noqa: E402
    OP_BINARY,
    OP_CONTINUATION,
    OP_PING,
    OP_PONG,
    OP_TEXT,
    FrameParser,
    encode_frame,
)

PORT = 18950
MASK = b"\x01\x02\x03\x04"
APP = '''
from tether import App, Response

app = App(max_send_buffer=1 << 20, ping_interval=20, ping_timeout=20)
BIG = b"x" * (1 << 20)

@app.websocket("/echo")
async def echo(websocket):
    async for message in websocket:
        await websocket.send(message)

@app.get("/big")
def big():
    return Response(BIG, media_type="application/octet-stream")
'''


# -- the server --------------------------------------------------------------------------------
class Server:
    def __init__(self, folder: Path) -> None:
        (folder / "soak_app.py").write_text(APP)
        pin = ["taskset", "-c", "0"] if (os.cpu_count() or 1) >= 2 else []
        self.process = subprocess.Popen(
            [*pin, sys.executable, "-m", "tether", "run", "soak_app:app", "--port", str(PORT),
             "--log-level", "error"], cwd=folder, env={**os.environ, "PYTHONPATH": str(HERE.parent / "src")})

    def rss(self) -> int:
        with open(f"/proc/{self.process.pid}/status") as status:
            return next(int(line.split()[1]) * 1024 for line in status if line.startswith("VmRSS:"))

    def stop(self) -> None:
        self.process.terminate()
        self.process.wait(30)


# -- a client ------------------------------------------------------------------------------------
class Client(asyncio.Protocol):
    """A raw WebSocket client: answers pings, checks echoes, records what went wrong."""

    def __init__(self, errors: list[str], reading: bool = True) -> None:
        self.errors = errors
        self.reading = reading
        self.parser = FrameParser(max_message_size=1 << 30, require_mask=False)
        self.handshake = b""
        self.opened: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self.replies: asyncio.Queue[str | bytes] = asyncio.Queue()
        self.closed = False
        self.expected_close = False
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        key = base64.b64encode(os.urandom(16)).decode()
        self.transport.write((f"GET /echo HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\n"
                              f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\n"
                              f"Sec-WebSocket-Version: 13\r\n\r\n").encode())

    def data_received(self, data: bytes) -> None:
        if not self.opened.done():
            self.handshake += data
            if b"\r\n\r\n" not in self.handshake:
                return
            head, _, data = self.handshake.partition(b"\r\n\r\n")
            if not head.startswith(b"HTTP/1.1 101"):
                self.opened.set_exception(ConnectionError(head[:40].decode()))
                return
            self.opened.set_result(None)
            if not self.reading:
                self.transport.pause_reading()
        for kind, value in self.parser.feed(data):
            if kind == OP_PING:
                self.transport.write(encode_frame(OP_PONG, value, mask=MASK))
            elif kind in (OP_TEXT, OP_BINARY):
                self.replies.put_nowait(value)
            elif kind != OP_PONG and not self.expected_close:
                self.errors.append(f"unexpected {kind}: {value}")

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        if not self.opened.done():
            self.opened.set_exception(ConnectionError(f"lost during the handshake: {exc}"))
        elif not self.expected_close:
            self.errors.append(f"connection lost: {exc}")

    def send(self, opcode: int, payload: bytes, fin: bool = True) -> None:
        self.transport.write(encode_frame(opcode, payload, fin=fin, mask=MASK))

    async def echo(self, text: str, timeout: float = 10) -> float:
        started = time.perf_counter()
        self.send(OP_TEXT, text.encode())
        reply = await asyncio.wait_for(self.replies.get(), timeout)
        if reply != text:
            self.errors.append(f"wrong echo {reply!r:.40} for {text!r:.40}")
        return time.perf_counter() - started

    def close(self) -> None:
        self.expected_close = True
        if self.transport is not None:
            self.transport.close()


async def connect(errors: list[str], reading: bool = True) -> Client:
    loop = asyncio.get_running_loop()
    _, client = await loop.create_connection(lambda: Client(errors, reading), "127.0.0.1", PORT)
    await client.opened
    return client


async def wait_for_server() -> None:
    for _ in range(200):
        try:
            client = await connect([])
            client.close()
            return
        except OSError:
            await asyncio.sleep(0.05)
    raise SystemExit("the server did not start")


# -- phases -----------------------------------------------------------------------------------------
def report(name: str, ok: bool, detail: str) -> bool:
    print(f"{name:<34} {'ok ' if ok else 'FAIL'} {detail}", flush=True)
    return ok


async def soak(server: Server, idle: int, active: int, minutes: float) -> bool:
    errors: list[str] = []
    idlers = []
    for start in range(0, idle, 200):  # in batches: the accept queue stays short
        idlers += await asyncio.gather(*(connect(errors) for _ in range(min(200, idle - start))))
    talkers = [await connect(errors) for _ in range(active)]
    stop = asyncio.Event()
    counts = [0]

    async def talk(client: Client, n: int) -> None:
        i = 0
        while not stop.is_set():
            try:
                await client.echo(f"{n}:{i}")
            except TimeoutError:
                errors.append(f"no echo within 10 s on talker {n}")
            counts[0] += 1
            i += 1
            await asyncio.sleep(0.1)

    tasks = [asyncio.create_task(talk(client, n)) for n, client in enumerate(talkers)]
    started = time.monotonic()
    samples = []
    while time.monotonic() - started < minutes * 60:
        await asyncio.sleep(10)
        samples.append((time.monotonic() - started, server.rss()))
        print(f"  {samples[-1][0]:5.0f} s  rss {samples[-1][1] / 2**20:7.1f} MiB  echoes {counts[0]}", flush=True)
    stop.set()
    await asyncio.gather(*tasks)
    base = next((rss for t, rss in samples if t >= 60), samples[0][1])
    growth = samples[-1][1] / base - 1
    for client in idlers + talkers:
        client.close()
    errors += [f"idle connection {n} closed" for n, c in enumerate(idlers) if c.closed and not c.expected_close]
    return report(f"soak {idle} idle + {active} active", not errors and growth < 0.02,
                  f"{minutes:g} min, {counts[0]} echoes, RSS {base / 2**20:.1f} -> {samples[-1][1] / 2**20:.1f} MiB "
                  f"({growth:+.2%}), errors {len(errors)} {errors[:3]}")


async def churn(server: Server, seconds: float = 60, warm_up: float = 15) -> bool:
    errors: list[str] = []
    done = [0]
    deadline = time.monotonic() + warm_up  # the first connections fill the allocators' pools

    async def churner(n: int) -> None:
        while time.monotonic() < deadline:
            try:
                client = await connect(errors)
                await client.echo(f"churn {n}")
                client.close()
                done[0] += 1
            except (TimeoutError, OSError) as exc:
                errors.append(repr(exc))

    await asyncio.gather(*(churner(n) for n in range(50)))
    await asyncio.sleep(2)
    before = server.rss()
    done[0] = 0
    deadline = time.monotonic() + seconds
    await asyncio.gather(*(churner(n) for n in range(50)))
    await asyncio.sleep(2)
    after = server.rss()
    return report("churn (50 clients, 15 + 60 s)", not errors and after / before - 1 < 0.02,
                  f"{done[0]} connections, RSS {before / 2**20:.1f} -> {after / 2**20:.1f} MiB "
                  f"({after / before - 1:+.2%}), errors {len(errors)} {errors[:3]}")


async def flood(name: str) -> None:
    """Run one flooder (in its own process) until terminated: a WebSocket, or plain TCP for
    the HTTP floods, writing its chunk as fast as the server takes it, over and over (a
    connection the server closes is replaced)."""
    opener, chunk, reading = FLOODS[name]
    while True:
        try:
            if opener is None:
                _, writer = await asyncio.open_connection("127.0.0.1", PORT)
                if not reading:
                    writer.transport.pause_reading()
                while True:
                    writer.write(chunk)
                    await writer.drain()
            client = await connect([], reading=reading)
            client.expected_close = True
            client.transport.write(opener)
            while not client.closed:
                client.transport.write(chunk)
                while client.transport.get_write_buffer_size() > (1 << 20) and not client.closed:
                    await asyncio.sleep(0.001)
                await asyncio.sleep(0)
        except OSError:
            await asyncio.sleep(0.01)


FLOODS = {
    "empty continuations": (encode_frame(OP_TEXT, b"x", fin=False, mask=MASK),
                            encode_frame(OP_CONTINUATION, b"", fin=False, mask=MASK) * 20000, True),
    "one-byte fragments": (encode_frame(OP_BINARY, b"x", fin=False, mask=MASK),
                           encode_frame(OP_CONTINUATION, b"y", fin=False, mask=MASK) * 20000, True),
    "pings, never reading": (b"", encode_frame(OP_PING, b"p" * 125, mask=MASK) * 1000, False),
    "empty pongs": (b"", encode_frame(OP_PONG, b"", mask=MASK) * 20000, True),
    "pipelined GET /big, never read": (None, b"GET /big HTTP/1.1\r\nHost: x\r\n\r\n" * 300, False),
    "180 KB request head": (None, b"GET / HTTP/1.1\r\nHost: x\r\n" + b"X-A: b\r\n" * 22000 + b"\r\n", True),
}


async def floods(server: Server, names: list[str], seconds: float = 10) -> bool:
    ok = True
    for name in names:
        errors: list[str] = []
        control = await connect(errors)
        before = server.rss()
        # Each flooder is its own process, so the control client's loop measures the server,
        # not the time this process spends writing floods.
        flooders = [subprocess.Popen([sys.executable, __file__, "--flooder", name]) for _ in range(2)]
        await asyncio.sleep(1.0)
        trips = []
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            try:
                trips.append(await control.echo(f"control {len(trips)}", timeout=5))
            except TimeoutError:
                errors.append("control echo timed out")
            await asyncio.sleep(0.01)
        peak = server.rss()
        for flooder in flooders:
            flooder.terminate()
            flooder.wait(10)
        control.close()
        trips.sort()
        p99 = trips[int(len(trips) * 0.99) - 1] if trips else float("inf")
        ok &= report(f"flood: {name}", not errors and p99 < 0.05,
                     f"control p50 {statistics.median(trips) * 1e3:.2f} ms p99 {p99 * 1e3:.2f} ms "
                     f"max {trips[-1] * 1e3:.1f} ms ({len(trips)} echoes), server RSS "
                     f"{before / 2**20:.1f} -> {peak / 2**20:.1f} MiB, errors {errors[:2]}")
        await asyncio.sleep(1)
    return ok


async def main(args: argparse.Namespace) -> int:
    if (os.cpu_count() or 1) >= 2:
        os.sched_setaffinity(0, {1})
    folder = Path(os.environ.get("TMPDIR", "/tmp")) / f"tether-soak-{os.getpid()}"
    folder.mkdir(exist_ok=True)
    server = Server(folder)
    try:
        await wait_for_server()
        ok = True
        phases = args.phases.split(",")
        if "soak" in phases:
            ok &= await soak(server, args.idle, args.active, args.minutes)
        if "churn" in phases:
            ok &= await churn(server)
        if "floods" in phases:
            ok &= await floods(server, [name for name in FLOODS if not args.flood or name in args.flood])
        return 0 if ok else 1
    finally:
        server.stop()


if __name__ == "__main__":
    if sys.argv[1:2] == ["--flooder"]:
        uvloop.run(flood(sys.argv[2]))
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--idle", type=int, default=10_000)
    parser.add_argument("--active", type=int, default=100)
    parser.add_argument("--minutes", type=float, default=10)
    parser.add_argument("--phases", default="soak,churn,floods")
    parser.add_argument("--flood", action="append", choices=list(FLOODS), metavar="NAME",
                        help="run this flood only (repeatable; default: every one): " + ", ".join(FLOODS))
    sys.exit(uvloop.run(main(parser.parse_args())))

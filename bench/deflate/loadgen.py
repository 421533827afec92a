"""The load generator of bench/deflate.py: asyncio + uvloop protocols on raw sockets (no
WebSocket library). Usage: python loadgen.py CONFIG_JSON; prints one line "RESULT {json}".

Every connection offers `permessage-deflate; client_max_window_bits` (when cfg["deflate"]),
checks the 101 response (codec.check_response), then sends pre-built masked frames whose
payload was compressed on its own with a 9-bit window (RSV1 set). Server frames are parsed:
no mask, no RSV2/RSV3, RSV1 only on a message's first frame and never on a control frame, text
opcode, continuations only inside a message; pings are answered. Connections marked `collect`
keep each message's payload and inflate it with the context the server negotiated; a message
that differs from the one sent (wrong, lost, reordered) is an error, and any error makes the
result ok=0.

Modes (cfg["mode"]):
  echo    cfg conns x window messages in flight, warmup then duration seconds measured.
  fanout  cfg conns receivers + 1 sender on /broadcast, a barrier, then a burst of cfg messages.
  idle    cfg conns connections on /echo, one message each, server RSS before/after.
"""
from __future__ import annotations

import asyncio
import json
import random
import resource
import sys
import time
import zlib

from codec import Inflater, check_response, client_frame, compress_message, handshake_request, make_messages, new_key
from procstat import Window, rss_kib


class Run:
    """What the connections of one run share: the configuration, the pre-built frames and the
    error list."""

    def __init__(self, cfg: dict) -> None:
        self.cfg = cfg
        self.port, self.deflate, self.pids = cfg["port"], cfg["deflate"], cfg["server_pids"]
        self.rnd = random.Random(cfg.get("seed", 1))
        self.msgs = make_messages()
        payloads = [compress_message(m) if self.deflate else m for m in self.msgs]
        self.frames = [client_frame(1, p, self.deflate, self.rnd) for p in payloads]
        self.errors: list[str] = []
        self.stopping = False
        self._sem = asyncio.Semaphore(cfg.get("connect_concurrency", 100))

    def fail(self, msg: str) -> None:
        if len(self.errors) < 20:
            self.errors.append(msg)

    async def connect(self, make):
        """Open one connection (at most connect_concurrency handshakes at a time)."""
        async with self._sem:
            loop = asyncio.get_running_loop()
            _, proto = await asyncio.wait_for(loop.create_connection(make, "127.0.0.1", self.port), 20)
            await asyncio.wait_for(proto.opened, 20)
            return proto

    async def connect_all(self, makers) -> list:
        return list(await asyncio.gather(*(self.connect(m) for m in makers)))

    def close_all(self, conns) -> None:
        self.stopping = True
        for c in conns:
            if c.transport is not None:
                c.transport.close()


class Conn(asyncio.Protocol):
    """One client connection: the handshake, then the server's frames, parsed. Each complete
    data message goes to `on_message(payload, compressed)` (payload None unless `collect`),
    then `after_batch(n)` with the number of messages one read completed."""

    def __init__(self, run: Run, idx: int, path: str) -> None:
        self.run, self.idx, self.path = run, idx, path
        self.key = new_key(run.rnd)
        self.head = b""
        self.tail = b""
        self.opened = asyncio.get_running_loop().create_future()
        self.params: dict = {}
        self.collect = False
        self.parts: list[bytes] = []
        self.first_rsv1 = False
        self.in_message = False
        self.wire = 0  # payload bytes of the data frames received
        self.transport = None
        self.closed = False

    def connection_made(self, transport) -> None:
        self.transport = transport
        transport.write(handshake_request(self.path, self.run.port, self.key, self.run.deflate))

    def connection_lost(self, exc) -> None:
        self.closed = True
        if not self.opened.done():
            self.opened.set_exception(ConnectionError(f"closed during the handshake: {exc}"))
        elif not self.run.stopping:
            self.run.fail(f"conn {self.idx}: connection lost ({exc})")

    def data_received(self, data: bytes) -> None:
        if not self.opened.done():
            self.head += data
            end = self.head.find(b"\r\n\r\n")
            if end < 0:
                if len(self.head) > 16384:
                    self.opened.set_exception(ValueError("response head too long"))
                return
            try:
                self.params = check_response(self.head[:end], self.key, self.run.deflate)
            except ValueError as e:
                self.opened.set_exception(e)
                return
            data, self.head = self.head[end + 4:], b""
            self.opened.set_result(None)
            if not data:
                return
        self.feed(data)

    def feed(self, data: bytes) -> None:
        if self.tail:
            data = self.tail + data
        n = len(data)
        pos = got = 0
        fail = self.run.fail
        while n - pos >= 2:
            b0 = data[pos]
            b1 = data[pos + 1]
            ln = b1 & 0x7f
            hl = 2
            if ln == 126:
                if n - pos < 4:
                    break
                ln = int.from_bytes(data[pos + 2:pos + 4], "big")
                hl = 4
            elif ln == 127:
                if n - pos < 10:
                    break
                ln = int.from_bytes(data[pos + 2:pos + 10], "big")
                hl = 10
            end = pos + hl + ln
            if end > n:
                break
            if b1 & 0x80 or b0 & 0x30:
                fail(f"conn {self.idx}: masked frame or RSV2/RSV3 from the server")
            op = b0 & 0x0f
            if op >= 8:
                if b0 & 0x40:
                    fail(f"conn {self.idx}: RSV1 on a control frame")
                self.control(op, data[pos + hl:end])
            else:
                if op:
                    if self.in_message:
                        fail(f"conn {self.idx}: new message inside a fragmented one")
                    if op != 1:
                        fail(f"conn {self.idx}: opcode {op}, expected text")
                    self.first_rsv1 = bool(b0 & 0x40)
                    if self.first_rsv1 and not self.run.deflate:
                        fail(f"conn {self.idx}: RSV1 without deflate")
                elif not self.in_message:
                    fail(f"conn {self.idx}: continuation without a message")
                elif b0 & 0x40:
                    fail(f"conn {self.idx}: RSV1 on a continuation frame")
                self.wire += ln
                if self.collect:
                    self.parts.append(data[pos + hl:end])
                if b0 & 0x80:
                    self.in_message = False
                    got += 1
                    if self.collect:
                        payload = b"".join(self.parts) if len(self.parts) > 1 else self.parts[0]
                        self.parts = []
                        self.on_message(payload, self.first_rsv1)
                    else:
                        self.on_message(None, self.first_rsv1)
                else:
                    self.in_message = True
            pos = end
        self.tail = data[pos:] if pos < n else b""
        if got:
            self.after_batch(got)

    def control(self, op: int, payload: bytes) -> None:
        if op == 9:
            self.transport.write(client_frame(10, payload, False, self.run.rnd))
        elif op == 8:
            if not self.run.stopping:
                self.run.fail(f"conn {self.idx}: server closed the connection ({payload[:2].hex()} {payload[2:60]!r})")
        elif op != 10:
            self.run.fail(f"conn {self.idx}: unknown opcode {op}")

    def check(self, payload: bytes, compressed: bool, inflater: Inflater, want: bytes, what: str) -> None:
        """Fail the run unless payload (inflated when compressed) is `want`."""
        try:
            got = inflater.message(payload, compressed)
        except zlib.error as e:
            self.run.fail(f"{what}: inflate failed: {e}")
            return
        if got != want:
            self.run.fail(f"{what}: got {got[:60]!r}..., expected {want[:60]!r}...")

    def on_message(self, payload: bytes | None, compressed: bool) -> None:
        pass

    def after_batch(self, got: int) -> None:
        pass


# ---------------------------------------------------------------------------- echo

class Echo(Conn):
    """Keeps `window` messages in flight: each echo received sends the next message."""

    def __init__(self, run: Run, idx: int, every: int, counter: list) -> None:
        super().__init__(run, idx, "/echo")
        self.sent = self.recv = 0
        self.offset = idx * 7
        self.collect = idx % every == 0
        self.inflater = Inflater()
        self.counter = counter  # [measuring, count]

    def send(self, n: int) -> None:
        frames, k, s, o = self.run.frames, len(self.run.frames), self.sent, self.offset
        self.transport.write(b"".join([frames[(o + s + i) % k] for i in range(n)]))
        self.sent = s + n

    def on_message(self, payload: bytes | None, compressed: bool) -> None:
        if payload is not None:
            want = self.run.msgs[(self.offset + self.recv) % len(self.run.msgs)]
            self.check(payload, compressed, self.inflater, want, f"conn {self.idx} message {self.recv}")
        self.recv += 1

    def after_batch(self, got: int) -> None:
        if self.counter[0]:
            self.counter[1] += got
        if not self.run.stopping:
            self.send(got)


async def echo(run: Run) -> dict:
    cfg = run.cfg
    counter = [False, 0]
    conns = await run.connect_all([lambda i=i: Echo(run, i, cfg["verify_every"], counter)
                                   for i in range(cfg["conns"])])
    for c in conns:
        c.send(cfg["window"])
    await asyncio.sleep(cfg["warmup"])
    wire0 = sum(c.wire for c in conns)
    counter[0] = True
    w = Window(run.pids)
    await asyncio.sleep(cfg["duration"])
    counter[0] = False
    res = w.close()
    n = counter[1]
    wire = sum(c.wire for c in conns) - wire0
    res.update(negotiated=conns[0].params.get("header", ""), conns=len(conns), window=cfg["window"], msgs=n,
               rate=round(n / res["secs"], 1), server_cpu_us_per_msg=round(1e6 * res["server_cpu_s"] / max(1, n), 3),
               wire_bytes_per_msg=round(wire / max(1, n), 1), verified=sum(c.recv for c in conns if c.collect))
    if any(c.closed for c in conns):
        run.fail("a connection closed during the run")
    run.close_all(conns)
    return res


# ---------------------------------------------------------------------------- fanout

class Receiver(Conn):
    """A fanout receiver. During the barrier it inflates every message (barrier pings). Then
    a verifier inflates and checks every message; the others either count messages from the
    frame headers or (`stream`) only count bytes and a CRC-32 of everything they receive."""

    def __init__(self, run: Run, idx: int, verifier: bool, n_msgs: int) -> None:
        super().__init__(run, idx, "/broadcast")
        self.collect = True
        self.verifier, self.n_msgs = verifier, n_msgs
        self.inflater = Inflater()
        self.barrier = True
        self.last_round = -1
        self.got = 0
        self.nbytes = self.crc = 0
        self.t_last = 0.0
        self.stream = False

    def data_received(self, data: bytes) -> None:
        if self.stream:
            self.nbytes += len(data)
            self.crc = zlib.crc32(data, self.crc)
            self.t_last = time.perf_counter()
            return
        if self.verifier and not self.barrier:
            self.nbytes += len(data)
            self.crc = zlib.crc32(data, self.crc)
        Conn.data_received(self, data)

    def on_message(self, payload: bytes | None, compressed: bool) -> None:
        if self.barrier:
            text = self.inflater.message(payload, compressed)
            try:
                self.last_round = json.loads(text)["barrier"]
            except (ValueError, KeyError, TypeError):
                self.run.fail(f"receiver {self.idx}: not a barrier message during the barrier: {text[:60]!r}")
            return
        if payload is not None:
            want = self.run.msgs[self.got % len(self.run.msgs)]
            self.check(payload, compressed, self.inflater, want, f"receiver {self.idx} message {self.got}")
        self.got += 1
        if self.got == self.n_msgs:
            self.t_last = time.perf_counter()
        elif self.got > self.n_msgs:
            self.run.fail(f"receiver {self.idx}: more than {self.n_msgs} messages")


async def barrier(run: Run, sender: Conn, receivers: list[Receiver]) -> int:
    """Broadcast pings until every receiver has the latest one (all are registered and no
    barrier frame is in flight); returns the number of rounds."""
    for r in range(50):
        text = b'{"barrier":%d}' % r
        sender.transport.write(client_frame(1, compress_message(text) if run.deflate else text, run.deflate, run.rnd))
        until = time.perf_counter() + 0.5
        while time.perf_counter() < until and any(c.last_round < r for c in receivers):
            await asyncio.sleep(0.005)
        if all(c.last_round == r for c in receivers):
            return r + 1
    return 50


async def fanout(run: Run) -> dict:
    cfg = run.cfg
    n_recv, n_msgs, n_verify = cfg["conns"], cfg["messages"], cfg["verifiers"]
    receivers = await run.connect_all([lambda i=i: Receiver(run, i, i < n_verify, n_msgs) for i in range(n_recv)])
    sender = await run.connect(lambda: Conn(run, -1, "/broadcast"))
    rounds = await barrier(run, sender, receivers)
    registered = sum(c.last_round == rounds - 1 for c in receivers)
    if registered < n_recv:
        run.fail(f"barrier: only {registered}/{n_recv} receivers registered")
    no_context = bool(receivers[0].params.get("server_no_context_takeover"))
    use_stream = cfg["count"] == "stream" or (cfg["count"] == "auto" and no_context)
    for c in receivers:
        if c.tail or c.in_message:
            run.fail(f"receiver {c.idx}: bytes left over after the barrier")
        c.barrier = False
        c.collect = c.verifier
        c.stream = use_stream and not c.verifier
    burst = b"".join(run.frames[i % len(run.frames)] for i in range(n_msgs))
    w = Window(run.pids)
    t0 = w.t0
    sender.transport.write(burst)
    deadline = t0 + cfg["timeout"]
    counted = [c for c in receivers if not c.stream]
    streams = [c for c in receivers if c.stream]
    while time.perf_counter() < deadline and not run.errors:
        await asyncio.sleep(0.002)
        if all(c.got >= n_msgs for c in counted):
            expect = receivers[0].nbytes  # a verifier's stream
            if all(c.nbytes >= expect for c in streams):
                break
    done = time.perf_counter()
    t_end = max([c.t_last for c in receivers] + [t0])
    res = w.close(t_end if t_end > t0 else done)
    # a stream counts as delivered only if it is byte for byte the verifiers' stream
    vstreams = {(c.nbytes, c.crc) for c in receivers if c.verifier}
    if use_stream and len(vstreams) != 1:
        run.fail(f"stream counting: the verifiers' streams differ ({len(vstreams)} variants)")
    delivered = 0
    for c in streams:
        if (c.nbytes, c.crc) in vstreams:
            delivered += n_msgs
        elif c.nbytes >= receivers[0].nbytes:
            run.fail(f"receiver {c.idx}: its stream differs from the verifiers' ({c.nbytes} bytes)")
    delivered += sum(min(c.got, n_msgs) for c in counted)
    expected = n_recv * n_msgs
    if delivered < expected:
        run.fail(f"delivered {delivered}/{expected} within {cfg['timeout']} s")
    wire = sum(c.wire for c in receivers if c.verifier) / max(1, n_verify * n_msgs)
    res.update(negotiated=receivers[0].params.get("header", ""), counting="stream" if use_stream else "frames",
               registered=registered, barrier_rounds=rounds, receivers=n_recv, messages=n_msgs, msgs=delivered,
               expected=expected, rate=round(delivered / res["secs"], 1) if res["secs"] > 0 else 0,
               server_cpu_us_per_msg=round(1e6 * res["server_cpu_s"] / max(1, delivered), 3),
               wire_bytes_per_msg=round(wire, 1), verified=sum(c.got for c in receivers if c.verifier))
    run.close_all([*receivers, sender])
    return res


# ---------------------------------------------------------------------------- idle

class Idle(Conn):
    """Sends one message when told, checks its echo, then stays idle."""

    def __init__(self, run: Run, idx: int) -> None:
        super().__init__(run, idx, "/echo")
        self.collect = True
        self.inflater = Inflater()
        self.echoed = asyncio.get_running_loop().create_future()

    def on_message(self, payload: bytes | None, compressed: bool) -> None:
        assert payload is not None
        self.check(payload, compressed, self.inflater, self.run.msgs[self.idx % len(self.run.msgs)],
                   f"idle conn {self.idx}")
        if not self.echoed.done():
            self.echoed.set_result(None)


async def idle(run: Run) -> dict:
    cfg = run.cfg
    before = rss_kib(run.pids)
    conns = await run.connect_all([lambda i=i: Idle(run, i) for i in range(cfg["conns"])])
    await asyncio.sleep(cfg["settle"])
    opened = rss_kib(run.pids)
    for c in conns:
        c.transport.write(run.frames[c.idx % len(run.frames)])
    await asyncio.wait_for(asyncio.gather(*(c.echoed for c in conns)), 30)
    await asyncio.sleep(cfg["settle"])
    used = rss_kib(run.pids)
    n = len(conns)
    res = {"negotiated": conns[0].params.get("header", ""), "open": n, "rss_before_kib": before,
           "rss_open_kib": opened, "rss_used_kib": used, "kib_per_conn_open": round((opened - before) / n, 2),
           "kib_per_conn": round((used - before) / n, 2)}
    run.close_all(conns)
    return res


async def main(cfg: dict) -> dict:
    run = Run(cfg)
    res = await {"echo": echo, "fanout": fanout, "idle": idle}[cfg["mode"]](run)
    await asyncio.sleep(0.05)
    res.update(mode=cfg["mode"], deflate=run.deflate, errors=run.errors, ok=int(not run.errors))
    return res


if __name__ == "__main__":
    import uvloop

    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    print("RESULT " + json.dumps(uvloop.run(main(json.loads(sys.argv[1])))), flush=True)

#!/usr/bin/env python3
"""Recovery storm (issue 18): N members of a history room, each missing M messages, rejoin at once.

    VENV=/tmp/bench-venvs/tether
    $VENV/bin/python bench/recovery.py --tether-venv $VENV                     # redis, 1000 x 100, 3 reps
    $VENV/bin/python bench/recovery.py --tether-venv $VENV --reconnect         # connect + join at once
    $VENV/bin/python bench/recovery.py --tether-venv $VENV --backplane memory  # no Redis (in-process history)
    $VENV/bin/python bench/recovery.py --tether-venv $VENV -n 100 -m 10 --reps 1   # smoke, seconds

One run (fresh every repetition): a redis-server of its own (127.0.0.1, --save '' --appendonly
no, temp --dir; as bench/cluster.py starts one) and one tether server (a single process,
`python -m tether run recovery:app --backplane redis://...` from bench/, this file being the
app when BENCH_RECOVERY_SERVER is set), both pinned to CPU 0; the clients (this process, one
asyncio loop, uvloop when importable) on CPU 1. The app keeps history for the room "storm"
(`app.hub.keep_history("storm", size=--size)`) and has two endpoints:

  /member   the first message is a JSON position {"epoch": E, "offset": O}; the app answers
            `await websocket.join("storm", since=Position(E, O))` — which delivers the missed
            messages before it returns — with the Recovery as JSON {"recovered", "epoch",
            "offset"}, then the connection stays a member (room messages are forwarded by the
            hub) until the client closes it
  /control  a plain member of the room (joined without a position), which publishes on
            request ({"op": "publish", "from": a, "to": b}: app.hub.publish("storm", "m:<k>")
            for k = a..b), answers {"op": "members"} with how many members the room has, and
            leaves the room on {"op": "leave"} (--empty-node)

Every room message is the text "m:<k>", k = 1, 2, 3... in publish order. The steps:
  1. the control publishes --seed messages (default 1: the room gets its epoch) and waits until
     they come back (numbered and delivered by the node);
  2. N members connect and join from nothing (epoch "", offset 0): each must be recovered
     and get exactly the seed messages; each records the position the Recovery gave it;
  3. all N close; the control waits until it is the room's only member;
  4. the control publishes M messages and waits until it has got them all back (so all M are
     kept before anyone rejoins); with --empty-node it then leaves the room, so that the node
     has no member of it and no subscription when the storm comes (as after a node restart:
     the rejoins share the room's new subscription);
  5. the storm: N new connections (all opened first, then every join request written in one
     go: t0 = the first; with --reconnect each connection writes its join as soon as it is
     open, and t0 = the first connection attempt), and right after t0 the control publishes
     --live live messages, --live-interval ms apart (they race the recoveries);
  6. a member is complete when it has its Recovery answer and the last live message; after
     the last one (or --timeout) the run waits --settle s for stray frames, then checks every
     member: recovered, the epoch of step 2, and exactly m:<seed+1> .. m:<seed+M+live> in
     order, each once (a duplicate, a gap or a reordering fails the member).
Printed per run: the time from t0 to the last member complete (the bar: <= 2 s), p50/p99 of
the members' completion and recovery answers, the CPU of tether and Redis (on CPU 0) from the
storm's first connection to its last member complete (and of the joins alone, from t0, when
the connections were opened first), and the Redis commands of the storm (INFO stats/commandstats delta, our INFO calls not counted) divided
by N: per recovery, its connection included (and of the joins alone, from t0), in all and by command (Redis counts the commands a Lua script runs, e.g.
the history read's HMGET, TIME and XRANGE, besides the EVALSHA that ran it).

Clients: --client raw (default) is a minimal client on asyncio's Protocol (handshake, masked
text frames, unmasked server frames, close), so that the client side costs little next to the
server; --client tether uses the project's own `tether.client.open_websocket`. Only loopback
and ports --port-base..18999 are used; only processes started here are signalled, by PID;
every wait is bounded.
"""
import json
import os
import sys

ROOM = "storm"

if os.environ.get("BENCH_RECOVERY_SERVER"):  # the server side: `python -m tether run recovery:app`
    from tether import App
    from tether.hub import Position

    app = App(allowed_origins=["*"])
    app.hub.keep_history(ROOM, size=int(os.environ.get("BENCH_HISTORY_SIZE", "1000")))

    @app.websocket("/member")
    async def member(websocket):
        want = json.loads(await websocket.receive_text())
        recovery = await websocket.join(ROOM, since=Position(want["epoch"], want["offset"]))
        await websocket.send_text(json.dumps({"recovered": recovery.recovered, "epoch": recovery.position.epoch,
                                              "offset": recovery.position.offset}))
        async for _ in websocket:
            pass

    @app.websocket("/control")
    async def control(websocket):
        await websocket.join(ROOM)
        async for text in websocket:
            order = json.loads(text)
            if order["op"] == "publish":
                for k in range(order["from"], order["to"] + 1):
                    await app.hub.publish(ROOM, f"m:{k}")
            elif order["op"] == "members":
                await websocket.send_text(json.dumps({"members": len(app.hub.members(ROOM))}))
            elif order["op"] == "leave":
                await websocket.leave(ROOM)
                await websocket.send_text(json.dumps({"members": len(app.hub.members(ROOM))}))


# ----------------------------------------------------------------------------------- the driver
import argparse  # noqa: E402
import asyncio  # noqa: E402
import base64  # noqa: E402
import datetime  # noqa: E402
import shlex  # noqa: E402
import signal  # noqa: E402
import socket  # noqa: E402
import statistics  # noqa: E402
import subprocess  # noqa: E402
import time  # noqa: E402

BENCH = os.path.dirname(os.path.abspath(__file__))


def _cluster():
    """bench/cluster.py's process, port and Redis helpers (imported only by the driver)."""
    sys.path.insert(0, BENCH)
    import cluster
    return cluster


# ------------------------------------------------------------------ clients

def _masked_text(text):
    payload = text.encode()
    n = len(payload)
    head = bytes([0x81, 0x80 | n]) if n < 126 else bytes([0x81, 0xFE]) + n.to_bytes(2, "big")
    key = os.urandom(4)
    k = int.from_bytes((key * (n // 4 + 1))[:n], "big") if n else 0
    body = (int.from_bytes(payload, "big") ^ k).to_bytes(n, "big") if n else b""
    return head + key + body


_CLOSE_1000 = bytes([0x88, 0x82]) + b"\0\0\0\0" + (1000).to_bytes(2, "big")  # a zero mask key is a mask key


class RawClient(asyncio.Protocol):
    """A minimal WebSocket client: the handshake, then text frames to `on_text` (the server's
    frames are unmasked and, here, never fragmented: one that is counts as an error)."""

    def __init__(self, host, port, path, on_text):
        self.on_text = on_text
        self.request = (f"GET {path} HTTP/1.1\r\nHost: {host}:{port}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                        f"Sec-WebSocket-Key: {base64.b64encode(os.urandom(16)).decode()}\r\n"
                        "Sec-WebSocket-Version: 13\r\n\r\n").encode()
        self.buf = bytearray()
        self.open = None  # a future: the handshake's outcome
        self.lost = None  # a future: connection_lost
        self.transport = None
        self.close_code = None
        self.errors = []

    def connection_made(self, transport):
        self.transport = transport
        transport.write(self.request)

    def data_received(self, data):
        buf = self.buf
        buf += data
        if not self.open.done():
            end = buf.find(b"\r\n\r\n")
            if end < 0:
                return
            status = bytes(buf[:buf.find(b"\r\n")])
            if b" 101 " not in status + b" ":
                self.open.set_exception(OSError(f"handshake refused: {status.decode(errors='replace')}"))
                self.transport.close()
                return
            del buf[:end + 4]
            self.open.set_result(True)
        pos, size = 0, len(buf)
        while size - pos >= 2:
            b0, n = buf[pos], buf[pos + 1] & 0x7F
            head = 2
            if n == 126:
                if size - pos < 4:
                    break
                n, head = int.from_bytes(buf[pos + 2:pos + 4], "big"), 4
            elif n == 127:
                if size - pos < 10:
                    break
                n, head = int.from_bytes(buf[pos + 2:pos + 10], "big"), 10
            if size - pos < head + n:
                break
            payload = bytes(buf[pos + head:pos + head + n])
            pos += head + n
            op = b0 & 0x0F
            if not b0 & 0x80 or op == 0:
                self.errors.append("fragmented frame")
            elif op == 1:
                self.on_text(payload)
            elif op == 8:
                self.close_code = int.from_bytes(payload[:2], "big") if len(payload) >= 2 else 1005
                if not self.transport.is_closing():
                    self.transport.write(_CLOSE_1000)
                    self.transport.close()
            elif op == 9:
                self.transport.write(bytes([0x8A, 0x80 | len(payload)]) + b"\0\0\0\0" + payload)
            elif op != 10:
                self.errors.append(f"opcode {op}")
        del buf[:pos]

    def connection_lost(self, exc):
        if not self.open.done():
            self.open.set_exception(exc or OSError("closed during the handshake"))
        if not self.lost.done():
            self.lost.set_result(None)

    def send_text(self, text):
        self.transport.write(_masked_text(text))

    async def close(self, timeout):
        if not self.transport.is_closing():
            self.transport.write(_CLOSE_1000)
        try:
            await asyncio.wait_for(asyncio.shield(self.lost), timeout)
        except TimeoutError:
            self.transport.abort()


async def open_raw(port, path, on_text, timeout=10.0):
    loop = asyncio.get_running_loop()
    proto = RawClient("127.0.0.1", port, path, on_text)
    proto.open, proto.lost = loop.create_future(), loop.create_future()
    await asyncio.wait_for(loop.create_connection(lambda: proto, "127.0.0.1", port), timeout)
    await asyncio.wait_for(asyncio.shield(proto.open), timeout)
    return proto


class TetherClient:
    """The same surface over tether.client.open_websocket: a reader task hands text to `on_text`."""

    def __init__(self, ws, on_text):
        self.ws, self.on_text, self.errors, self.close_code = ws, on_text, [], None
        self.reader = asyncio.get_running_loop().create_task(self._read())

    async def _read(self):
        try:
            async for message in self.ws:
                if isinstance(message, str):
                    self.on_text(message.encode())
                else:
                    self.errors.append("binary message")
        except Exception as exc:
            self.errors.append(repr(exc))
        self.close_code = self.ws.close_code

    def send_text(self, text):
        asyncio.get_running_loop().create_task(self.ws.send(text))

    async def close(self, timeout):
        try:
            await asyncio.wait_for(self.ws.close(), timeout)
        except (TimeoutError, Exception):
            pass
        self.reader.cancel()


async def open_tether(port, path, on_text, timeout=10.0):
    from tether.client import open_websocket
    ws = await asyncio.wait_for(open_websocket(f"ws://127.0.0.1:{port}{path}", ping_interval=0,
                                               max_queue=10_000), timeout)
    return TetherClient(ws, on_text)


# ------------------------------------------------------------------ members and the control

class Member:
    """One client of /member: what it got (room messages by number, the Recovery answer)."""

    __slots__ = ("i", "got", "recovery", "t_recovery", "t_done", "last", "done", "conn", "stray")

    def __init__(self, i, last, done):
        self.i, self.got, self.recovery, self.t_recovery, self.t_done = i, [], None, None, None
        self.last, self.done, self.conn, self.stray = last, done, None, []

    def on_text(self, payload):
        if payload[:2] == b"m:":
            self.got.append(int(payload[2:]))
        elif payload[:1] == b"{":
            if self.recovery is not None:
                self.stray.append(payload[:80])
                return
            self.recovery = json.loads(payload)
            self.t_recovery = time.perf_counter()
        else:
            self.stray.append(payload[:80])
            return
        if self.t_done is None and self.recovery is not None and self.got and self.got[-1] >= self.last:
            self.t_done = time.perf_counter()
            self.done()

    def check(self, first, last, epoch):
        """None when it got exactly first..last in order and was recovered in `epoch`, else why not."""
        r = self.recovery
        if r is None:
            return "no Recovery answer" + (f" (closed {self.conn.close_code})" if self.conn and self.conn.close_code
                                           else "")
        if not r.get("recovered"):
            return f"not recovered: {r}"
        if epoch is not None and r.get("epoch") != epoch:
            return f"recovered in epoch {r.get('epoch')!r}, not {epoch!r}"
        if self.got != list(range(first, last + 1)):
            want = list(range(first, last + 1))
            dup = len(self.got) - len(set(self.got))
            missing = sorted(set(want) - set(self.got))
            return (f"got {len(self.got)} messages, want {len(want)} ({first}..{last}): duplicates={dup} "
                    f"missing={missing[:5]}{'...' if len(missing) > 5 else ''} "
                    f"in_order={self.got == sorted(self.got)} head={self.got[:3]} tail={self.got[-3:]}")
        if self.stray or (self.conn and self.conn.errors):
            return f"stray frames {self.stray[:2]} errors {(self.conn.errors if self.conn else [])[:2]}"
        return None


class Control:
    def __init__(self):
        self.got, self.replies, self.event = [], [], asyncio.Event()

    def on_text(self, payload):
        if payload[:2] == b"m:":
            self.got.append(int(payload[2:]))
        else:
            self.replies.append(json.loads(payload))
        self.event.set()

    async def wait(self, pred, timeout, what):
        deadline = time.monotonic() + timeout
        while not pred():
            left = deadline - time.monotonic()
            if left <= 0:
                raise RuntimeError(f"control: {what} not seen within {timeout:.0f} s")
            self.event.clear()
            try:
                await asyncio.wait_for(self.event.wait(), min(left, 0.5))
            except TimeoutError:
                pass

    async def publish(self, conn, first, last, timeout):
        conn.send_text(json.dumps({"op": "publish", "from": first, "to": last}))
        await self.wait(lambda: self.got and self.got[-1] >= last, timeout, f"m:{last} back")

    async def members(self, conn, want, timeout):
        deadline = time.monotonic() + timeout
        while True:
            self.replies.clear()
            conn.send_text(json.dumps({"op": "members"}))
            await self.wait(lambda: self.replies, 5, "a members answer")
            n = self.replies[-1]["members"]
            if n == want:
                return
            if time.monotonic() > deadline:
                raise RuntimeError(f"the room still has {n} members, not {want}, after {timeout:.0f} s")
            await asyncio.sleep(0.05)


async def open_many(opener, port, path, members, parallel, timeout):
    """Open a connection for every member, at most `parallel` handshakes at a time."""
    gate = asyncio.Semaphore(parallel)

    async def one(m):
        async with gate:
            m.conn = await opener(port, path, m.on_text, timeout)

    await asyncio.gather(*(one(m) for m in members))


def pct(values, p):
    if not values:
        return 0.0
    s = sorted(values)
    return s[min(len(s) - 1, int(round(p / 100 * (len(s) - 1))))]


async def storm(a, port, rport, rec, cl, cpu):
    opener = open_tether if a.client == "tether" else open_raw
    n, m, seed, live = a.members, a.missed, a.seed, a.live
    loop = asyncio.get_running_loop()
    control = Control()
    cconn = await opener(port, "/control", control.on_text, 10)
    # the control's join is done once it answers (its first message is read after the join)
    await control.members(cconn, 1, 10)
    # 1. seed
    await control.publish(cconn, 1, seed, 20)
    # 2. N members join from nothing
    left = [n]
    all_done = loop.create_future()

    def done():
        left[0] -= 1
        if left[0] == 0 and not all_done.done():
            all_done.set_result(None)

    first_members = [Member(i, seed, done) for i in range(n)]
    t = time.perf_counter()
    await open_many(opener, port, "/member", first_members, a.parallel, 20)
    for mb in first_members:
        mb.conn.send_text(json.dumps({"epoch": "", "offset": 0}))
    try:
        await asyncio.wait_for(asyncio.shield(all_done), a.timeout)
    except TimeoutError:
        pass
    rec["first_join_s"] = round(time.perf_counter() - t, 3)
    bad = [(mb.i, why) for mb in first_members if (why := mb.check(1, seed, None))]
    epochs = {mb.recovery.get("epoch") for mb in first_members if mb.recovery}
    if bad or len(epochs) != 1:
        raise RuntimeError(f"first join: {len(bad)} members failed, e.g. {bad[:2]}; epochs {sorted(epochs)[:3]}")
    epoch = epochs.pop()
    offsets = {mb.recovery["offset"] for mb in first_members}
    if offsets != {seed}:
        raise RuntimeError(f"first join: positions {sorted(offsets)[:5]}, not {seed}")
    rec["epoch"] = epoch
    # 3. they leave
    await asyncio.gather(*(mb.conn.close(5) for mb in first_members))
    await control.members(cconn, 1, 20)
    # 4. M messages they miss
    await control.publish(cconn, seed + 1, seed + m, 60)
    if a.empty_node:
        control.replies.clear()
        cconn.send_text(json.dumps({"op": "leave"}))
        await control.wait(lambda: control.replies, 5, "the control's leave")
        await control.members(cconn, 0, 10)
    last = seed + m + live
    # 5. the storm
    left[0] = n
    all_done = loop.create_future()
    members = [Member(i, last, done) for i in range(n)]
    join = json.dumps({"epoch": epoch, "offset": seed})
    cmd0 = cl.redis_cmdstats(rport) if rport else {}
    tk0 = cpu.sample()
    if a.reconnect:
        async def reconnect(mb):
            mb.conn = await opener(port, "/member", mb.on_text, 20)
            mb.conn.send_text(join)

        t0 = time.perf_counter()
        opening = asyncio.gather(*(reconnect(mb) for mb in members))
        rec["connect_s"] = None
    else:
        t_open = time.perf_counter()
        await open_many(opener, port, "/member", members, a.parallel, 20)
        rec["connect_s"] = round(time.perf_counter() - t_open, 3)
        cmd_open = cl.redis_cmdstats(rport) if rport else {}
        tk_open = cpu.sample()
        t0 = time.perf_counter()
        for mb in members:
            mb.conn.send_text(join)
        opening = None
    for k in range(live):
        if k:
            await asyncio.sleep(a.live_interval / 1000)
        cconn.send_text(json.dumps({"op": "publish", "from": seed + m + 1 + k, "to": seed + m + 1 + k}))
    try:
        await asyncio.wait_for(asyncio.shield(all_done), a.timeout)
    except TimeoutError:
        pass
    t_end = time.perf_counter()
    tk1 = cpu.sample()
    cmd1 = cl.redis_cmdstats(rport) if rport else {}
    if opening is not None:
        try:
            await asyncio.wait_for(opening, 5)
        except Exception as exc:
            rec["open_error"] = repr(exc)[:200]
    await asyncio.sleep(a.settle)
    # 6. checks
    bad = [(mb.i, why) for mb in members if (why := mb.check(seed + 1, last, epoch))]
    done_t = [mb.t_done - t0 for mb in members if mb.t_done]
    rec_t = [mb.t_recovery - t0 for mb in members if mb.t_recovery]
    def cpu_s(a_, b_, pid=None):
        if pid is not None:
            return round((b_.get(pid, 0) - a_.get(pid, 0)) / cl.HZ, 3)
        return round((sum(b_.values()) - sum(a_.values())) / cl.HZ, 3)

    def cmds(a_, b_):
        delta = {k: b_[k] - a_.get(k, 0) for k in b_ if b_[k] - a_.get(k, 0) > 0}
        delta.pop("info", None)
        if "_total" in delta:  # total_commands_processed: not our own INFO calls
            delta["_total"] -= b_.get("info", 0) - a_.get("info", 0)
        return delta

    rec.update(
        complete=len(done_t), failed=len(bad), failures=[f"member {i}: {why}" for i, why in bad[:5]],
        storm_s=round(max(done_t), 4) if len(done_t) == n else None,
        done_p50_s=round(pct(done_t, 50), 4), done_p99_s=round(pct(done_t, 99), 4),
        recovery_p50_s=round(pct(rec_t, 50), 4), recovery_p99_s=round(pct(rec_t, 99), 4),
        recovery_max_s=round(max(rec_t), 4) if rec_t else None,
        offsets=sorted({mb.recovery["offset"] for mb in members if mb.recovery})[:4],
        server_cpu_s=cpu_s(tk0, tk1))  # tether + Redis, the N connections and their joins
    if not a.reconnect:
        rec["join_cpu_s"] = cpu_s(tk_open, tk1)  # the joins alone (the connections were open)
    if rport:
        rec["redis_cpu_s"] = cpu_s(tk0, tk1, rec["redis_pid"])
        rec["redis_cmds"] = cmds(cmd0, cmd1)
        if not a.reconnect:
            rec["redis_cmds_join"] = cmds(cmd_open, cmd1)
    rec["ok"] = int(not bad and len(done_t) == n)
    await asyncio.gather(*(mb.conn.close(5) for mb in members if mb.conn), return_exceptions=True)
    await cconn.close(5)


# ------------------------------------------------------------------ one run

def run_once(a, rep, cl, ports, logdir):
    busy, waited = cl.wait_quiet(a.quiet_pct, a.quiet_wait)
    port = ports.get(2)
    rport = port + 1 if a.backplane == "redis" else None
    rec = {"rep": rep, "backplane": a.backplane, "client": a.client, "loop": a.loop, "members": a.members,
           "missed": a.missed, "seed": a.seed, "live": a.live, "reconnect": a.reconnect, "empty_node": a.empty_node, "size": a.size, "port": port,
           "time": datetime.datetime.now().isoformat(timespec="seconds"), "pre_busy_pct": busy, "quiet_wait_s": waited}
    logpath = os.path.join(logdir, f"recovery.{rep}.log")
    redis = srv = None
    with open(logpath, "w") as logf:
        try:
            argv = [f"{a.tether_venv}/bin/python", "-m", "tether", "run", "recovery:app", "--host", "127.0.0.1",
                    "--port", str(port), "--log-level", "warning"]
            if a.backplane == "redis":
                redis = cl.start_redis(rport, logf, logdir)
                rec["redis_pid"] = redis.pid
                argv += ["--backplane", f"redis://127.0.0.1:{rport}/0"]
            elif a.backplane == "memory":
                argv += ["--backplane", "memory://storm"]
            rec["server_cmd"] = " ".join(shlex.quote(x) for x in argv)
            logf.write(f"[recovery.py] {rec['server_cmd']}\n")
            logf.flush()
            env = {**os.environ, "BENCH_RECOVERY_SERVER": "1", "BENCH_HISTORY_SIZE": str(a.size)}
            srv = subprocess.Popen(["taskset", "-c", cl.SERVER_CPU, *argv], cwd=BENCH, env=env, stdout=logf,
                                   stderr=subprocess.STDOUT, preexec_fn=cl.child_setup)
            deadline = time.time() + 30
            while True:
                if srv.poll() is not None:
                    raise RuntimeError(f"server exited with {srv.returncode} during start-up")
                try:
                    with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                        break
                except OSError:
                    if time.time() > deadline:
                        raise RuntimeError("server not listening within 30 s") from None
                    time.sleep(0.1)
            cpu = cl.CpuTracker([srv.pid] + ([redis.pid] if redis else []))
            try:
                run_loop(storm(a, port, rport, rec, cl, cpu))
            except (TimeoutError, RuntimeError, OSError) as exc:
                rec.update(ok=0, error=f"{type(exc).__name__}: {exc}"[:400])
            if srv.poll() is not None:
                rec.update(ok=0, error=f"server died (exit {srv.returncode})")
            elif redis is not None and redis.poll() is not None:
                rec.update(ok=0, error=f"redis-server died (exit {redis.returncode})")
        except RuntimeError as exc:
            rec.update(ok=0, error=str(exc))
        finally:
            cl.stop(srv)
            cl.stop(redis)
    notes = cl.server_log_notes(logpath)
    if notes:
        rec["server_log"] = notes
    return rec


LOOP = "auto"
CLIENT = "raw"


def run_loop(coro):
    """uvloop for the raw client when importable (--loop auto); asyncio's own loop for the
    tether client: before 1118866 tether.client.open_websocket asserted an asyncio.Transport
    in connection_made, which uvloop's transports are not (the handshake then timed out), and
    the measurements of issue 18 were made with such a tree (--loop uvloop to use it after)."""
    if LOOP == "uvloop" or (LOOP == "auto" and CLIENT == "raw"):
        try:
            import uvloop
            return uvloop.run(coro)
        except ImportError:
            if LOOP == "uvloop":
                raise
    return asyncio.run(coro)


def per_recovery(r, key="redis_cmds"):
    """'7.01 (evalsha=1.00 ...)' per member from the storm's command counts: Redis's
    total_commands_processed, which counts the commands a script runs as well as the EVALSHA
    that ran it, then every command by name (INFO commandstats), most frequent first."""
    cmds = dict(r.get(key) or {})
    total = cmds.pop("_total", None)
    n = r["members"]
    parts = [f"{k}={v / n:.2f}" for k, v in sorted(cmds.items(), key=lambda kv: -kv[1])]
    return (f"{total / n:.2f}" if total is not None else "?") + " (" + " ".join(parts) + ")"


def fmt(r):
    head = f"{r['rep']} {r['backplane']:<6} {r['client']:<6} n={r['members']} missed={r['missed']}"
    if r.get("ok") != 1:
        head += " FAIL " + str(r.get("error") or "; ".join(r.get("failures", [])[:2]))
    storm_s = r.get("storm_s")
    out = (f"{head} storm={storm_s if storm_s is not None else '-'}s complete={r.get('complete', 0)}/{r['members']} "
           f"failed={r.get('failed', '-')} done p50={r.get('done_p50_s', 0)}s p99={r.get('done_p99_s', 0)}s "
           f"recovery p50={r.get('recovery_p50_s', 0)}s p99={r.get('recovery_p99_s', 0)}s "
           f"connect={r.get('connect_s')}s CPU={r.get('server_cpu_s', 0)}s (joins {r.get('join_cpu_s', '-')}s)")
    if r["backplane"] == "redis" and r.get("redis_cmds"):
        out += f" redis CPU={r.get('redis_cpu_s', 0)}s cmds/recovery={per_recovery(r)}"
        if r.get("redis_cmds_join"):
            out += f" of which the joins {per_recovery(r, 'redis_cmds_join')}"
    return out


def report(recs, a):
    ok = [r for r in recs if r.get("ok") == 1]
    print()
    mode = "connect + join at once (--reconnect)" if a.reconnect else "connections open, every join written at once"
    if a.empty_node:
        mode += ", no member left on the node (--empty-node)"
    print(f"## recovery storm: {a.members} members x {a.missed} missed messages (+{a.live} live), backplane "
          f"{a.backplane}, client {a.client}, {mode}")
    print()
    print("| runs ok | last member complete s, median [min-max] | p50 complete s | p99 complete s | "
          "recovery answer p99 s | CPU s, tether + Redis | of it Redis | of it the joins | "
          "Redis commands per recovery, its connection's included (median run) | of them the join's |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    storms = [r["storm_s"] for r in ok]
    med = statistics.median(storms) if storms else None

    def mr(vals, f="{:.3f}"):
        if not vals:
            return "-"
        return f"{f.format(statistics.median(vals))} [{f.format(min(vals))}-{f.format(max(vals))}]"

    mid = sorted(ok, key=lambda r: r["storm_s"])[len(ok) // 2] if ok else None
    print(f"| {len(ok)}/{len(recs)} | {mr(storms)} | {mr([r['done_p50_s'] for r in ok])} | "
          f"{mr([r['done_p99_s'] for r in ok])} | {mr([r['recovery_p99_s'] for r in ok])} | "
          f"{mr([r['server_cpu_s'] for r in ok], '{:.2f}')} | "
          f"{mr([r['redis_cpu_s'] for r in ok if 'redis_cpu_s' in r], '{:.2f}')} | "
          f"{mr([r['join_cpu_s'] for r in ok if 'join_cpu_s' in r], '{:.2f}')} | "
          f"{per_recovery(mid) if mid and mid.get('redis_cmds') else '-'} | "
          f"{per_recovery(mid, 'redis_cmds_join') if mid and mid.get('redis_cmds_join') else '-'} |")
    for r in recs:
        if r.get("ok") != 1:
            print(f"  FAIL rep {r['rep']}: {r.get('error') or r.get('failures')}")
            for note in r.get("server_log", [])[:2]:
                print(f"       server log: {note}")
    print()
    all_ok = len(ok) == len(recs) and recs
    if med is None:
        verdict = "NOT MET (no run completed)"
    else:
        verdict = "MET" if all_ok and max(storms) <= 2.0 else "NOT MET"
    print(f"bar: every member recovered, in order, exactly once, the last within 2 s, in every run: {verdict}"
          + (f" (median {med:.3f} s, worst {max(storms):.3f} s)" if storms else "")
          + ("" if a.backplane == "redis" else f"  [backplane {a.backplane}: not the bar's Redis]"))


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("-n", "--members", type=int, default=1000)
    ap.add_argument("-m", "--missed", type=int, default=100, help="messages each member misses")
    ap.add_argument("--seed", type=int, default=1, help="messages published before the first join (>= 1)")
    ap.add_argument("--live", type=int, default=1, help="live messages published during the storm (>= 1)")
    ap.add_argument("--live-interval", type=float, default=20.0, help="ms between live messages")
    ap.add_argument("--size", type=int, default=1000, help="the room's history size")
    ap.add_argument("--backplane", choices=["redis", "memory", "local"], default="redis",
                    help="redis: a redis-server of its own; memory: memory://storm; local: none")
    ap.add_argument("--client", choices=["raw", "tether"], default="raw")
    ap.add_argument("--loop", choices=["auto", "uvloop", "asyncio"], default="auto",
                    help="the clients' loop (auto: uvloop for raw, asyncio for tether)")
    ap.add_argument("--reconnect", action="store_true", help="each member connects and joins at once (t0 = "
                    "the first connection attempt) instead of joining on open connections")
    ap.add_argument("--empty-node", action="store_true", help="the control leaves the room before the storm: "
                    "the node has no member of it (and no subscription) when the members rejoin")
    ap.add_argument("--parallel", type=int, default=1000, help="handshakes in flight at once (not --reconnect)")
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--timeout", type=float, default=30.0, help="max wait for the members to complete (s)")
    ap.add_argument("--settle", type=float, default=0.5, help="wait for stray frames after the last one (s)")
    ap.add_argument("--tether-venv", default=os.environ.get("TETHER_VENV") or
                    f"{os.environ.get('VENVS', '/tmp/bench-venvs')}/tether",
                    help="venv of the server (needs redis-py for --backplane redis)")
    ap.add_argument("--out", default=None, help="results folder (default ./bench-results/recovery-<timestamp>)")
    ap.add_argument("--port-base", type=int, default=18500, help="first port to try (ports up to 18999)")
    ap.add_argument("--quiet-pct", type=float, default=15.0,
                    help="before each run wait until the machine is below this busy %% (101 = never wait)")
    ap.add_argument("--quiet-wait", type=float, default=60.0)
    ap.add_argument("--nice", type=int, default=-10, help="nice value of the server, redis and clients (0 = off)")
    a = ap.parse_args()
    if a.seed < 1 or a.live < 1 or a.missed < 1:
        sys.exit("--seed, --live and --missed must be at least 1")
    if a.size < a.missed + a.live:
        sys.exit("--size must hold the missed and live messages")
    global LOOP, CLIENT
    LOOP, CLIENT = a.loop, a.client
    cl = _cluster()
    cl.NICE = a.nice
    if a.backplane == "redis" and not os.access(cl.REDIS_SERVER, os.X_OK):
        sys.exit(f"{cl.REDIS_SERVER} not found (apt-get install redis-server)")
    if not os.access(f"{a.tether_venv}/bin/python", os.X_OK):
        sys.exit(f"{a.tether_venv}/bin/python missing (--tether-venv)")
    try:
        os.sched_setaffinity(0, {int(cl.CLIENT_CPU)})
    except OSError:
        pass
    if a.nice:
        try:
            os.setpriority(os.PRIO_PROCESS, 0, a.nice)
        except OSError:
            pass
    cl.raise_nofile()

    def _term(signum, frame):
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, _term)
    stamp = datetime.datetime.now().strftime("%Y%m%d-%H%M%S")
    out = a.out or os.path.join(os.getcwd(), "bench-results", f"recovery-{stamp}")
    logdir = os.path.join(out, "logs")
    os.makedirs(logdir, exist_ok=True)
    resfile = os.path.join(out, "results.jsonl")
    ports = cl.PortPool(a.port_base)
    print(f"# results -> {resfile}", flush=True)
    print(f"# server venv {a.tether_venv}; backplane {a.backplane}; client {a.client} ({sys.executable})", flush=True)
    recs = []
    with open(resfile, "a") as rf:
        for rep in range(1, a.reps + 1):
            rec = run_once(a, rep, cl, ports, logdir)
            recs.append(rec)
            rf.write(json.dumps(rec) + "\n")
            rf.flush()
            print(fmt(rec), flush=True)
    report(recs, a)


if __name__ == "__main__":
    main()

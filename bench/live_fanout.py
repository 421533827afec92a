#!/usr/bin/env python3
"""Live-protocol fan-out (issue 19): 1000 subscribers, one publisher (server code), live room vs
a plain WebSocket route, in one run.

    .venv/bin/python bench/live_fanout.py                                # 4 rows x 2 sizes x 3 reps
    .venv/bin/python bench/live_fanout.py --rows live,ws-room --sizes 64 --reps 1 -M 200   # smoke

Rows (the same server process kind, `python -m tether run live_common:app`, bench/live_common.py):
  ws-broadcast   plain route /ws/path; app.hub.broadcast("/ws/path", text)
  ws-room        plain route /ws/room, every connection joined the hub room "plain";
                 app.hub.publish("plain", text)
  live           the live endpoint /live, every subscriber connect + join "fan" (no history,
                 no presence); app.hub.publish("fan", data): each message framed once as
                 {"push":"message","room":"fan","data":...}
  live-history   the same into "fanh", a room with history: every message numbered by the
                 (local) backplane and framed once per message with its offset and epoch
The data is the same in every row: message i is {"k": i, "p": "xx.."} of --sizes bytes of
JSON; the plain rows send that JSON as the text frame, the live rows wrap it in the push.

One run (fresh server per run, rows x sizes shuffled per repetition): the server alone on
CPU 0 (the native server, uvloop; WebSocket keepalive pings and live pings off so that no
frame but the burst's reaches a subscriber); --procs receiver processes on CPU 1 open
--conns connections between them (raw asyncio protocols on uvloop, bench/live_common.RawWS)
and subscribe; when every process says READY the driver sends one order on /control, and
server code publishes -M messages in a loop, yielding to the event loop every --per-tick.

Every delivery is checked, cheaply: in each process one subscriber parses every frame (JSON,
k = 0..M-1 in order, once; in the live rows push/room, and in the history row offsets
consecutive in one epoch); every other subscriber keeps only the byte count and CRC-32 of
everything it received after its join reply (or "ready"), which must equal that
subscriber's stream: the same frames, in the same order, each once. deliveries/s =
conns x M / (last byte received by any subscriber - the server's first publish), one
monotonic clock. CPU of the server and of the receiver processes over that window comes from
/proc/PID/stat (sampled every 20 ms): the server at ~100 % of its core and the receivers well
under theirs is what says the clients were not the bottleneck.

Results: bench-results/live-fanout-<stamp>/results.jsonl (+ logs/), a table, and the bar
(issue 19: live >= 50 % of the raw WebSocket broadcast of the same payloads, here the better
of ws-room and ws-broadcast, per size, from the medians of this run). Only loopback and
ports --port-base..18999; only processes started here are signalled, by PID; waits bounded.
"""
import argparse
import asyncio
import contextlib
import datetime
import json
import os
import random
import shlex
import statistics
import sys
import time
import zlib

import live_common as lc

ROWS = ["ws-broadcast", "ws-room", "live", "live-history"]
PATHS = {"ws-broadcast": "/ws/path", "ws-room": "/ws/room", "live": "/live", "live-history": "/live"}
ROOMS = {"live": "fan", "live-history": "fanh"}


# ------------------------------------------------------------------ the receiver processes

class Receiver(lc.RawWS):
    """One subscriber (see the module doc: `full` parses and checks every frame)."""

    def __init__(self, group, port, row, full):
        live = row in ROOMS
        super().__init__(port, PATHS[row], lc.SUBPROTOCOL if live else None)
        self.group, self.row, self.full, self.live = group, row, full, live
        self.room = ROOMS.get(row)
        self.joined = asyncio.get_running_loop().create_future()
        self.n = 0
        self.crc = 0
        self.t_first = self.t_last = None
        self.complete = False
        # the full subscriber's frame checks
        self.fbuf = bytearray()
        self.k = 0
        self.offset = None
        self.epoch = None
        self.bad = []

    def on_open(self):
        if self.live:  # connect and join at once (the server runs them in order)
            self.send_text('{"op":"connect","id":1,"token":null}')
            self.send_text(json.dumps({"op": "join", "id": 2, "room": self.room}))

    def on_text(self, frame):
        if not self.live:
            if frame == b"ready":
                self.joined.set_result(True)
                return True
            self.errors.append(f"before ready: {frame[:60]!r}")
            return None
        msg = json.loads(frame)
        if msg.get("id") == 2:
            if "result" not in msg:
                self.joined.set_exception(OSError(f"join refused: {msg}"))
                return None
            self.joined.set_result(msg["result"])
            return True
        if msg.get("id") != 1 or "result" not in msg:
            self.errors.append(f"before the join reply: {frame[:80]!r}")
        return None

    def on_stream(self, data):
        now = time.monotonic()
        if self.t_first is None:
            self.t_first = now
        self.t_last = now
        self.n += len(data)
        self.crc = zlib.crc32(data, self.crc)
        if self.full:
            self.check_frames(data)
        self.group.progress(self)

    def check_frames(self, data):
        buf = self.fbuf
        buf += data
        pos = 0
        while (found := lc.next_frame(buf, pos)) is not None:
            b0, frame, pos = found
            if b0 != 0x81:
                self.bad.append(f"frame byte0 {b0:#x} at message {self.k}")
                continue
            self.check_message(json.loads(frame))
        del buf[:pos]
        if self.k == self.group.messages and not self.complete:
            self.group.reference(self)

    def check_message(self, msg):
        if self.live:
            if msg.get("push") != "message" or msg.get("room") != self.room:
                self.bad.append(f"not a message of {self.room}: {str(msg)[:80]}")
                return
            if self.row == "live-history":
                offset, epoch = msg.get("offset"), msg.get("epoch")
                if self.offset is not None and (offset != self.offset + 1 or epoch != self.epoch):
                    self.bad.append(f"offset {offset} epoch {epoch} after {self.offset} {self.epoch}")
                self.offset, self.epoch = offset, epoch
            data = msg.get("data")
        else:
            data = msg
        if not isinstance(data, dict) or data.get("k") != self.k:
            self.bad.append(f"message {self.k}: got k={data.get('k') if isinstance(data, dict) else data!r}")
        self.k += 1


class Group:
    """One process's subscribers; its full subscriber sets the expected stream."""

    def __init__(self, messages):
        self.messages = messages
        self.receivers = []
        self.expected = None  # (bytes, crc) of the full subscriber's stream
        self.left = 0
        self.done = asyncio.get_running_loop().create_future()

    def reference(self, full):
        self.expected = (full.n, full.crc)
        for r in self.receivers:
            self.progress(r)

    def progress(self, r):
        if r.complete or self.expected is None or r.n < self.expected[0]:
            return
        r.complete = True
        self.left -= 1
        if self.left == 0 and not self.done.done():
            self.done.set_result(True)


async def receiver_main(a):
    loop = asyncio.get_running_loop()
    group = Group(a.messages)
    group.left = a.count
    sem = asyncio.Semaphore(200)

    async def open_one(i):
        async with sem:
            r = await lc.open_ws(lambda: Receiver(group, a.port, a.row, i == 0), a.port, timeout=30)
            await asyncio.wait_for(asyncio.shield(r.joined), 30)
            return r

    try:
        group.receivers = list(await asyncio.gather(*(open_one(i) for i in range(a.count))))
    except Exception as exc:
        print("FAILED " + json.dumps({"error": f"{type(exc).__name__}: {exc}"[:300]}), flush=True)
        return
    print(f"READY {a.count}", flush=True)
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(asyncio.shield(group.done), a.max_wait)
    await asyncio.sleep(a.settle)  # anything after the last expected byte is counted as extra
    rs = group.receivers
    exp_n, exp_crc = group.expected or (None, None)
    full = rs[0]
    firsts = [r.t_first for r in rs if r.t_first is not None]
    lasts = [r.t_last for r in rs if r.complete]
    out = {
        "conns": len(rs), "complete": sum(r.complete for r in rs),
        "bytes": exp_n, "full_messages": full.k, "full_bad": full.bad[:3], "full_bad_n": len(full.bad),
        "mismatch": sum(1 for r in rs if r.complete and (r.n != exp_n or r.crc != exp_crc)),
        "extra": sum(1 for r in rs if exp_n is not None and r.n > exp_n),
        "short": sum(1 for r in rs if not r.complete),
        "errors": sum(len(r.errors) for r in rs), "closed": sum(1 for r in rs if r.lost.done()),
        "t_first_min": min(firsts) if firsts else None, "t_last_max": max(lasts) if lasts else None,
        "t_last_p50": statistics.median(lasts) if lasts else None,
        "epoch": full.epoch, "first_offset": None,
    }
    print("DONE " + json.dumps(out), flush=True)
    await loop.run_in_executor(None, sys.stdin.readline)
    for r in rs:
        r.close()
    await asyncio.sleep(0.2)


# ------------------------------------------------------------------ the driver

async def drive(a, cl, port, rec, srv_pid, logf):
    control = await lc.open_ws(lambda: lc.Control(port), port)
    hello = await control.ask({"op": "hello"}, "hello", 10)
    rec["server_pid"] = hello["pid"]
    per = [a.conns // a.procs + (1 if i < a.conns % a.procs else 0) for i in range(a.procs)]
    procs = []
    try:
        for count in per:
            args = [sys.executable, os.path.abspath(__file__), "--receiver", "--port", str(port), "--row", rec["row"],
                    "--count", str(count), "-M", str(a.messages), "--max-wait", str(a.max_wait),
                    "--settle", str(a.settle)]
            cmd = lc.pinned(cl, cl.CLIENT_CPU, args)
            procs.append(await asyncio.create_subprocess_exec(*cmd, stdin=asyncio.subprocess.PIPE,
                                                              stdout=asyncio.subprocess.PIPE, stderr=logf))
        rec["receiver_cmd"] = " ".join(shlex.quote(x) for x in args)
        t_open = time.monotonic()
        for p in procs:
            line = (await asyncio.wait_for(p.stdout.readline(), 120)).decode()
            if not line.startswith("READY"):
                raise RuntimeError(f"receiver: {line.strip() or 'exited'}")
        rec["open_s"] = round(time.monotonic() - t_open, 3)
        await asyncio.sleep(0.3)
        pids = [p.pid for p in procs]
        timeline = []
        stop = asyncio.Event()

        async def sample():
            ctree = cl.CpuTracker(pids, rescan=1000)
            while True:
                m = cl.machine_ticks()
                c = ctree.sample()
                timeline.append((time.monotonic(), cl.proc_ticks(srv_pid), sum(c.values()), m[0], m[2]))
                if stop.is_set():
                    return
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), 0.02)

        sampler = asyncio.ensure_future(sample())
        await asyncio.sleep(0.05)
        control.send_text(json.dumps({"op": "burst", "target": rec["row"], "n": a.messages, "size": rec["size"],
                                      "per_tick": a.per_tick}))
        dones = []
        for p in procs:
            line = (await asyncio.wait_for(p.stdout.readline(), a.max_wait + a.settle + 30)).decode()
            if not line.startswith("DONE "):
                raise RuntimeError(f"receiver: {line.strip() or 'exited'}")
            dones.append(json.loads(line[5:]))
        burst = await control.wait("burst", 10)
        stop.set()
        await sampler
        for p in procs:
            p.stdin.write(b"EXIT\n")
            await p.stdin.drain()
        await asyncio.gather(*(asyncio.wait_for(p.wait(), 10) for p in procs), return_exceptions=True)
    finally:
        for p in procs:
            if p.returncode is None:
                with contextlib.suppress(ProcessLookupError):
                    p.kill()
        control.close()
    t0 = burst["t0"]
    complete = sum(d["complete"] for d in dones)
    lasts = [d["t_last_max"] for d in dones if d["t_last_max"]]
    t_end = max(lasts) if lasts else None
    ok = (complete == a.conns and all(d["mismatch"] == 0 and d["extra"] == 0 and d["full_bad_n"] == 0
                                      and d["full_messages"] == a.messages and d["errors"] == 0
                                      and d["closed"] == 0 for d in dones))
    rec.update(ok=int(ok), complete=complete, delivered=complete * a.messages if ok else None,
               publish_loop_s=round(burst["t1"] - t0, 4), receivers=dones,
               wire_bytes_per_delivery=round(dones[0]["bytes"] / a.messages, 1) if dones[0]["bytes"] else None,
               offsets_epoch=dones[0].get("epoch"))
    if t_end:
        span = t_end - t0
        rec.update(burst_s=round(span, 4), rate=round(a.conns * a.messages / span) if ok else None)
        a_ = [x for x in timeline if x[0] <= t0] or timeline[:1]
        b_ = next((x for x in timeline if x[0] >= t_end), timeline[-1])
        s0, s1 = a_[-1], b_
        win = s1[0] - s0[0]
        if win > 0:
            srv = (s1[1] - s0[1]) / cl.HZ
            cli = (s1[2] - s0[2]) / cl.HZ
            busy = (s1[3] - s0[3]) / cl.HZ
            rec.update(window_s=round(win, 3), server_cpu_pct=round(100 * srv / win, 1),
                       client_cpu_pct=round(100 * cli / win, 1),
                       other_cpu_pct=round(100 * max(0.0, busy - srv - cli) / win, 1),
                       server_cpu_us_per_delivery=round(1e6 * srv / (a.conns * a.messages), 3))
    if not ok:
        rec["error"] = (f"complete {complete}/{a.conns}; " + "; ".join(
            f"mismatch={d['mismatch']} extra={d['extra']} short={d['short']} errors={d['errors']} "
            f"closed={d['closed']} full={d['full_messages']}/{a.messages} bad={d['full_bad']}" for d in dones
            if d["complete"] != d["conns"] or d["mismatch"] or d["extra"] or d["full_bad_n"] or d["errors"]
            or d["closed"]))[:600]


def run_one(a, cl, ports, logdir, row, size, rep):
    busy, waited = cl.wait_quiet(a.quiet_pct, a.quiet_wait)
    port = ports.get(1)
    rec = {"row": row, "size": size, "rep": rep, "conns": a.conns, "messages": a.messages, "procs": a.procs,
           "per_tick": a.per_tick, "port": port, "time": datetime.datetime.now().isoformat(timespec="seconds"),
           "pre_busy_pct": busy, "quiet_wait_s": waited}
    logpath = os.path.join(logdir, f"{row}.{size}.{rep}.log")
    srv = None
    with open(logpath, "w") as logf:
        try:
            argv = lc.server_argv(a.python, port, a.backplane, ("--ping-interval", "0"))
            rec["server_cmd"] = " ".join(shlex.quote(x) for x in argv)
            logf.write(f"[live_fanout.py] {rec['server_cmd']}\n")
            logf.flush()
            srv = lc.start_server(cl, argv, {"BENCH_LIVE_PING": "3600"}, logf, cl.SERVER_CPU)
            lc.wait_listening(port, srv)
            lc.run_loop(drive(a, cl, port, rec, srv.pid, logf))
            if srv.poll() is not None:
                rec.update(ok=0, error=f"server died (exit {srv.returncode})")
        except (RuntimeError, OSError, TimeoutError) as exc:
            rec.update(ok=0, error=f"{type(exc).__name__}: {exc}"[:400])
        finally:
            cl.stop(srv)
    notes = cl.server_log_notes(logpath)
    if notes:
        rec["server_log"] = notes
    return rec


def fmt(r):
    head = f"{r['rep']} {r['row']:<13} {r['size']:>5} B"
    if r.get("ok") != 1:
        head += " FAIL " + str(r.get("error"))
    return (f"{head} {r.get('rate') or 0:>10,} deliv/s burst={r.get('burst_s', '-')}s "
            f"(publish loop {r.get('publish_loop_s', '-')}s) srvCPU={r.get('server_cpu_pct', '-')}% "
            f"cliCPU={r.get('client_cpu_pct', '-')}% other={r.get('other_cpu_pct', '-')}% "
            f"{r.get('server_cpu_us_per_delivery', '-')}us/deliv wire={r.get('wire_bytes_per_delivery', '-')}B "
            f"open={r.get('open_s', '-')}s")


def mr(vals, f="{:,.0f}"):
    if not vals:
        return "-"
    return f"{f.format(statistics.median(vals))} [{f.format(min(vals))}-{f.format(max(vals))}]"


def report(recs, a):
    print()
    print(f"## live fan-out: {a.conns} subscribers x {a.messages} messages, server code publishing "
          f"({a.per_tick} per loop turn); server on CPU 0, {a.procs} receiver processes on CPU 1")
    print()
    print("| row | size B | ok | deliveries/s median [min-max] | server CPU % | receivers CPU % | "
          "server µs/delivery | wire B/delivery | other CPU % |")
    print("|---|---|---|---|---|---|---|---|---|")
    med = {}
    us = "{:.2f}"
    for size in a.sizes:
        for row in a.rows:
            rs = [r for r in recs if r["row"] == row and r["size"] == size]
            ok = [r for r in rs if r.get("ok") == 1]
            rates = [r["rate"] for r in ok]
            if rates:
                med[row, size] = statistics.median(rates)
            print(f"| {row} | {size} | {len(ok)}/{len(rs)} | {mr(rates)} | "
                  f"{mr([r['server_cpu_pct'] for r in ok if 'server_cpu_pct' in r])} | "
                  f"{mr([r['client_cpu_pct'] for r in ok if 'client_cpu_pct' in r])} | "
                  f"{mr([r['server_cpu_us_per_delivery'] for r in ok if 'server_cpu_us_per_delivery' in r], us)} | "
                  f"{mr([r['wire_bytes_per_delivery'] for r in ok if r.get('wire_bytes_per_delivery')], '{:.0f}')} | "
                  f"{mr([r['other_cpu_pct'] for r in ok if 'other_cpu_pct' in r])} |")
    for r in recs:
        if r.get("ok") != 1:
            print(f"  FAIL {r['row']} {r['size']} rep {r['rep']}: {r.get('error')}")
            for note in r.get("server_log", [])[:2]:
                print(f"       server log: {note}")
    print()
    cpu = {}
    for r in recs:
        if r.get("ok") == 1 and "server_cpu_us_per_delivery" in r:
            cpu.setdefault((r["row"], r["size"]), []).append(r["server_cpu_us_per_delivery"])
    for size in a.sizes:  # the same comparison by server CPU per delivery (less moved by other processes)
        base = {row: statistics.median(cpu[row, size]) for row in ("ws-room", "ws-broadcast") if (row, size) in cpu}
        for row in ("live", "live-history"):
            if (row, size) in cpu and base:
                mine = statistics.median(cpu[row, size])
                print(f"{size} B: {row} {mine:.2f} µs of server CPU per delivery; " + ", ".join(
                    f"{k} {v:.2f} µs ({v / mine:.3f} as a rate)" for k, v in base.items()))
    verdicts = []
    for size in a.sizes:
        raw = {row: med[row, size] for row in ("ws-room", "ws-broadcast") if (row, size) in med}
        if not raw:
            continue
        best = max(raw, key=raw.get)
        for row in ("live", "live-history"):
            if (row, size) not in med:
                continue
            ratio = med[row, size] / raw[best]
            others = ", ".join(f"{med[row, size] / v:.3f} of {k}" for k, v in raw.items())
            line = f"{size} B: {row} {med[row, size]:,.0f}/s = {others}"
            if row == "live":
                met = ratio >= 0.5
                verdicts.append(met)
                line += f"  [bar >= 0.5 of the raw broadcast ({best}): {'MET' if met else 'NOT MET'}]"
            print(line)
    if verdicts:
        print(f"bar (live >= 50 % of the raw WebSocket broadcast, every size): {'MET' if all(verdicts) else 'NOT MET'}")


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rows", default=",".join(ROWS), help=f"comma-separated, from {','.join(ROWS)}")
    ap.add_argument("--sizes", default="64,1024", help="JSON bytes of each message's data, comma-separated")
    ap.add_argument("-c", "--conns", type=int, default=1000, help="subscribers")
    ap.add_argument("-M", "--messages", type=int, default=2000, help="messages published per run")
    ap.add_argument("--per-tick", type=int, default=8, help="publishes between two yields to the loop")
    ap.add_argument("--procs", type=int, default=4, help="receiver processes (all on CPU 1)")
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--backplane", default=None, help="the server's --backplane (default: none, one process)")
    ap.add_argument("--python", default=os.path.join(lc.ROOT, ".venv", "bin", "python"),
                    help="python of the server (default: this checkout's .venv)")
    ap.add_argument("--max-wait", type=float, default=60.0, help="max seconds for a burst to arrive")
    ap.add_argument("--settle", type=float, default=0.3, help="seconds to wait for extra frames after the last")
    ap.add_argument("--out", default=None, help="results folder (default ./bench-results/live-fanout-<stamp>)")
    ap.add_argument("--port-base", type=int, default=18400, help="first port to try (ports up to 18999)")
    ap.add_argument("--quiet-pct", type=float, default=15.0,
                    help="before each run wait until the machine is below this busy %% (101 = never wait)")
    ap.add_argument("--quiet-wait", type=float, default=60.0)
    ap.add_argument("--nice", type=int, default=-10, help="nice value of the server and the receivers (0 = off)")
    # receiver-process mode (started by the driver)
    ap.add_argument("--receiver", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--port", type=int, help=argparse.SUPPRESS)
    ap.add_argument("--row", help=argparse.SUPPRESS)
    ap.add_argument("--count", type=int, help=argparse.SUPPRESS)
    ap.add_argument("--report", default=None, help="print the table of a results.jsonl instead of running")
    ap.add_argument("--max-other", type=float, default=None,
                    help="--report: use only the runs where other processes took under this CPU %%")
    a = ap.parse_args()
    if a.receiver:
        lc.run_loop(receiver_main(a))
        return
    a.rows = [r for r in a.rows.split(",") if r]
    a.sizes = [int(s) for s in a.sizes.split(",") if s]
    if a.report:
        with open(a.report) as f:
            recs = [json.loads(line) for line in f if line.strip()]
        if recs:
            a.conns, a.messages, a.per_tick, a.procs = (recs[0][k] for k in ("conns", "messages", "per_tick", "procs"))
            a.rows = [r for r in ROWS if any(x["row"] == r for x in recs)]
            a.sizes = sorted({x["size"] for x in recs})
        if a.max_other is not None:
            kept = [r for r in recs if r.get("ok") == 1 and r.get("other_cpu_pct", 1e9) < a.max_other]
            print(f"# runs with other CPU under {a.max_other:g} %: {len(kept)} of {len(recs)}")
            recs = kept
        report(recs, a)
        return
    for r in a.rows:
        if r not in ROWS:
            sys.exit(f"unknown row {r}; known: {', '.join(ROWS)}")
    if a.conns < a.procs:
        sys.exit("--conns must be at least --procs")
    cl, ports, logdir, resfile = lc.prepare_run("live-fanout", a.out, a.port_base, a.nice)
    rnd = random.Random(a.seed)
    print(f"# results -> {resfile}", flush=True)
    print(f"# server {a.python}; clients {sys.executable}", flush=True)
    recs = []
    with open(resfile, "a") as rf:
        for rep in range(1, a.reps + 1):
            order = [(row, size) for row in a.rows for size in a.sizes]
            rnd.shuffle(order)
            for row, size in order:
                rec = run_one(a, cl, ports, logdir, row, size, rep)
                recs.append(rec)
                rf.write(json.dumps(rec) + "\n")
                rf.flush()
                print(fmt(rec), flush=True)
    report(recs, a)


if __name__ == "__main__":
    main()

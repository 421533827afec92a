#!/usr/bin/env python3
"""Reconnect storm (issue 19): N live clients on one node with a Redis backplane; the node is
killed (SIGKILL) and started again on the same port; how long until every client is rejoined
and recovered, with no message lost, and the node's peak RSS meanwhile.

    .venv/bin/python bench/live_storm.py -n 1000                   # smoke
    .venv/bin/python bench/live_storm.py -n 10000 --procs 8        # the recorded run

One run: a redis-server of its own (127.0.0.1, --save '' --appendonly no, a temp --dir
removed afterwards), node A (`python -m tether run live_common:app --backplane redis://...`,
bench/live_common.py) and node B (the same app on the next port), all three on CPU 0. The
clients run in --procs processes on CPU 1 (uvloop), each client a `tether.client.connect`
(defaults: reconnect backoff 0.25 s doubling to 10 s with full jitter, rejoin from the last
position) joined to one of --rooms rooms "h:s<i>" (history 10000, no presence), client i to
room i mod --rooms. The steps:
  1. every client connects to node A and joins its room (--parallel connections in flight
     per process);
  2. node B publishes --before messages {"k": k} into every room (server code,
     app.hub.publish); every client must get them, live, through node A and Redis;
  3. node A's VmHWM/VmRSS is read, and node A is killed with SIGKILL (t_kill);
  4. node B publishes --missed more messages into every room while node A is down;
  5. --down seconds after the kill node A is started again on the same port (t_restart);
     as soon as it listens (t_listen) node B publishes --live more messages, --live-gap ms
     apart, which race the rejoins;
  6. a client is done when it has joined again after the kill (a Joined event from
     `room.events()` with rejoin=True) and has the last message. Then, per client: every
     rejoin since the kill recovered, and exactly k = 1..before+missed+live, in order, once,
     offsets consecutive in one epoch.
Printed: the time from t_restart (and from t_listen) to the last client done, p50/p99, node
A's VmHWM (its peak RSS: the restarted process's, read after the storm) and CPU over the
storm, the clients' CPU, and how many reconnection attempts the clients made. The first
node's VmHWM before the kill (N clients joined, steady state) is printed beside it.

fds: every process raises RLIMIT_NOFILE to its hard limit (the server holds N + a few, a
client process N / --procs + a few). Only loopback and ports --port-base..18999; only
processes started here are signalled, by PID; every wait is bounded.
"""
import argparse
import asyncio
import contextlib
import datetime
import itertools
import json
import logging
import os
import shlex
import shutil
import signal
import statistics
import sys
import tempfile
import time

import live_common as lc

# ------------------------------------------------------------------ the client processes

class StormClient:
    __slots__ = ("client", "room", "got", "epochs", "rejoins", "bad_rejoins", "armed", "t_rejoin", "t_last",
                 "last", "reader", "error", "done", "group")

    def __init__(self, group):
        self.group = group
        self.client = self.room = self.reader = self.error = None
        self.got = []
        self.epochs = set()
        self.rejoins = 0  # since ARM
        self.bad_rejoins = 0
        self.armed = False
        self.t_rejoin = self.t_last = None
        self.last = None
        self.done = False

    async def read(self):
        from tether.client import Joined, Message
        try:
            async for event in self.room.events():
                if isinstance(event, Message):
                    k = event.data.get("k") if isinstance(event.data, dict) else None
                    self.got.append((event.offset, k))
                    self.epochs.add(event.epoch)
                    if self.last is not None and k == self.last:
                        self.t_last = time.monotonic()
                    self.group.progress(self)
                elif isinstance(event, Joined) and event.rejoin and self.armed:
                    self.rejoins += 1
                    if not event.recovered:
                        self.bad_rejoins += 1
                    if self.t_rejoin is None:
                        self.t_rejoin = time.monotonic()
                    self.group.progress(self)
        except Exception as exc:
            self.error = f"{type(exc).__name__}: {exc}"[:200]

    def at(self, k):
        return bool(self.got) and self.got[-1][1] is not None and self.got[-1][1] >= k

    def check(self):
        ks = [k for _, k in self.got]
        offsets = [o for o, _ in self.got]
        if ks != list(range(1, self.last + 1)):
            return (f"got {len(ks)} messages, want 1..{self.last}: duplicates={len(ks) - len(set(ks))} "
                    f"missing={len(set(range(1, self.last + 1)) - set(ks))} in_order={ks == sorted(ks)}")
        if not all(b == a + 1 for a, b in itertools.pairwise(offsets)) or len(self.epochs) != 1:
            return f"offsets not consecutive or several epochs ({len(self.epochs)})"
        if self.bad_rejoins:
            return f"{self.bad_rejoins} rejoin(s) not recovered"
        if self.error:
            return self.error
        return None


class Group:
    def __init__(self):
        self.clients = []
        self.wait_k = None
        self.waiting = None
        self.storm = False

    def progress(self, c):
        if self.storm:
            if not c.done and c.t_rejoin is not None and c.t_last is not None:
                c.done = True
                self.left -= 1
                if self.left == 0 and not self.waiting.done():
                    self.waiting.set_result(True)
        elif self.wait_k is not None and not c.done and c.at(self.wait_k):
            c.done = True
            self.left -= 1
            if self.left == 0 and not self.waiting.done():
                self.waiting.set_result(True)

    def arm_wait(self, pred_storm, k=None):
        loop = asyncio.get_running_loop()
        self.waiting = loop.create_future()
        self.storm, self.wait_k = pred_storm, k
        for c in self.clients:
            c.done = False
        self.left = len(self.clients)
        for c in self.clients:
            self.progress(c)
        if self.left == 0 and not self.waiting.done():
            self.waiting.set_result(True)


class FailedAttempts(logging.Handler):
    """Counts the client's failed reconnection attempts by error type (its INFO log lines
    "live: reconnecting to URL failed (error); attempt n")."""

    def __init__(self):
        super().__init__(logging.INFO)
        self.by_error = {}

    def emit(self, record):
        if record.msg.startswith("live: reconnecting to") and len(record.args) >= 2:
            name = type(record.args[1]).__name__
            self.by_error[name] = self.by_error.get(name, 0) + 1


async def client_main(a):
    from tether.client import connect
    loop = asyncio.get_running_loop()
    failed = FailedAttempts()
    log = logging.getLogger("tether.client")
    log.addHandler(failed)
    log.setLevel(logging.INFO)
    log.propagate = False  # counted, not printed
    group = Group()
    sem = asyncio.Semaphore(a.parallel)
    url = f"ws://127.0.0.1:{a.port}/live"

    async def open_one(i):
        c = StormClient(group)
        async with sem:
            c.client = connect(url, min_delay=a.min_delay, max_delay=a.max_delay, open_timeout=a.client_open_timeout)
            await c.client.start()
            c.room = await c.client.join(f"h:s{i % a.rooms}")
        c.reader = asyncio.ensure_future(c.read())
        return c

    try:
        group.clients = list(await asyncio.gather(*(open_one(i) for i in range(a.first, a.first + a.count))))
    except Exception as exc:
        print("FAILED " + json.dumps({"error": f"{type(exc).__name__}: {exc}"[:300]}), flush=True)
        return
    print(f"READY {len(group.clients)}", flush=True)
    reader = asyncio.StreamReader()
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
    while True:
        line = (await reader.readline()).decode().split()
        if not line or line[0] == "EXIT":
            break
        if line[0] == "WAIT":
            k, timeout = int(line[1]), float(line[2])
            group.arm_wait(False, k)
            try:
                await asyncio.wait_for(asyncio.shield(group.waiting), timeout)
                print(f"AT {k}", flush=True)
            except TimeoutError:
                print(f"TIMEOUT {k} {group.left}", flush=True)
        elif line[0] == "ARM":
            for c in group.clients:
                c.armed = True
            print("ARMED", flush=True)
        elif line[0] == "STORM":
            last, timeout = int(line[1]), float(line[2])
            before = dict(failed.by_error)  # node A listens again from here on
            for c in group.clients:
                c.last = last
                if c.at(last):
                    c.t_last = time.monotonic()
            group.arm_wait(True)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(asyncio.shield(group.waiting), timeout)
            await asyncio.sleep(a.settle)
            cs = group.clients
            bad = [(i, why) for i, c in enumerate(cs) if (why := c.check())]
            done_t = [max(c.t_rejoin, c.t_last) for c in cs if c.done]
            rejoin_t = [c.t_rejoin for c in cs if c.t_rejoin is not None]
            out = {"clients": len(cs), "done": sum(c.done for c in cs), "failed": len(bad),
                   "failures": [f"client {a.first + i}: {why}" for i, why in bad[:3]],
                   "done_t": sorted(done_t), "rejoin_t_max": max(rejoin_t) if rejoin_t else None,
                   "rejoins": sum(c.rejoins for c in cs), "connects": sum(c.client.connects for c in cs),
                   "not_rejoined": sum(1 for c in cs if c.t_rejoin is None), "failed_attempts": failed.by_error,
                   "failed_after_listen": {k: v - before.get(k, 0) for k, v in failed.by_error.items()
                                           if v > before.get(k, 0)}}
            print("DONE " + json.dumps(out), flush=True)
    await asyncio.gather(*(asyncio.wait_for(c.client.close(), 10) for c in group.clients), return_exceptions=True)


# ------------------------------------------------------------------ the driver

async def lines(procs, want, timeout):
    """The next line of every process; RuntimeError unless each starts with `want`."""
    out = []
    for p in procs:
        line = (await asyncio.wait_for(p.stdout.readline(), timeout)).decode().strip()
        if not line.startswith(want):
            raise RuntimeError(f"client process {p.pid}: {line or 'exited'} (wanted {want})")
        out.append(line)
    return out


async def tell(procs, text):
    for p in procs:
        p.stdin.write(text.encode() + b"\n")
        await p.stdin.drain()


async def drive(a, cl, ports, rec, logf, state):
    loop = asyncio.get_running_loop()
    port, port_b = state["port"], state["port_b"]
    backplane = state["backplane"]
    env = {"BENCH_LIVE_PING": str(a.ping)}
    control = await lc.open_ws(lambda: lc.Control(port_b), port_b)
    rooms = [f"h:s{i}" for i in range(a.rooms)]
    per = [a.clients // a.procs + (1 if i < a.clients % a.procs else 0) for i in range(a.procs)]
    procs = []
    try:
        first = 0
        t_open = time.monotonic()
        for count in per:
            args = [sys.executable, os.path.abspath(__file__), "--client-proc", "--port", str(port),
                    "--first", str(first), "--count", str(count), "--rooms", str(a.rooms),
                    "--parallel", str(a.parallel), "--settle", str(a.settle), "--min-delay", str(a.min_delay),
                    "--max-delay", str(a.max_delay), "--client-open-timeout", str(a.client_open_timeout)]
            cmd = lc.pinned(cl, cl.CLIENT_CPU, args)
            first += count
            procs.append(await asyncio.create_subprocess_exec(*cmd, stdin=asyncio.subprocess.PIPE,
                                                              stdout=asyncio.subprocess.PIPE, stderr=logf))
        state["procs"] = procs
        rec["client_cmd"] = " ".join(shlex.quote(x) for x in args)
        await lines(procs, "READY", a.open_timeout)
        rec["open_s"] = round(time.monotonic() - t_open, 2)
        # 2. messages before the kill, live
        k = a.before
        await control.ask({"op": "publish", "rooms": rooms, "from": 1, "to": k}, "published", 120)
        await tell(procs, f"WAIT {k} 120")
        await lines(procs, "AT", 130)
        await tell(procs, "ARM")
        await lines(procs, "ARMED", 30)
        await asyncio.sleep(0.5)
        srv = state["a"]
        rec["a_before_kill"] = lc.proc_status(srv.pid)
        rec["redis_before_kill"] = lc.proc_status(state["redis"].pid)
        # 3. kill
        t_kill = time.monotonic()
        for pid in reversed(cl.tree(srv.pid)):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        srv.wait(10)
        # 4. published while A is down
        answer = await control.ask({"op": "publish", "rooms": rooms, "from": k + 1, "to": k + a.missed},
                                   "published", 120)
        rec["missed_published_s"] = round(answer["t1"] - t_kill, 3)
        k += a.missed
        await asyncio.sleep(max(0.0, t_kill + a.down - time.monotonic()))
        # 5. restart
        overflows0 = lc.listen_overflows()
        t_restart = time.monotonic()
        argv = lc.server_argv(a.python, port, backplane)
        if a.profile:  # the restarted node under cProfile (written when it stops, after the run)
            argv[1:1] = ["-m", "cProfile", "-o", a.profile]
        with open(state["log_a2"], "w") as log_a2:  # the child keeps its own descriptor
            srv = state["a"] = lc.start_server(cl, argv, env, log_a2, cl.SERVER_CPU)
        cpu = cl.CpuTracker([srv.pid])
        ccpu = cl.CpuTracker([p.pid for p in procs])
        tk0, ck0 = cpu.sample(), ccpu.sample()
        t_listen = await loop.run_in_executor(None, lc.wait_listening, port, srv, 60.0)
        last = k + a.live
        rss_peak = [0]
        timeline = rec["timeline"] = []  # (s after t_listen, server-side ESTABLISHED sockets, A's CPU s)

        async def rss_sampler():
            n = 0
            while True:
                rss_peak[0] = max(rss_peak[0], lc.proc_status(srv.pid).get("VmRSS", 0))
                if n % 5 == 0:
                    timeline.append((round(time.monotonic() - t_listen, 2), len(cl._tcp_inodes(local_port=port)),
                                     round((cl.proc_ticks(srv.pid)) / cl.HZ, 2)))
                n += 1
                await asyncio.sleep(0.1)

        sampler = asyncio.ensure_future(rss_sampler())
        await tell(procs, f"STORM {last} {a.storm_timeout}")
        for j in range(a.live):
            if j:
                await asyncio.sleep(a.live_gap / 1000)
            await control.ask({"op": "publish", "rooms": rooms, "from": k + 1 + j, "to": k + 1 + j}, "published", 60)
        dones = [json.loads(x[5:]) for x in await lines(procs, "DONE", a.storm_timeout + a.settle + 30)]
        sampler.cancel()
        tk1, ck1 = cpu.sample(), ccpu.sample()
        overflows1 = lc.listen_overflows()
        rec["listen_overflows"] = {k: overflows1[k] - overflows0.get(k, 0) for k in overflows1}
        status = lc.proc_status(srv.pid)
        done_t = sorted(t for d in dones for t in d["done_t"])
        n_done = sum(d["done"] for d in dones)
        failed = sum(d["failed"] for d in dones)
        t_end = max(done_t) if done_t else None
        rec.update(
            clients_done=n_done, failed=failed, failures=[f for d in dones for f in d["failures"]][:5],
            not_rejoined=sum(d["not_rejoined"] for d in dones), rejoins=sum(d["rejoins"] for d in dones),
            connects=sum(d["connects"] for d in dones), last_k=last,
            failed_attempts={k: sum(d["failed_attempts"].get(k, 0) for d in dones)
                             for k in {k for d in dones for k in d["failed_attempts"]}},
            failed_after_listen={k: sum(d["failed_after_listen"].get(k, 0) for d in dones)
                                 for k in {k for d in dones for k in d["failed_after_listen"]}},
            down_s=round(t_restart - t_kill, 3), listen_after_restart_s=round(t_listen - t_restart, 3),
            storm_from_restart_s=round(t_end - t_restart, 3) if t_end else None,
            storm_from_listen_s=round(t_end - t_listen, 3) if t_end else None,
            storm_from_kill_s=round(t_end - t_kill, 3) if t_end else None,
            done_p50_from_listen_s=round(lc.pct(done_t, 50) - t_listen, 3) if done_t else None,
            done_p99_from_listen_s=round(lc.pct(done_t, 99) - t_listen, 3) if done_t else None,
            a_after_storm=status, a_vmhwm_kib=status.get("VmHWM"), a_rss_sampled_max_kib=rss_peak[0],
            a_cpu_s=round((sum(tk1.values()) - sum(tk0.values())) / cl.HZ, 2),
            clients_cpu_s=round((sum(ck1.values()) - sum(ck0.values())) / cl.HZ, 2),
            redis_after=lc.proc_status(state["redis"].pid))
        rec["ok"] = int(n_done == a.clients and failed == 0)
        await tell(procs, "EXIT")
        await asyncio.gather(*(asyncio.wait_for(p.wait(), 30) for p in procs), return_exceptions=True)
    finally:
        for p in procs:
            if p.returncode is None:
                with contextlib.suppress(ProcessLookupError):
                    p.kill()
        control.close()


def run_once(a, cl, ports, logdir, rep):
    busy, waited = cl.wait_quiet(a.quiet_pct, a.quiet_wait)
    base = ports.get(3)
    port, port_b, rport = base, base + 1, base + 2
    rec = {"rep": rep, "clients": a.clients, "procs": a.procs, "rooms": a.rooms, "before": a.before,
           "min_delay": a.min_delay, "max_delay": a.max_delay, "client_open_timeout": a.client_open_timeout,
           "missed": a.missed, "live": a.live, "down": a.down, "port": port,
           "time": datetime.datetime.now().isoformat(timespec="seconds"), "pre_busy_pct": busy,
           "quiet_wait_s": waited}
    logpath = os.path.join(logdir, f"storm.{rep}.log")
    tmp = tempfile.mkdtemp(prefix="live-storm-redis-")
    state = {"port": port, "port_b": port_b, "a": None, "b": None, "redis": None,
             "backplane": f"redis://127.0.0.1:{rport}/0"}
    for node in ("a", "a2", "b"):  # node A, node A restarted, node B
        state[f"log_{node}"] = os.path.join(logdir, f"storm.{rep}.{node}.log")
    with open(logpath, "w") as logf:
        try:
            state["redis"] = cl.start_redis(rport, logf, tmp)
            env = {"BENCH_LIVE_PING": str(a.ping)}
            argv = lc.server_argv(a.python, port, state["backplane"])
            rec["server_cmd"] = " ".join(shlex.quote(x) for x in argv)
            logf.write(f"[live_storm.py] {rec['server_cmd']}\n")
            logf.flush()
            with open(state["log_a"], "w") as log_a, open(state["log_b"], "w") as log_b:
                state["a"] = lc.start_server(cl, argv, env, log_a, cl.SERVER_CPU)
                state["b"] = lc.start_server(cl, lc.server_argv(a.python, port_b, state["backplane"]), env, log_b,
                                             cl.SERVER_CPU)
            lc.wait_listening(port, state["a"])
            lc.wait_listening(port_b, state["b"])
            lc.run_loop(drive(a, cl, ports, rec, logf, state))
            for name in ("a", "b", "redis"):
                if state[name] is not None and state[name].poll() is not None:
                    rec.update(ok=0, error=f"{name} died (exit {state[name].returncode})")
        except (RuntimeError, OSError, TimeoutError) as exc:
            rec.update(ok=0, error=f"{type(exc).__name__}: {exc}"[:400])
        finally:
            for name in ("a", "b", "redis"):
                cl.stop(state[name])
            shutil.rmtree(tmp, ignore_errors=True)
    for node in ("a", "a2", "b"):
        notes = cl.server_log_notes(state[f"log_{node}"], limit=12)
        if notes:
            rec[f"log_{node}"] = notes
    return rec


def fmt(r):
    head = f"{r['rep']} storm n={r['clients']} rooms={r['rooms']} missed={r['missed']}"
    if r.get("ok") != 1:
        head += " FAIL " + str(r.get("error") or "; ".join(r.get("failures", [])[:2]))
    if "clients_done" not in r:
        return head

    def mib(kib):
        return f"{kib / 1024:.0f}" if kib else "-"
    return (f"{head} done={r['clients_done']}/{r['clients']} failed={r['failed']} "
            f"down={r['down_s']}s listen+{r['listen_after_restart_s']}s | all rejoined+recovered: "
            f"{r['storm_from_restart_s']}s from restart, {r['storm_from_listen_s']}s from listen "
            f"(p50 {r['done_p50_from_listen_s']}s p99 {r['done_p99_from_listen_s']}s) | "
            f"A VmHWM {mib(r['a_vmhwm_kib'])} MiB (first node before kill: VmHWM "
            f"{mib(r['a_before_kill'].get('VmHWM'))} RSS {mib(r['a_before_kill'].get('VmRSS'))} MiB) "
            f"A CPU {r['a_cpu_s']}s clients CPU {r['clients_cpu_s']}s connects={r['connects']} "
            f"rejoins={r['rejoins']} failed reconnection attempts {r.get('failed_attempts')} (after node A "
            f"listened: {r.get('failed_after_listen')}) accept-queue overflows {r.get('listen_overflows')} "
            f"open={r.get('open_s')}s")


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("-n", "--clients", type=int, default=1000)
    ap.add_argument("--procs", type=int, default=4, help="client processes (all on CPU 1)")
    ap.add_argument("--rooms", type=int, default=100)
    ap.add_argument("--before", type=int, default=5, help="messages before the kill")
    ap.add_argument("--missed", type=int, default=20, help="messages published while node A is down")
    ap.add_argument("--live", type=int, default=5, help="messages published once node A listens again")
    ap.add_argument("--live-gap", type=float, default=50.0, help="ms between those")
    ap.add_argument("--down", type=float, default=2.0, help="seconds from the kill to the restart")
    ap.add_argument("--ping", type=float, default=25.0, help="the live endpoint's ping_interval (s)")
    ap.add_argument("--parallel", type=int, default=100, help="connections opened at once per process (step 1)")
    ap.add_argument("--min-delay", type=float, default=0.25, help="the clients' reconnect backoff: first ceiling (s)")
    ap.add_argument("--max-delay", type=float, default=10.0, help="the clients' reconnect backoff: cap (s)")
    ap.add_argument("--client-open-timeout", type=float, default=10.0,
                    help="the clients' open_timeout: handshake + connect reply (s)")
    ap.add_argument("--open-timeout", type=float, default=600.0)
    ap.add_argument("--storm-timeout", type=float, default=120.0)
    ap.add_argument("--settle", type=float, default=0.5)
    ap.add_argument("--profile", default=None, help="run the restarted node A under cProfile, writing this file")
    ap.add_argument("--reps", type=int, default=1)
    ap.add_argument("--python", default=os.path.join(lc.ROOT, ".venv", "bin", "python"),
                    help="python of the nodes (default: this checkout's .venv; needs redis-py)")
    ap.add_argument("--out", default=None, help="results folder (default ./bench-results/live-storm-<stamp>)")
    ap.add_argument("--port-base", type=int, default=18200, help="first port to try (ports up to 18999)")
    ap.add_argument("--quiet-pct", type=float, default=101.0)
    ap.add_argument("--quiet-wait", type=float, default=60.0)
    ap.add_argument("--nice", type=int, default=0, help="nice value of the nodes, redis and clients (0 = off)")
    # client-process mode
    ap.add_argument("--client-proc", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--port", type=int, help=argparse.SUPPRESS)
    ap.add_argument("--first", type=int, help=argparse.SUPPRESS)
    ap.add_argument("--count", type=int, help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a.client_proc:
        lc.run_loop(client_main(a))
        return
    cl, ports, logdir, resfile = lc.prepare_run("live-storm", a.out, a.port_base, a.nice)
    if not os.access(cl.REDIS_SERVER, os.X_OK):
        sys.exit(f"{cl.REDIS_SERVER} not found (apt-get install redis-server)")
    import resource
    print(f"# results -> {resfile}; RLIMIT_NOFILE {resource.getrlimit(resource.RLIMIT_NOFILE)}", flush=True)
    recs = []
    with open(resfile, "a") as rf:
        for rep in range(1, a.reps + 1):
            rec = run_once(a, cl, ports, logdir, rep)
            recs.append(rec)
            rf.write(json.dumps(rec) + "\n")
            rf.flush()
            print(fmt(rec), flush=True)
            if rec.get("timeline"):
                print("  node A after it listens (s: server-side ESTABLISHED connections, CPU s): " + " ".join(
                    f"{t:g}:{n}/{c:g}" for t, n, c in rec["timeline"][::2]))
            for node, name in (("a", "node A"), ("a2", "node A restarted"), ("b", "node B")):
                for note in rec.get(f"log_{node}", [])[:6]:
                    print(f"  {name} log: {note[:200]}")
    ok = [r for r in recs if r.get("ok") == 1]
    if ok:
        st = [r["storm_from_restart_s"] for r in ok]
        print(f"\nall {a.clients} rejoined and recovered, no message lost, in {len(ok)}/{len(recs)} runs; "
              f"from the restart: median {statistics.median(st)} s, worst {max(st)} s; node A VmHWM median "
              f"{statistics.median([r['a_vmhwm_kib'] for r in ok]) / 1024:.0f} MiB")
    else:
        print(f"\nno run completed ({len(recs)} tried)")


if __name__ == "__main__":
    main()

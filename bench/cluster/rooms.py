"""bench/cluster.py --rooms: many small rooms across 2 workers, on each backplane engine (issue 20).

One run (fresh servers each time): start the engine's servers (bench/cluster/engines.py, the
test helpers) and `python -m tether run rooms_app:app --workers W --backplane URL` on the
server CPU; wait for /echo and for connections on every worker; start ceil(members / per-client)
rooms_client processes (C, epoll) on the client CPU, each holding the members of a slice of the
rooms, ROOMS x MEMBERS connections in all, and wait until every member has joined (READY);
open /ctl connections until every worker has one, and send each "go INDEX W ROOMS ROUNDS":
worker INDEX publishes ROUNDS messages into each room r with r % W == INDEX through
app.hub.publish (server side; the members of a room sit on both workers, so every publish is
delivered locally and through the backplane). The clients verify every delivery
("{room}:{seq}", in order, once) and report the monotonic time of their last one.

    rate = deliveries / (last delivery - go)   (one clock: CLOCK_MONOTONIC)

CPU is read per process (/proc/PID/stat) from the go to the end: each worker, the supervisor,
and each of the engine's processes (every redis-server shard, each sentinel, nats-server), as
% of one CPU. Redis commands per redis-server from INFO (commandstats delta).
"""
from __future__ import annotations

import datetime
import math
import os
import shlex
import statistics
import subprocess
import time

import engines

HERE = os.path.dirname(os.path.abspath(__file__))


def build_client() -> str:
    """rooms_client.c compiled (once) into /tmp/tether-bench-cluster/rooms_client."""
    out = "/tmp/tether-bench-cluster/rooms_client"
    src = os.path.join(HERE, "rooms_client.c")
    if not os.access(out, os.X_OK) or os.path.getmtime(out) < os.path.getmtime(src):
        os.makedirs(os.path.dirname(out), exist_ok=True)
        subprocess.run(["cc", "-O2", "-o", out, src], check=True, timeout=120)
    return out


def control(port: int, workers: int, rooms: int, rounds: int, limit: float = 30.0):
    """Connect to /ctl until every worker (by pid) has a connection; send each its 'go'.
    Returns (monotonic ns of the go, {pid: connection})."""
    from websockets.sync.client import connect
    socks: dict[str, object] = {}
    deadline = time.time() + limit
    while len(socks) < workers:
        if time.time() > deadline:
            raise RuntimeError(f"/ctl reached only {len(socks)} of {workers} workers in {limit:.0f} s")
        ws = connect(f"ws://127.0.0.1:{port}/ctl", open_timeout=10, compression=None)
        pid = ws.recv(timeout=10)
        if pid in socks:
            ws.close()
        else:
            socks[pid] = ws
    t_go = time.monotonic_ns()
    for index, ws in enumerate(socks.values()):
        ws.send(f"go {index} {workers} {rooms} {rounds}")
    return t_go, socks


def cpu_ticks() -> dict[str, tuple[int, int]]:
    """{'cpu0': (busy ticks, all ticks), ...} from /proc/stat."""
    out = {}
    with open("/proc/stat") as f:
        for line in f:
            if line.startswith("cpu") and line[3].isdigit():
                name, *v = line.split()
                ticks = [int(x) for x in v[:8]]
                out[name] = (sum(ticks) - ticks[3] - ticks[4], sum(ticks))
    return out


def run(h, engine: str, rep: int, ports, logdir: str, a) -> dict:
    """One many-rooms run on `engine` (h: the runner module, bench/cluster.py, for its process,
    CPU and readiness helpers). Returns the record written to results.jsonl."""
    busy, waited = h.wait_quiet(a.quiet_pct, a.quiet_wait)
    port = ports.get(1)
    conns = a.room_count * a.members
    rec = {"mode": "rooms", "server": f"tether/{engine}", "engine": engine, "rep": rep, "port": port,
           "workers": a.workers, "rooms": a.room_count, "members": a.members, "rounds": a.rounds, "conns": conns,
           "nice": h.NICE, "time": datetime.datetime.now().isoformat(timespec="seconds"),
           "pre_busy_pct": busy, "quiet_wait_s": waited}
    logpath = os.path.join(logdir, f"rooms-{engine}.{rep}.log")
    eng = srv = None
    clients: list[subprocess.Popen] = []
    socks: dict = {}
    with open(logpath, "w") as logf:
        try:
            eng = engines.start(engine, cpu=int(h.SERVER_CPU), nice=h.NICE)
            rec["backplane_url"] = eng.url
            rec["backplane_procs"] = {str(p): c for p, c in eng.pids.items()}
            argv = [f"{h.TETHER_VENV}/bin/python", "-m", "tether", "run", "rooms_app:app", "--host", "127.0.0.1",
                    "--port", str(port), "--workers", str(a.workers), "--backplane", eng.url, "--log-level", "warning"]
            rec["server_cmd"] = " ".join(shlex.quote(x) for x in argv)
            logf.write(f"[cluster.py] {rec['server_cmd']}  (cwd {HERE})\n")
            logf.flush()
            srv = subprocess.Popen(["taskset", "-c", h.SERVER_CPU, *argv], cwd=HERE, env=dict(os.environ),
                                   stdout=logf, stderr=subprocess.STDOUT,
                                   preexec_fn=h.child_setup)  # noqa: PLW1509 (no thread runs here)
            err, rec["workers_seen_at_start"] = h.wait_ready(port, srv, logf, a.workers)
            if err:
                rec.update(ok=0, error=err)
                return rec
            client = build_client()
            nclients = max(1, math.ceil(conns / a.per_client))
            step = math.ceil(a.room_count / nclients)
            t_join = time.time()
            for first in range(0, a.room_count, step):
                cmd = [client, "-p", str(port), "-a", str(first), "-b", str(min(a.room_count, first + step)),
                       "-m", str(a.members), "-K", str(a.rounds), "-s", str(a.sources), "-T", str(a.timeout)]
                rec.setdefault("client_cmds", []).append(" ".join(cmd[1:]))
                clients.append(subprocess.Popen(["taskset", "-c", h.CLIENT_CPU, *cmd], stdout=subprocess.PIPE,
                                                stderr=logf, text=True,
                                                preexec_fn=h.child_setup))  # noqa: PLW1509 (no thread runs here)
            ready_cpu = 0
            for c in clients:
                line = c.stdout.readline()
                if not line.startswith("READY"):
                    rec.update(ok=0, error=f"a client ended before READY (exit {c.wait(10)})")
                    return rec
                logf.write(f"[client] {line}")
                logf.flush()  # the clients write their stderr to the same file, unbuffered
                ready_cpu += int(line.rsplit("cpu_us=", 1)[1])
                if " errors=0" not in line:
                    rec.update(ok=0, error=f"members failed to join: {line.strip()}")
                    return rec
            rec["join_s"] = round(time.time() - t_join, 2)
            workers = [p for p in h.tree(srv.pid) if p != srv.pid]
            rec["spread"] = {str(p): n for p, n in sorted(h.sockets_per_pid(workers, local_port=port).items())}
            cpu = h.CpuTracker([srv.pid, *eng.pids])
            redis_ports = engines.redis_ports(eng)
            cmd0 = {p: h.redis_cmdstats(rp).get("_total", 0) for p, rp in redis_ports.items()}
            tk0 = cpu.sample()
            cpus0 = cpu_ticks()
            t_go, socks = control(port, a.workers, a.room_count, a.rounds)
            done = [ws.recv(timeout=a.timeout) for ws in socks.values()]
            rec["publisher_s"] = [float(d.split()[1]) for d in done]
            results = []
            for c in clients:
                out, _ = c.communicate(timeout=a.timeout + 30)
                results.append(h.parse_result(out) or {"ok": 0})
            t_end = time.monotonic_ns()
            tk1 = cpu.sample()
            cpus1 = cpu_ticks()
            cmd1 = {p: h.redis_cmdstats(rp).get("_total", 0) for p, rp in redis_ports.items()}
            wall = (t_end - t_go) / 1e9
            delivered = sum(r.get("delivered", 0) for r in results)
            last = max(r.get("last_ns", 0) for r in results)
            secs = (last - t_go) / 1e9 if last > t_go else 0.0
            rec.update(ok=int(all(r.get("ok") == 1 for r in results)), delivered=delivered,
                       expected=sum(r.get("expected", 0) for r in results),
                       mismatches=sum(r.get("mismatches", 0) for r in results),
                       errors=sum(r.get("errors", 0) for r in results), secs=round(secs, 4),
                       rate=round(delivered / secs) if secs else 0,
                       publishes_per_s=round(a.room_count * a.rounds / secs) if secs else 0)

            def pct(p):
                return round(100 * (tk1.get(p, 0) - tk0.get(p, 0)) / h.HZ / wall, 1)

            rec["cpu_window_s"] = round(wall, 3)
            rec["machine_busy_pct"] = {c: round(100 * (b1 - cpus0[c][0]) / max(1, n1 - cpus0[c][1]), 1)
                                       for c, (b1, n1) in cpus1.items() if c in cpus0}
            rec["clients_cpu_pct"] = round((sum(r.get("cpu_us", 0) for r in results) - ready_cpu) / 1e4 / wall, 1)
            pubs = a.room_count * a.rounds
            rec["workers_us_per_publish"] = round(
                1e6 * sum(tk1.get(p, 0) - tk0.get(p, 0) for p in [srv.pid, *workers]) / h.HZ / pubs, 1)
            rec["backplane_us_per_publish"] = round(
                1e6 * sum(tk1.get(p, 0) - tk0.get(p, 0) for p in eng.pids) / h.HZ / pubs, 1)
            rec["workers_cpu_pct"] = {str(p): pct(p) for p in [srv.pid, *workers]}
            rec["backplane_cpu_pct"] = {f"{p}:{c}": pct(p) for p, c in eng.pids.items()}
            rec["redis_cmds"] = {str(redis_ports[p]): cmd1[p] - cmd0[p] for p in cmd1}
            if srv.poll() is not None:
                rec.update(ok=0, error=f"server died (exit {srv.returncode})")
            elif rec["ok"] != 1:
                rec["error"] = (f"delivered {delivered}/{rec['expected']}, mismatches {rec['mismatches']}, "
                                f"errors {rec['errors']} (see {logpath})")
        except (RuntimeError, OSError, subprocess.TimeoutExpired, TimeoutError) as ex:
            rec.update(ok=0, error=f"{type(ex).__name__}: {ex}")
        finally:
            for ws in socks.values():
                ws.close()
            for c in clients:
                if c.poll() is None:
                    c.kill()
                c.wait(10)
            h.stop(srv)
            if eng:
                eng.close()
    return rec


def fmt(r: dict) -> str:
    head = f"{r['rep']} {r['server']:<16} rooms"
    if r.get("ok") != 1:
        head += " FAIL " + str(r.get("error", ""))
    return (f"{head} {r.get('rate', 0):9.0f} deliv/s ({r.get('delivered', 0)}/{r.get('expected', 0)}) "
            f"{r.get('publishes_per_s', 0):.0f} publishes/s {r.get('secs', 0):.2f}s spread={r.get('spread')} "
            f"workers CPU={r.get('workers_cpu_pct')} backplane CPU={r.get('backplane_cpu_pct')} "
            f"clients CPU={r.get('clients_cpu_pct')} machine={r.get('machine_busy_pct')} "
            f"us/publish workers={r.get('workers_us_per_publish')} backplane={r.get('backplane_us_per_publish')}")


def report(h, recs: list[dict], engine_list: list[str]) -> None:
    """The many-rooms table (medians, min-max) and issue 20's bar: cluster >= 1.5x single Redis."""
    n = recs[0] if recs else {}
    print(f"\n## many rooms: {n.get('rooms')} rooms x {n.get('members')} members ({n.get('conns')} connections), "
          f"{n.get('rounds')} publishes per room, {n.get('workers')} workers; server side on CPU 0, clients on CPU 1\n")
    print("| engine | ok | deliveries/s median [min-max] | publishes/s median | workers CPU % (each, per run) | "
          "backplane CPU % per process, #1 the busiest of its kind in each run (median of runs) |")
    print("|---|---|---|---|---|---|")
    med: dict[str, float] = {}
    for e in engine_list:
        rs, ok, rates = h.runs_of(recs, "engine", e, med)
        workers = " ".join("/".join(f"{v:.0f}" for v in list(r["workers_cpu_pct"].values())[1:]) for r in ok)
        bp: dict[str, list[float]] = {}
        for r in ok:
            for k, v in h.busiest_first(r["backplane_cpu_pct"]):
                bp.setdefault(k, []).append(v)
        bps = ", ".join(f"{k} {statistics.median(v):.0f}" for k, v in bp.items())
        print(f"| {e} | {len(ok)}/{len(rs)} | {h.med_range(rates)} | "
              f"{h.med_range([r['publishes_per_s'] for r in ok])} | {workers or '-'} | {bps or '-'} |")
    for r in recs:
        if r.get("ok") != 1:
            print(f"  FAIL {r['server']} rep {r['rep']}: {r.get('error')}")
    print()
    if "redis" in med and "cluster" in med:
        ratio = med["cluster"] / med["redis"]
        print(f"cluster: {med['cluster']:.0f} deliveries/s = {ratio:.2f}x single Redis ({med['redis']:.0f})  "
              f"[bar >= 1.5x: {'MET' if ratio >= 1.5 else 'NOT MET'}]")
    for e in engine_list:
        if e not in ("redis", "cluster") and e in med and "redis" in med:
            print(f"{e}: {med[e]:.0f} deliveries/s = {med[e] / med['redis']:.2f}x single Redis")

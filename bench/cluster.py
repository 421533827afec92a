#!/usr/bin/env python3
"""Cluster fan-out benchmark: broadcast across worker processes through one Redis.

    python3 bench/cluster.py                                  # channels,channels-pubsub,panther,litestar,tether
    python3 bench/cluster.py --servers channels,panther,litestar,tether --reps 5 -c 1000 -M 200
    python3 bench/cluster.py --servers litestar --reps 1 -c 100 -M 20 --quiet-pct 101   # smoke
    python3 bench/cluster.py --latency                         # tether: 2 nodes, cross-node latency
    python3 bench/cluster.py --servers tether,tether-room,tether-history,litestar,channels-pubsub --reps 3
                                                               # issue 18: history room vs plain room vs peers

Fan-out mode (default). For every repetition the servers run in a shuffled (seeded) order, each
run fresh: start a redis-server of its own (127.0.0.1, --save '' --appendonly no, temp --dir) ->
start the server with --workers 2 on one port, pointed at that Redis -> wait until it answers
/echo AND until connections land on as many distinct worker processes as --workers -> run the
shared harness's C loadgen in fanout mode (C receivers + 1 sender on /broadcast, the sender bursts
M messages, every receiver must get every message, payloads verified byte for byte) -> stop both.
The server side (every worker and the redis-server) is pinned to CPU 0, the loadgen to CPU 1.

Per run, besides the loadgen's RESULT line (rate = deliveries/s), it records:
  spread          ESTABLISHED sockets on the server port per worker pid while the receivers are
                  connected (what `ss -tnp state established '( sport = :P )'` shows per pid, read
                  from /proc/net/tcp + /proc/PID/fd of the server's own pids, every 50 ms until all
                  C+1 are seen), i.e. how the receivers (+ the sender) are spread over the workers;
                  redis_conns the same for each pid's connections to the Redis port
  server_cpu_pct  CPU of the whole server side (workers + supervisor + redis-server) / loadgen wall;
                  burst_cpu_pct the same over the burst only (from a 50 ms CPU timeline, approx.);
                  redis_cpu_pct / workers_cpu_pct the split; cpu_us_per_delivery over the burst
  redis_cmds      Redis commands executed during the loadgen run (INFO commandstats delta)
  client/other    loadgen CPU and everything else on the machine (noise: other sessions' work),
                  as in ../shared/bench; runner_cpu_pct is this script's own sampling (on CPU 1)
Raw results: bench-results/cluster-<timestamp>/results.jsonl (+ logs/); a table at the end:
median [min-max] deliveries/s per server and tether's ratio to the best peer, with the bar
(>= 1,000,000 deliveries/s and >= 5x the best peer).

Latency mode (--latency, default server tether): two nodes (single process each) on two ports
sharing one Redis; bench/cluster/latency_client.py (both clients in one process, one clock) puts
a receiver on node B's /broadcast and a publisher on node A's, one message per --interval-us for
--duration s, and reports p50/p99 of receive minus send time. Bar: p50 <= 1 ms, p99 <= 5 ms.

Servers:
  channels         Django Channels + channels_redis RedisChannelLayer (group_send), uvicorn
  channels-pubsub  the same app with channels_redis RedisPubSubChannelLayer
  panther          Panther with REDIS configured: send_message_to_websocket per member id
  litestar         Litestar ChannelsPlugin + RedisChannelsPubSubBackend: channels.publish
  tether           python -m tether run tether_app:app --workers 2 --backplane redis://...
                   (from ../shared/bench/servers, venv $TETHER_VENV or $VENVS/tether, which needs
                   the redis extra: bench/cluster/setup.sh tether): websocket.broadcast to the path
  tether-room      bench/cluster/tether_history_app.py with BENCH_ROOM=plain: every connection
                   joins the room "all", every message is app.hub.publish("all", ...) (same venv)
  tether-history   the same app with BENCH_ROOM=history: "all" is a history room
                   (app.hub.keep_history("all", size=10000)), so every publish is numbered and
                   kept by the backplane (on Redis: its publish script) and every worker delivers
                   it as it comes back, in offset order (issue 18)
For the tether-room / tether-history rows the table ends with issue 18's bar: the history
room's median >= 50 % of the plain room's, and >= 10x the best peer's in the same run.
Peers' venvs: bench/cluster/setup.sh (exact pins in bench/cluster/locks/). Only loopback and
ports --port-base..18999 are used; only processes started here are signalled, by PID; every wait
is bounded.
"""
import argparse
import contextlib
import datetime
import json
import os
import random
import resource
import shlex
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time

BENCH = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(BENCH)
CLUSTER = os.path.join(BENCH, "cluster")
sys.path.insert(0, CLUSTER)  # bench/cluster/engines.py, rooms.py, failover.py
SHARED = os.environ.get("BENCH_SHARED") or os.path.normpath(os.path.join(ROOT, "..", "shared", "bench"))
if not os.path.isdir(SHARED):
    SHARED = "/work/shared/bench"
VENVS = os.environ.get("VENVS", "/tmp/bench-venvs")
REDIS_SERVER = os.environ.get("REDIS_SERVER", "/usr/bin/redis-server")
TETHER_VENV = os.environ.get("TETHER_VENV", f"{VENVS}/tether")
SERVER_CPU, CLIENT_CPU = "0", "1"
PORT_MAX = 18999
HZ = os.sysconf("SC_CLK_TCK")
PEERS = ["channels", "channels-pubsub", "panther", "litestar"]
NICE = 0


# ------------------------------------------------------------------ server command lines

def _uvicorn(venv, app, port, workers, extra=()):
    argv = [f"{VENVS}/{venv}/bin/uvicorn", app, "--ws", "websockets-sansio", "--host", "127.0.0.1",
            "--port", str(port), "--loop", "uvloop", "--http", "httptools", "--log-level", "warning",
            "--no-access-log", "--backlog", "4096", "--app-dir", CLUSTER, *extra]
    if workers > 1:
        argv += ["--workers", str(workers)]
    return argv


def server_spec(name, port, redis_url, workers):
    """-> (argv, cwd, extra env)"""
    env = {"BENCH_REDIS_URL": redis_url}
    if name in ("channels", "channels-pubsub"):
        env["BENCH_CHANNELS_LAYER"] = "core" if name == "channels" else "pubsub"
        # ProtocolTypeRouter has no 'lifespan' entry: no lifespan, as with daphne
        return _uvicorn("cluster-channels", "channels_app:app", port, workers, ["--lifespan", "off"]), CLUSTER, env
    if name == "panther":
        cwd = "/tmp/bench-cluster-panther-cwd"  # Panther writes logs/ into its working directory
        os.makedirs(cwd, exist_ok=True)
        return _uvicorn("cluster-panther", "panther_app:app", port, workers), cwd, env
    if name == "litestar":
        return _uvicorn("cluster-litestar", "litestar_app:app", port, workers), CLUSTER, env
    if name in TETHERS:
        app, cwd = ("tether_app:app", os.path.join(SHARED, "servers")) if name == "tether" else \
            ("tether_history_app:app", CLUSTER)
        if name != "tether":
            env["BENCH_ROOM"] = TETHERS[name]
        argv = [f"{TETHER_VENV}/bin/python", "-m", "tether", "run", app, "--host", "127.0.0.1",
                "--port", str(port)]
        if workers > 1:
            argv += ["--workers", str(workers)]
        argv += ["--backplane", redis_url, "--log-level", "warning"]
        return argv, cwd, env
    raise KeyError(name)


# tether's rows: the path broadcast of ../shared/bench/servers/tether_app.py, and
# bench/cluster/tether_history_app.py with the room plain or keeping history (BENCH_ROOM)
TETHERS = {"tether": None, "tether-room": "plain", "tether-history": "history"}
KNOWN = PEERS + list(TETHERS)


def precheck(name):
    """Why `name` cannot run (None if it can): a missing venv, or a tether venv without redis-py."""
    if name in TETHERS:
        py = f"{TETHER_VENV}/bin/python"
        if not os.access(py, os.X_OK):
            return f"{py} missing (from the project root: ../shared/bench/setup.sh tether)"
        r = subprocess.run([py, "-c", "import tether, redis.asyncio"], capture_output=True, text=True, timeout=60,
                           check=False)
        if r.returncode:
            return (f"{TETHER_VENV} cannot import tether + redis.asyncio ({r.stderr.strip().splitlines()[-1:]}); "
                    "the backplane needs the redis extra: bench/cluster/setup.sh tether")
        return None
    venv = {"channels-pubsub": "channels"}.get(name, name)
    if not os.access(f"{VENVS}/cluster-{venv}/bin/uvicorn", os.X_OK):
        return f"{VENVS}/cluster-{venv} missing (bench/cluster/setup.sh {venv})"
    return None


def server_log_notes(path, limit=4):
    """The first few WARNING/ERROR/Traceback lines a server wrote (redis-server's own lines skipped)."""
    notes = []
    try:
        with open(path, errors="replace") as f:
            for line in f:
                if line.startswith("[") or " # " in line[:40]:
                    continue
                if any(w in line for w in ("WARNING", "ERROR", "Error", "Traceback", "CRITICAL")):
                    notes.append(line.strip()[:240])
                    if len(notes) >= limit:
                        break
    except OSError:
        pass
    return notes


# ------------------------------------------------------------------ processes

def raise_nofile():
    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


def child_setup():
    raise_nofile()
    if NICE:
        os.setpriority(os.PRIO_PROCESS, 0, NICE)


def _parents():
    parent = {}
    for d in os.listdir("/proc"):
        if d.isdigit():
            try:
                with open(f"/proc/{d}/stat") as f:
                    parent[int(d)] = int(f.read().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                pass
    return parent


def tree(pid):
    parent = _parents()
    out, frontier = [pid], [pid]
    while frontier:
        p = frontier.pop()
        kids = [c for c, pp in parent.items() if pp == p]
        out += kids
        frontier += kids
    return out


def proc_ticks(pid):
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        return int(fields[11]) + int(fields[12])
    except (OSError, IndexError, ValueError):
        return 0


def _alive(pid):
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def stop(proc, grace=5.0):
    """SIGTERM the process and its descendants (by PID), SIGKILL what is left after `grace` s."""
    if proc is None:
        return
    pids = tree(proc.pid)
    for p in reversed(pids):
        with contextlib.suppress(ProcessLookupError):
            os.kill(p, signal.SIGTERM)
    deadline = time.time() + grace
    while time.time() < deadline and (proc.poll() is None or any(_alive(p) for p in pids[1:])):
        time.sleep(0.05)
    for p in pids:
        if _alive(p):
            with contextlib.suppress(ProcessLookupError):
                os.kill(p, signal.SIGKILL)
    with contextlib.suppress(subprocess.TimeoutExpired):
        proc.wait(timeout=5)


class CpuTracker:
    """Cumulative CPU ticks per PID of one or more process trees; a PID that exits keeps its last
    reading. The trees are rescanned (a walk of /proc) only every `rescan`-th sample."""

    def __init__(self, roots, rescan=20):
        self.roots, self.last, self.pids, self.n, self.rescan = list(roots), {}, [], 0, rescan

    def sample(self):
        if self.n % self.rescan == 0:
            parent = _parents()
            pids, frontier = list(self.roots), list(self.roots)
            while frontier:
                p = frontier.pop()
                kids = [c for c, pp in parent.items() if pp == p]
                pids += kids
                frontier += kids
            self.pids = pids
        self.n += 1
        for p in self.pids:
            t = proc_ticks(p)
            if t or p not in self.last:
                self.last[p] = max(t, self.last.get(p, 0))
        return dict(self.last)


def machine_ticks():
    with open("/proc/stat") as f:
        v = [int(x) for x in f.readline().split()[1:]]
    user, nice, system, _idle, _iowait, irq, softirq, steal = v[:8]
    return user + nice + system + irq + softirq, steal, sum(v[:8])


def busy_pct(interval=1.0):
    a = machine_ticks()
    time.sleep(interval)
    b = machine_ticks()
    return 100.0 * (b[0] - a[0]) / max(1, b[2] - a[2])


def wait_quiet(threshold, max_wait):
    if threshold > 100:
        return None, 0.0
    t0 = time.time()
    busy = busy_pct()
    while busy > threshold and time.time() - t0 < max_wait:
        time.sleep(1.0)
        busy = busy_pct()
    return round(busy, 1), round(time.time() - t0, 1)


# ------------------------------------------------------------------ ports, redis

def port_free(port):
    with socket.socket() as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind(("127.0.0.1", port))
            return True
        except OSError:
            return False


class PortPool:
    """Hands out runs of `n` consecutive free ports in [base, PORT_MAX]."""

    def __init__(self, base):
        self.base, self.next = base, base

    def get(self, n):
        for _ in range((PORT_MAX - self.base) // n + 1):
            p = self.next
            self.next = p + n if p + 2 * n - 1 <= PORT_MAX else self.base
            if all(port_free(p + i) for i in range(n)):
                return p
        raise RuntimeError(f"no {n} free ports in {self.base}-{PORT_MAX}")


def resp(port, *cmd, timeout=2.0):
    """One Redis command over a fresh connection (RESP2); returns the decoded reply."""
    out = b"*%d\r\n" % len(cmd) + b"".join(b"$%d\r\n%s\r\n" % (len(c), c) for c in (x.encode() for x in cmd))
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as s:
        s.sendall(out)
        f = s.makefile("rb")
        line = f.readline()
        if not line:
            raise OSError("redis closed the connection")
        kind, rest = line[:1], line[1:-2]
        if kind == b"+":
            return rest.decode()
        if kind == b"-":
            raise OSError(rest.decode())
        if kind == b":":
            return int(rest)
        if kind == b"$":
            n = int(rest)
            return None if n < 0 else f.read(n + 2)[:-2].decode()
        raise OSError(f"unexpected reply {line!r}")


def redis_cmdstats(port):
    """{command: calls} from INFO commandstats, plus _total from INFO stats."""
    out = {}
    try:
        for line in resp(port, "INFO", "commandstats").splitlines():
            if line.startswith("cmdstat_"):
                name, _, rest = line[8:].partition(":")
                out[name] = int(rest.split(",")[0].split("=")[1])
        for line in resp(port, "INFO", "stats").splitlines():
            if line.startswith("total_commands_processed:"):
                out["_total"] = int(line.split(":")[1])
    except (OSError, ValueError, IndexError):
        pass
    return out


def sum_cmdstats(ports):
    """redis_cmdstats summed over several redis-servers (a cluster's shards, a Sentinel group's)."""
    out = {}
    for port in ports:
        for k, v in redis_cmdstats(port).items():
            out[k] = out.get(k, 0) + v
    return out


def start_redis(port, logf, workdir):
    d = tempfile.mkdtemp(prefix="redis-", dir=workdir)
    argv = ["taskset", "-c", SERVER_CPU, REDIS_SERVER, "--port", str(port), "--bind", "127.0.0.1",
            "--save", "", "--appendonly", "no", "--dir", d, "--daemonize", "no", "--protected-mode", "yes",
            "--loglevel", "warning", "--logfile", ""]
    proc = subprocess.Popen(argv, stdout=logf, stderr=subprocess.STDOUT,
                            preexec_fn=child_setup)  # noqa: PLW1509 (no thread of this script runs now)
    deadline = time.time() + 10
    while time.time() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"redis-server exited with {proc.returncode}")
        try:
            if resp(port, "PING", timeout=0.5) == "PONG":
                return proc
        except OSError:
            time.sleep(0.05)
    stop(proc)
    raise RuntimeError("redis-server not answering PING within 10 s")


# ------------------------------------------------------------------ loadgen, readiness, spread

def find_loadgen():
    for p in (os.environ.get("LOADGEN"), os.path.join(SHARED, "loadgen"), "/tmp/tether-bench-ab/loadgen",
              "/tmp/tether-bench/loadgen", "/tmp/tether-bench-cluster/loadgen"):
        if p and os.access(p, os.X_OK):
            return p
    out = "/tmp/tether-bench-cluster/loadgen"
    os.makedirs(os.path.dirname(out), exist_ok=True)
    subprocess.run(["gcc", "-O2", "-o", out, os.path.join(SHARED, "loadgen.c")], check=True, timeout=120)
    return out


LOADGEN = None


def parse_result(text):
    for line in text.splitlines():
        if line.startswith("RESULT "):
            out = {}
            for kv in line.split()[1:]:
                k, _, v = kv.partition("=")
                for cast in (int, float):
                    try:
                        out[k] = cast(v)
                        break
                    except ValueError:
                        pass
                else:
                    out[k] = v
            return out
    return None


def _tcp_inodes(local_port=None, remote_port=None):
    """Inodes of ESTABLISHED IPv4 TCP sockets (from /proc/net/tcp) with that local or remote port."""
    inodes = set()
    try:
        with open("/proc/net/tcp") as f:
            next(f)
            for line in f:
                v = line.split()
                if v[3] != "01":
                    continue
                if local_port is not None and int(v[1].rsplit(":", 1)[1], 16) != local_port:
                    continue
                if remote_port is not None and int(v[2].rsplit(":", 1)[1], 16) != remote_port:
                    continue
                inodes.add(v[9])
    except OSError:
        pass
    return inodes


def sockets_per_pid(pids, local_port=None, remote_port=None):
    """{pid: ESTABLISHED sockets it holds} with that local/remote port: the cheap equivalent of
    `ss -tnp state established '( sport = :P )'` counted per pid, but looking only at `pids`
    (a few ms for 1000 sockets, against tens of ms for ss, which walks every process)."""
    inodes = _tcp_inodes(local_port, remote_port)
    counts = {}
    if not inodes:
        return counts
    for pid in pids:
        n = 0
        try:
            fds = os.listdir(f"/proc/{pid}/fd")
        except OSError:
            continue
        for fd in fds:
            try:
                link = os.readlink(f"/proc/{pid}/fd/{fd}")
            except OSError:
                continue
            if link.startswith("socket:[") and link[8:-1] in inodes:
                n += 1
        if n:
            counts[pid] = n
    return counts


def wait_ready(port, proc, logf, workers, limit=40.0):
    """Port open; a short rtt run on /echo; then (workers > 1) idle connections until they land on
    `workers` distinct processes. Returns (error or None, distinct worker pids seen)."""
    deadline = time.time() + limit
    while True:
        if proc.poll() is not None:
            return f"server exited with {proc.returncode} during start-up", 0
        if time.time() > deadline:
            return f"no WebSocket answer on /echo within {limit:.0f} s", 0
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                pass
        except OSError:
            time.sleep(0.1)
            continue
        try:
            r = subprocess.run(["taskset", "-c", CLIENT_CPU, LOADGEN, "-m", "rtt", "-n", "200", "-p", str(port),
                                "--timeout", "5"], capture_output=True, text=True, timeout=15, check=False)
            res, why = parse_result(r.stdout), (r.stdout + r.stderr).strip()[:300]
        except subprocess.TimeoutExpired:
            res, why = None, "probe timed out"
        if res and res.get("ok") == 1:
            break
        logf.write(f"[cluster.py] readiness probe failed: {why}\n")
        time.sleep(0.3)
    if workers <= 1:
        return None, 1
    seen = set()
    while time.time() < deadline:
        if proc.poll() is not None:
            return f"server exited with {proc.returncode} during start-up", len(seen)
        lg = subprocess.Popen(["taskset", "-c", CLIENT_CPU, LOADGEN, "-m", "idle", "-c", str(8 * workers),
                               "--hold", "0.3", "-p", str(port), "--timeout", "5"],
                              stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
        try:
            line = lg.stdout.readline()
            if line.startswith("HOLDING"):
                seen |= set(sockets_per_pid(tree(proc.pid), local_port=port))
            lg.communicate(timeout=10)
        except subprocess.TimeoutExpired:
            lg.kill()
            lg.communicate()
        if len(seen) >= workers:
            return None, len(seen)
        time.sleep(0.3)
    logf.write(f"[cluster.py] connections seen on only {len(seen)} of {workers} worker processes\n")
    return None, len(seen)  # run anyway; the spread recorded for the run tells


class Sampler(threading.Thread):
    """During the loadgen run, every 50 ms: server-side CPU ticks (a timeline), and, until all C+1
    connections have been seen, the ESTABLISHED sockets on the server port per worker pid (how the
    receivers are spread over the workers) and each pid's connections to Redis."""

    def __init__(self, port, redis_port, want, cpu, redis_pids):
        super().__init__(daemon=True)
        self.port, self.redis_port, self.want, self.cpu = port, redis_port, want, cpu
        self.redis_pids = set(redis_pids)  # the backplane's server processes (redis-server(s), nats-server)
        self.stop_evt = threading.Event()
        self.spread, self.redis_conns, self.timeline = {}, {}, []

    def run(self):
        spread_done = False
        while not self.stop_evt.is_set():
            ticks = self.cpu.sample()
            self.timeline.append((time.time(), sum(ticks.values()), sum(ticks.get(p, 0) for p in self.redis_pids)))
            if not spread_done:
                pids = [p for p in self.cpu.pids if p not in self.redis_pids]
                s = sockets_per_pid(pids, local_port=self.port)
                if sum(s.values()) > sum(self.spread.values()):
                    self.spread = s
                    self.redis_conns = sockets_per_pid(pids, remote_port=self.redis_port)
                spread_done = sum(self.spread.values()) >= self.want
            self.stop_evt.wait(0.05)


def burst_cpu(timeline, t_start, t_end):
    """(server-side ticks, redis ticks, seconds) between the timeline samples around the burst."""
    if len(timeline) < 2:
        return None
    before = [x for x in timeline if x[0] <= t_start] or timeline[:1]
    a = before[-1]
    b = timeline[-1]
    for x in timeline:
        if x[0] >= t_end:
            b = x
            break
    if b[0] <= a[0]:
        return None
    return b[1] - a[1], b[2] - a[2], b[0] - a[0]


# ------------------------------------------------------------------ one fan-out run

def run_fanout(name, rep, ports, logdir, a, engine=None):
    """One fan-out run of server `name`; with `engine` (--engines: redis, sentinel, cluster, nats)
    the backplane's servers come from bench/cluster/engines.py (the test helpers), pinned to the
    server CPU, and the row is labelled `name/engine`."""
    busy, waited = wait_quiet(a.quiet_pct, a.quiet_wait)
    port = ports.get(2)
    rport = port + 1
    redis_url = f"redis://127.0.0.1:{rport}/0"
    label = f"{name}/{engine}" if engine else name
    rec = {"mode": "fanout", "server": label, "engine": engine, "rep": rep, "port": port, "redis_port": rport,
           "workers": a.workers, "conns": a.conns, "messages": a.messages, "nice": NICE,
           "time": datetime.datetime.now().isoformat(timespec="seconds"), "pre_busy_pct": busy, "quiet_wait_s": waited}
    logpath = os.path.join(logdir, f"{label.replace('/', '-')}.fanout.{rep}.log")
    redis = srv = eng = None
    backplane_pids, cmd_ports = [], [rport]
    with open(logpath, "w") as logf:
        try:
            if engine:
                import engines  # bench/cluster/engines.py (needs the project's venv)
                eng = engines.start(engine, cpu=int(SERVER_CPU), nice=NICE)
                redis_url = eng.url
                backplane_pids = list(eng.pids)
                cmd_ports = list(engines.redis_ports(eng).values())
                rec.update(backplane_url=redis_url, backplane_procs={str(p): c for p, c in eng.pids.items()},
                           redis_port=None)
                logf.write(f"[cluster.py] engine {engine}: {redis_url} pids {eng.pids}\n")
            else:
                redis = start_redis(rport, logf, logdir)
                backplane_pids = [redis.pid]
            argv, cwd, extra = server_spec(name, port, redis_url, a.workers)
            rec["server_cmd"] = " ".join(shlex.quote(x) for x in argv)
            logf.write(f"[cluster.py] {rec['server_cmd']}  (cwd {cwd})\n")
            logf.flush()
            why = precheck(name)
            if why:
                rec.update(ok=0, error=why)
                return rec
            srv = subprocess.Popen(["taskset", "-c", SERVER_CPU, *argv], cwd=cwd, env={**os.environ, **extra},
                                   stdout=logf, stderr=subprocess.STDOUT,
                                   preexec_fn=child_setup)  # noqa: PLW1509 (no thread of this script runs now)
            err, nworkers = wait_ready(port, srv, logf, a.workers)
            rec["workers_seen_at_start"] = nworkers
            if err:
                rec.update(ok=0, error=err)
                return rec
            time.sleep(0.3)
            cpu = CpuTracker([srv.pid, *backplane_pids])
            tk0 = cpu.sample()
            cmd0 = sum_cmdstats(cmd_ports)
            m0 = machine_ticks()
            ru0 = resource.getrusage(resource.RUSAGE_CHILDREN)
            me0 = resource.getrusage(resource.RUSAGE_SELF)
            lgcmd = ["taskset", "-c", CLIENT_CPU, LOADGEN, "-m", "fanout", "-c", str(a.conns), "-M", str(a.messages),
                     "-P", "/broadcast", "-p", str(port), "-d", str(a.max_wait), "--timeout", str(a.timeout)]
            rec["cmd"] = " ".join(shlex.quote(x) for x in lgcmd[3:])
            sampler = Sampler(port, rport if redis else None, a.conns + 1, cpu, backplane_pids)
            t0 = time.time()
            lg = subprocess.Popen(lgcmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                  preexec_fn=child_setup)  # noqa: PLW1509 (the sampler thread starts after)
            sampler.start()
            try:
                o, e = lg.communicate(timeout=a.timeout + 30)
            except subprocess.TimeoutExpired:
                lg.kill()
                o, e = lg.communicate()
                rec["error"] = f"loadgen exceeded {a.timeout + 30}s"
            t1 = time.time()
            time.sleep(0.06)
            sampler.stop_evt.set()
            sampler.join(5)
            tk1 = cpu.sample()
            m1 = machine_ticks()
            ru1 = resource.getrusage(resource.RUSAGE_CHILDREN)
            me1 = resource.getrusage(resource.RUSAGE_SELF)
            cmd1 = sum_cmdstats(cmd_ports)
            wall = t1 - t0
            runner_cpu = (me1.ru_utime + me1.ru_stime) - (me0.ru_utime + me0.ru_stime)
            server_cpu = (sum(tk1.values()) - sum(tk0.values())) / HZ
            redis_cpu = sum(tk1.get(p, 0) - tk0.get(p, 0) for p in backplane_pids) / HZ
            client_cpu = (ru1.ru_utime + ru1.ru_stime) - (ru0.ru_utime + ru0.ru_stime)
            busy_s = (m1[0] - m0[0]) / HZ
            rec.update(wall_s=round(wall, 3), server_cpu_pct=round(100 * server_cpu / wall, 1),
                       redis_cpu_pct=round(100 * redis_cpu / wall, 1),
                       workers_cpu_pct=round(100 * (server_cpu - redis_cpu) / wall, 1),
                       client_cpu_pct=round(100 * client_cpu / wall, 1),
                       runner_cpu_pct=round(100 * runner_cpu / wall, 1),  # this script's sampling, on CPU 1
                       other_cpu_pct=round(100 * max(0.0, busy_s - server_cpu - client_cpu - runner_cpu) / wall, 1),
                       steal_pct=round(100 * (m1[1] - m0[1]) / max(1, m1[2] - m0[2]), 2),
                       cpu_s_by_pid={str(p): round((tk1.get(p, 0) - tk0.get(p, 0)) / HZ, 2) for p in tk1
                                     if tk1.get(p, 0) - tk0.get(p, 0) > 0})
            rec["redis_pid"] = redis.pid if redis else None
            rec["backplane_cpu_pct"] = {f"{p}:{eng.pids[p] if eng else 'redis-server'}":
                                        round(100 * (tk1.get(p, 0) - tk0.get(p, 0)) / HZ / wall, 1)
                                        for p in backplane_pids}
            rec["spread"] = {str(p): n for p, n in sorted(sampler.spread.items())}
            rec["redis_conns"] = {str(p): n for p, n in sorted(sampler.redis_conns.items())}
            rec["redis_cmds"] = {k: cmd1[k] - cmd0.get(k, 0) for k in cmd1 if cmd1[k] - cmd0.get(k, 0) > 0
                                 and k != "info"}
            if "_total" in rec["redis_cmds"]:  # not counting our own INFO calls
                rec["redis_cmds"]["_total"] -= cmd1.get("info", 0) - cmd0.get("info", 0)
            res = parse_result(o)
            if e.strip():
                logf.write("[loadgen stderr]\n" + e)
                rec["loadgen_stderr"] = e.strip().splitlines()[:3]
            if res is None:
                rec.update(ok=0, error=rec.get("error", "no RESULT line: " + e.strip()[-200:]))
            else:
                rec.update(res)
            secs = rec.get("secs") or 0
            if rec.get("ok") == 1 and secs > 0:
                # the loadgen exits right after the last delivery: the burst is ~[t1 - secs, t1]
                b = burst_cpu(sampler.timeline, t1 - secs, t1)
                if b:
                    ticks, rticks, span = b
                    rec.update(burst_cpu_pct=round(100 * ticks / HZ / span, 1),
                               burst_redis_cpu_pct=round(100 * rticks / HZ / span, 1), burst_span_s=round(span, 3))
                    if rec.get("delivered"):
                        rec["cpu_us_per_delivery"] = round(1e6 * ticks / HZ / rec["delivered"], 3)
            rec["spread_workers"] = len(sampler.spread)
            if rec.get("ok") != 1 and not rec.get("error") and "delivered" in rec:
                rec["error"] = (f"delivered {rec['delivered']}/{rec['expected']}; {rec.get('registered')}/{a.conns} "
                                f"receivers got the sender's pings after {rec.get('ping_rounds')} rounds; "
                                f"mismatches={rec.get('mismatches')} errors={rec.get('errors')}"
                                + (" (receivers on the sender's worker only? no cross-worker delivery)"
                                   if rec.get("registered", 0) < a.conns and rec.get("ping_rounds") == 50 else ""))
            if srv.poll() is not None:
                rec.update(ok=0, error=f"server died (exit {srv.returncode})")
            elif redis and redis.poll() is not None:
                rec.update(ok=0, error=f"redis-server died (exit {redis.returncode})")
        except RuntimeError as ex:
            rec.update(ok=0, error=str(ex))
        finally:
            stop(srv)
            stop(redis)
            if eng:
                eng.close()
    notes = server_log_notes(logpath)
    if notes:
        rec["server_log"] = notes
    return rec


def spread_str(r):
    """'512/489' (sockets per worker pid); '*' when the sampler saw fewer than all C+1 connections
    (a run too short for the 50 ms sampling: the numbers are then a partial count)."""
    sp = r.get("spread", {})
    if not sp:
        return "?"
    return "/".join(str(n) for n in sp.values()) + ("" if sum(sp.values()) >= r["conns"] + 1 else "*")


def fmt_fanout(r):
    head = f"{r['rep']} {r['server']:<16}"
    if not r.get("ok"):
        head += " FAIL " + (r.get("error") or ", ".join(r.get("loadgen_stderr", [])) or "")
    spread = spread_str(r)
    return (f"{head} {r.get('rate', 0):11.0f} deliv/s ({r.get('delivered', 0)}/{r.get('expected', 0)}, "
            f"ooo={r.get('ooo', 0)}) {r.get('secs', 0):.3f}s spread={spread} "
            f"srvCPU={r.get('server_cpu_pct', 0):.0f}% burst={r.get('burst_cpu_pct', 0):.0f}% "
            f"(redis {r.get('burst_redis_cpu_pct', 0):.0f}%) cli={r.get('client_cpu_pct', 0):.0f}% "
            f"other={r.get('other_cpu_pct', 0):.0f}% redis_cmds={r.get('redis_cmds', {}).get('_total', 0)}"
            + (f" backplane CPU % per process={r.get('backplane_cpu_pct')}" if r.get("engine") else ""))


def runs_of(recs, field, value, med):
    """(runs, successful runs, their rates) of the records whose `field` is `value`; the median
    rate goes into med[value] when one succeeded."""
    rs = [r for r in recs if r[field] == value]
    ok = [r for r in rs if r.get("ok") == 1]
    rates = [r["rate"] for r in ok]
    if rates:
        med[value] = statistics.median(rates)
    return rs, ok, rates


def med_range(vals, f="{:.0f}"):
    if not vals:
        return "-"
    return f"{f.format(statistics.median(vals))} [{f.format(min(vals))}-{f.format(max(vals))}]"


def report_fanout(recs, servers):
    print()
    print(f"## cluster fan-out: {recs[0]['conns'] if recs else '?'} receivers x {recs[0]['messages'] if recs else '?'} "
          f"messages, {recs[0]['workers'] if recs else '?'} workers + 1 redis-server on CPU 0, loadgen on CPU 1")
    print()
    print("| server | ok | deliveries/s median [min-max] | burst srv CPU % | of it redis % | CPU µs/delivery "
          "| receivers per worker | ooo | redis cmds/msg | other CPU % |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    med = {}
    for s in servers:
        rs, ok, rates = runs_of(recs, "server", s, med)
        spreads = [spread_str(r) for r in rs]
        cmds = [r["redis_cmds"].get("_total", 0) / max(1, r["messages"] + r.get("ping_rounds", 0))
                for r in ok if r.get("redis_cmds")]
        print(f"| {s} | {len(ok)}/{len(rs)} | {med_range(rates)} | "
              f"{med_range([r['burst_cpu_pct'] for r in ok if 'burst_cpu_pct' in r])} | "
              f"{med_range([r['burst_redis_cpu_pct'] for r in ok if 'burst_redis_cpu_pct' in r])} | "
              f"{med_range([r['cpu_us_per_delivery'] for r in ok if 'cpu_us_per_delivery' in r], '{:.2f}')} | "
              f"{' '.join(spreads) or '-'} | {sum(r.get('ooo', 0) for r in ok)} | "
              f"{med_range(cmds, '{:.1f}')} | {med_range([r['other_cpu_pct'] for r in ok if 'other_cpu_pct' in r])} |")
    fails = [r for r in recs if r.get("ok") != 1]
    for r in fails:
        print(f"  FAIL {r['server']} rep {r['rep']}: {r.get('error') or r.get('loadgen_stderr')}")
        for n in r.get("server_log", [])[:2]:
            print(f"       server log: {n}")
    print()
    if any("/" in s for s in servers):
        report_engines(med, servers, recs)
        return
    peers = {s: v for s, v in med.items() if s not in TETHERS}
    if peers:
        best = max(peers, key=peers.get)
        print(f"best peer: {best} {peers[best]:.0f} deliveries/s (median)")
        if "tether" in med:
            ratio = med["tether"] / peers[best] if peers[best] else float("inf")
            ok1, ok2 = med["tether"] >= 1_000_000, ratio >= 5
            print(f"tether: {med['tether']:.0f} deliveries/s = {ratio:.2f}x the best peer  "
                  f"[bar: >= 1,000,000/s {'MET' if ok1 else 'NOT MET'}; >= 5x best peer {'MET' if ok2 else 'NOT MET'}]")
    elif "tether" in med:
        print(f"tether: {med['tether']:.0f} deliveries/s (no peer ran)  "
              f"[bar >= 1,000,000/s {'MET' if med['tether'] >= 1_000_000 else 'NOT MET'}]")
    report_history_bar(med, peers, servers)
    if any(spread_str(r).endswith("*") for r in recs):
        print("receivers per worker: * = partial count (run shorter than the 50 ms sampling caught)")
    uneven = [r for r in recs if r.get("ok") == 1 and r.get("spread_workers", 0) < r["workers"]]
    if uneven:
        print(f"WARNING: {len(uneven)} ok run(s) had receivers on fewer than --workers processes: "
              + ", ".join(f"{r['server']}#{r['rep']}" for r in uneven))


def busiest_first(cpu_by_proc):
    """[("name#N", CPU %)] from {"pid:name": CPU %}: by command name, numbered from the busiest."""
    out, seen = [], {}
    for name, v in sorted(((k.split(":", 1)[1], v) for k, v in cpu_by_proc.items()), key=lambda kv: (kv[0], -kv[1])):
        seen[name] = seen.get(name, 0) + 1
        out.append((f"{name}#{seen[name]}", v))
    return out


def report_engines(med, labels, recs):
    """Issue 20's bar (--engines): each engine's median >= 50 % of single Redis's, same run;
    before it, each engine's backplane processes' CPU (% of one CPU over the loadgen's run)."""
    for lab in labels:
        per: dict = {}
        for r in recs:
            if r["server"] == lab and r.get("ok") == 1:
                for k, v in busiest_first(r.get("backplane_cpu_pct", {})):
                    per.setdefault(k, []).append(v)
        print(f"{lab} backplane CPU % per process (#1 the busiest of its kind in each run), median [min-max]: "
              + (", ".join(f"{k} {med_range(v, '{:.1f}')}" for k, v in per.items()) or "-"))
    print()
    base = next((lab for lab in labels if lab.endswith("/redis")), None)
    if base is None or base not in med:
        print("single Redis (engine redis) did not run or failed every run: no ratios  [bar: not measured]")
        return
    for lab in labels:
        if lab == base:
            continue
        if lab not in med:
            print(f"{lab}: no successful run  [bar >= 0.5 of single Redis: NOT MET]")
            continue
        r = med[lab] / med[base]
        print(f"{lab}: {med[lab]:.0f} deliveries/s = {r:.3f} of single Redis ({med[base]:.0f})  "
              f"[bar >= 0.5: {'MET' if r >= 0.5 else 'NOT MET'}]")


def report_history_bar(med, peers, servers):
    """Issue 18's bar for the history room, from the medians of this run."""
    if "tether-history" not in servers:
        return
    h = med.get("tether-history")
    if h is None:
        print("tether-history: no successful run  [issue 18 bar: NOT MET]")
        return
    line = f"tether-history: {h:.0f} deliveries/s"
    if "tether" in med:
        line += f" = {h / med['tether']:.3f} of tether's path broadcast ({med['tether']:.0f})"
    print(line)
    if "tether-room" in med:
        r = h / med["tether-room"]
        print(f"  vs the plain room (tether-room {med['tether-room']:.0f}): {r:.3f}  "
              f"[bar >= 0.5: {'MET' if r >= 0.5 else 'NOT MET'}]")
    else:
        print("  vs the plain room: tether-room did not run (or failed every run)  [bar >= 0.5: not measured]")
    if peers:
        best = max(peers, key=peers.get)
        r = h / peers[best] if peers[best] else float("inf")
        print(f"  vs the best peer ({best} {peers[best]:.0f}): {r:.2f}x  "
              f"[bar >= 10x: {'MET' if r >= 10 else 'NOT MET'}]")
    else:
        print("  vs the best peer: no peer ran  [bar >= 10x: not measured]")


# ------------------------------------------------------------------ latency mode

def client_python(a):
    for p in (a.client_python, f"{TETHER_VENV}/bin/python", f"{VENVS}/tether/bin/python",
              os.path.join(ROOT, ".venv", "bin", "python")):
        if p and os.access(p, os.X_OK):
            r = subprocess.run([p, "-c", "import websockets.asyncio.client"], capture_output=True, timeout=30,
                               check=False)
            if r.returncode == 0:
                return p
    raise SystemExit("no python with the websockets asyncio client (use --client-python)")


def run_latency(name, rep, ports, logdir, a, pyclient):
    busy, waited = wait_quiet(a.quiet_pct, a.quiet_wait)
    base = ports.get(3)
    pa, pb, rport = base, base + 1, base + 2
    redis_url = f"redis://127.0.0.1:{rport}/0"
    rec = {"mode": "latency", "server": name, "rep": rep, "port_a": pa, "port_b": pb, "redis_port": rport,
           "duration": a.duration, "interval_us": a.interval_us, "nice": NICE,
           "time": datetime.datetime.now().isoformat(timespec="seconds"), "pre_busy_pct": busy, "quiet_wait_s": waited}
    logpath = os.path.join(logdir, f"{name}.latency.{rep}.log")
    redis = None
    nodes = []
    with open(logpath, "w") as logf:
        try:
            redis = start_redis(rport, logf, logdir)
            for port in (pa, pb):
                argv, cwd, extra = server_spec(name, port, redis_url, 1)
                rec.setdefault("server_cmds", []).append(" ".join(shlex.quote(x) for x in argv))
                logf.write(f"[cluster.py] {rec['server_cmds'][-1]}  (cwd {cwd})\n")
                logf.flush()
                why = precheck(name)
                if why:
                    rec.update(ok=0, error=why)
                    return rec
                nodes.append(subprocess.Popen(["taskset", "-c", SERVER_CPU, *argv], cwd=cwd,
                                              env={**os.environ, **extra}, stdout=logf, stderr=subprocess.STDOUT,
                                              preexec_fn=child_setup))  # noqa: PLW1509 (no thread runs now)
            for port, node in zip((pa, pb), nodes, strict=True):
                err, _ = wait_ready(port, node, logf, 1)
                if err:
                    rec.update(ok=0, error=f"node :{port}: {err}")
                    return rec
            time.sleep(0.3)
            cmd = ["taskset", "-c", CLIENT_CPU, pyclient, os.path.join(CLUSTER, "latency_client.py"),
                   "--pub", f"ws://127.0.0.1:{pa}/broadcast", "--sub", f"ws://127.0.0.1:{pb}/broadcast",
                   "--duration", str(a.duration), "--interval-us", str(a.interval_us)]
            rec["cmd"] = " ".join(shlex.quote(x) for x in cmd[3:])
            cpu = CpuTracker([n.pid for n in nodes] + [redis.pid])
            tk0, t0 = cpu.sample(), time.time()
            cmd0 = redis_cmdstats(rport)
            try:
                r = subprocess.run(cmd, capture_output=True, text=True, timeout=a.duration + 40, check=False,
                                   preexec_fn=child_setup)
                out, err = r.stdout, r.stderr
            except subprocess.TimeoutExpired as ex:
                out, err = ex.stdout or "", "latency client timed out"
                if isinstance(out, bytes):
                    out = out.decode(errors="replace")
            wall = time.time() - t0
            tk1 = cpu.sample()
            cmd1 = redis_cmdstats(rport)
            rec["server_cpu_pct"] = round(100 * (sum(tk1.values()) - sum(tk0.values())) / HZ / wall, 1)
            rec["redis_cmds_total"] = cmd1.get("_total", 0) - cmd0.get("_total", 0)
            if err and err.strip():
                logf.write("[client stderr]\n" + err)
            line = next((x for x in out.splitlines() if x.startswith("RESULT ")), None)
            if line is None:
                rec.update(ok=0, error="no RESULT from latency client: " + (err or "").strip()[-300:])
            else:
                rec.update(json.loads(line[7:]))
            for port, node in zip((pa, pb), nodes, strict=True):
                if node.poll() is not None:
                    rec.update(ok=0, error=f"node :{port} died (exit {node.returncode})")
        except RuntimeError as ex:
            rec.update(ok=0, error=str(ex))
        finally:
            for n in nodes:
                stop(n)
            stop(redis)
    notes = server_log_notes(logpath)
    if notes:
        rec["server_log"] = notes
    return rec


def fmt_latency(r):
    head = f"{r['rep']} {r['server']:<16} latency"
    if not r.get("ok"):
        head += " FAIL " + str(r.get("error", ""))
    return (f"{head} p50={r.get('p50_us', 0):.0f}us p99={r.get('p99_us', 0):.0f}us max={r.get('max_us', 0):.0f}us "
            f"recv={r.get('received', 0)}/{r.get('sent', 0)} ooo={r.get('ooo', 0)} rate={r.get('send_rate', 0):.0f}/s "
            f"srvCPU={r.get('server_cpu_pct', 0):.0f}%")


def report_latency(recs, servers):
    print()
    print("## cross-node broadcast latency (publisher on node A, receiver on node B, one Redis)")
    print()
    print("| server | ok | p50 µs median [min-max] | p99 µs | max µs | lost | bar p50<=1ms, p99<=5ms |")
    print("|---|---|---|---|---|---|---|")
    for s in servers:
        rs = [r for r in recs if r["server"] == s]
        ok = [r for r in rs if r.get("ok") == 1]
        p50 = [r["p50_us"] for r in ok]
        p99 = [r["p99_us"] for r in ok]
        bar = "-"
        if ok:
            bar = "MET" if statistics.median(p50) <= 1000 and statistics.median(p99) <= 5000 else "NOT MET"
        print(f"| {s} | {len(ok)}/{len(rs)} | {med_range(p50)} | {med_range(p99)} | "
              f"{med_range([r['max_us'] for r in ok])} | {sum(r.get('lost', 0) for r in rs)} | {bar} |")
    for r in recs:
        if r.get("ok") != 1:
            print(f"  FAIL {r['server']} rep {r['rep']}: {r.get('error')}")
            for n in r.get("server_log", [])[:2]:
                print(f"       server log: {n}")


# ------------------------------------------------------------------ main

def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--servers", default=None,
                    help=f"comma-separated, from {','.join(KNOWN)} (default: all; --latency: tether)")
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("-c", "--conns", type=int, default=1000, help="receivers (fan-out)")
    ap.add_argument("-M", "--messages", type=int, default=200, help="messages the sender bursts (fan-out)")
    ap.add_argument("--workers", type=int, default=2, help="worker processes per server (fan-out)")
    ap.add_argument("--max-wait", type=float, default=150,
                    help="loadgen -d: max wait for the burst to arrive (s); Panther needs ~60 s for 1000x200")
    ap.add_argument("--timeout", type=float, default=200, help="loadgen --timeout: hard limit per run (s)")
    ap.add_argument("--latency", action="store_true", help="cross-node latency mode instead of fan-out")
    ap.add_argument("--engines", default=None,
                    help="fan-out of --servers (default tether) on each backplane engine, from redis,sentinel,"
                         "cluster,nats (issue 20; the servers from tests/: run with .venv/bin/python)")
    ap.add_argument("--rooms", action="store_true",
                    help="many-rooms mode (bench/cluster/rooms.py) on --engines (default redis,cluster)")
    ap.add_argument("--failover", action="store_true",
                    help="Sentinel failover mode (bench/cluster/failover.py): --failovers kills per repetition")
    ap.add_argument("--failovers", type=int, default=5, help="failover: kills of the master per repetition")
    ap.add_argument("--interval-ms", type=float, default=5.0, help="failover: node A publishes every this many ms")
    ap.add_argument("--recovery-limit", type=float, default=60.0,
                    help="failover: give up on a failover after this many seconds without a message")
    ap.add_argument("--room-count", type=int, default=3500, help="rooms: how many rooms")
    ap.add_argument("--members", type=int, default=10, help="rooms: members per room")
    ap.add_argument("--rounds", type=int, default=20, help="rooms: messages published into each room")
    ap.add_argument("--per-client", type=int, default=17500,
                    help="rooms: connections per rooms_client process (each process has at most RLIMIT_NOFILE fds)")
    ap.add_argument("--sources", type=int, default=4,
                    help="rooms: local addresses 127.0.0.1..N the members connect from (ephemeral ports per address)")
    ap.add_argument("--duration", type=float, default=5.0, help="latency: seconds of publishing")
    ap.add_argument("--interval-us", type=int, default=1000, help="latency: one message per this many µs")
    ap.add_argument("--client-python", default=None, help="latency: python with `websockets` (default: "
                    "$VENVS/tether/bin/python, then .venv/bin/python)")
    ap.add_argument("--tether-venv", default=None, help="venv of the tether row (default $TETHER_VENV or "
                    "$VENVS/tether); it needs redis-py: bench/cluster/setup.sh tether")
    ap.add_argument("--out", default=None, help="results folder (default ./bench-results/cluster-<timestamp>)")
    ap.add_argument("--port-base", type=int, default=18600, help="first port to try (ports up to 18999)")
    ap.add_argument("--quiet-pct", type=float, default=15.0,
                    help="before each run wait until the machine is below this busy %% (101 = never wait)")
    ap.add_argument("--quiet-wait", type=float, default=90.0, help="max seconds to wait for quiet per run")
    ap.add_argument("--nice", type=int, default=-10, help="nice value of servers, redis and clients (0 = off)")
    a = ap.parse_args()
    global NICE, LOADGEN, TETHER_VENV  # noqa: PLW0603 (settings of this script's run, read by every mode)
    NICE = a.nice
    # without $VENVS/tether: the project's own venv (an editable install of this tree)
    TETHER_VENV = a.tether_venv or (TETHER_VENV if os.access(f"{TETHER_VENV}/bin/python", os.X_OK)
                                    else os.path.join(ROOT, ".venv"))
    engine_list = [e for e in (a.engines or ("redis,cluster" if a.rooms else "")).split(",") if e]
    if engine_list:
        import rooms  # bench/cluster/rooms.py, and through it engines.py
        for e in engine_list:
            if e not in rooms.engines.HELPERS:
                sys.exit(f"unknown engine {e}; known: {', '.join(rooms.engines.HELPERS)}")
    if not 18000 <= a.port_base <= PORT_MAX - 3:
        sys.exit("--port-base must be within 18000-18996")
    servers = [s for s in (a.servers or ("tether" if a.latency or engine_list else ",".join(KNOWN))).split(",") if s]
    for s in servers:
        if s not in KNOWN:
            sys.exit(f"unknown server {s}; known: {', '.join(KNOWN)}")
    if not os.access(REDIS_SERVER, os.X_OK):
        sys.exit(f"{REDIS_SERVER} not found (apt-get install redis-server, or REDIS_SERVER=...)")
    LOADGEN = find_loadgen()
    with contextlib.suppress(OSError):  # this runner's own threads (CPU sampling, ss) stay off the server's CPU
        os.sched_setaffinity(0, {int(CLIENT_CPU)})
    pyclient = client_python(a) if a.latency else None
    raise_nofile()

    def _term(signum, frame):  # so that the `finally: stop(...)` blocks run on SIGTERM too
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, _term)
    stamp = datetime.datetime.now().strftime("%Y%m%d-%H%M%S")
    out = a.out or os.path.join(os.getcwd(), "bench-results", f"cluster-{stamp}")
    logdir = os.path.join(out, "logs")
    os.makedirs(logdir, exist_ok=True)
    resfile = os.path.join(out, "results.jsonl")
    rnd = random.Random(a.seed)
    ports = PortPool(a.port_base)
    print(f"# results -> {resfile}", flush=True)
    print(f"# loadgen {LOADGEN}; venvs {VENVS}; shared harness {SHARED}", flush=True)
    recs = []
    if a.failover:
        import failover  # bench/cluster/failover.py (needs the project's venv)
        with open(resfile, "a") as rf:
            for rep in range(1, a.reps + 1):
                for rec in failover.run(sys.modules[__name__], rep, ports, logdir, a):
                    recs.append(rec)
                    rf.write(json.dumps(rec) + "\n")
                    rf.flush()
                    print(failover.fmt(rec), flush=True)
        failover.report(sys.modules[__name__], recs)
        return
    with open(resfile, "a") as rf:
        for rep in range(1, a.reps + 1):
            order = [(s, e) for s in servers for e in engine_list] or [(s, None) for s in servers]
            rnd.shuffle(order)
            for s, e in order:
                if a.latency:
                    rec = run_latency(s, rep, ports, logdir, a, pyclient)
                elif a.rooms:
                    rec = rooms.run(sys.modules[__name__], e, rep, ports, logdir, a)
                    recs.append(rec)
                    rf.write(json.dumps(rec) + "\n")
                    rf.flush()
                    print(rooms.fmt(rec), flush=True)
                    continue
                else:
                    rec = run_fanout(s, rep, ports, logdir, a, e)
                recs.append(rec)
                rf.write(json.dumps(rec) + "\n")
                rf.flush()
                print(fmt_latency(rec) if a.latency else fmt_fanout(rec), flush=True)
    if a.latency:
        report_latency(recs, servers)
    elif a.rooms:
        rooms.report(sys.modules[__name__], recs, engine_list)
    else:
        report_fanout(recs, [f"{s}/{e}" for s in servers for e in engine_list] or servers)


if __name__ == "__main__":
    main()

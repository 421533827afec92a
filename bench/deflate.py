#!/usr/bin/env python3
"""permessage-deflate benchmark (issue 9): tether vs websockets vs uvicorn+Starlette, deflate on.

    python3 bench/deflate.py                 # 3 interleaved repetitions: 3 min quiet, up to 15 loaded
    python3 bench/deflate.py --quick         # smoke check of the harness (numbers meaningless)
    python3 bench/deflate.py --reps 1 --servers tether,websockets --scenarios fanout
    python3 bench/deflate.py --report bench-results/deflate-<ts>/results.jsonl

Scenarios, all on compressible 1 KiB JSON text messages (64 distinct ones, cycled):
  echo    100 connections, 8 messages in flight each, 1 s warm-up then 5 s measured: msg/s.
  fanout  1000 receivers + 1 sender on /broadcast; after a barrier (broadcast pings until every
          receiver has one), the sender bursts M messages (--messages: 1000 for tether, 50 for
          the peers, whose compression per receiver makes a burst 10-100x longer), the server
          relays each to every connection: deliveries/s = 1000 * M / (last delivery - first send).
  idle    2000 connections on /echo, each exchanges one message, then held: server RSS growth
          per connection, with deflate negotiated and without it (server started without it).
Every row reports the server's CPU per message (per delivery for fanout), read from
/proc/PID/task/*/schedstat (the same utime+stime as /proc/PID/stat, in ns instead of 10 ms
ticks) at the edges of the measured window, the load generator's CPU and the CPU that other
processes took meanwhile ("other": machine busy time from /proc/stat minus the two).

Method (as ../shared/bench): server pinned to CPU 0, load generator to CPU 1 (both at nice -10
by default), loopback 127.0.0.1, ports 18700-18999, a fresh server per run, servers shuffled
per (repetition, scenario). The load generator is bench/deflate/loadgen.py (asyncio +
uvloop on raw sockets, no WebSocket library; run with $VENVS/raw's Python): it offers what a browser offers
(`permessage-deflate; client_max_window_bits`), fails the run unless the response accepts it
with a valid Sec-WebSocket-Accept, and sends masked frames with RSV1 whose payload was
compressed independently with a 9-bit window (valid whatever context and window bits the server
negotiated). Received frames are parsed (RSV1 only on a message's first frame, no RSV2/3, text
opcode, no masking); every 10th echo connection and 20 fanout receivers inflate every message
they get (with the context the server negotiated) and compare it with what was sent, so a
wrong, lost or reordered message fails the run. In fanout, when the server announced
server_no_context_takeover, the other receivers only count bytes and a CRC-32 of their stream
after the barrier, and the run fails unless every stream is byte-identical to the inflating
receivers' streams (all frames alike, as compress-once produces); otherwise they parse every
frame header and count messages. Results: bench-results/deflate-<timestamp>/results.jsonl.

Files: bench/deflate/{tether_app,websockets_server,starlette_app}.py (the servers),
loadgen.py (the load generator), codec.py (frames, offer, checks), procstat.py (/proc readings).
Only processes started here are signalled, by PID; every wait is bounded.
"""
from __future__ import annotations

import argparse
import contextlib
import datetime
import json
import os
import random
import resource
import signal
import socket
import statistics
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
APPS = os.path.join(HERE, "deflate")
sys.path.insert(0, APPS)
from codec import (  # noqa: E402
    OFFER,
    Inflater,
    check_response,
    client_frame,
    compress_message,
    handshake_request,
    make_messages,
    new_key,
)
from procstat import busy_pct, tree  # noqa: E402

VENVS = os.environ.get("VENVS", "/tmp/bench-venvs")
#: any Python with uvloop; the load generator imports nothing else outside the stdlib
CLIENT_PYTHON = os.environ.get("DEFLATE_CLIENT_PYTHON", os.path.join(VENVS, "raw", "bin", "python"))
SERVER_CPU, CLIENT_CPU = "0", "1"
PORT_MIN, PORT_MAX = 18700, 18999
SERVERS = ("tether", "websockets", "starlette")
#: only when named in --servers: tether keeping its compression context (one compressor per
#: connection, a broadcast compressed per receiver), to measure what compress-once buys
OPTIONAL = ("tether-takeover",)
SCENARIOS = ("echo", "fanout", "idle")


def server_cmd(name: str, port: int, deflate: bool) -> list[str]:
    """The command line of one server, deflate negotiated or not."""
    if name in ("tether", "tether-takeover"):
        takeover = name == "tether-takeover" and deflate
        return [os.path.join(VENVS, "tether", "bin", "python"), "-m", "tether", "run",
                "tether_app:takeover" if takeover else "tether_app:app", "--host", "127.0.0.1", "--port", str(port),
                "--log-level", "warning", *(["--permessage-deflate"] if deflate and not takeover else [])]
    if name == "websockets":
        return [os.path.join(VENVS, "websockets", "bin", "python"), "websockets_server.py", str(port),
                "deflate" if deflate else "none"]
    if name == "starlette":
        return [os.path.join(VENVS, "starlette", "bin", "uvicorn"), "starlette_app:app", "--ws", "websockets-sansio",
                "--host", "127.0.0.1", "--port", str(port), "--loop", "uvloop", "--http", "httptools",
                "--log-level", "warning", "--no-access-log", "--backlog", "4096", "--app-dir", APPS,
                "--ws-per-message-deflate", "true" if deflate else "false"]
    raise ValueError(name)


# ---------------------------------------------------------------------------- the runner

SETTINGS = {"nice": -10}  # from --nice: priority of server and load generator (negative = ahead of others)


def raise_nofile() -> None:
    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


def child_setup() -> None:
    raise_nofile()
    if SETTINGS["nice"]:
        os.setpriority(os.PRIO_PROCESS, 0, SETTINGS["nice"])


def port_free(port: int) -> bool:
    with socket.socket() as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind(("127.0.0.1", port))
            return True
        except OSError:
            return False


class Ports:
    def __init__(self) -> None:
        self.next = PORT_MIN + random.randrange(PORT_MAX - PORT_MIN)

    def get(self) -> int:
        for _ in range(PORT_MAX - PORT_MIN):
            p = self.next
            self.next = p + 1 if p < PORT_MAX else PORT_MIN
            if port_free(p):
                return p
        raise RuntimeError(f"no free port in {PORT_MIN}-{PORT_MAX}")


def probe(port: int, deflate: bool, timeout: float = 5.0) -> None:
    """One handshake and one echoed message over a blocking socket; raises on any failure."""
    rnd = random.Random()
    key = new_key(rnd)
    msg = make_messages(1)[0]
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as s:
        s.sendall(handshake_request("/echo", port, key, deflate))
        buf = b""
        while b"\r\n\r\n" not in buf:
            chunk = s.recv(65536)
            if not chunk:
                raise ConnectionError("closed during the handshake")
            buf += chunk
        head, _, buf = buf.partition(b"\r\n\r\n")
        check_response(head, key, deflate)
        s.sendall(client_frame(1, compress_message(msg) if deflate else msg, deflate, rnd))
        while True:
            if len(buf) >= 4:
                ln, hl = buf[1] & 0x7f, 2
                if ln == 127:
                    raise ValueError("probe: unexpectedly long frame")
                if ln == 126:
                    ln, hl = int.from_bytes(buf[2:4], "big"), 4
                if len(buf) >= hl + ln:
                    break
            chunk = s.recv(65536)
            if not chunk:
                raise ConnectionError("closed before the echo")
            buf += chunk
        if Inflater().message(buf[hl:hl + ln], bool(buf[0] & 0x40)) != msg:
            raise ValueError("probe: wrong echo")
        s.sendall(client_frame(8, b"\x03\xe8", False, rnd))


def alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def stop(proc: subprocess.Popen) -> None:
    """SIGTERM the server and its descendants (by PID), SIGKILL what is left after 5 s."""
    pids = tree(proc.pid)
    for p in reversed(pids):
        with contextlib.suppress(ProcessLookupError):
            os.kill(p, signal.SIGTERM)
    deadline = time.time() + 5
    while time.time() < deadline and (proc.poll() is None or any(alive(p) for p in pids[1:])):
        time.sleep(0.05)
    for p in pids:
        if alive(p):
            with contextlib.suppress(ProcessLookupError):
                os.kill(p, signal.SIGKILL)
    with contextlib.suppress(subprocess.TimeoutExpired):
        proc.wait(timeout=5)


def scenario_cfg(scenario: str, quick: bool, messages: dict) -> dict:
    if scenario == "echo":
        return {"mode": "echo", "conns": 100, "window": 8, "verify_every": 10,
                "warmup": 0.3 if quick else 1.0, "duration": 1.0 if quick else 5.0}
    if scenario == "fanout":
        return {"mode": "fanout", "conns": 100 if quick else 1000, "verifiers": 20, "count": "auto",
                "messages": messages, "timeout": 20.0}
    return {"mode": "idle", "conns": 200 if quick else 2000, "settle": 1.0 if quick else 1.5}


def run_one(server: str, scenario: str, deflate: bool, rep: int, ports: Ports, logdir: str, cfg: dict,
            quiet: tuple[float, float], count_mode: str) -> dict:
    t_wait = time.time()
    pre = busy_pct(0.5)
    while pre > quiet[0] and time.time() - t_wait < quiet[1]:
        pre = busy_pct(1.0)
    port = ports.get()
    rec: dict = {"server": server, "scenario": scenario, "deflate": deflate, "rep": rep, "port": port,
                 "time": datetime.datetime.now().isoformat(timespec="seconds"), "nice": SETTINGS["nice"],
                 "pre_busy_pct": round(pre, 1), "quiet_wait_s": round(time.time() - t_wait, 1)}
    log = os.path.join(logdir, f"{server}.{scenario}.{'deflate' if deflate else 'plain'}.{rep}.log")
    with open(log, "w") as logf:
        # preexec_fn: this runner has no threads
        proc = subprocess.Popen(["taskset", "-c", SERVER_CPU, *server_cmd(server, port, deflate)], cwd=APPS,
                                stdout=logf, stderr=subprocess.STDOUT, preexec_fn=child_setup)  # noqa: PLW1509
        try:
            deadline = time.time() + 30
            err = "not ready within 30 s"
            while time.time() < deadline:
                if proc.poll() is not None:
                    err = f"server exited with {proc.returncode} during start-up"
                    break
                try:
                    probe(port, deflate)
                    err = ""
                    break
                except (OSError, ValueError) as e:
                    if not isinstance(e, ConnectionRefusedError):
                        logf.write(f"[deflate.py] probe: {e!r}\n")
                    time.sleep(0.2)
            if err:
                rec.update(ok=0, errors=[err])
                return rec
            time.sleep(0.2)
            c = dict(cfg, port=port, deflate=deflate, server_pids=tree(proc.pid), seed=rep)
            if c["mode"] == "fanout":
                c["messages"] = cfg["messages"][server]
                c["count"] = count_mode
            lg = subprocess.run(["taskset", "-c", CLIENT_CPU, CLIENT_PYTHON, os.path.join(APPS, "loadgen.py"),
                                 json.dumps(c)], capture_output=True, text=True, timeout=120, cwd=APPS,
                                preexec_fn=child_setup, check=False)
            res = None
            for line in lg.stdout.splitlines():
                if line.startswith("RESULT "):
                    res = json.loads(line[7:])
            if lg.stderr.strip():
                logf.write("[client stderr]\n" + lg.stderr)
            if res is None:
                rec.update(ok=0, errors=["client printed no RESULT: " + lg.stderr.strip()[-300:]])
            else:
                rec.update(res)
            if proc.poll() is not None:
                rec.update(ok=0, errors=[*rec.get("errors", []), f"server died (exit {proc.returncode})"])
        except subprocess.TimeoutExpired:
            rec.update(ok=0, errors=["client exceeded 120 s"])
        finally:
            stop(proc)
    return rec


def fmt(rec: dict) -> str:
    head = f"{rec['rep']} {rec['scenario']:<6} {rec['server']:<10} {'deflate' if rec['deflate'] else 'plain':<7}"
    if not rec.get("ok"):
        return f"{head} FAIL {'; '.join(rec.get('errors', []))[:400]}"
    if rec["scenario"] == "idle":
        body = f"open={rec['open']} {rec['kib_per_conn_open']:.1f} KiB/conn open, {rec['kib_per_conn']:.1f} after 1 msg"
        return f"{head} {body} ({rec.get('negotiated', '')})"
    unit = "msg/s" if rec["scenario"] == "echo" else "deliv/s"
    body = (f"{rec['rate']:>11,.0f} {unit} {rec['server_cpu_us_per_msg']:7.2f} us/msg srv "
            f"{rec['wire_bytes_per_msg']:.0f} B/msg {rec['secs']:.2f}s")
    cpu = f"srv={rec['server_cpu_pct']:.0f}% cli={rec['client_cpu_pct']:.0f}% other={rec['other_cpu_pct']:.0f}%"
    extra = f" [{rec['counting']}]" if "counting" in rec else ""
    return f"{head} {body} {cpu}{extra}"


def med(vals: list[float]) -> str:
    if not vals:
        return "-"
    m = statistics.median(vals)
    f = (lambda v: f"{v:,.0f}") if m >= 100 else (lambda v: f"{v:.2f}")
    return f"{f(m)} [{f(min(vals))}-{f(max(vals))}]" if len(vals) > 1 else f(m)


def report(recs: list[dict], max_other: float) -> str:
    """Markdown tables: per scenario and server the median [min-max] of the runs whose other
    CPU was at most max_other; a cell without such a run uses all its runs and is marked *."""
    out = []
    ok = [r for r in recs if r.get("ok")]
    servers = [s for s in SERVERS + OPTIONAL if any(r["server"] == s for r in recs)]
    noisy_cells = 0
    verdict = []
    for scenario, unit in (("echo", "msg/s"), ("fanout", "deliveries/s")):
        rows, marks = {}, {}
        for s in servers:
            runs = [r for r in ok if r["server"] == s and r["scenario"] == scenario and r["deflate"]]
            clean = [r for r in runs if r.get("other_cpu_pct", 0) <= max_other]
            rows[s], marks[s] = (clean, "") if clean else (runs, "*")
            noisy_cells += bool(runs and not clean)
        if not any(rows.values()):
            continue
        rate = {s: statistics.median([r["rate"] for r in v]) for s, v in rows.items() if v}
        cpu = {s: statistics.median([r["server_cpu_us_per_msg"] for r in v]) for s, v in rows.items() if v}
        peers = [s for s in rate if not s.startswith("tether")]
        best_rate = max((rate[s] for s in peers), default=None)
        best_cpu = min((cpu[s] for s in peers), default=None)
        per = "delivery" if scenario == "fanout" else "message"
        out.append("")
        out.append(f"{scenario} (deflate on), medians [min-max]:")
        out.append("")
        out.append(f"| server | runs | {unit} | server CPU us per {per} | wire B per {per} | x best peer ({unit}) "
                   f"| x best peer (CPU per {per}) | server / client / other CPU % |")
        out.append("|---|---|---|---|---|---|---|---|")
        for s, v in rows.items():
            if not v:
                continue
            xr = f"{rate[s] / best_rate:.2f}" if best_rate else "-"
            xc = f"{best_cpu / cpu[s]:.2f}" if best_cpu and cpu[s] else "-"
            pcts = " / ".join(f"{statistics.median([r[k] for r in v]):.0f}"
                              for k in ("server_cpu_pct", "client_cpu_pct", "other_cpu_pct"))
            out.append(f"| {s}{marks[s]} | {len(v)} | {med([r['rate'] for r in v])} "
                       f"| {med([r['server_cpu_us_per_msg'] for r in v])} "
                       f"| {statistics.median([r['wire_bytes_per_msg'] for r in v]):.0f} | {xr} | {xc} | {pcts} |")
        if "tether" in rate and best_rate and best_cpu:
            verdict.append(f"{scenario}: tether = {rate['tether'] / best_rate:.2f}x the best peer's {unit}, "
                           f"{best_cpu / cpu['tether']:.2f}x less server CPU per {per}")
    if noisy_cells:
        out.append("")
        out.append(f"* no run of that cell had other CPU <= {max_other:g} %: all its runs are used (noisy)")
    if verdict:
        out.append("")
        out += ["- " + v for v in verdict]
    idle = [r for r in ok if r["scenario"] == "idle"]
    if idle:
        out.append("")
        out.append("idle connections: server RSS growth per connection, KiB (after the handshake / after one "
                   "message each way), medians [min-max]:")
        out.append("")
        out.append("| server | deflate: open | deflate: after 1 msg | plain: open | plain: after 1 msg | connections |")
        out.append("|---|---|---|---|---|---|")
        for s in servers:
            d = [r for r in idle if r["server"] == s and r["deflate"]]
            p = [r for r in idle if r["server"] == s and not r["deflate"]]
            if not d and not p:
                continue
            n = max([r["open"] for r in d + p])
            out.append(f"| {s} | {med([r['kib_per_conn_open'] for r in d])} | {med([r['kib_per_conn'] for r in d])} "
                       f"| {med([r['kib_per_conn_open'] for r in p])} | {med([r['kib_per_conn'] for r in p])} | {n} |")
    negotiated = {}
    for r in ok:
        if r.get("negotiated") and r["deflate"]:
            negotiated.setdefault(r["server"], r["negotiated"])
    if negotiated:
        out.append("")
        out.append("negotiated for the offer `" + OFFER + "`:")
        for s, h in negotiated.items():
            out.append(f"- {s}: `{h}`")
    fails = [r for r in recs if not r.get("ok")]
    for r in fails:
        out.append(f"FAILED: {fmt(r)}")
    return "\n".join(out)


def describe_checkout() -> dict:
    """The tether commit measured and how many files under src/ differ from it."""
    root = os.path.dirname(HERE)

    def git(*args: str) -> str:
        r = subprocess.run(["git", "-C", root, *args], capture_output=True, text=True, check=False)
        return r.stdout.strip()

    dirty = [line for line in git("status", "--porcelain", "--", "src").splitlines() if line.strip()]
    return {"head": git("rev-parse", "HEAD"), "uncommitted_src_files": len(dirty)}


def load(paths: list[str]) -> list[dict]:
    recs = []
    for p in paths:
        with open(p) as f:
            recs += [json.loads(line) for line in f if line.strip()]
    return recs


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--servers", default=",".join(SERVERS))
    ap.add_argument("--scenarios", default=",".join(SCENARIOS))
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--idle-reps", type=int, default=1, help="repetitions of the idle-memory runs (default 1)")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--quick", action="store_true", help="short runs, fewer connections: checks the harness only")
    ap.add_argument("--messages", default="tether=1000,tether-takeover=50,websockets=50,starlette=50",
                    help="messages per fanout burst, per server (default %(default)s)")
    ap.add_argument("--count", choices=("auto", "stream", "frames"), default="auto",
                    help="fanout: how non-inflating receivers count "
                         "(auto: byte streams under server_no_context_takeover)")
    ap.add_argument("--quiet-pct", type=float, default=15.0,
                    help="before each run wait until the machine is below this busy %% (all cores)")
    ap.add_argument("--quiet-wait", type=float, default=5.0, help="at most this many seconds of waiting per run")
    ap.add_argument("--max-other", type=float, default=20.0, help="tables leave out runs with more other CPU %%")
    ap.add_argument("--nice", type=int, default=-10)
    ap.add_argument("--out", default=None)
    ap.add_argument("--report", nargs="+", metavar="RESULTS_JSONL", help="only print the tables of these files")
    a = ap.parse_args()
    if a.report:
        print(report(load(a.report), a.max_other))
        return 0
    SETTINGS["nice"] = a.nice
    servers = [s for s in a.servers.split(",") if s]
    scenarios = [s for s in a.scenarios.split(",") if s]
    for s in servers:
        if s not in SERVERS + OPTIONAL:
            sys.exit(f"unknown server {s}; known: {', '.join(SERVERS + OPTIONAL)}")
    for s in scenarios:
        if s not in SCENARIOS:
            sys.exit(f"unknown scenario {s}; known: {', '.join(SCENARIOS)}")
    messages = dict(kv.split("=") for kv in a.messages.split(","))
    messages = {s: int(messages.get(s, 50)) // (10 if a.quick else 1) for s in SERVERS + OPTIONAL}

    def _term(signum, frame):
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, _term)
    raise_nofile()
    stamp = datetime.datetime.now().strftime("%Y%m%d-%H%M%S")
    out = a.out or os.path.join(os.getcwd(), "bench-results", "deflate-" + stamp)
    logdir = os.path.join(out, "logs")
    os.makedirs(logdir, exist_ok=True)
    resfile = os.path.join(out, "results.jsonl")
    meta = describe_checkout()
    with open(os.path.join(out, "meta.json"), "w") as f:
        json.dump(dict(meta, argv=sys.argv[1:], time=stamp), f, indent=1)
    print(f"# results -> {resfile}", flush=True)
    print(f"# tether at {meta['head'][:10]}, {meta['uncommitted_src_files']} uncommitted files under src/", flush=True)
    rnd = random.Random(a.seed)
    ports = Ports()
    recs = []
    plan = []
    reps = 1 if a.quick else a.reps
    for rep in range(1, reps + 1):
        for scenario in scenarios:
            if scenario == "idle" and rep > (1 if a.quick else a.idle_reps):
                continue
            order = servers[:]
            rnd.shuffle(order)
            for server in order:
                plain = scenario == "idle" and server != "tether-takeover"
                for deflate in ((True, False) if plain else (True,)):
                    plan.append((rep, scenario, server, deflate))
    t_start = time.time()
    with open(resfile, "a") as rf:
        for rep, scenario, server, deflate in plan:
            rec = run_one(server, scenario, deflate, rep, ports, logdir, scenario_cfg(scenario, a.quick, messages),
                          (a.quiet_pct, a.quiet_wait), a.count)
            recs.append(rec)
            rf.write(json.dumps(rec) + "\n")
            rf.flush()
            print(fmt(rec), flush=True)
    print(f"# {len(plan)} runs in {time.time() - t_start:.0f} s\n")
    print(report(recs, a.max_other))
    return 0 if all(r.get("ok") for r in recs) else 1


if __name__ == "__main__":
    sys.exit(main())

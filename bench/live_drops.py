#!/usr/bin/env python3
"""Delivery under network drops (issue 19): tether.client subscribers behind a TCP proxy that
cuts every connection every 2 s, while server code publishes 100 messages/s into their room.

    .venv/bin/python bench/live_drops.py                          # 20 clients, 10 s (smoke)
    .venv/bin/python bench/live_drops.py --duration 60            # the recorded run
    .venv/bin/python bench/live_drops.py --duration 60 --backplane redis     # history in a redis-server
    .venv/bin/python bench/live_drops.py --duration 60 --cut silent --ping 1  # drops nobody is told of

One run: a tether server (`python -m tether run live_common:app`, bench/live_common.py) on
CPU 0, by default without a backplane: the server stays up (only the connections are cut), so
the local backplane's in-process history is the room's history; --backplane redis starts a
redis-server of its own (temp dir) and the history lives there. The room is "h:drops",
declared `live.room("h:{name}", history=10000, presence=False)`.

On CPU 1, one asyncio process (uvloop) runs:
  - the proxy: 127.0.0.1:<port> -> the server, one upstream connection per client connection,
    bytes relayed as they come. Every --cut-every seconds (2) it cuts every connection it
    holds: --cut rst aborts both sides (RST: the client sees a reset at once); --cut fin
    closes both TCP connections without a WebSocket close frame (1006); --cut silent stops
    relaying in both directions and keeps the sockets open (a drop nobody is told of: the
    client finds it by the live heartbeat, within two --ping intervals, and the server by
    its own, and each side's close is then passed on);
  - --clients tether.client clients (`connect(proxy url)`, defaults: reconnect backoff 0.25 s
    doubling to 10 s with full jitter, rejoin from the last position), each joined to the
    room before the first message; each records (offset, data) from `async for message in
    room` (--read messages, the default) or from `room.events()` (--read events: every
    Joined with its `recovered` as well); a raw hook (`on_push`) counts the message pushes
    that arrived on the wire more than once (a replay overlapping live messages: the client
    drops those by offset);
  - the control connection (direct to the server): server code publishes {"k": k},
    k = 1..rate x duration, at --rate a second on a fixed schedule (app.hub.publish).
The cuts start with the publishing and go on for --duration; then each client must get to
the last k (bounded wait). Checked per client: exactly k = 1..N, in order, once (delivered /
expected, duplicates, gaps, reorderings), offsets consecutive in one epoch, and how its
rejoins went (--read messages: `room.recovered` seen after each rejoin; --read events: every
Joined event). The bar: 100 % delivered, in order, no duplicate, in every client.

Peers: none is run. python-socketio (the Socket.IO server for Python) has no connection
state recovery, so a client that reconnects there gets no missed messages to compare.
Only loopback and ports --port-base..18999; only processes started here are signalled, by
PID; every wait is bounded.
"""
import argparse
import asyncio
import datetime
import itertools
import json
import os
import shlex
import statistics
import time

import live_common as lc

ROOM = "h:drops"


# ------------------------------------------------------------------ the proxy

class _Half(asyncio.Protocol):
    """One side of a relayed connection: what it reads goes to its peer."""

    def __init__(self, pair):
        self.pair, self.transport = pair, None

    def connection_made(self, transport):
        self.transport = transport

    def data_received(self, data):
        self.pair.relay(self, data)

    def connection_lost(self, exc):
        self.pair.lost(self)


class _Pair:
    def __init__(self, proxy):
        self.proxy = proxy
        self.down = _Half(self)  # the client's side
        self.up = None  # the server's side
        self.pending = []
        self.silent = False
        self.closed = False

    def relay(self, half, data):
        if self.silent or self.closed:
            return
        if half is self.down:
            if self.up is None or self.up.transport is None:
                self.pending.append(data)
            else:
                self.up.transport.write(data)
        elif self.down.transport is not None:
            self.down.transport.write(data)

    def lost(self, half):
        if self.closed:
            return
        self.closed = True
        self.proxy.pairs.discard(self)
        other = self.up if half is self.down else self.down
        if other is not None and other.transport is not None:
            other.transport.close()

    def cut(self, how):
        if how == "silent":
            self.silent = True
            return
        self.closed = True
        self.proxy.pairs.discard(self)
        for half in (self.down, self.up):
            if half is not None and half.transport is not None:
                if how == "rst":
                    half.transport.abort()
                else:
                    half.transport.close()


class Proxy:
    def __init__(self, upstream_port):
        self.upstream_port = upstream_port
        self.pairs = set()
        self.accepted = 0
        self.cuts = []  # connections cut at each cut
        self.server = None
        self.tasks = set()

    def _accept(self):
        pair = _Pair(self)
        self.pairs.add(pair)
        self.accepted += 1
        task = asyncio.ensure_future(self._connect_up(pair))
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)
        return pair.down

    async def _connect_up(self, pair):
        loop = asyncio.get_running_loop()
        try:
            _, up = await loop.create_connection(lambda: _Half(pair), "127.0.0.1", self.upstream_port)
        except OSError:
            pair.cut("rst")
            return
        pair.up = up
        if pair.closed:
            up.transport.close()
            return
        for data in pair.pending:
            up.transport.write(data)
        pair.pending.clear()

    async def start(self, port):
        self.server = await asyncio.get_running_loop().create_server(self._accept, "127.0.0.1", port, backlog=1024)

    def cut_all(self, how):
        pairs = [p for p in self.pairs if not p.silent]
        for p in pairs:
            p.cut(how)
        self.cuts.append(len(pairs))

    def close(self):
        if self.server is not None:
            self.server.close()
        for p in list(self.pairs):
            p.cut("rst")


# ------------------------------------------------------------------ the clients

class Subscriber:
    def __init__(self, i):
        self.i = i
        self.got = []  # (offset, k)
        self.epochs = set()
        self.rejoins = 0
        self.recovered = 0
        self.not_recovered = 0
        self.lost_events = 0
        self.wire = {}  # offset -> times a message push with it arrived
        self.client = None
        self.room = None
        self.error = None
        self.t_done = None
        self.connections = 0

    def on_push(self, push):
        if push.get("push") == "message" and push.get("room") == ROOM:
            offset = push.get("offset")
            self.wire[offset] = self.wire.get(offset, 0) + 1

    async def read(self, last, mode):
        from tether.client import Joined, Lost, Message
        room = self.room
        try:
            if mode == "messages":
                joins = room.joins
                async for message in room:
                    if room.joins != joins:  # one or more rejoins since the last message
                        self.rejoins += room.joins - joins
                        joins = room.joins
                        if room.recovered:
                            self.recovered += 1
                        else:
                            self.not_recovered += 1
                    self.got.append((message.offset, message.data.get("k") if isinstance(message.data, dict)
                                     else message.data))
                    self.epochs.add(message.epoch)
                    if self.got[-1][1] == last:
                        self.t_done = time.monotonic()
                        return
            else:
                async for event in room.events():
                    if isinstance(event, Message):
                        self.got.append((event.offset, event.data.get("k") if isinstance(event.data, dict)
                                         else event.data))
                        self.epochs.add(event.epoch)
                        if self.got[-1][1] == last:
                            self.t_done = time.monotonic()
                            return
                    elif isinstance(event, Joined) and event.rejoin:
                        self.rejoins += 1
                        if event.recovered:
                            self.recovered += 1
                        else:
                            self.not_recovered += 1
                    elif isinstance(event, Lost):
                        self.lost_events += 1
        except Exception as exc:
            self.error = f"{type(exc).__name__}: {exc}"[:200]

    def check(self, last):
        ks = [k for _, k in self.got]
        want = list(range(1, last + 1))
        dups = len(ks) - len(set(ks))
        missing = len(set(want) - set(ks))
        in_order = ks == sorted(ks)
        offsets = [o for o, _ in self.got]
        consecutive = all(b == a + 1 for a, b in itertools.pairwise(offsets))
        wire_dups = sum(n - 1 for n in self.wire.values() if n > 1)
        return {"delivered": len(set(ks) & set(want)), "received": len(ks), "duplicates": dups, "missing": missing,
                "in_order": in_order, "exact": ks == want, "offsets_consecutive": consecutive,
                "epochs": len(self.epochs), "rejoins": self.rejoins, "recovered": self.recovered,
                "not_recovered": self.not_recovered, "lost_events": self.lost_events, "wire_duplicates": wire_dups,
                "error": self.error}


# ------------------------------------------------------------------ one run

async def drive(a, port, proxy_port, rec):
    from tether.client import connect
    loop = asyncio.get_running_loop()
    proxy = Proxy(port)
    await proxy.start(proxy_port)
    control = await lc.open_ws(lambda: lc.Control(port), port)
    rec["server_pid"] = (await control.ask({"op": "hello"}, "hello", 10))["pid"]
    subs = [Subscriber(i) for i in range(a.clients)]
    last = round(a.rate * a.duration)
    url = f"ws://127.0.0.1:{proxy_port}/live"
    try:
        for s in subs:
            s.client = connect(url, on_push=s.on_push)
            await s.client.start()
            s.room = await s.client.join(ROOM)
        rec["first_position"] = str(subs[0].room.position)
        readers = [asyncio.ensure_future(s.read(last, a.read)) for s in subs]
        control.send_text(json.dumps({"op": "ticker", "room": ROOM, "rate": a.rate, "count": last}))
        t0 = time.monotonic()
        cuts = 0
        while time.monotonic() - t0 < a.duration:
            await asyncio.sleep(max(0.0, t0 + (cuts + 1) * a.cut_every - time.monotonic()))
            if time.monotonic() - t0 >= a.duration:
                break
            proxy.cut_all(a.cut)
            cuts += 1
        ticker = await control.wait("ticker", a.duration + 30)
        rec["ticker"] = ticker
        rec["published"] = ticker["published"]
        _, pending = await asyncio.wait(readers, timeout=a.finish)
        rec["cut_s_after_publishing"] = round(time.monotonic() - ticker["t1"], 2)
        for p in pending:
            p.cancel()
        await asyncio.gather(*pending, return_exceptions=True)
        rec["cuts"] = cuts
        rec["connections_cut"] = sum(proxy.cuts)
        rec["connections_relayed"] = proxy.accepted
        rec["t_done_after_last_publish_s"] = [round(s.t_done - ticker["t1"], 3) if s.t_done else None for s in subs]
        checks = [s.check(last) for s in subs]
        rec["clients_checks"] = checks
        rec["connections_per_client"] = [getattr(s.client, "connects", None) for s in subs]
    finally:
        await asyncio.gather(*(asyncio.wait_for(s.client.close(), 5) for s in subs if s.client),
                             return_exceptions=True)
        proxy.close()
        control.close()
        await asyncio.sleep(0.05)
    del loop
    expected = last * a.clients
    delivered = sum(c["delivered"] for c in checks)
    rec.update(expected=expected, delivered=delivered,
               duplicates=sum(c["duplicates"] for c in checks),
               missing=sum(c["missing"] for c in checks),
               out_of_order=sum(1 for c in checks if not c["in_order"]),
               exact_clients=sum(1 for c in checks if c["exact"]),
               offsets_consecutive=all(c["offsets_consecutive"] for c in checks),
               one_epoch=all(c["epochs"] == 1 for c in checks),
               rejoins=sum(c["rejoins"] for c in checks), recovered=sum(c["recovered"] for c in checks),
               not_recovered=sum(c["not_recovered"] for c in checks),
               lost_events=sum(c["lost_events"] for c in checks),
               wire_duplicates=sum(c["wire_duplicates"] for c in checks),
               client_errors=[c["error"] for c in checks if c["error"]][:3])
    rec["ok"] = int(delivered == expected and rec["exact_clients"] == a.clients and rec["offsets_consecutive"]
                    and rec["one_epoch"] and not rec["client_errors"])


def run_once(a, cl, ports, logdir, rep):
    busy, waited = cl.wait_quiet(a.quiet_pct, a.quiet_wait)
    base = ports.get(3)
    port, proxy_port, rport = base, base + 1, base + 2
    rec = {"rep": rep, "clients": a.clients, "duration": a.duration, "rate": a.rate, "cut_every": a.cut_every,
           "cut": a.cut, "ping": a.ping, "read": a.read, "backplane": a.backplane, "port": port,
           "proxy_port": proxy_port, "time": datetime.datetime.now().isoformat(timespec="seconds"),
           "pre_busy_pct": busy, "quiet_wait_s": waited}
    logpath = os.path.join(logdir, f"drops.{rep}.log")
    srv = redis = None
    with open(logpath, "w") as logf:
        try:
            backplane = None
            if a.backplane == "redis":
                redis = cl.start_redis(rport, logf, logdir)
                backplane = f"redis://127.0.0.1:{rport}/0"
            argv = lc.server_argv(a.python, port, backplane)
            rec["server_cmd"] = " ".join(shlex.quote(x) for x in argv)
            logf.write(f"[live_drops.py] {rec['server_cmd']}\n")
            logf.flush()
            srv = lc.start_server(cl, argv, {"BENCH_LIVE_PING": str(a.ping)}, logf, cl.SERVER_CPU)
            lc.wait_listening(port, srv)
            cpu = cl.CpuTracker([srv.pid] + ([redis.pid] if redis else []))
            tk0, t0 = cpu.sample(), time.monotonic()
            lc.run_loop(drive(a, port, proxy_port, rec))
            tk1, t1 = cpu.sample(), time.monotonic()
            rec["server_cpu_pct"] = round(100 * (sum(tk1.values()) - sum(tk0.values())) / cl.HZ / (t1 - t0), 1)
            rec["server_rss_kib"] = lc.proc_status(srv.pid)
            if srv.poll() is not None:
                rec.update(ok=0, error=f"server died (exit {srv.returncode})")
        except (RuntimeError, OSError, TimeoutError) as exc:
            rec.update(ok=0, error=f"{type(exc).__name__}: {exc}"[:400])
        finally:
            cl.stop(srv)
            cl.stop(redis)
    notes = cl.server_log_notes(logpath, limit=8)
    if notes:
        rec["server_log"] = notes
    return rec


def fmt(r):
    head = f"{r['rep']} drops {r['clients']} clients {r['duration']:g}s cut={r['cut']}/{r['cut_every']:g}s"
    if r.get("ok") != 1:
        head += " FAIL " + str(r.get("error") or r.get("client_errors") or "")
    if "expected" not in r:
        return head
    conns = [c for c in r.get("connections_per_client", []) if c]
    return (f"{head} delivered={r['delivered']}/{r['expected']} exact_clients={r['exact_clients']}/{r['clients']} "
            f"duplicates={r['duplicates']} missing={r['missing']} out_of_order_clients={r['out_of_order']} "
            f"one_epoch={r['one_epoch']} offsets_consecutive={r['offsets_consecutive']} cuts={r['cuts']} "
            f"connections_cut={r['connections_cut']} relayed={r['connections_relayed']} "
            f"rejoins={r['rejoins']} recovered={r['recovered']} not_recovered={r['not_recovered']} "
            f"lost_events={r['lost_events']} wire_duplicates={r['wire_duplicates']} "
            f"ticker_late_max={r['ticker'].get('late_max_s')}s srvCPU={r.get('server_cpu_pct')}%"
            + (f" connections/client={statistics.median(conns)}" if conns else ""))


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--clients", type=int, default=20)
    ap.add_argument("--duration", type=float, default=10.0, help="seconds of publishing and cutting (60: the bar)")
    ap.add_argument("--rate", type=float, default=100.0, help="messages a second")
    ap.add_argument("--cut-every", type=float, default=2.0, help="seconds between two cuts")
    ap.add_argument("--cut", choices=["rst", "fin", "silent"], default="rst")
    ap.add_argument("--ping", type=float, default=25.0, help="the live endpoint's ping_interval (s)")
    ap.add_argument("--read", choices=["messages", "events"], default="messages",
                    help="`async for message in room` or `room.events()`")
    ap.add_argument("--finish", type=float, default=30.0, help="max seconds for the clients to catch up after")
    ap.add_argument("--backplane", choices=["local", "redis"], default="local")
    ap.add_argument("--reps", type=int, default=1)
    ap.add_argument("--python", default=os.path.join(lc.ROOT, ".venv", "bin", "python"),
                    help="python of the server (default: this checkout's .venv)")
    ap.add_argument("--out", default=None, help="results folder (default ./bench-results/live-drops-<stamp>)")
    ap.add_argument("--port-base", type=int, default=18300, help="first port to try (ports up to 18999)")
    ap.add_argument("--quiet-pct", type=float, default=101.0,
                    help="before each run wait until the machine is below this busy %% (101 = never wait)")
    ap.add_argument("--quiet-wait", type=float, default=60.0)
    ap.add_argument("--nice", type=int, default=0, help="nice value of the server (0 = off)")
    a = ap.parse_args()
    cl, ports, logdir, resfile = lc.prepare_run("live-drops", a.out, a.port_base, a.nice)
    print(f"# results -> {resfile}", flush=True)
    recs = []
    with open(resfile, "a") as rf:
        for rep in range(1, a.reps + 1):
            rec = run_once(a, cl, ports, logdir, rep)
            recs.append(rec)
            rf.write(json.dumps(rec) + "\n")
            rf.flush()
            print(fmt(rec), flush=True)
            for note in rec.get("server_log", [])[:4]:
                print(f"  server log: {note}")
    ok = recs and all(r.get("ok") == 1 for r in recs)
    print(f"\nbar: 100 % delivered, in order, no duplicates, in every client and run: {'MET' if ok else 'NOT MET'}")


if __name__ == "__main__":
    main()

"""bench/cluster.py --failover: how long a Sentinel failover interrupts cross-node delivery (issue 20).

One repetition: a Sentinel group (tests/sentinelutil.py SentinelGroup: a master, 2 replicas,
3 sentinels, down-after-milliseconds 1000) and two single-process nodes, A and B, running
`python -m tether run tether_history_app:app --backplane redis+sentinel://...` with
BENCH_ROOM=plain (every /broadcast connection joins the room "all", every message it sends is
app.hub.publish("all", ...)), all on the server CPU. This process (on the client CPU, one
event loop, one clock) puts a member on B's /broadcast and a publisher on A's, which sends
"F <seq> <monotonic ns>" every --interval-ms. Then, --failovers times:

  wait until messages flow (one sent after this point has reached B's member)
  ask the sentinels which server is the master (SentinelGroup.master), then
  t_kill = now; SIGKILL it by its PID (as SentinelGroup.kill_master does)
  recovery = the time B's member receives the first message *sent after t_kill*, minus t_kill
  wait until the sentinels agree on the new master; restart the killed server as its replica
  (SentinelGroup.revive: in sync, and every sentinel counting it healthy) before the next kill

Also per failover: messages sent after the kill that never arrived (lost: the engine counts a
publish made while its Redis is down as lost, it does not queue it), and when the sentinels
agreed on the new master. Bar: worst recovery <= 5 s over the failovers.
"""
from __future__ import annotations

import asyncio
import datetime
import os
import shlex
import signal
import subprocess
import time

import engines

HERE = os.path.dirname(os.path.abspath(__file__))


class Flow:
    """The publisher (node A) and the member (node B), one event loop, one clock."""

    def __init__(self, pub_url: str, sub_url: str, interval: float) -> None:
        self.pub_url, self.sub_url, self.interval = pub_url, sub_url, interval
        self.sent: list[int] = []          # send time (ns) of each seq
        self.received: dict[int, int] = {}  # seq -> receive time (ns)
        self.stopping = False

    async def run(self) -> None:
        from websockets.asyncio.client import connect
        async with connect(self.sub_url, compression=None, max_queue=None, open_timeout=10) as sub, \
                connect(self.pub_url, compression=None, max_queue=None, open_timeout=10) as pub:
            tasks = [asyncio.create_task(self._receive(sub)), asyncio.create_task(self._drain(pub)),
                     asyncio.create_task(self._publish(pub))]
            while not self.stopping:
                await asyncio.sleep(0.05)
                for t in tasks:
                    if t.done() and t.exception():
                        raise t.exception()
            for t in tasks:
                t.cancel()

    async def _publish(self, pub) -> None:
        while not self.stopping:
            seq = len(self.sent)
            self.sent.append(time.monotonic_ns())
            await pub.send(f"F {seq} {self.sent[seq]}")
            await asyncio.sleep(self.interval)

    async def _receive(self, sub) -> None:
        async for msg in sub:
            now = time.monotonic_ns()
            if isinstance(msg, str) and msg.startswith("F "):
                self.received.setdefault(int(msg.split()[1]), now)

    @staticmethod
    async def _drain(pub) -> None:
        async for _ in pub:  # node A delivers to its own member (the publisher) too
            pass

    def first_sent_after(self, t_ns: int) -> int:
        return next((seq for seq, t in enumerate(self.sent) if t > t_ns), len(self.sent))

    async def flowing(self, limit: float) -> bool:
        """Whether a message sent from now on reaches B within `limit` s."""
        start = len(self.sent)
        deadline = time.monotonic() + limit
        while time.monotonic() < deadline:
            if any(seq >= start for seq in list(self.received)[-50:]):
                return True
            await asyncio.sleep(self.interval)
        return False


async def _failovers(group, flow: Flow, count: int, limit: float, logf) -> list[dict]:
    out = []
    for i in range(1, count + 1):
        if not await flow.flowing(30):
            out.append({"failover": i, "ok": 0, "error": "messages did not flow before the kill"})
            break
        await asyncio.sleep(0.5)
        old = await asyncio.to_thread(group.master)  # asking the sentinels takes a while: before the clock
        t_kill = time.monotonic_ns()
        os.kill(old.pid, signal.SIGKILL)  # what SentinelGroup.kill_master does, timed here
        await asyncio.to_thread(old.kill)  # reaps it (and closes the helper's connection)
        logf.write(f"[failover] {i}: killed master :{old.port}\n")
        logf.flush()
        rec: dict = {"failover": i, "killed_port": old.port}
        first = flow.first_sent_after(t_kill)
        deadline = time.monotonic() + limit
        t_back = None
        while time.monotonic() < deadline:
            after = [t for seq, t in flow.received.items() if seq >= first]
            if after:
                t_back = min(after)
                break
            await asyncio.sleep(0.002)
        new = await asyncio.to_thread(group.wait_failover, old)
        rec["sentinels_agreed_s"] = round((time.monotonic_ns() - t_kill) / 1e9, 3)  # upper bound: polled after
        rec["new_master_port"] = new.port
        if t_back is None:
            rec.update(ok=0, error=f"no message sent after the kill reached B within {limit:.0f} s")
            out.append(rec)
            break
        rec["recovery_s"] = round((t_back - t_kill) / 1e9, 3)
        await asyncio.sleep(1.0)  # let what was in flight arrive before counting the lost ones
        sent_before_back = [seq for seq in range(first, len(flow.sent)) if flow.sent[seq] <= t_back]
        rec["lost_after_kill"] = sum(1 for seq in sent_before_back if seq not in flow.received)
        rec["sent_before_back"] = len(sent_before_back)
        rec["ok"] = 1
        await asyncio.to_thread(group.revive, old)
        logf.write(f"[failover] {i}: {rec}\n")
        logf.flush()
        out.append(rec)
    return out


def run(h, rep: int, ports, logdir: str, a) -> list[dict]:
    """One repetition of --failovers failovers on a fresh Sentinel group (h: bench/cluster.py)."""
    base = ports.get(2)
    pa, pb = base, base + 1
    head = {"mode": "failover", "server": "tether/sentinel", "rep": rep, "port_a": pa, "port_b": pb,
            "interval_ms": a.interval_ms, "time": datetime.datetime.now().isoformat(timespec="seconds")}
    logpath = os.path.join(logdir, f"failover.{rep}.log")
    eng = None
    nodes: list[subprocess.Popen] = []
    with open(logpath, "w") as logf:
        try:
            eng = engines.start("sentinel", cpu=int(h.SERVER_CPU), nice=h.NICE)
            head["backplane_url"] = eng.url
            for port in (pa, pb):
                argv = [f"{h.TETHER_VENV}/bin/python", "-m", "tether", "run", "tether_history_app:app",
                        "--host", "127.0.0.1", "--port", str(port), "--backplane", eng.url, "--log-level", "warning"]
                head.setdefault("node_cmds", []).append(" ".join(shlex.quote(x) for x in argv))
                logf.write(f"[cluster.py] {head['node_cmds'][-1]}  (cwd {HERE}, BENCH_ROOM=plain)\n")
                logf.flush()
                nodes.append(subprocess.Popen(["taskset", "-c", h.SERVER_CPU, *argv], cwd=HERE,
                                              env={**os.environ, "BENCH_ROOM": "plain"}, stdout=logf,
                                              stderr=subprocess.STDOUT,
                                              preexec_fn=h.child_setup))  # noqa: PLW1509 (no thread yet)
            for port, node in zip((pa, pb), nodes, strict=True):
                err, _ = h.wait_ready(port, node, logf, 1)
                if err:
                    return [{**head, "ok": 0, "error": f"node :{port}: {err}"}]
            flow = Flow(f"ws://127.0.0.1:{pa}/broadcast", f"ws://127.0.0.1:{pb}/broadcast", a.interval_ms / 1000)

            async def main() -> list[dict]:
                runner = asyncio.create_task(flow.run())
                try:
                    return await _failovers(eng.helper, flow, a.failovers, a.recovery_limit, logf)
                finally:
                    flow.stopping = True
                    await asyncio.wait_for(runner, 10)

            recs = [{**head, **r} for r in asyncio.run(main())]
            for port, node in zip((pa, pb), nodes, strict=True):
                if node.poll() is not None:
                    recs.append({**head, "ok": 0, "error": f"node :{port} died (exit {node.returncode})"})
            return recs
        except (RuntimeError, OSError, AssertionError, TimeoutError) as ex:
            return [{**head, "ok": 0, "error": f"{type(ex).__name__}: {ex}"}]
        finally:
            for node in nodes:
                h.stop(node)
            if eng:
                eng.close()


def fmt(r: dict) -> str:
    if r.get("ok") != 1:
        return f"{r['rep']} failover {r.get('failover', '-')} FAIL {r.get('error')}"
    return (f"{r['rep']} failover {r['failover']}: recovery {r['recovery_s']:.3f} s (kill -> first message sent "
            f"after it on B), sentinels agreed by {r['sentinels_agreed_s']:.2f} s, lost {r['lost_after_kill']}"
            f"/{r['sent_before_back']} sent meanwhile, master :{r['killed_port']} -> :{r['new_master_port']}")


def report(h, recs: list[dict]) -> None:
    ok = [r for r in recs if r.get("ok") == 1]
    times = [r["recovery_s"] for r in ok]
    print(f"\n## Sentinel failover: kill -9 of the master -> first message sent after it, published on node A, "
          f"received on node B ({len(ok)} of {len(recs)} failovers measured)\n")
    print("| failovers | recovery s median [min-max] | worst | sentinels agreed s median | lost meanwhile |")
    print("|---|---|---|---|---|")
    print(f"| {len(ok)} | {h.med_range(times, '{:.3f}')} | {max(times) if times else '-'} | "
          f"{h.med_range([r['sentinels_agreed_s'] for r in ok], '{:.2f}')} | "
          f"{h.med_range([r['lost_after_kill'] for r in ok])} |")
    for r in recs:
        if r.get("ok") != 1:
            print(f"  FAIL rep {r['rep']} failover {r.get('failover', '-')}: {r.get('error')}")
    met = bool(times) and len(ok) == len(recs) and max(times) <= 5.0
    print(f"\nworst recovery {max(times) if times else '-'} s over {len(ok)} failovers  "
          f"[bar <= 5 s: {'MET' if met else 'NOT MET'}]")

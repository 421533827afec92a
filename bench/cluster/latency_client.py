"""Cross-node broadcast latency client for `bench/cluster.py --latency`.

    python latency_client.py --pub ws://127.0.0.1:A/broadcast --sub ws://127.0.0.1:B/broadcast \
        [--duration 5] [--interval-us 1000] [--size 64]

One process, one event loop, so both ends read the same clock (time.monotonic_ns):
  * a receiver connects to node B's /broadcast,
  * a publisher connects to node A's /broadcast and, once a warm-up message has gone all the way
    through (A -> backplane -> B -> receiver), sends one text message every --interval-us for
    --duration seconds: "L <seq> <send monotonic_ns> " padded to --size with '.',
  * the receiver takes receive time minus the embedded send time for every L message.
What the publisher gets back (node A broadcasts to its own clients too) is read and dropped.
Prints one line "RESULT {json}" with p50/p90/p99/max in microseconds, counts, lost and out-of-order
messages; exit status 0 when the run completed (not whether the latency bar is met).
Uses the `websockets` asyncio client (e.g. from /tmp/bench-venvs/tether or the project's .venv).
"""
import argparse
import asyncio
import json
import sys
import time

from websockets.asyncio.client import connect


def pct(sorted_vals, p):
    if not sorted_vals:
        return 0.0
    k = min(len(sorted_vals) - 1, max(0, int(round(p / 100.0 * (len(sorted_vals) - 1)))))
    return sorted_vals[k]


async def run(a):
    n = max(1, int(a.duration * 1e6 / a.interval_us))
    lat_ns = []
    seen = bytearray(n)
    state = {"dups": 0, "ooo": 0, "last": -1, "warm": 0, "other": 0, "pub_back": 0}
    warm_seen = asyncio.Event()
    all_seen = asyncio.Event()

    def payload(kind, seq):
        head = f"{kind} {seq} {time.monotonic_ns()} "
        return head + "." * max(0, a.size - len(head))

    async with connect(a.sub, compression=None, max_queue=None, open_timeout=10) as sub, \
            connect(a.pub, compression=None, max_queue=None, open_timeout=10) as pub:

        async def receive():
            async for msg in sub:
                now = time.monotonic_ns()
                if isinstance(msg, bytes):
                    state["other"] += 1
                    continue
                parts = msg.split(" ", 3)
                if len(parts) < 3:
                    state["other"] += 1
                    continue
                if parts[0] == "W":
                    state["warm"] += 1
                    warm_seen.set()
                    continue
                if parts[0] != "L":
                    state["other"] += 1
                    continue
                seq, sent = int(parts[1]), int(parts[2])
                if seq >= n or seen[seq]:
                    state["dups"] += 1
                    continue
                seen[seq] = 1
                if seq < state["last"]:
                    state["ooo"] += 1
                state["last"] = max(state["last"], seq)
                lat_ns.append(now - sent)
                if len(lat_ns) == n:
                    all_seen.set()

        async def drain_pub():
            async for _ in pub:
                state["pub_back"] += 1

        rtask = asyncio.create_task(receive())
        dtask = asyncio.create_task(drain_pub())
        # barrier: warm-up messages until one has crossed the backplane (bounded)
        t_end = time.monotonic() + a.ready_timeout
        w = 0
        while not warm_seen.is_set() and time.monotonic() < t_end:
            await pub.send(payload("W", w))
            w += 1
            try:
                await asyncio.wait_for(warm_seen.wait(), 0.05)
            except asyncio.TimeoutError:
                pass
        if not warm_seen.is_set():
            rtask.cancel()
            dtask.cancel()
            return {"ok": 0, "error": f"no warm-up message crossed from pub to sub in {a.ready_timeout}s",
                    "warmups_sent": w}
        await asyncio.sleep(0.2)  # let the remaining warm-ups drain
        loop = asyncio.get_running_loop()
        interval = a.interval_us / 1e6
        t0 = loop.time()
        late = 0
        for i in range(n):
            delay = t0 + i * interval - loop.time()
            if delay > 0:
                await asyncio.sleep(delay)
            elif delay < -interval:
                late += 1
            await pub.send(payload("L", i))
        send_secs = loop.time() - t0
        try:
            await asyncio.wait_for(all_seen.wait(), a.drain_timeout)
        except asyncio.TimeoutError:
            pass
        rtask.cancel()
        dtask.cancel()

    vals = sorted(lat_ns)
    us = lambda v: round(v / 1e3, 1)  # noqa: E731
    return {
        "ok": 1 if len(vals) == n and state["dups"] == 0 else 0,
        "sent": n, "received": len(vals), "lost": n - len(vals), "dups": state["dups"], "ooo": state["ooo"],
        "send_secs": round(send_secs, 3), "send_rate": round(n / send_secs, 1) if send_secs > 0 else 0,
        "late_sends": late, "warmups_sent": w, "pub_got_back": state["pub_back"],
        "p50_us": us(pct(vals, 50)), "p90_us": us(pct(vals, 90)), "p99_us": us(pct(vals, 99)),
        "p999_us": us(pct(vals, 99.9)), "max_us": us(vals[-1]) if vals else 0,
        "mean_us": us(sum(vals) / len(vals)) if vals else 0, "min_us": us(vals[0]) if vals else 0,
    }


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--pub", required=True, help="publisher URL (node A /broadcast)")
    ap.add_argument("--sub", required=True, help="receiver URL (node B /broadcast)")
    ap.add_argument("--duration", type=float, default=5.0)
    ap.add_argument("--interval-us", type=int, default=1000)
    ap.add_argument("--size", type=int, default=64)
    ap.add_argument("--ready-timeout", type=float, default=10.0)
    ap.add_argument("--drain-timeout", type=float, default=5.0)
    a = ap.parse_args()
    for u in (a.pub, a.sub):
        host = u.split("//", 1)[-1].split("/", 1)[0].rsplit(":", 1)[0]
        if not (host.startswith("127.") or host == "localhost"):
            sys.exit("loopback targets only")
    try:
        res = asyncio.run(run(a))
    except Exception as e:  # noqa: BLE001 - report, do not hang
        res = {"ok": 0, "error": f"{type(e).__name__}: {e}"}
    print("RESULT " + json.dumps(res), flush=True)
    sys.exit(0 if res.get("ok") else 1)


if __name__ == "__main__":
    main()

#!/usr/bin/env python3
"""A/B table from the harness's results.jsonl: `tether` (new) against `tether-base` (base).

    python3 bench/ab_report.py [--harness DIR] [--threshold PCT] [--max-other PCT]
                               [--scenarios a,b] [--new tether] [--base tether-base] results.jsonl...

Per scenario: the primary metric (run.py's SCENARIOS: msg/s for echo, deliveries/s for
fan-out, p50 for rtt, KiB/conn for idle, hs/s for handshake), its median [min-max] over the ok
runs of each side, the ratio new/base and which way is better (report.py's SCEN), and a flag
when new is more than PCT % worse than base. Also the median server CPU per message (robust
when the load generator, not the server, is the bottleneck) and the median other-process CPU
(noise). Metric definitions and run selection come from the harness's run.py and report.py,
so they cannot drift from the tables report.py prints. Exit status 1 if any scenario is flagged
or has no ok run on a side.
"""
import argparse
import importlib.util
import os
import statistics
import sys
from collections import defaultdict


def load_module(path, name):
    spec = importlib.util.spec_from_file_location(name, path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def main():
    here = os.path.dirname(os.path.abspath(__file__))
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("results", nargs="+")
    ap.add_argument("--harness", default=os.path.join(here, "..", "..", "shared", "bench"))
    ap.add_argument("--threshold", type=float, default=3.0, help="flag new more than PCT %% worse")
    ap.add_argument("--max-other", type=float, default=None,
                    help="use only runs with other-process CPU <= PCT (where any; † = none, all used)")
    ap.add_argument("--scenarios", default=None)
    ap.add_argument("--new", default="tether")
    ap.add_argument("--base", default="tether-base")
    a = ap.parse_args()

    run = load_module(os.path.join(a.harness, "run.py"), "bench_run")
    report = load_module(os.path.join(a.harness, "report.py"), "bench_report")
    hib = {(sc, m): (h, unit, better, fmt or "{:.1f}") for sc, m, h, unit, better, fmt in report.SCEN}

    by = defaultdict(list)
    for r in report.load(a.results):
        by[(r["server"], r["scenario"])].append(r)
    scenarios = a.scenarios.split(",") if a.scenarios else [s for s in run.SCENARIOS if any(k[1] == s for k in by)]

    def runs(server, scen, metric):
        ok = [r for r in by.get((server, scen), []) if r.get("ok") == 1 and metric in r]
        noisy = False
        if a.max_other is not None and not metric.startswith("rss"):
            clean = [r for r in ok if r.get("other_cpu_pct", 0) <= a.max_other]
            noisy = bool(ok) and not clean
            ok = clean or ok
        return ok, noisy, len(by.get((server, scen), []))

    def med(rs, key):
        vals = [r[key] for r in rs if key in r]
        return statistics.median(vals) if vals else None

    print(f"## A/B: {a.new} (new) vs {a.base} (base), primary metric per scenario; "
          f"flag = new more than {a.threshold:g}% worse"
          + (f"; runs with other CPU <= {a.max_other:g}% († = none, all used)" if a.max_other is not None else "")
          + "\n")
    print("| scenario | metric | better | new median [min-max] | base median [min-max] | new/base | verdict "
          "| srv µs/msg new / base | other CPU % new / base | runs used/all new ; base |")
    print("|---" * 10 + "|")
    bad = []
    for scen in scenarios:
        metric = run.SCENARIOS[scen][1]
        header, unit, higher, fmt = hib.get((scen, metric), (metric, "", metric not in ("p50_us", "p99_us")
                                                             and not metric.startswith("rss"), "{:.1f}"))
        sides = []
        for server in (a.new, a.base):
            rs, noisy, n = runs(server, scen, metric)
            vals = [r[metric] for r in rs]
            if vals:
                s = fmt.format(statistics.median(vals))
                if len(vals) > 1:
                    s += f" [{fmt.format(min(vals))}-{fmt.format(max(vals))}]"
                s += " †" if noisy else ""
            else:
                s = f"FAIL (0/{n})" if n else "-"
            sides.append((rs, vals, s, n))
        (nrs, nv, ns, nn), (brs, bv, bs, bn) = sides
        if nv and bv:
            ratio = statistics.median(nv) / statistics.median(bv)
            worse = (1 - ratio) * 100 if higher else (ratio - 1) * 100  # % worse (negative = better)
            verdict = f"**WORSE {worse:.1f}%**" if worse > a.threshold else (
                f"{-worse:.1f}% better" if worse < 0 else f"{worse:.1f}% worse (within)")
            if worse > a.threshold:
                bad.append(scen)
            rtxt = f"{ratio:.3f}"
        else:
            rtxt, verdict = "-", "**NO DATA**"
            bad.append(scen)

        def cpu(rs):
            v = med(rs, "server_cpu_us_per_msg")
            return "-" if v is None else f"{v:.2f}"

        def other(rs):
            v = med(rs, "other_cpu_pct")
            return "-" if v is None else f"{v:.0f}"

        print(f"| {scen} | {metric} ({unit}) | {'higher' if higher else 'lower'} | {ns} | {bs} | {rtxt} | {verdict} "
              f"| {cpu(nrs)} / {cpu(brs)} | {other(nrs)} / {other(brs)} | {len(nv)}/{nn} ; {len(bv)}/{bn} |")
    print()
    if bad:
        print(f"FLAGGED (more than {a.threshold:g}% worse, or no data): {', '.join(bad)}")
        return 1
    print(f"OK: no scenario more than {a.threshold:g}% worse on its primary metric")
    return 0


if __name__ == "__main__":
    sys.exit(main())

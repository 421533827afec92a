"""/proc readings for bench/deflate.py: a process tree, its CPU time and RSS, the machine's
busy and steal time, and `Window`, the readings at the edges of a measured interval."""
from __future__ import annotations

import os
import time


def tree(pid: int) -> list[int]:
    """pid and all its descendants."""
    parent = {}
    for d in os.listdir("/proc"):
        if d.isdigit():
            try:
                with open(f"/proc/{d}/stat") as f:
                    parent[int(d)] = int(f.read().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                pass
    out, frontier = [pid], [pid]
    while frontier:
        p = frontier.pop()
        kids = [c for c, pp in parent.items() if pp == p]
        out += kids
        frontier += kids
    return out


def cpu_ns(pids: list[int]) -> int:
    """On-CPU time of the processes, all their threads, in ns (/proc/PID/task/TID/schedstat:
    the time /proc/PID/stat counts as utime + stime, without its 10 ms granularity)."""
    total = 0
    for pid in pids:
        try:
            tids = os.listdir(f"/proc/{pid}/task")
        except OSError:
            continue
        for t in tids:
            try:
                with open(f"/proc/{pid}/task/{t}/schedstat") as f:
                    total += int(f.read().split()[0])
            except (OSError, ValueError, IndexError):
                pass
    return total


def rss_kib(pids: list[int]) -> int:
    """Sum of VmRSS of the processes, KiB."""
    total = 0
    for pid in pids:
        try:
            with open(f"/proc/{pid}/status") as f:
                for line in f:
                    if line.startswith("VmRSS:"):
                        total += int(line.split()[1])
        except OSError:
            pass
    return total


def machine_ticks() -> tuple[float, float, float]:
    """(busy, steal, total) CPU-seconds of the whole machine, all cores, from /proc/stat."""
    with open("/proc/stat") as f:
        v = [int(x) for x in f.readline().split()[1:]]
    hz = os.sysconf("SC_CLK_TCK")
    busy = v[0] + v[1] + v[2] + v[5] + v[6]  # user nice system irq softirq
    return busy / hz, v[7] / hz, sum(v[:8]) / hz


def busy_pct(interval: float = 1.0) -> float:
    """The machine's busy CPU over `interval` seconds, % of all cores."""
    a = machine_ticks()
    time.sleep(interval)
    b = machine_ticks()
    return 100.0 * (b[0] - a[0]) / max(1e-9, b[2] - a[2])


class Window:
    """Server CPU, this process's CPU and the machine's busy time at the start of a measured
    interval; `close()` reads them again and returns the interval's figures."""

    def __init__(self, server_pids: list[int]) -> None:
        self.pids = server_pids
        self.t0 = time.perf_counter()
        self.srv0, self.cli0, self.m0 = cpu_ns(self.pids), time.process_time(), machine_ticks()

    def close(self, t_end: float | None = None) -> dict:
        """`secs` runs from the start to t_end (default: now); the CPU percentages are over
        the span up to now, which the CPU readings cover."""
        t1 = time.perf_counter()
        m1 = machine_ticks()
        srv = (cpu_ns(self.pids) - self.srv0) / 1e9
        cli = time.process_time() - self.cli0
        busy = m1[0] - self.m0[0]
        span = t1 - self.t0
        wall = (t_end if t_end is not None else t1) - self.t0
        return {"secs": round(wall, 4), "server_cpu_s": round(srv, 4), "client_cpu_s": round(cli, 4),
                "server_cpu_pct": round(100 * srv / span, 1), "client_cpu_pct": round(100 * cli / span, 1),
                "other_cpu_pct": round(100 * max(0.0, busy - srv - cli) / span, 1),
                "steal_pct": round(100 * (m1[1] - self.m0[1]) / max(1e-9, m1[2] - self.m0[2]), 1)}

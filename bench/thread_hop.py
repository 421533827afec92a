"""What a thread hop costs per call: a trivial sync callback called inline on the event loop
versus handed to a thread pool (`loop.run_in_executor`, `asyncio.to_thread`).

    .venv/bin/python bench/thread_hop.py [N]        # N calls per row (default 20000)

Two shapes per way of calling:
- `seq`: one caller awaiting each call before the next (one connection's message after
  message: the latency a hop adds to each round trip);
- `c100`: 100 callers at once (many connections: the loop's CPU per call, hops overlapping).
Also timed: the "current callback" marker (two global stores around an inline call), the
cheapest way to let a watchdog name a blocking callback, for comparison with no marker.
Run it on an otherwise idle machine; the numbers are per call, in microseconds.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import functools
import inspect
import sys
import time
from collections.abc import Awaitable, Callable
from typing import Any

from tether.params import call_maybe_async

try:
    import uvloop
except ImportError:  # pragma: no cover
    uvloop = None  # type: ignore[assignment]

_current: Any = None


def handler(ws: Any, msg: Any) -> str:
    """What a per-message sync handler does at the least: build a reply."""
    return msg


async def marked(func: Callable[..., Any], *args: Any) -> Any:
    """`call_maybe_async` with a module-level marker set around the call (what a watchdog
    that cannot see the loop thread's stack would need to name a blocking callback)."""
    global _current  # noqa: PLW0603 (what is timed: two stores of a module global)
    _current = func
    try:
        result = func(*args)
    finally:
        _current = None
    if inspect.isawaitable(result):
        result = await result
    return result


def ways(pool: concurrent.futures.ThreadPoolExecutor) -> dict[str, Callable[[], Awaitable[Any]]]:
    loop = asyncio.get_running_loop()
    return {
        "inline (call_maybe_async)": lambda: call_maybe_async(handler, None, "m"),
        "inline + marker": lambda: marked(handler, None, "m"),
        "run_in_executor (40 threads)": lambda: loop.run_in_executor(pool, functools.partial(handler, None, "m")),
        "asyncio.to_thread (default pool)": lambda: asyncio.to_thread(handler, None, "m"),
    }


async def seq(call: Callable[[], Awaitable[Any]], n: int) -> float:
    start = time.perf_counter()
    for _ in range(n):
        await call()
    return (time.perf_counter() - start) / n * 1e6


async def concurrent_callers(call: Callable[[], Awaitable[Any]], n: int, callers: int = 100) -> float:
    async def one(k: int) -> None:
        for _ in range(k):
            await call()
    start = time.perf_counter()
    await asyncio.gather(*(one(n // callers) for _ in range(callers)))
    return (time.perf_counter() - start) / (n // callers * callers) * 1e6


async def main(n: int) -> dict[str, tuple[float, float]]:
    pool = concurrent.futures.ThreadPoolExecutor(40, thread_name_prefix="hop")
    rows: dict[str, tuple[float, float]] = {}
    try:
        for name, call in ways(pool).items():
            await seq(call, min(n, 2000))  # warm up (threads started, caches hot)
            best_seq = min([await seq(call, n) for _ in range(3)])
            best_c = min([await concurrent_callers(call, n) for _ in range(3)])
            rows[name] = (best_seq, best_c)
    finally:
        pool.shutdown()
    return rows


def report(loop_name: str, rows: dict[str, tuple[float, float]]) -> None:
    inline = rows["inline (call_maybe_async)"]
    print(f"\n{loop_name} loop, Python {sys.version.split()[0]} (µs per call; x = times inline)")
    print(f"  {'way':<34} {'seq':>9} {'':>7} {'c100':>9} {'':>7}")
    for name, (s, c) in rows.items():
        print(f"  {name:<34} {s:9.2f} {s / inline[0]:6.1f}x {c:9.2f} {c / inline[1]:6.1f}x")


if __name__ == "__main__":
    n = int(sys.argv[1]) if len(sys.argv) > 1 else 20000
    if uvloop is not None:
        report("uvloop", uvloop.new_event_loop().run_until_complete(main(n)))
    report("asyncio", asyncio.new_event_loop().run_until_complete(main(n)))

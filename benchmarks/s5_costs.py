"""Where a streamed event's time goes in S5 (a diagnostic, not a target).

    benchmarks/.venv/bin/python benchmarks/s5_costs.py [--reps 9] [--events 10000]

Interleaved in one process, each repetition timing 5 jobs of ``--events`` events:

- ``riverbed``: S5 as ``bench.py`` runs it (one step writes the events, the caller reads
  ``handler.stream_events()``);
- ``asyncio``: the S5 baseline of ``baseline.py`` (an ``asyncio.Queue``);
- ``build only``: building the same riverbed events into a list, nothing else;

each with the garbage collector on (as in the benchmark) and off, and how many gen-0
collections the garbage collector ran per 1,000 events (each counts about 700 allocations
of container objects). The difference between "on" and "off" is the collector's share.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import statistics
import sys
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import baseline
import engines
import scenarios

from riverbed import Event


class Tick(Event):
    i: int


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--reps", type=int, default=9)
    parser.add_argument("--events", type=int, default=10_000)
    args = parser.parse_args()
    n = args.events

    async def build_only() -> str | None:
        built = [Tick(i=i) for i in range(n)]
        return None if len(built) == n else "lost events"

    jobs: dict[str, Callable[[], Awaitable[str | None]]] = {
        "riverbed": scenarios.s5_stream(engines.load("riverbed").api, n),
        "asyncio": baseline.s5_stream(n),
        "build only": build_only,
    }
    gen0 = [0]

    def count(phase: str, info: dict[str, int]) -> None:
        if phase == "start" and info["generation"] == 0:
            gen0[0] += 1

    async def measure() -> dict[tuple[str, bool], list[tuple[float, float]]]:
        out: dict[tuple[str, bool], list[tuple[float, float]]] = {}
        for _ in range(args.reps):
            for name, job in jobs.items():
                for collector in (True, False):
                    gc.collect()
                    if not collector:
                        gc.disable()
                    gen0[0] = 0
                    t0 = time.perf_counter()
                    for _ in range(5):
                        problem = await job()
                        if problem is not None:
                            raise SystemExit(f"{name}: INCORRECT: {problem}")
                    per_event = (time.perf_counter() - t0) / (5 * n) * 1e6
                    gc.enable()
                    out.setdefault((name, collector), []).append(
                        (per_event, gen0[0] / (5 * n) * 1000)
                    )
        return out

    gc.callbacks.append(count)
    try:
        results = asyncio.run(measure())
    finally:
        gc.callbacks.remove(count)
    print(f"S5 pieces, {n:,} events per job, {args.reps} repetitions (median)\n")
    print("| job | us/event, collector on | collector off | collector's share "
          "| gen-0 collections per 1,000 events |")
    print("|---|---:|---:|---:|---:|")
    for name in jobs:
        on = statistics.median(t for t, _ in results[(name, True)])
        off = statistics.median(t for t, _ in results[(name, False)])
        runs = statistics.median(c for _, c in results[(name, True)])
        print(f"| {name} | {on:.2f} | {off:.2f} | {on - off:.2f} | {runs:.1f} |")


if __name__ == "__main__":
    main()

"""Dispatch latency and throughput of runyard on this machine.

Launchers use the process executor, so the figures are runyard's own cost
(benchmarks/docker_overhead.py measures what a container adds).

1. One idle launcher; trivial task runs (`true`) triggered one after another:
   time from the trigger call returning to the run's start (the worker's
   PREPARING report), p50/p90/p99 over --runs runs. Also the server-side
   QUEUED -> READY (assignment) time.
2. --launchers launchers; --burst proposed runs (plan: `true`) triggered at
   once: runs per second sustained until the last one finished. (Proposed
   runs, because tracked runs and tasks of one stack run one at a time.)

Usage: python benchmarks/dispatch.py [--runs 200] [--launchers 8] [--burst 400]
"""

from __future__ import annotations

import argparse
import time
from concurrent.futures import ThreadPoolExecutor

from _stack import bench_stack, percentile

from runyard.core.states import RunKind, RunState


def latency(runs: int) -> None:
    with bench_stack() as bench:
        bench.add_launchers(1, RUNYARD_EXECUTOR="process")
        to_start, to_assign = [], []
        for _ in range(runs):
            run = bench.client.trigger("bench", RunKind.TASK, "true")
            returned = time.time()
            bench.wait_finished(run.id)
            done = {t.state: t.at.timestamp() for t in bench.client.run(run.id).transitions}
            to_start.append((done[RunState.PREPARING] - returned) * 1000)
            to_assign.append((done[RunState.READY] - done[RunState.QUEUED]) * 1000)
        print(f"dispatch latency, 1 idle launcher, {runs} trivial task runs (ms)")
        print(f"  {'measure':<34}{'p50':>8}{'p90':>8}{'p99':>8}")
        for name, values in (("trigger returned -> run started", to_start), ("queued -> assigned (server)", to_assign)):
            print(f"  {name:<34}" + "".join(f"{percentile(values, p):>8.1f}" for p in (50, 90, 99)))


def throughput(launchers: int, burst: int) -> None:
    with bench_stack() as bench:
        bench.add_launchers(launchers, RUNYARD_EXECUTOR="process")
        start = time.monotonic()
        with ThreadPoolExecutor(8) as pool:
            ids = list(pool.map(lambda _: bench.client.trigger("bench", RunKind.PROPOSED).id, range(burst)))
        for run_id in ids:
            bench.wait_finished(run_id)
        elapsed = time.monotonic() - start
        states = {bench.client.run(i).state for i in ids}
        print(f"throughput, {launchers} launchers, {burst} trivial proposed runs queued at once")
        print(f"  {burst / elapsed:.1f} runs/s ({elapsed:.1f} s in all; end states: {sorted(s.value for s in states)})")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=200)
    parser.add_argument("--launchers", type=int, default=8)
    parser.add_argument("--burst", type=int, default=400)
    args = parser.parse_args()
    latency(args.runs)
    throughput(args.launchers, args.burst)


if __name__ == "__main__":
    main()

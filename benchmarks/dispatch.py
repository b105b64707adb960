"""Dispatch latency and throughput of runyard on this machine.

Launchers use the process executor, so the figures are runyard's own cost
(benchmarks/docker_overhead.py measures what a container adds).

1. One idle launcher; trivial task runs (`true`) triggered one after another:
   time from the trigger call being sent to the run's start (the worker's
   PREPARING report), p50/p90/p99 over --runs runs; the same from the call's
   answer (a trigger answered later, as the claim ran beside it, looks
   quicker by this one); the trigger call itself; and the server-side
   QUEUED -> READY (assignment) time.
2. --launchers launchers; --burst proposed runs (plan: `true`) triggered at
   once: runs per second sustained until the last one finished. (Proposed
   runs, because tracked runs and tasks of one stack run one at a time.)

3. --servers 2: two servers on one PostgreSQL (a throwaway cluster). The
   launcher polls server A, runs are triggered on server B: pickup p50/p99
   (trigger returned -> run started) with the wake-up crossing servers
   through LISTEN/NOTIFY. Then the scheduler lease's holder is killed
   (SIGKILL) --drills times: time until the other server holds the lease,
   and until a run triggered then has started.

Usage: python benchmarks/dispatch.py [--db sqlite|postgres] [--runs 200] [--launchers 8] [--burst 400]
       python benchmarks/dispatch.py --servers 2 [--runs 200] [--drills 3]
"""

from __future__ import annotations

import argparse
import signal
import time
from concurrent.futures import ThreadPoolExecutor

from _stack import bench_cluster, bench_stack, cpu_seconds, percentile

from runyard.client import Client
from runyard.core.states import RunKind, RunState


def latency(runs: int, db: str) -> None:
    with bench_stack(db=db) as bench:
        bench.add_launchers(1, RUNYARD_EXECUTOR="process")
        sent_to_start, to_start, trigger, to_assign = [], [], [], []
        for _ in range(runs):
            sent = time.time()
            run = bench.client.trigger("bench", RunKind.TASK, "true")
            returned = time.time()
            bench.wait_finished(run.id)
            done = {t.state: t.at.timestamp() for t in bench.client.run(run.id).transitions}
            sent_to_start.append((done[RunState.PREPARING] - sent) * 1000)
            to_start.append((done[RunState.PREPARING] - returned) * 1000)
            trigger.append((returned - sent) * 1000)
            to_assign.append((done[RunState.READY] - done[RunState.QUEUED]) * 1000)
        print(f"dispatch latency ({db}), 1 idle launcher, {runs} trivial task runs (ms)")
        print(f"  {'measure':<34}{'p50':>8}{'p90':>8}{'p99':>8}")
        for name, values in (("trigger sent -> run started", sent_to_start),
                             ("trigger returned -> run started", to_start),
                             ("the trigger call", trigger),
                             ("queued -> assigned (server)", to_assign)):
            print(f"  {name:<34}" + "".join(f"{percentile(values, p):>8.1f}" for p in (50, 90, 99)))


def throughput(launchers: int, burst: int, db: str) -> None:
    with bench_stack(db=db) as bench:
        bench.add_launchers(launchers, RUNYARD_EXECUTOR="process")
        assert bench.server.proc is not None
        server = [bench.server.proc.pid]
        fleet = [launcher.proc.pid for launcher in bench.launchers if launcher.proc is not None]
        cpu0 = cpu_seconds(server), cpu_seconds(fleet)
        start = time.monotonic()
        with ThreadPoolExecutor(8) as pool:
            ids = list(pool.map(lambda _: bench.client.trigger("bench", RunKind.PROPOSED).id, range(burst)))
        for run_id in ids:
            bench.wait_finished(run_id)
        elapsed = time.monotonic() - start
        server_ms = (cpu_seconds(server) - cpu0[0]) / burst * 1000
        fleet_ms = (cpu_seconds(fleet) - cpu0[1]) / burst * 1000
        states = {bench.client.run(i).state for i in ids}
        print(f"throughput ({db}), {launchers} launchers, {burst} trivial proposed runs queued at once")
        print(f"  {burst / elapsed:.1f} runs/s ({elapsed:.1f} s in all; end states: {sorted(s.value for s in states)})")
        print(f"  CPU per run: server {server_ms:.1f} ms, launchers {fleet_ms:.1f} ms (not the runs themselves)")


def started_after(client: Client, run_id: str, since: float) -> float:
    """Wait until the run ended; ms from ``since`` to its PREPARING report."""
    while not client.logs(run_id, after=10**12, wait=20).done:
        pass
    done = {t.state: t.at.timestamp() for t in client.run(run_id).transitions}
    return (done[RunState.PREPARING] - since) * 1000


def cross_server(runs: int, drills: int) -> None:
    with bench_cluster(lease_ttl="10s") as cluster:
        b = cluster.clients[1]
        cluster.add_launchers(2, cluster.servers[0].endpoint + "," + cluster.servers[1].endpoint,
                              RUNYARD_EXECUTOR="process")
        pickups = []
        for _ in range(runs):
            run = b.trigger("bench", RunKind.TASK, "true")
            pickups.append(started_after(b, run.id, time.time()))
        print(f"two servers on one PostgreSQL: launchers poll A, {runs} runs triggered on B (ms)")
        print(f"  {'measure':<34}{'p50':>8}{'p90':>8}{'p99':>8}")
        print(f"  {'trigger on B -> started via A':<34}" + "".join(f"{percentile(pickups, p):>8.1f}"
                                                                   for p in (50, 90, 99)))
    takeovers, first_runs = [], []
    for _ in range(drills):
        with bench_cluster(lease_ttl="10s") as cluster:
            cluster.add_launchers(1, ",".join(s.endpoint for s in cluster.servers), RUNYARD_EXECUTOR="process")
            leader = next(i for i, c in enumerate(cluster.clients) if c.cluster().leading)
            other = cluster.clients[1 - leader]
            proc = cluster.servers[leader].proc
            assert proc is not None
            proc.send_signal(signal.SIGKILL)
            killed = time.time()
            # Runs do not wait for the lease: any server dispatches them.
            run = other.trigger("bench", RunKind.TASK, "true")
            first_runs.append(started_after(other, run.id, killed) / 1000)
            while not other.cluster().leading:
                time.sleep(0.02)
            takeovers.append(time.time() - killed)
    print(f"scheduler lease takeover after SIGKILL of its holder (lease 10 s), {drills} drills (s)")
    print(f"  {'measure':<34}{'p50':>8}{'max':>8}")
    print(f"  {'kill -> the other holds the lease':<34}{percentile(takeovers, 50):>8.1f}{max(takeovers):>8.1f}")
    print(f"  {'kill -> a new run started':<34}{percentile(first_runs, 50):>8.1f}{max(first_runs):>8.1f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=200)
    parser.add_argument("--launchers", type=int, default=8)
    parser.add_argument("--burst", type=int, default=400)
    parser.add_argument("--servers", type=int, default=1, choices=(1, 2))
    parser.add_argument("--drills", type=int, default=3)
    parser.add_argument("--db", choices=("sqlite", "postgres"), default="sqlite",
                        help="the single server's database (postgres: a throwaway cluster)")
    args = parser.parse_args()
    if args.servers == 2:
        cross_server(args.runs, args.drills)
        return
    latency(args.runs, args.db)
    throughput(args.launchers, args.burst, args.db)


if __name__ == "__main__":
    main()

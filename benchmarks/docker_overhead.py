"""What runyard adds on top of Docker for one trivial run.

Queue-to-finish time of a trivial task run (`true`) through server, launcher
and a fresh container, against `docker run --rm` of the same command on the
same image; medians over --runs runs each, and their ratio.

Usage: python benchmarks/docker_overhead.py [--runs 30]
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import time

from _stack import bench_stack

from runyard.config import RUNNER_IMAGE
from runyard.core.states import RunKind, RunState


def docker_run_times(runs: int) -> list[float]:
    times = []
    for _ in range(runs):
        start = time.monotonic()
        subprocess.run(["docker", "run", "--rm", "--pull", "never", RUNNER_IMAGE, "sh", "-c", "true"],
                       check=True, capture_output=True)
        times.append(time.monotonic() - start)
    return times


def runyard_times(runs: int) -> list[float]:
    times = []
    with bench_stack() as bench:
        bench.add_launchers(1, RUNYARD_EXECUTOR="docker")
        for _ in range(runs):
            run = bench.client.trigger("bench", RunKind.TASK, "true")
            bench.wait_finished(run.id)
            done = bench.client.run(run.id)
            assert done.state == RunState.FINISHED, done.reason
            by_state = {t.state: t.at for t in done.transitions}
            times.append((by_state[RunState.FINISHED] - by_state[RunState.QUEUED]).total_seconds())
    return times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=30)
    args = parser.parse_args()
    plain = statistics.median(docker_run_times(args.runs))
    ours = statistics.median(runyard_times(args.runs))
    print(f"trivial run in a fresh container, medians over {args.runs} runs")
    print(f"  docker run --rm            {plain * 1000:8.1f} ms")
    print(f"  runyard queue -> finished  {ours * 1000:8.1f} ms")
    print(f"  ratio                      {ours / plain:8.2f}x")


if __name__ == "__main__":
    main()

"""Log ingest and `run logs` of one run that prints a lot.

One launcher (process executor) runs a task that prints --mb megabytes of
lines of --line bytes, each with the stack's secret variable in it, so every
line goes through the masker. Printed:

- ingest: megabytes per second from the run's start (PERFORMING) until it
  ended, which it does only once every line is stored;
- checks: lines stored (all of them, once each) and whether the secret shows;
- `runyard run logs`: the CLI reading the whole log back after the run ended
  (sealed into the object store): time, and the CLI's peak RSS; and the
  server's peak RSS over the whole benchmark.

Usage: python benchmarks/logs.py [--db sqlite|postgres] [--mb 50] [--line 120]
"""

from __future__ import annotations

import argparse
import resource
import subprocess
import sys
import time
from pathlib import Path

from _stack import bench_stack

from runyard.core.states import RunKind, RunState
from runyard.devstack import clean_env, make_shell_stack
from runyard.wire import EnvVarIO

SECRET = "hunter2-bench-secret-value"


def peak_rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return 0.0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--db", choices=("sqlite", "postgres"), default="sqlite")
    parser.add_argument("--mb", type=float, default=50.0, help="megabytes the run prints")
    parser.add_argument("--line", type=int, default=120, help="bytes per line, newline included")
    args = parser.parse_args()
    filler = "x" * max(0, args.line - len("step  ") - len(SECRET) - 1)
    lines = int(args.mb * 1_000_000 // args.line)
    command = f'yes "step $BENCH_SECRET {filler}" | head -n {lines}'
    with bench_stack("bench", db=args.db) as bench:
        assert bench.server.proc is not None
        src = bench.tmp / "logsrc"
        src.mkdir()
        (src / "README").write_text("log benchmark\n")
        secret = EnvVarIO(name="BENCH_SECRET", value=SECRET, secret=True)
        make_shell_stack(bench.client, "loud", "bench", src, {"plan": "true"}, env=[secret])
        bench.add_launchers(1, RUNYARD_EXECUTOR="process")
        run = bench.client.trigger("loud", RunKind.TASK, command)
        bench.wait_finished(run.id)
        done = bench.client.run(run.id)
        at = {t.state: t.at.timestamp() for t in done.transitions}
        took = at[done.state] - at[RunState.PERFORMING]
        size = lines * args.line / 1_000_000

        began = time.monotonic()
        env = clean_env(RUNYARD_ENDPOINT=bench.server.endpoint, RUNYARD_API_KEY=bench.server.admin_key)
        reader = subprocess.Popen([sys.executable, "-m", "runyard", "run", "logs", run.id], env=env,
                                  stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        assert reader.stdout is not None
        count = leaked = masked = 0
        for raw in reader.stdout:
            count += 1
            leaked += SECRET.encode() in raw
            masked += b"***" in raw
        reader.wait()
        read_s = time.monotonic() - began
        cli_rss = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024  # the largest child: the CLI
        server_rss = peak_rss_mb(bench.server.proc.pid)
    print(f"one run printing {size:.0f} MB in {lines} lines of {args.line} bytes, each with a secret ({args.db})")
    print(f"  run state: {done.state.value}; lines stored and read back: {count - 1} of {lines} (+1 phase line); "
          f"masked: {masked}; secret shown: {leaked}")
    print(f"  ingest: {size / took:.1f} MB/s ({took:.1f} s from PERFORMING to {done.state.value})")
    print(f"  `run logs` of the sealed log: {read_s:.1f} s, {size / read_s:.1f} MB/s, "
          f"CLI peak RSS {cli_rss:.0f} MB")
    print(f"  server peak RSS over the benchmark: {server_rss:.0f} MB")


if __name__ == "__main__":
    main()

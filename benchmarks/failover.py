"""Failover time of a standby: kill -9 the primary, then how long until the
standby holds the lease, and until a run triggered right after the kill has
started (the launcher moves to the standby by itself).

How the primary is lost (--lose):
  kill   kill -9: its port refuses connections at once (the default);
  host   it is stopped (SIGSTOP) and every packet to and from its port is
         dropped (iptables, as root): a machine or a region that is gone,
         which clients learn of only by waiting;
  freeze it is stopped (SIGSTOP) only: its kernel still takes connections
         and acknowledges what is sent, but nothing answers.

A primary and a standby (two sites) on one throwaway PostgreSQL, one
launcher (process executor) that knows both; a fresh pair per drill.

Usage: python benchmarks/failover.py [--drills 10] [--lease 10s] [--lose kill|host|freeze]
"""

from __future__ import annotations

import argparse
import contextlib
import signal
import tempfile
import threading
import time
from pathlib import Path

from _stack import percentile

from runyard.client import Client
from runyard.core.errors import Unavailable
from runyard.core.states import RunKind, RunState
from runyard.devstack import (
    LauncherProcess,
    PostgresCluster,
    ServerProcess,
    free_port,
    make_pool,
    make_shell_stack,
    packets_dropped,
    wait_for,
    wait_for_launchers,
)


def drill(postgres: PostgresCluster, lease: str, lose: str) -> tuple[float, float]:
    tmp = Path(tempfile.mkdtemp(prefix="runyard-failover-"))
    url = postgres.new_database()
    ports = free_port(), free_port()
    common = {"RUNYARD_SECRET_KEY": "failover-benchmark-secret", "RUNYARD_SCHEDULER_LEASE_TTL": lease,
              "RUNYARD_BLOB_URL": f"file://{tmp / 'blobs'}",
              "RUNYARD_PUBLIC_ENDPOINTS": ",".join(f"http://127.0.0.1:{p}" for p in ports)}
    primary = ServerProcess(tmp / "a" / "data", ports[0], database_url=url,
                            extra_env={**common, "RUNYARD_SITE": "one"}).start()
    wait_for(lambda: primary.role() == "primary", 30, "the primary to lead")
    standby = ServerProcess(tmp / "b" / "data", ports[1], admin_key=primary.admin_key, database_url=url,
                            extra_env={**common, "RUNYARD_SITE": "two", "RUNYARD_STANDBY": "true"}).start()
    client = Client([primary.endpoint, standby.endpoint], primary.admin_key)
    launcher = None
    stack = contextlib.ExitStack()
    try:
        creds = make_pool(client, "bench")
        src = tmp / "src"
        src.mkdir()
        (src / "README").write_text("failover benchmark\n")
        make_shell_stack(client, "bench", "bench", src, {"plan": "true"})
        launcher = LauncherProcess(creds, tmp / "work", extra_env={"RUNYARD_EXECUTOR": "process"}, quiet=True)
        launcher.start()
        wait_for_launchers(client, "bench", 1, set(), [launcher])
        assert primary.proc is not None
        if lose == "host":
            stack.enter_context(packets_dropped(ports[0]))
        primary.proc.send_signal(signal.SIGKILL if lose == "kill" else signal.SIGSTOP)
        killed, killed_at = time.monotonic(), time.time()
        took_lease: list[float] = []

        def watch() -> None:  # apart: the trigger below may wait on the lost primary
            while standby.role() != "primary":
                time.sleep(0.02)
            took_lease.append(time.monotonic() - killed)

        watcher = threading.Thread(target=watch, daemon=True)
        watcher.start()
        run_id = ""
        while not run_id:
            with contextlib.suppress(Unavailable):  # nobody serves for a while: that is the point
                run_id = client.trigger("bench", RunKind.TASK, "true").id
            time.sleep(0.02)
        watcher.join()
        while not client.run(run_id).state.terminal:
            time.sleep(0.02)
        preparing = next(t.at for t in client.run(run_id).transitions if t.state == RunState.PREPARING)
        return took_lease[0], preparing.timestamp() - killed_at
    finally:
        stack.close()
        client.close()
        if launcher is not None:
            launcher.stop()
        primary.stop(signal.SIGTERM if lose == "kill" else signal.SIGKILL)
        standby.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--drills", type=int, default=10)
    parser.add_argument("--lease", default="10s", help="RUNYARD_SCHEDULER_LEASE_TTL of both servers")
    parser.add_argument("--lose", choices=("kill", "host", "freeze"), default="kill",
                        help="how the primary is lost (see above)")
    args = parser.parse_args()
    postgres = PostgresCluster()
    postgres.start()
    try:
        results = [drill(postgres, args.lease, args.lose) for _ in range(args.drills)]
    finally:
        postgres.stop()
    leases, runs = [r[0] for r in results], [r[1] for r in results]
    how = {"kill": "kill -9 of the primary", "host": "the primary's host lost", "freeze": "SIGSTOP of the primary"}
    print(f"failover after {how[args.lose]}, lease {args.lease}, {args.drills} drills (s)")
    print(f"  {'measure':<40}{'p50':>8}{'max':>8}")
    print(f"  {'lost -> the standby holds the lease':<40}{percentile(leases, 50):>8.1f}{max(leases):>8.1f}")
    print(f"  {'lost -> a run triggered then started':<40}{percentile(runs, 50):>8.1f}{max(runs):>8.1f}")


if __name__ == "__main__":
    main()

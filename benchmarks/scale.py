"""One server and N workers: what idle workers cost, and how fast a run wakes one.

N simulated workers (one asyncio process with a minimal HTTP/1.1 client;
one connection each for the poll and for heartbeats, as a launcher has) do what a launcher does: ask for
a challenge, sign it with the pool's key and register. An idle one holds a
long poll for work (25 s) and, as the server counts a held poll as its
heartbeat, sends no heartbeat while it holds one; a --busy share of them
(10 %) stands for launchers busy with a long run: they hold no poll and send
a heartbeat every 5 s. An idle worker handed a run reports it PREPARING,
PERFORMING and FINISHED, as a trivial task run would.

For each N it prints:

- idle: the server's CPU (% of one core) and RSS while the N workers only
  poll and heartbeat, and heartbeat latency p50/p99 over that window;
- wake: --wakes task runs triggered one after another: time from the
  trigger request being sent to a worker holding the run (its poll answered),
  p50/p99, and the server CPU each run cost beyond the idle load.

With --db postgres the server uses a throwaway PostgreSQL cluster, whose
processes' CPU is shown on its own.

Usage: python benchmarks/scale.py [--workers 100,500,1000] [--db sqlite|postgres] [--busy 0.1] [--idle 20]
                                  [--wakes 100]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from _stack import Bench, bench_stack, cpu_seconds, percentile

from runyard.core.states import RunKind
from runyard.crypto import PoolToken, load_private_key_b64, sign_challenge
from runyard.wire import API

HEARTBEAT = 5.0
LONG_POLL = 25.0


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def postgres_pids(data_dir: Path) -> list[int]:
    """The postmaster of the cluster at ``data_dir`` and its children."""
    main = int((data_dir / "postmaster.pid").read_text().split()[0])
    children = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1]) == main:
                    children.append(int(entry.name))
            except (FileNotFoundError, ProcessLookupError):
                continue
    return [main, *children]


class Connection:
    """One keep-alive HTTP/1.1 connection speaking just what the worker API
    needs: a light client, so a thousand workers fit in one process and its
    own cost does not show in the latencies measured."""

    def __init__(self, host: str, port: int) -> None:
        self.host, self.port = host, port
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None

    async def post(self, path: str, body: object = None, token: str = "") -> tuple[int, Any]:
        """POST on the kept-alive connection; once more on a new one if the
        server had closed it (uvicorn closes one idle for 5 s, as a heartbeat's is)."""
        try:
            return await self._post(path, body, token)
        except (ConnectionError, IndexError):
            self.close()
            return await self._post(path, body, token)

    async def _post(self, path: str, body: object, token: str) -> tuple[int, Any]:
        if self.writer is None:
            self.reader, self.writer = await asyncio.open_connection(self.host, self.port)
        assert self.reader is not None
        payload = json.dumps(body).encode() if body is not None else b""
        head = f"POST {path} HTTP/1.1\r\nHost: {self.host}\r\nContent-Length: {len(payload)}\r\n"
        if body is not None:
            head += "Content-Type: application/json\r\n"
        if token:
            head += f"Authorization: Bearer {token}\r\n"
        self.writer.write(head.encode() + b"\r\n" + payload)
        status = int((await self.reader.readline()).split()[1])
        length = 0
        while (line := await self.reader.readline()) not in (b"\r\n", b""):
            name, _, value = line.decode().partition(":")
            if name.lower() == "content-length":
                length = int(value)
        data = await self.reader.readexactly(length) if length else b""
        return status, json.loads(data) if data else None

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
        self.reader = self.writer = None


@dataclass
class Fleet:
    host: str
    port: int
    pool_id: str
    certificate: str
    key_b64: str
    beats: list[tuple[float, float]] = field(default_factory=list)  # (when, ms)
    held: dict[str, float] = field(default_factory=dict)  # run id -> when a worker got it
    errors: list[str] = field(default_factory=list)
    stopping: asyncio.Event = field(default_factory=asyncio.Event)
    busy: int = 0  # workers 0 .. busy-1 stand for launchers busy with a long run

    async def worker(self, index: int, key: Any, registered: asyncio.Queue[int]) -> None:
        polls, beats = Connection(self.host, self.port), Connection(self.host, self.port)
        try:
            _, challenge = await polls.post(f"{API}/worker/challenge", {"pool_id": self.pool_id})
            status, reply = await polls.post(f"{API}/worker/register", {
                "pool_id": self.pool_id, "certificate": self.certificate, "challenge": challenge["challenge"],
                "signature": sign_challenge(key, challenge["challenge"]),
                "metadata": {"sim": str(index)}, "version": "benchmark"})
            if status != 201:
                self.errors.append(f"registration refused ({status}): {reply}")
                await registered.put(-1)
                return
            await registered.put(index)
            polling = asyncio.Event()  # a poll is held: the server counts it as the heartbeat
            beating = asyncio.create_task(self.heartbeats(beats, reply["token"], polling))
            try:
                if index >= self.busy:
                    await self.polls(polls, reply["token"], polling, reply.get("poll_keeps_alive", False))
                else:
                    await self.stopping.wait()
            finally:
                beating.cancel()
        finally:
            polls.close()
            beats.close()

    async def heartbeats(self, http: Connection, token: str, polling: asyncio.Event) -> None:
        await asyncio.sleep(random.uniform(0, HEARTBEAT))
        while not self.stopping.is_set():
            if polling.is_set():  # as a launcher: no heartbeat while a poll that keeps it alive is held
                await asyncio.sleep(HEARTBEAT)
                continue
            began = time.perf_counter()
            try:
                status, _ = await http.post(f"{API}/worker/heartbeat", token=token)
            except (OSError, ValueError, IndexError) as exc:
                self.errors.append(f"heartbeat: {exc!r}")
                await asyncio.sleep(HEARTBEAT)
                continue
            if status == 200:
                self.beats.append((time.time(), (time.perf_counter() - began) * 1000))
            else:
                self.errors.append(f"heartbeat: {status}")
            await asyncio.sleep(HEARTBEAT)

    async def polls(self, http: Connection, token: str, polling: asyncio.Event, keeps_alive: bool) -> None:
        while not self.stopping.is_set():
            if keeps_alive:
                polling.set()
            try:
                status, answer = await http.post(f"{API}/worker/poll?wait={LONG_POLL}", token=token)
            except (OSError, ValueError, IndexError) as exc:
                status, answer = 0, repr(exc)
            finally:
                polling.clear()
            if status != 200:
                self.errors.append(f"poll: {status} {answer}")
                await asyncio.sleep(1)
                continue
            keeps_alive = answer.get("poll_keeps_alive", False)
            assignment = answer.get("assignment")
            if assignment is None:
                continue
            run_id, lease = assignment["run"]["id"], assignment["lease"]
            self.held[run_id] = time.time()
            for state in ("PREPARING", "PERFORMING", "FINISHED"):
                status, _ = await http.post(f"{API}/worker/runs/{run_id}/transition",
                                            {"lease": lease, "state": state}, token)
                if status != 200:
                    self.errors.append(f"report {state}: {status}")


async def wake(bench: Bench, fleet: Fleet) -> float:
    """Trigger a trivial task run: ms from sending the trigger to a worker
    holding the run; returns once the run has ended."""
    sent = time.time()
    run = await asyncio.to_thread(bench.client.trigger, "bench", RunKind.TASK, "true")
    while run.id not in fleet.held:
        await asyncio.sleep(0.001)
    await asyncio.to_thread(bench.wait_finished, run.id)
    return (fleet.held[run.id] - sent) * 1000


async def measure(bench: Bench, n: int, busy: float, idle: float, wakes: int,
                  pg_dir: Path | None) -> dict[str, float]:
    assert bench.server.proc is not None
    server = bench.server.proc.pid
    certificate = PoolToken.decode(bench.creds.token).certificate_pem
    fleet = Fleet("127.0.0.1", bench.server.port, bench.creds.pool_id, certificate, bench.creds.key_b64,
                  busy=round(n * busy))
    key = load_private_key_b64(bench.creds.key_b64)
    registered: asyncio.Queue[int] = asyncio.Queue()
    began = time.monotonic()
    tasks = [asyncio.create_task(fleet.worker(i, key, registered)) for i in range(n)]
    for _ in range(n):
        if await registered.get() < 0:
            raise SystemExit(f"a worker could not register: {fleet.errors[0]}")
    took = time.monotonic() - began
    # A server's first run compiles the queries of a claim (tens of ms): a
    # server in service has long done that, so it is not counted.
    await wake(bench, fleet)
    await asyncio.sleep(HEARTBEAT + 2)  # every worker holds a poll and has sent a heartbeat
    pg = postgres_pids(pg_dir) if pg_dir else []
    cpu0, pg0, t0 = cpu_seconds([server]), cpu_seconds(pg), time.monotonic()
    window_start = time.time()
    await asyncio.sleep(idle)
    cpu1, pg1, t1 = cpu_seconds([server]), cpu_seconds(pg), time.monotonic()
    idle_rate = (cpu1 - cpu0) / (t1 - t0)
    window = [ms for when, ms in fleet.beats if when >= window_start]
    rss = rss_mb(server)

    picks: list[float] = []
    w0, wt0 = cpu_seconds([server]), time.monotonic()
    for _ in range(wakes):
        picks.append(await wake(bench, fleet))
    w1, wt1 = cpu_seconds([server]), time.monotonic()
    per_run = ((w1 - w0) - idle_rate * (wt1 - wt0)) / wakes * 1000

    fleet.stopping.set()
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
    if fleet.errors:
        print(f"  N={n}: {len(fleet.errors)} requests failed; the first: {fleet.errors[0]}")
    return {"n": n, "register_s": took, "cpu": idle_rate * 100, "pg_cpu": (pg1 - pg0) / (t1 - t0) * 100,
            "rss": rss, "beats": len(window), "hb50": percentile(window, 50), "hb99": percentile(window, 99),
            "wake50": percentile(picks, 50), "wake99": percentile(picks, 99), "cpu_run": per_run}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--workers", default="100,500,1000", help="comma-separated N")
    parser.add_argument("--db", choices=("sqlite", "postgres"), default="sqlite")
    parser.add_argument("--busy", type=float, default=0.1,
                        help="share of the workers busy with a long run: no poll, a heartbeat every 5 s")
    parser.add_argument("--idle", type=float, default=20.0, help="seconds of the idle window")
    parser.add_argument("--wakes", type=int, default=100, help="runs triggered one after another")
    args = parser.parse_args()
    rows = []
    for n in (int(x) for x in args.workers.split(",")):
        with bench_stack(db=args.db, RUNYARD_WORKER_LOST_AFTER="60s") as bench:
            pg_dir = bench.postgres.dir / "data" if bench.postgres is not None else None
            rows.append(asyncio.run(measure(bench, n, args.busy, args.idle, args.wakes, pg_dir)))
    print(f"one server ({args.db}), N simulated workers: idle ones hold long polls of {LONG_POLL:.0f} s, "
          f"{args.busy:.0%} busy ones send a heartbeat every {HEARTBEAT:.0f} s")
    head = (f"  {'N':>5}{'register s':>11}{'CPU %':>8}{'RSS MB':>8}{'hb p50':>8}{'hb p99':>8}"
            f"{'wake p50':>10}{'wake p99':>10}{'CPU ms/run':>11}")
    if args.db == "postgres":
        head += f"{'PG CPU %':>10}"
    print(head)
    for r in rows:
        line = (f"  {r['n']:>5}{r['register_s']:>11.1f}{r['cpu']:>8.1f}{r['rss']:>8.0f}{r['hb50']:>8.1f}"
                f"{r['hb99']:>8.1f}{r['wake50']:>10.1f}{r['wake99']:>10.1f}{r['cpu_run']:>11.1f}")
        if args.db == "postgres":
            line += f"{r['pg_cpu']:>10.1f}"
        print(line)
    print("  (latencies in ms; CPU % of one core, idle window; CPU ms/run beyond the idle load)")


if __name__ == "__main__":
    main()

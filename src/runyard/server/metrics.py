"""Prometheus metrics of the server; the only server module importing prometheus_client.

Gauges (runs pending and running, workers by status, per pool) and the
count of ended runs are read from the database at scrape time, so every
server process reports the same totals. The histograms (queue time, run
time) are observed by the server that made each move.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterator

from prometheus_client import CollectorRegistry, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from runyard.core.states import RunState
from runyard.server.services import Context
from runyard.server.services.pools import pool_stats

QUEUE_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 900)
DURATION_BUCKETS = (0.1, 0.5, 1, 5, 10, 30, 60, 300, 900, 1800, 3600, 7200)


class _PoolGauges(Collector):
    def __init__(self, ctx: Context) -> None:
        self.ctx = ctx

    def collect(self) -> Iterator[Metric]:
        pending = GaugeMetricFamily("runyard_runs_pending", "Runs waiting for a worker", labels=["pool"])
        running = GaugeMetricFamily("runyard_runs_running", "Runs on a worker now", labels=["pool"])
        workers = GaugeMetricFamily("runyard_workers", "Workers by status", labels=["pool", "status"])
        ended = CounterMetricFamily("runyard_runs_ended", "Runs by end state", labels=["pool", "state"])
        with self.ctx.tx() as repo:
            names = {pool.id: pool.name for pool in repo.pools()}
            for (pool_id, state), count in sorted(repo.count_ended_runs().items()):
                ended.add_metric([names.get(pool_id, pool_id), state.value], float(count))
            for pool in repo.pools():
                stats = pool_stats(repo, pool.id)
                pending.add_metric([pool.name], float(stats.queue_length))
                running.add_metric([pool.name], float(stats.running))
                for status, count in stats.workers.items():
                    workers.add_metric([pool.name, status.value], float(count))
        yield pending
        yield running
        yield workers
        yield ended


class ServerMetrics:
    """What the run service reports as runs move."""

    def __init__(self, ctx: Context) -> None:
        self.ctx = ctx
        self.registry = CollectorRegistry()
        self.queue_time = Histogram("runyard_run_queue_seconds", "Time from queued to assigned",
                                    ["pool"], buckets=QUEUE_BUCKETS, registry=self.registry)
        self.duration = Histogram("runyard_run_duration_seconds", "Time from queued to the end",
                                  ["pool", "state"], buckets=DURATION_BUCKETS, registry=self.registry)
        self.registry.register(_PoolGauges(ctx))
        self._pool_names: dict[str, str] = {}
        # Observations arrive inside the run service's transactions, where
        # looking up a pool's name would wait on that very transaction's lock;
        # they are queued and labelled at scrape time instead.
        self._pending: deque[tuple[str, str, RunState | None, float]] = deque(maxlen=100_000)

    def assigned(self, pool_id: str, waited: float) -> None:
        self._pending.append(("assigned", pool_id, None, max(waited, 0.0)))

    def ended_run(self, pool_id: str, state: RunState, took: float) -> None:
        self._pending.append(("ended", pool_id, state, max(took, 0.0)))

    def _flush(self) -> None:
        if not self._pending:
            return
        with self.ctx.tx() as repo:
            names = {p.id: p.name for p in repo.pools()}
        self._pool_names.update(names)
        while self._pending:
            what, pool_id, state, seconds = self._pending.popleft()
            pool = self._pool_names.get(pool_id, pool_id)
            if what == "assigned":
                self.queue_time.labels(pool).observe(seconds)
            elif state is not None:
                self.duration.labels(pool, state.value).observe(seconds)

    def render(self) -> bytes:
        self._flush()
        return generate_latest(self.registry)

"""The loop that finds lost workers and fails their runs."""

from __future__ import annotations

import asyncio
import contextlib
import logging

from starlette.concurrency import run_in_threadpool

from runyard.server.services.workers import WorkerService

log = logging.getLogger("runyard.server.reaper")


class Reaper:
    """Every ``interval`` seconds, remove workers silent for ``lost_after``."""

    def __init__(self, workers: WorkerService, lost_after: float, interval: float, started_at: float) -> None:
        self.workers = workers
        self.lost_after = lost_after
        self.interval = interval
        self.started_at = started_at
        self._stop = asyncio.Event()

    async def run(self) -> None:
        while not self._stop.is_set():
            try:
                lost = await run_in_threadpool(self.workers.reap, self.lost_after, self.started_at)
                for worker_id in lost:
                    log.warning("worker %s lost: no heartbeat for %.0fs", worker_id, self.lost_after)
            except Exception:
                log.exception("reaper pass failed")
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stop.wait(), self.interval)

    def stop(self) -> None:
        self._stop.set()

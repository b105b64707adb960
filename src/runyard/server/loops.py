"""Background loops of the server (the reaper, the drift scheduler)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable

from starlette.concurrency import run_in_threadpool

log = logging.getLogger("runyard.server")


class Loop:
    """Calls ``tick`` (a blocking function) every ``interval`` seconds until stopped."""

    def __init__(self, name: str, tick: Callable[[], object], interval: float) -> None:
        self.name = name
        self.tick = tick
        self.interval = interval
        self._stop = asyncio.Event()

    async def run(self) -> None:
        while not self._stop.is_set():
            try:
                await run_in_threadpool(self.tick)
            except Exception:
                log.exception("%s pass failed", self.name)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stop.wait(), self.interval)

    def stop(self) -> None:
        self._stop.set()

"""Wakes long polls the moment something they wait for changes.

Each topic (``pool:<id>``, ``run:<id>``) has a generation counter. A waiter
reads the generation, checks the database, and if there is nothing for it,
waits for the generation to move: a change between the check and the wait is
never missed. ``notify`` may be called from any thread.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Sequence
from typing import Protocol


class Bus(Protocol):
    """Carries topics to the other servers of the deployment (PostgreSQL's
    LISTEN/NOTIFY); the notifier wakes local waiters for the ones it receives."""

    def publish(self, topics: Sequence[str]) -> None: ...

    def stop(self) -> None: ...


class Notifier:
    def __init__(self) -> None:
        self.bus: Bus | None = None
        self._lock = threading.Lock()
        self._generations: dict[str, int] = {}
        self._waiters: dict[str, list[tuple[asyncio.AbstractEventLoop, asyncio.Future[None]]]] = {}
        self._closed = False

    @property
    def closed(self) -> bool:
        """The server is shutting down: long polls answer at once with what they have."""
        return self._closed

    def close(self) -> None:
        """Wake every waiter and make later waits return at once (shutdown)."""
        if self.bus is not None:
            self.bus.stop()
        with self._lock:
            self._closed = True
            waiters = [w for ws in self._waiters.values() for w in ws]
            self._waiters.clear()
        for loop, fut in waiters:
            loop.call_soon_threadsafe(_resolve, fut)

    def generation(self, topic: str) -> int:
        with self._lock:
            return self._generations.get(topic, 0)

    def notify(self, *topics: str) -> None:
        """Wake the waiters of ``topics`` here and, through the bus, on every other server."""
        self.wake(*topics)
        if self.bus is not None:
            self.bus.publish(topics)

    def wake_all(self) -> None:
        """Every waiter looks again (after wake-ups may have been missed)."""
        with self._lock:
            topics = list(self._waiters)
        self.wake(*topics)

    def wake(self, *topics: str) -> None:
        """Wake the waiters of ``topics`` on this server only."""
        for topic in topics:
            with self._lock:
                self._generations[topic] = self._generations.get(topic, 0) + 1
                waiters = self._waiters.pop(topic, [])
            for loop, fut in waiters:
                loop.call_soon_threadsafe(_resolve, fut)

    def waiting(self, topic: str) -> int:
        """How many waiters are parked on ``topic`` now (for tests and metrics)."""
        with self._lock:
            return len(self._waiters.get(topic, []))

    async def wait(self, topic: str, seen: int, timeout: float) -> bool:
        """Wait until ``topic`` moves past generation ``seen``; False on timeout."""
        loop = asyncio.get_running_loop()
        fut: asyncio.Future[None] = loop.create_future()
        with self._lock:
            if self._closed:
                return False
            if self._generations.get(topic, 0) != seen:
                return True
            self._waiters.setdefault(topic, []).append((loop, fut))
        try:
            await asyncio.wait_for(fut, timeout)
            return True
        except TimeoutError:
            return False
        finally:
            with self._lock:
                waiters = self._waiters.get(topic, [])
                if (loop, fut) in waiters:
                    waiters.remove((loop, fut))


def _resolve(fut: asyncio.Future[None]) -> None:
    if not fut.done():
        fut.set_result(None)


def pool_topic(pool_id: str) -> str:
    return f"pool:{pool_id}"


def run_topic(run_id: str) -> str:
    return f"run:{run_id}"

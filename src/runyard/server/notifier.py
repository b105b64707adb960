"""Wakes long polls the moment something they wait for changes.

Each topic (``pool:<id>``, ``run:<id>``, ...) has a generation counter. A
waiter reads the generation, checks the database, and if there is nothing for
it, waits for the generation to move: a change between the check and the wait
is never missed. ``notify`` may be called from any thread.

Most waiters wake together. Workers' polls wait *their turn* on their pool's
topic: a queued run wakes one idle poll, not every poll of the pool; the poll
that claims a run passes the turn on, so a burst of runs wakes as many polls
as it has runs, and an idle pool's cost does not grow with its size.
"""

from __future__ import annotations

import asyncio
import enum
import threading
from collections.abc import Mapping, Sequence
from typing import Protocol


class Woken(enum.StrEnum):
    """How a wait on topics ended; TIMEOUT is false."""

    TURN = "turn"  # woken as the one waiter of its turn topic: its move is this waiter's to act on
    MOVED = "moved"  # a topic moved (or had before the wait began)
    TIMEOUT = ""

    def __bool__(self) -> bool:
        return self is not Woken.TIMEOUT

class Bus(Protocol):
    """Carries topics to the other servers of the deployment (PostgreSQL's
    LISTEN/NOTIFY); the notifier wakes local waiters for the ones it receives."""

    def publish(self, topics: Sequence[str]) -> None: ...

    def stop(self) -> None: ...


class _Waiter:
    """One parked wait: woken by any of its topics; ``exclusive`` names the
    topic on which it waits its turn instead of waking with everyone."""

    __slots__ = ("by_turn", "exclusive", "fut", "loop", "topics")

    def __init__(self, loop: asyncio.AbstractEventLoop, topics: tuple[str, ...], exclusive: str | None) -> None:
        self.loop = loop
        self.fut: asyncio.Future[None] = loop.create_future()
        self.topics = topics
        self.exclusive = exclusive
        self.by_turn = False  # woken as the one waiter of its exclusive topic

    def resolve(self) -> None:
        self.loop.call_soon_threadsafe(_resolve, self.fut)


class Notifier:
    def __init__(self) -> None:
        self.bus: Bus | None = None
        self._lock = threading.Lock()
        self._generations: dict[str, int] = {}
        self._waiters: dict[str, list[_Waiter]] = {}
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
            waiters = self._take_all()
        for waiter in waiters:
            waiter.resolve()

    def generation(self, topic: str) -> int:
        with self._lock:
            return self._generations.get(topic, 0)

    def generations(self, *topics: str) -> dict[str, int]:
        with self._lock:
            return {topic: self._generations.get(topic, 0) for topic in topics}

    def notify(self, *topics: str) -> None:
        """Wake the waiters of ``topics`` here and, through the bus, on every other server."""
        self.wake(*topics)
        if self.bus is not None:
            self.bus.publish(topics)

    def wake_all(self) -> None:
        """Every waiter looks again (after wake-ups may have been missed);
        ANY_TOPIC moves too, for what is remembered until a topic moves."""
        with self._lock:
            topics = [*self._generations, *self._waiters, ANY_TOPIC]
            for topic in topics:
                self._generations[topic] = self._generations.get(topic, 0) + 1
            waiters = self._take_all()
        for waiter in waiters:
            waiter.resolve()

    def wake(self, *topics: str) -> None:
        """Move ``topics`` on, on this server only: every ordinary waiter of a
        topic wakes, and of those waiting their turn on it, the first."""
        for topic in topics:
            with self._lock:
                self._generations[topic] = self._generations.get(topic, 0) + 1
                woken = self._take(topic, everyone=True)
            for waiter in woken:
                waiter.resolve()

    def pass_on(self, topic: str) -> bool:
        """Wake the next waiter whose turn it is on ``topic`` (this server only),
        without moving the topic on: the one woken before found something and
        more may be there. False if nobody waits their turn."""
        with self._lock:
            woken = self._take(topic, everyone=False)
        for waiter in woken:
            waiter.resolve()
        return bool(woken)

    def _take(self, topic: str, everyone: bool) -> list[_Waiter]:
        """Unpark the waiters a change of ``topic`` wakes (lock held)."""
        parked = self._waiters.get(topic, [])
        woken = [w for w in parked if w.exclusive != topic] if everyone else []
        turn = next((w for w in parked if w.exclusive == topic), None)
        if turn is not None:
            turn.by_turn = True
            woken.append(turn)
        for waiter in woken:
            self._unpark(waiter)
        return woken

    def _take_all(self) -> list[_Waiter]:
        """Unpark every waiter (lock held)."""
        waiters = list({id(w): w for ws in self._waiters.values() for w in ws}.values())
        self._waiters.clear()
        return waiters

    def _unpark(self, waiter: _Waiter) -> bool:
        """Take ``waiter`` off its topics (lock held); False if a wake had
        taken it already."""
        parked = False
        for topic in waiter.topics:
            rest = self._waiters.get(topic)
            if rest is not None and waiter in rest:
                parked = True
                rest.remove(waiter)
                if not rest:
                    del self._waiters[topic]
        return parked

    def waiting(self, topic: str) -> int:
        """How many waiters are parked on ``topic`` now (for tests and metrics)."""
        with self._lock:
            return len(self._waiters.get(topic, []))

    async def wait(self, topic: str, seen: int, timeout: float) -> bool:
        """Wait until ``topic`` moves past generation ``seen``; False on timeout."""
        return bool(await self.wait_any({topic: seen}, timeout))

    async def wait_any(self, seen: Mapping[str, int], timeout: float, turn_on: str | None = None,
                       ended: dict[str, int] | None = None) -> Woken:
        """Wait until any topic of ``seen`` moves past its generation there:
        MOVED, or TURN when woken as the one waiter of ``turn_on``; TIMEOUT
        (false) otherwise. On ``turn_on`` (one of the topics) the waiter waits its
        turn: a change wakes only the first such waiter, which, if it is
        cancelled before it could act, hands its turn to the next.

        ``ended`` (if given) is filled with the topics' generations as the
        wait ended. After a timeout, a move of ``turn_on`` up to then was
        handed to another waiter (this one was parked): nothing was missed."""
        topics = tuple(seen)
        waiter = _Waiter(asyncio.get_running_loop(), topics, turn_on)
        with self._lock:
            if ended is not None:
                ended.update((t, self._generations.get(t, 0)) for t in topics)
            if self._closed:
                return Woken.TIMEOUT
            if any(self._generations.get(t, 0) != g for t, g in seen.items()):
                return Woken.MOVED
            for topic in topics:
                self._waiters.setdefault(topic, []).append(waiter)
        acted = False
        try:
            await asyncio.wait({waiter.fut}, timeout=timeout)
            acted = True
        finally:
            # Under the lock: a wake between the timeout and here took this
            # waiter (its turn, maybe), and that must be what it answers.
            with self._lock:
                taken = not self._unpark(waiter)
                if ended is not None:
                    ended.update((t, self._generations.get(t, 0)) for t in topics)
            if waiter.by_turn and not acted and turn_on is not None:
                self.pass_on(turn_on)  # cancelled after its turn came: the next waiter takes it
        return Woken.TURN if waiter.by_turn else (Woken.MOVED if taken else Woken.TIMEOUT)


def _resolve(fut: asyncio.Future[None]) -> None:
    if not fut.done():
        fut.set_result(None)


ANY_TOPIC = "*"  # moves whenever wake-ups may have been missed (see wake_all)


def pool_topic(pool_id: str) -> str:
    return f"pool:{pool_id}"


def run_topic(run_id: str) -> str:
    return f"run:{run_id}"


def fleet_topic(pool_id: str) -> str:
    """Every worker of the pool looks at itself (the pool is cycled)."""
    return f"fleet:{pool_id}"


def worker_topic(worker_id: str) -> str:
    """One worker looks at itself (drained, removed)."""
    return f"worker:{worker_id}"

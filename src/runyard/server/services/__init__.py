"""Services own transactions and rules; routes stay thin, the repository dumb."""

from __future__ import annotations

import asyncio
import logging
import os
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass, field
from typing import TypeVar, TypeVarTuple

from anyio import CapacityLimiter, to_thread
from sqlalchemy import Engine
from sqlalchemy.exc import DBAPIError

from runyard.core.errors import RunyardError
from runyard.crypto import SecretBox
from runyard.server.blobs import BlobStore
from runyard.server.db.dialects import translate
from runyard.server.db.repository import Repository
from runyard.server.notifier import Notifier

Clock = Callable[[], float]
T = TypeVar("T")
Ts = TypeVarTuple("Ts")
log = logging.getLogger("runyard.server")

# How many of the workers' short database calls run at once in threads (see
# Context.short_call): SQLite has one writer, so more threads only pass the
# GIL around and switch contexts; PostgreSQL's calls wait on the network, so
# a few overlap. (benchmarks/dispatch.py measures both; on SQLite most short
# calls run on the event loop itself: see there.)
SHORT_CALLS = {"sqlite": 1, "postgresql": 4}


OUTAGE_GAP = 60.0  # an error this long after the last one begins a new outage (logged again)


class Trouble:
    """What went wrong with the storage lately: logged once per outage, and
    said by /readyz while it lasts (RECENT seconds after the last error)."""

    RECENT = 30.0

    def __init__(self) -> None:
        self.last: tuple[RunyardError, float] | None = None

    def seen(self, error: RunyardError, now: float) -> None:
        if self.last is None or now - self.last[1] > OUTAGE_GAP or type(self.last[0]) is not type(error):
            log.warning("%s", error.message)
        self.last = (error, now)

    def now(self, now: float) -> RunyardError | None:
        """The storage's trouble if its last error is recent, else None."""
        return self.last[0] if self.last is not None and now - self.last[1] <= self.RECENT else None


@dataclass
class Context:
    """What every service needs: the database, blobs, the notifier, a clock."""

    engine: Engine
    blobs: BlobStore
    notifier: Notifier = field(default_factory=Notifier)
    clock: Clock = time.time
    endpoints: tuple[str, ...] = ()
    long_poll: float = 25.0  # the longest a long poll is held open
    worker_lost_after: float = 60.0  # a worker silent this long is lost
    secrets: SecretBox = field(default_factory=lambda: SecretBox(os.urandom(32)))  # see app.secret_box
    trouble: Trouble = field(default_factory=lambda: Trouble())  # the storage's last outage, for /readyz
    # SQLite has one writer at a time: writers of this process queue here, in
    # order, instead of sleeping in SQLite's busy handler (PostgreSQL: none).
    _write_lock: threading.RLock | None = field(default=None, init=False, repr=False)

    _short: tuple[asyncio.AbstractEventLoop, CapacityLimiter] | None = field(default=None, init=False, repr=False)

    def __post_init__(self) -> None:
        if self.engine.dialect.name == "sqlite":
            self._write_lock = threading.RLock()

    async def short_call(self, fn: Callable[[*Ts], T], *args: *Ts) -> T:
        """``fn(*args)`` for the hot path: a poll's look and claim, a report, a
        log batch, a token check, a log follower's page, a trigger. Short
        calls that use the database and nothing else (never the object
        store: it may be a network away).

        On SQLite, when no other thread of this server is writing, the call
        runs on the event loop itself, holding the write lock: a local file
        answers in well under a millisecond, and handing the call to a
        thread and back costs more than the call (benchmarks/dispatch.py). Only
        this process writes a server's SQLite file, so with the lock held
        nothing can make the call wait. Otherwise, and on PostgreSQL (whose
        every query waits on the network), in a thread: a few at a time (by
        the database: SHORT_CALLS), not up to anyio's forty, whose threads
        passed the GIL to one another around every database call."""
        lock = self._write_lock
        if lock is not None and lock.acquire(blocking=False):
            try:
                return fn(*args)
            finally:
                lock.release()
        loop = asyncio.get_running_loop()
        if self._short is None or self._short[0] is not loop:
            self._short = (loop, CapacityLimiter(SHORT_CALLS.get(self.engine.dialect.name, 4)))
        return await to_thread.run_sync(fn, *args, limiter=self._short[1])

    def secret_setting(self, name: str, make: Callable[[], str]) -> str:
        """A secret the servers share (a signing key), made once, stored encrypted."""
        with self.tx() as repo:
            stored = repo.get_setting(name)
            if stored is None:
                stored = repo.put_setting_if_absent(name, self.secrets.seal(name, make()))
        return self.secrets.open(name, stored)

    @contextmanager
    def tx(self) -> Iterator[Repository]:
        """One transaction; committed when the block ends without an error."""
        with self._translated(), self._write_lock or nullcontext(), self.engine.begin() as conn:
            yield Repository(conn)

    @contextmanager
    def read(self) -> Iterator[Repository]:
        """One transaction that only reads: one consistent snapshot, and on
        SQLite no write lock, so reads neither wait for writes nor hold them up."""
        with self._translated(), self.engine.connect().execution_options(runyard_read_only=True) as conn, \
                conn.begin():
            yield Repository(conn)

    @contextmanager
    def _translated(self) -> Iterator[None]:
        """A full or unreachable database is an answer of its own (503, with
        Retry-After and what is wrong), logged once per outage, not a bug."""
        try:
            yield
        except DBAPIError as exc:
            translated = translate(exc)
            if translated is None:
                raise
            self.trouble.seen(translated, self.clock())
            raise translated from exc

"""Wake-ups across servers through PostgreSQL's LISTEN/NOTIFY.

Every server that shares the database listens on one channel. A server
that changes something a long poll may wait for (a run queued, a worker
freed) notifies the topic after its transaction commits; every other
server wakes its own waiters on that topic. A listener that loses its
connection reconnects and wakes every waiter: they look again, so a
notification missed meanwhile costs one look, never a stuck run.
"""

from __future__ import annotations

import logging
import threading
import uuid
from collections.abc import Callable, Sequence

import psycopg

from runyard import retry

log = logging.getLogger("runyard.server")
CHANNEL = "runyard"


def libpq_url(url: str) -> str:
    """``postgresql+psycopg://...`` (SQLAlchemy's form) as libpq takes it."""
    scheme, rest = url.split("://", 1)
    return "postgresql://" + rest if scheme.startswith("postgres") else url


class PgNotifyBus:
    """Publishes topics to, and receives them from, the other servers."""

    def __init__(self, url: str, on_topic: Callable[[str], None], on_reconnect: Callable[[], None]) -> None:
        self.url = libpq_url(url)
        self.on_topic = on_topic
        self.on_reconnect = on_reconnect
        self.sender = uuid.uuid4().hex[:12]  # our own notifications come back: skip them
        self._publisher: psycopg.Connection[tuple[object, ...]] | None = None
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._listen, name="pg-listen", daemon=True)

    def start(self, timeout: float = 10.0) -> None:
        self._thread.start()
        self._ready.wait(timeout)

    def stop(self) -> None:
        self._stop.set()
        with self._lock:
            if self._publisher is not None:
                self._publisher.close()
                self._publisher = None

    def publish(self, topics: Sequence[str]) -> None:
        """NOTIFY every topic (best effort: a lost notification costs a look, not a run)."""
        if self._stop.is_set() or not topics:
            return
        payloads = [f"{self.sender}|{topic}" for topic in topics]
        with self._lock:
            for attempt in (1, 2):
                try:
                    if self._publisher is None or self._publisher.closed:
                        self._publisher = psycopg.connect(self.url, autocommit=True, connect_timeout=5)
                    # One round trip for them all (a report notifies two topics).
                    calls = ", ".join(["pg_notify(%s, %s)"] * len(payloads))
                    self._publisher.execute(f"SELECT {calls}",
                                            [v for payload in payloads for v in (CHANNEL, payload)])
                    return
                except psycopg.Error as exc:
                    self._publisher = None
                    if attempt == 2:
                        log.warning("could not notify other servers: %s", exc)

    def _connect(self) -> psycopg.Connection[tuple[object, ...]]:
        conn = psycopg.connect(self.url, autocommit=True, connect_timeout=5)
        conn.execute(f"LISTEN {CHANNEL}")
        return conn

    def _listen(self) -> None:
        first = True
        while not self._stop.is_set():
            try:
                connection = retry.call(self._connect, psycopg.Error, stop=self._stop, log=log,
                                        what="listening for other servers' wake-ups")
            except psycopg.Error:
                return  # told to stop while the database was away
            try:
                with connection as conn:
                    self._ready.set()
                    if not first:
                        self.on_reconnect()  # anything sent while we were away: everyone looks again
                    first = False
                    while not self._stop.is_set():
                        for note in conn.notifies(timeout=0.5):
                            sender, _, topic = note.payload.partition("|")
                            if sender != self.sender and topic:
                                self.on_topic(topic)
            except psycopg.Error as exc:
                if self._stop.is_set():
                    return
                log.warning("listening for other servers' wake-ups failed, reconnecting: %s", exc)

"""Run logs. While a run is live its lines land in the database, a row per
batch a worker sent (JSON lines); once it ended, the log is sealed into the
object store in chunks of a few megabytes and its rows go. A page of lines is
read from one place or the other, a chunk at a time: reading a log of any
size holds at most a chunk and a page in memory."""

from __future__ import annotations

import bisect
import json
import logging
import threading
import time
from collections.abc import Iterator, Sequence

import orjson
from anyio import to_thread

from runyard.core.errors import Conflict, NotFound
from runyard.core.limits import MIB
from runyard.core.models import LogLine, LogPage, Run
from runyard.core.states import RunState
from runyard.server.db.repository import Repository
from runyard.server.notifier import run_topic
from runyard.server.services import Context

log = logging.getLogger("runyard.server")

MAX_LINE = 64 * 1024  # longer lines are cut; a run cannot fill the DB with one line
MAX_SEQ = 2**31 - 1  # the seq column is a 32-bit integer on PostgreSQL
SEAL_CHUNK = 4 * MIB  # a sealed blob holds about this much
PAGE_TEXT = 2 * MIB  # of message text in one page (besides its line count)
ROWS_AT_ONCE = 8  # stored batches read per query


def log_key(run_id: str) -> str:
    """The one blob a log was sealed into by releases before chunked logs."""
    return f"logs/{run_id}.jsonl"


def chunk_key(run_id: str, first: int) -> str:
    """The sealed blob of a run's log that starts at line ``first``."""
    return f"logs/{run_id}/{first:010d}.jsonl"


def encode(lines: Sequence[LogLine]) -> str:
    """Lines as JSON lines (what a stored batch and a sealed blob hold)."""
    docs = [{"seq": ln.seq, "ts": ln.ts, "msg": ln.msg} for ln in lines]
    try:
        return b"".join(orjson.dumps(d) + b"\n" for d in docs).decode()
    except orjson.JSONEncodeError:  # a lone surrogate: the standard encoder escapes it
        return "".join(json.dumps(d) + "\n" for d in docs)


def decode(body: str) -> Iterator[LogLine]:
    for raw in body.splitlines():
        try:
            doc = orjson.loads(raw)
        except orjson.JSONDecodeError:
            doc = json.loads(raw)
        yield LogLine(doc["seq"], doc["ts"], doc["msg"])


class LogService:
    def __init__(self, ctx: Context) -> None:
        self.ctx = ctx
        self._to_seal: set[str] = set()
        self._lock = threading.Lock()

    def append(self, repo: Repository, run: Run, lines: Sequence[LogLine]) -> None:
        """Store the lines after the last one stored, as one batch. A line
        stored already is a retry of the same line and is skipped, so retries
        never duplicate (lines of a run are numbered in order by its worker)."""
        ordered = sorted((ln for ln in lines if ln.seq > 0), key=lambda ln: ln.seq)
        seq = run.log_seq
        for _ in range(5):
            fresh: list[LogLine] = []
            for ln in ordered:
                if ln.seq > seq and (not fresh or ln.seq > fresh[-1].seq):
                    fresh.append(ln if len(ln.msg) <= MAX_LINE else LogLine(ln.seq, ln.ts, ln.msg[:MAX_LINE]))
            if not fresh:
                return
            if repo.add_log_chunk(run.id, seq, fresh[0].seq, fresh[-1].seq, encode(fresh)):
                return
            current = repo.run(run.id, with_transitions=False)  # another request stored lines meanwhile
            seq = current.log_seq if current is not None else seq
        raise Conflict(f"log lines of run {run.id} are being stored by another request: send them again")

    # sealing ------------------------------------------------------------------

    def seal_soon(self, run_id: str) -> None:
        """Seal this ended run's log on the next pass of :meth:`seal_queued`
        (off the request that ended the run)."""
        with self._lock:
            self._to_seal.add(run_id)

    def seal_queued(self) -> list[str]:
        """Seal the logs of runs that ended here since the last pass."""
        with self._lock:
            queued, self._to_seal = sorted(self._to_seal), set()
        for run_id in queued:
            try:
                self.seal(run_id)
            except Exception:  # the leader's sweeper seals it later (seal_pending)
                log.exception("sealing the log of run %s failed; it is retried later", run_id)
        return queued

    def seal(self, run_id: str) -> None:
        """Write an ended run's whole log to the object store, then drop its rows.

        The blobs are written outside any transaction, a chunk at a time; the
        rows go (and the run is marked sealed) only once every blob is stored,
        so a reader always finds every line in one place or the other.
        Idempotent: a crash between the two steps is finished by
        :meth:`seal_pending`."""
        with self.ctx.read() as repo:
            if repo.log_seal(run_id)[0]:
                return
        index: list[int] = []
        parts: list[str] = []
        size, after, first = 0, 0, 0
        while True:
            with self.ctx.read() as repo:
                rows = repo.log_chunks(run_id, after, ROWS_AT_ONCE)
            for row_first, row_last, body in rows:
                first = first or row_first
                parts.append(body)
                size += len(body)
                after = row_last
                if size >= SEAL_CHUNK:
                    self.ctx.blobs.put(chunk_key(run_id, first), "".join(parts).encode())
                    index.append(first)
                    parts, size, first = [], 0, 0
            if len(rows) < ROWS_AT_ONCE:
                break
        if parts:
            self.ctx.blobs.put(chunk_key(run_id, first), "".join(parts).encode())
            index.append(first)
        with self.ctx.tx() as repo:
            repo.seal_log(run_id, index)

    def seal_pending(self) -> list[str]:
        """Seal the logs of ended runs a crash left unsealed."""
        with self.ctx.read() as repo:
            pending = repo.unsealed_ended_runs(limit=100)
        for run_id in pending:
            self.seal(run_id)
        return pending

    # reading ------------------------------------------------------------------

    def _stored(self, repo: Repository, run_id: str, after: int, limit: int) -> list[LogLine]:
        out: list[LogLine] = []
        text = PAGE_TEXT
        while True:
            rows = repo.log_chunks(run_id, after, ROWS_AT_ONCE)
            for _, last, body in rows:
                for line in decode(body):
                    if line.seq > after:
                        out.append(line)
                        text -= len(line.msg)
                        if len(out) >= limit or text <= 0:
                            return out
                after = last
            if len(rows) < ROWS_AT_ONCE:
                return out

    def _sealed(self, run_id: str, index: list[int] | None, after: int, limit: int) -> list[LogLine]:
        if index is None:
            bodies: Iterator[str] = iter([self.ctx.blobs.get(log_key(run_id)).decode()])
        else:
            start = max(bisect.bisect_right(index, after + 1) - 1, 0)
            bodies = (self.ctx.blobs.get(chunk_key(run_id, first)).decode() for first in index[start:])
        out: list[LogLine] = []
        text = PAGE_TEXT
        for body in bodies:
            for line in decode(body):
                if line.seq > after:
                    out.append(line)
                    text -= len(line.msg)
                    if len(out) >= limit or text <= 0:
                        return out
        return out

    def page(self, run_id: str, after: int = 0, limit: int = 5000) -> LogPage:
        """The run's lines after sequence number ``after``, with its state: at
        most ``limit`` lines and about PAGE_TEXT of text."""
        after = min(max(after, 0), MAX_SEQ)  # "after everything" must not overflow the column
        with self.ctx.read() as repo:
            run = repo.run(run_id, with_transitions=False)
            if run is None:
                raise NotFound(f"no run {run_id!r}: `runyard run list` shows the runs")
            lines = self._stored(repo, run_id, after, limit)
            sealed, index = repo.log_seal(run_id) if not lines else (False, None)
        if sealed:
            lines = self._sealed(run_id, index, after, limit)  # blob reads hold no transaction open
        # The terminal transition commits before the log is sealed, and the
        # rows stay until it is: once a run is terminal, every line it will
        # ever have is readable from one place or the other.
        return LogPage(tuple(lines), run.state, run.state.terminal and not lines, run.reason)

    async def follow(self, run_id: str, after: int, wait: float, known: RunState | None = None) -> LogPage:
        """A long poll: the next page as soon as there is a line, the run's
        state differs from ``known`` (its state at the first look if None), or
        it ends; at the latest after ``wait`` (bounded by the server's limit)."""
        deadline = time.monotonic() + min(max(wait, 0.0), self.ctx.long_poll)
        topic = run_topic(run_id)
        while True:
            seen = self.ctx.notifier.generation(topic)
            page = await to_thread.run_sync(self.page, run_id, after)
            known = known or page.state
            remaining = deadline - time.monotonic()
            if page.lines or page.done or page.state != known or remaining <= 0 or self.ctx.notifier.closed:
                return page
            await self.ctx.notifier.wait(topic, seen, remaining)

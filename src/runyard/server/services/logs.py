"""Run logs: lines land in the database while a run is live, then the whole
log is sealed into one blob in the object store."""

from __future__ import annotations

import json
import time
from collections.abc import Sequence

from anyio import to_thread

from runyard.core.errors import NotFound
from runyard.core.models import LogLine, LogPage
from runyard.core.states import RunState
from runyard.server.db.repository import Repository
from runyard.server.notifier import run_topic
from runyard.server.services import Context

MAX_LINE = 64 * 1024  # longer lines are cut; a run cannot fill the DB with one line


MAX_SEQ = 2**31 - 1  # the seq column is a 32-bit integer on PostgreSQL


def log_key(run_id: str) -> str:
    return f"logs/{run_id}.jsonl"


class LogService:
    def __init__(self, ctx: Context) -> None:
        self.ctx = ctx

    def append(self, repo: Repository, run_id: str, lines: Sequence[LogLine]) -> None:
        """Store lines; a line whose sequence number is stored already is a
        retry of the same line and is skipped, so retries never duplicate."""
        clean = [LogLine(ln.seq, ln.ts, ln.msg[:MAX_LINE]) for ln in lines if ln.seq > 0]
        repo.add_log_lines(run_id, clean)

    def seal(self, run_id: str) -> None:
        """Write an ended run's whole log to the object store, then drop its rows.

        The blob is written outside any transaction; the rows go (and the run
        is marked sealed) only once it is stored, so a reader always finds
        every line in one place or the other. Idempotent: a crash between the
        two steps is finished by :meth:`seal_pending`."""
        with self.ctx.tx() as repo:
            if repo.run_log_sealed(run_id):
                return
            lines = repo.log_lines(run_id, 0, limit=10_000_000)
        body = "".join(json.dumps({"seq": ln.seq, "ts": ln.ts, "msg": ln.msg}) + "\n" for ln in lines)
        self.ctx.blobs.put(log_key(run_id), body.encode())
        with self.ctx.tx() as repo:
            repo.set_run_flags(run_id, log_sealed=True)
            repo.drop_log_lines(run_id)

    def seal_pending(self) -> list[str]:
        """Seal the logs of ended runs a crash left unsealed."""
        with self.ctx.read() as repo:
            pending = repo.unsealed_ended_runs(limit=100)
        for run_id in pending:
            self.seal(run_id)
        return pending

    def read(self, repo: Repository, run_id: str, after: int, limit: int = 5000) -> list[LogLine]:
        lines = repo.log_lines(run_id, after, limit)
        if lines or not repo.run_log_sealed(run_id):
            return lines
        out = []
        for raw in self.ctx.blobs.get(log_key(run_id)).decode().splitlines():
            doc = json.loads(raw)
            if doc["seq"] > after:
                out.append(LogLine(doc["seq"], doc["ts"], doc["msg"]))
                if len(out) >= limit:
                    break
        return out

    def page(self, run_id: str, after: int = 0, limit: int = 5000) -> LogPage:
        """The run's lines after sequence number ``after``, with its state."""
        after = min(max(after, 0), MAX_SEQ)  # "after everything" must not overflow the column
        with self.ctx.read() as repo:
            run = repo.run(run_id, with_transitions=False)
            if run is None:
                raise NotFound(f"no run {run_id!r}: `runyard run list` shows the runs")
            lines = self.read(repo, run_id, after, limit)
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

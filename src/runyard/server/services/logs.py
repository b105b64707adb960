"""Run logs. While a run is live its lines land in the database, a row per
block of lines a worker sent; once it ended, the log is sealed into the
object store in blobs of a few megabytes and its rows go. A page of lines is
read from one place or the other, a blob at a time: reading a log of any
size holds at most a blob and a page in memory.

Lines travel and rest in blocks (lines read at one time, joined by
newlines): per-line work is left to C (splitting, joining), which is what
lets one run print tens of megabytes a second."""

from __future__ import annotations

import bisect
import dataclasses
import logging
import time
from collections.abc import Iterable, Iterator, Sequence
from typing import NamedTuple

from anyio import to_thread

from runyard import jsonfast
from runyard.core.errors import Conflict, NotFound
from runyard.core.limits import MAX_LOG_LINE, MIB, SEQ_COLUMN_MAX  # a longer line a worker sends is cut
from runyard.core.models import LogBlock, LogLine, LogPage, Run
from runyard.core.states import RunState
from runyard.server.db.repository import Repository
from runyard.server.notifier import run_topic
from runyard.server.services import Context

log = logging.getLogger("runyard.server")

SEAL_CHUNK = 4 * MIB  # a sealed blob holds about this much
PAGE_TEXT = 2 * MIB  # of message text in one page (besides its line count)
PAGE_LINES = 5000  # lines in one page
ROWS_AT_ONCE = 8  # stored batches read per query


def chunk_key(run_id: str, first: int) -> str:
    """The sealed blob of a run's log that starts at line ``first``."""
    return f"logs/{run_id}/{first:010d}.jsonl"


def encode(blocks: Sequence[LogBlock]) -> bytes:
    """Blocks as JSON lines, one document per block (a sealed blob)."""
    return b"".join(jsonfast.dumps({"seq": b.seq, "ts": b.ts, "text": b.text}) + b"\n" for b in blocks)


def decode(body: str) -> Iterator[LogBlock]:
    """The blocks of a sealed blob, a document a line. Split at newlines
    only: a document holds other line breaks (NEL, U+2028) unescaped."""
    for raw in body.split("\n"):
        if not raw:
            continue
        doc = jsonfast.loads(raw)
        yield LogBlock(doc["seq"], doc["ts"], doc["text"])


def lines_after(blocks: Iterable[LogBlock], after: int, limit: int) -> list[LogLine]:
    """The lines of ``blocks`` after line ``after``: at most ``limit`` lines and
    about PAGE_TEXT of text."""
    out: list[LogLine] = []
    text = PAGE_TEXT
    for block in blocks:
        if block.last <= after:
            continue
        msgs = block.text.split("\n")
        skip = max(after - block.seq + 1, 0)
        for seq, msg in enumerate(msgs[skip:], block.seq + skip):
            out.append(LogLine(seq, block.ts, msg))
            text -= len(msg)
            if len(out) >= limit or text <= 0:
                return out
    return out


def _fit(block: LogBlock, after: int) -> LogBlock | None:
    """``block`` without lines up to ``after`` (stored already) and with
    over-long lines cut; None if nothing is left."""
    if block.last <= after:
        return None
    msgs = block.text.split("\n") if block.seq <= after or len(block.text) > MAX_LOG_LINE else None
    if msgs is None:
        return block
    skip = max(after - block.seq + 1, 0)
    msgs = [m[:MAX_LOG_LINE] for m in msgs[skip:]]
    return LogBlock(block.seq + skip, block.ts, "\n".join(msgs))


class Sealed(NamedTuple):
    """Where a page's lines are when its run's log is sealed: the first line of
    each blob, and the line the page starts after."""

    run_id: str
    chunks: list[int]
    after: int


class LogService:
    def __init__(self, ctx: Context) -> None:
        self.ctx = ctx

    def append(self, repo: Repository, run: Run, blocks: Sequence[LogBlock]) -> None:
        """Store the lines after the last one stored. A line stored already is
        a retry of the same line and is skipped, so retries never duplicate
        (lines of a run are numbered in order by its worker)."""
        ordered = sorted(blocks, key=lambda b: b.seq)
        seq = run.log_seq
        for _ in range(5):
            fresh: list[LogBlock] = []
            for block in ordered:
                fitted = _fit(block, fresh[-1].last if fresh else seq)
                if fitted is not None:
                    fresh.append(fitted)
            if not fresh:
                return
            if repo.add_log_blocks(run.id, seq, fresh):
                return
            current = repo.run(run.id, with_transitions=False)  # another request stored lines meanwhile
            seq = current.log_seq if current is not None else seq
        raise Conflict(f"log lines of run {run.id} are being stored by another request: send them again")

    # sealing ------------------------------------------------------------------

    def seal(self, run_ids: Sequence[str]) -> None:
        """Write each ended run's whole log to the object store, then drop its rows.

        The blobs are written outside any transaction, a chunk at a time; the
        rows go (and the runs are marked sealed) only once every blob is
        stored, so a reader always finds every line in one place or the
        other; one transaction marks them all (under a burst of short runs,
        a transaction per run was one write in eight). Idempotent: a run
        whose blobs failed, or a crash between the two steps, is finished by
        :meth:`seal_pending`."""
        written: list[tuple[str, list[int]]] = []
        for run_id in run_ids:
            try:
                index = self._write_blobs(run_id)
            except Exception:  # the leader's sweeper seals it later (seal_pending)
                log.exception("sealing the log of run %s failed; it is retried later", run_id)
                continue
            if index is not None:
                written.append((run_id, index))
        if written:
            with self.ctx.tx() as repo:
                for run_id, index in written:
                    repo.seal_log(run_id, index)

    def _write_blobs(self, run_id: str) -> list[int] | None:
        """Store the run's log as blobs; the first line of each (None: sealed already)."""
        with self.ctx.read() as repo:
            if repo.log_seal(run_id)[0]:
                return None
            blocks = repo.log_blocks(run_id, 0, ROWS_AT_ONCE)
        index: list[int] = []
        held: list[LogBlock] = []
        size = 0
        while True:
            for block in blocks:
                held.append(block)
                size += len(block.text)
                if size >= SEAL_CHUNK:
                    self.ctx.blobs.put(chunk_key(run_id, held[0].seq), encode(held))
                    index.append(held[0].seq)
                    held, size = [], 0
            if len(blocks) < ROWS_AT_ONCE:
                break
            with self.ctx.read() as repo:
                blocks = repo.log_blocks(run_id, blocks[-1].last, ROWS_AT_ONCE)
        if held:
            self.ctx.blobs.put(chunk_key(run_id, held[0].seq), encode(held))
            index.append(held[0].seq)
        return index

    def seal_pending(self) -> list[str]:
        """Seal the logs of ended runs a crash left unsealed."""
        with self.ctx.read() as repo:
            pending = repo.unsealed_ended_runs(limit=100)
        self.seal(pending)
        return pending

    # reading ------------------------------------------------------------------

    def _stored(self, repo: Repository, run_id: str, after: int, limit: int) -> list[LogLine]:
        def blocks() -> Iterator[LogBlock]:
            cursor = after
            while True:
                found = repo.log_blocks(run_id, cursor, ROWS_AT_ONCE)
                yield from found
                if len(found) < ROWS_AT_ONCE:
                    return
                cursor = found[-1].last

        return lines_after(blocks(), after, limit)

    def _sealed(self, run_id: str, index: list[int], after: int, limit: int) -> list[LogLine]:
        start = max(bisect.bisect_right(index, after + 1) - 1, 0)
        bodies = (self.ctx.blobs.get(chunk_key(run_id, first)).decode() for first in index[start:])
        return lines_after((block for body in bodies for block in decode(body)), after, limit)

    def page(self, run_id: str, after: int = 0, limit: int = PAGE_LINES) -> LogPage:
        """The run's lines after sequence number ``after``, with its state: at
        most ``limit`` lines and about PAGE_TEXT of text."""
        page, sealed = self._stored_page(run_id, after, limit)
        return page if sealed is None else self._sealed_page(page, sealed, limit)

    def _stored_page(self, run_id: str, after: int, limit: int) -> tuple[LogPage, Sealed | None]:
        """The page as far as the database has it (one read transaction), and
        where the log is sealed if its lines are in the object store instead."""
        after = min(max(after, 0), SEQ_COLUMN_MAX)  # "after everything" must not overflow the column
        with self.ctx.read() as repo:
            run = repo.run(run_id, with_transitions=False)
            if run is None:
                raise NotFound(f"no run {run_id!r}: `runyard run list` shows the runs")
            # A follower at the end of the log (it asks again at every move
            # of the run) costs this one query. (Logs sealed before
            # runs.log_seq was kept have it 0: it says nothing of them.)
            at_end = 0 < run.log_seq <= after
            lines = [] if at_end else self._stored(repo, run_id, after, limit)
            sealed, index = repo.log_seal(run_id) if not lines and not at_end else (False, None)
        # The terminal transition commits before the log is sealed, and the
        # rows stay until it is: once a run is terminal, every line it will
        # ever have is readable from one place or the other.
        page = LogPage(tuple(lines), run.state, run.state.terminal and not lines, run.reason)
        return page, (Sealed(run_id, index or [], after) if sealed else None)

    def _sealed_page(self, page: LogPage, sealed: Sealed, limit: int) -> LogPage:
        """``page`` with the lines read from the sealed log's blobs (no
        transaction is held open while they are read)."""
        lines = self._sealed(sealed.run_id, sealed.chunks, sealed.after, limit)
        return dataclasses.replace(page, lines=tuple(lines), done=page.state.terminal and not lines)

    async def follow(self, run_id: str, after: int, wait: float, known: RunState | None = None) -> LogPage:
        """A long poll: the next page as soon as there is a line, the run's
        state differs from ``known`` (its state at the first look if None), or
        it ends; at the latest after ``wait`` (bounded by the server's limit)."""
        deadline = time.monotonic() + min(max(wait, 0.0), self.ctx.long_poll)
        topic = run_topic(run_id)
        while True:
            seen = self.ctx.notifier.generation(topic)
            page, sealed = await self.ctx.short_call(self._stored_page, run_id, after, PAGE_LINES)
            if sealed is not None:  # the object store may be a network away: not a short call
                page = await to_thread.run_sync(self._sealed_page, page, sealed, PAGE_LINES)
            known = known or page.state
            remaining = deadline - time.monotonic()
            if page.lines or page.done or page.state != known or remaining <= 0 or self.ctx.notifier.closed:
                return page
            await self.ctx.notifier.wait(topic, seen, remaining)

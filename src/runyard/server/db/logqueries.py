"""The repository's queries over run logs (a part of :class:`Repository`)."""

from __future__ import annotations

from collections.abc import Sequence

from sqlalchemy import Connection, bindparam, delete, insert, select, update

from runyard.core.models import LogBlock
from runyard.server.db import tables as t

# Built once (see repository.py): a live run's log is appended to and paged often.
_ADVANCE = update(t.runs).where(t.runs.c.id == bindparam("b_id"), t.runs.c.log_seq == bindparam("b_seq"))
_ADD_BLOCKS = insert(t.log_chunks)
_BLOCKS = select(t.log_chunks.c.first_seq, t.log_chunks.c.ts, t.log_chunks.c.body) \
    .where(t.log_chunks.c.run_id == bindparam("b_id"), t.log_chunks.c.last_seq > bindparam("b_after")) \
    .order_by(t.log_chunks.c.first_seq).limit(bindparam("b_limit"))
_SEAL = select(t.runs.c.log_sealed, t.runs.c.log_index).where(t.runs.c.id == bindparam("b_id"))


class LogQueries:
    conn: Connection

    def add_log_blocks(self, run_id: str, expect_seq: int, blocks: Sequence[LogBlock]) -> bool:
        """Store ``blocks`` (in order) after line ``expect_seq``, the run's last
        stored line; False (nothing stored) if another request stored lines
        since: the caller reads the run again."""
        moved = self.conn.execute(_ADVANCE, {"b_id": run_id, "b_seq": expect_seq, "log_seq": blocks[-1].last})
        if moved.rowcount != 1:
            return False
        self.conn.execute(_ADD_BLOCKS, [
            {"run_id": run_id, "first_seq": b.seq, "last_seq": b.last, "ts": b.ts, "body": b.text} for b in blocks])
        return True

    def log_blocks(self, run_id: str, after: int, limit: int) -> list[LogBlock]:
        """Up to ``limit`` stored blocks holding lines after ``after``, in order."""
        found = self.conn.execute(_BLOCKS, {"b_id": run_id, "b_after": after, "b_limit": limit})
        return [LogBlock(int(r.first_seq), float(r.ts), str(r.body)) for r in found]

    def seal_log(self, run_id: str, index: list[int]) -> None:
        """The log is in the object store now (blobs starting at the lines of ``index``)."""
        self.conn.execute(update(t.runs).where(t.runs.c.id == run_id).values(log_sealed=True, log_index=index))
        self.conn.execute(delete(t.log_chunks).where(t.log_chunks.c.run_id == run_id))

    def log_seal(self, run_id: str) -> tuple[bool, list[int] | None]:
        """Whether the run's log is sealed, and the first line of each of its
        blobs (None: not sealed)."""
        row = self.conn.execute(_SEAL, {"b_id": run_id}).first()
        if row is None:
            return False, None
        return bool(row.log_sealed), row.log_index

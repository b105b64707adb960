"""The repository's queries over run logs (a part of :class:`Repository`)."""

from __future__ import annotations

from sqlalchemy import Connection, delete, insert, select, update

from runyard.server.db import tables as t


class LogQueries:
    conn: Connection

    def add_log_chunk(self, run_id: str, expect_seq: int, first: int, last: int, body: str) -> bool:
        """Store lines ``first``..``last`` (JSON lines) after line ``expect_seq``,
        the run's last stored line; False (nothing stored) if another request
        stored lines since: the caller reads the run again."""
        moved = self.conn.execute(
            update(t.runs).where(t.runs.c.id == run_id, t.runs.c.log_seq == expect_seq).values(log_seq=last))
        if moved.rowcount != 1:
            return False
        self.conn.execute(insert(t.log_chunks).values(run_id=run_id, first_seq=first, last_seq=last, body=body))
        return True

    def log_chunks(self, run_id: str, after: int, limit: int) -> list[tuple[int, int, str]]:
        """Up to ``limit`` stored batches holding lines after ``after``, in
        order: (first line, last line, JSON lines)."""
        found = self.conn.execute(
            select(t.log_chunks.c.first_seq, t.log_chunks.c.last_seq, t.log_chunks.c.body)
            .where(t.log_chunks.c.run_id == run_id, t.log_chunks.c.last_seq > after)
            .order_by(t.log_chunks.c.first_seq).limit(limit))
        return [(int(r.first_seq), int(r.last_seq), str(r.body)) for r in found]

    def seal_log(self, run_id: str, index: list[int]) -> None:
        """The log is in the object store now (blobs starting at the lines of ``index``)."""
        self.conn.execute(update(t.runs).where(t.runs.c.id == run_id).values(log_sealed=True, log_index=index))
        self.conn.execute(delete(t.log_chunks).where(t.log_chunks.c.run_id == run_id))

    def log_seal(self, run_id: str) -> tuple[bool, list[int] | None]:
        """Whether the run's log is sealed, and the first line of each of its
        blobs (None: one blob, as releases before 0.2 sealed it)."""
        row = self.conn.execute(select(t.runs.c.log_sealed, t.runs.c.log_index).where(t.runs.c.id == run_id)).first()
        if row is None:
            return False, None
        return bool(row.log_sealed), row.log_index

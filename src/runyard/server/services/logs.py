"""Run logs: lines land in the database while a run is live, then the whole
log is sealed into one blob in the object store."""

from __future__ import annotations

import json
from collections.abc import Sequence

from runyard.core.models import LogLine
from runyard.server.db.repository import Repository
from runyard.server.services import Context

MAX_LINE = 64 * 1024  # longer lines are cut; a run cannot fill the DB with one line


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

    def seal(self, repo: Repository, run_id: str) -> None:
        """Write the whole log to the object store and drop the live rows."""
        lines = repo.log_lines(run_id, 0, limit=10_000_000)
        body = "".join(json.dumps({"seq": ln.seq, "ts": ln.ts, "msg": ln.msg}) + "\n" for ln in lines)
        # The blob is written before the rows go: a reader that finds no rows
        # and a sealed flag is sure to find the blob.
        self.ctx.blobs.put(log_key(run_id), body.encode())
        repo.set_run_flags(run_id, log_sealed=True)
        repo.drop_log_lines(run_id)

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

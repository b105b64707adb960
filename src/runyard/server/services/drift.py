"""Queues DRIFT_DETECTION runs on the stacks' cron schedules."""

from __future__ import annotations

import logging

from runyard.core.cron import Cron
from runyard.core.errors import RunyardError
from runyard.core.states import RunKind, RunState
from runyard.server.services import Context
from runyard.server.services.runs import RunService

log = logging.getLogger("runyard.server.drift")


class DriftScheduler:
    """``tick(now)`` queues a drift run for every stack whose schedule fell due
    since it was last checked, unless its pool has drift detection disabled or
    the stack has a drift run queued or running already. How many run at once
    is the scheduler's business (the pool's limit, enforced at claim time)."""

    def __init__(self, ctx: Context, runs: RunService) -> None:
        self.ctx = ctx
        self.runs = runs

    def tick(self, now: float | None = None) -> list[str]:
        now = self.ctx.clock() if now is None else now
        queued: list[str] = []
        with self.ctx.tx() as repo:
            scheduled = repo.stacks_with_drift_schedule()
        # Schedules are worked out outside any transaction: writers never wait on them.
        due = []
        for row in scheduled:
            last = row.drift_checked_at or row.created_at
            try:
                if Cron.parse(row.drift_schedule).due_between(last, now):
                    due.append(row)
            except RunyardError:
                log.warning("stack %s has an invalid drift schedule %r", row.id, row.drift_schedule)
        with self.ctx.tx() as repo:
            for row in scheduled:
                repo.set_drift_checked(row.id, now)
            pending = []
            for row in due:
                pool = repo.pool(row.pool_id)
                if pool is None or not pool.drift_detection_limit:
                    continue
                live = [s for s in RunState if not s.terminal]
                if any(r.kind == RunKind.DRIFT_DETECTION for r in repo.runs(stack_id=row.id, states=live)):
                    continue
                pending.append(row.id)
        for stack_id in pending:
            queued.append(self.runs.trigger(stack_id, RunKind.DRIFT_DETECTION).id)
        return queued

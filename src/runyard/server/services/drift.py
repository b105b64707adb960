"""Queues DRIFT_DETECTION runs on the stacks' cron schedules."""

from __future__ import annotations

import logging
from collections.abc import Callable

from runyard.core.errors import RunyardError
from runyard.core.states import RunKind, RunState
from runyard.cron import Cron
from runyard.server.db.repository import Repository
from runyard.server.services import Context
from runyard.server.services.runs import RunService

log = logging.getLogger("runyard.server.drift")


class DriftDetection:
    """``tick(now)`` queues a drift run for every stack whose schedule fell due
    since it was last checked, unless its pool has drift detection disabled or
    the stack has a drift run queued or running already. How many run at once
    is dispatch's business (the pool's limit, enforced at claim time)."""

    def __init__(self, ctx: Context, runs: RunService) -> None:
        self.ctx = ctx
        self.runs = runs

    def tick(self, now: float | None = None, fence: Callable[[Repository], None] | None = None) -> list[str]:
        now = self.ctx.clock() if now is None else now
        queued: list[str] = []
        with self.ctx.tx() as repo:
            scheduled = repo.drift_schedules()
        # Schedules are worked out outside any transaction: writers never wait on them.
        due = []
        for entry in scheduled:
            try:
                if Cron.parse(entry.schedule).due_between(entry.checked_at, now):
                    due.append(entry)
            except RunyardError:
                log.warning("stack %s has an invalid drift schedule %r", entry.stack_id, entry.schedule)
        with self.ctx.tx() as repo:
            if fence is not None:
                fence(repo)  # a server that lost the leadership lease queues nothing
            for entry in scheduled:
                repo.set_drift_checked(entry.stack_id, now)
            pending = []
            for entry in due:
                pool = repo.pool(entry.pool_id)
                if pool is None or not pool.drift_detection_limit:
                    continue
                live = [s for s in RunState if not s.terminal]
                if any(r.kind == RunKind.DRIFT_DETECTION for r in repo.runs(stack_id=entry.stack_id, states=live)):
                    continue
                pending.append(entry.stack_id)
        for stack_id in pending:
            queued.append(self.runs.trigger(stack_id, RunKind.DRIFT_DETECTION).id)
        return queued

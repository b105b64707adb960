"""Cron schedules (drift detection), UTC: the one module that imports cronsim.

Five fields (minute hour day-of-month month day-of-week) as cron reads them:
names (``MON-FRI``, ``JAN``), day-of-week ``0-7`` (both 0 and 7 are Sunday),
``L`` and ``#``, and the usual macros (``@daily``, ``@hourly``, ...).
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

from cronsim import CronSim, CronSimError

from runyard.core.errors import InvalidInput

MACROS = {
    "@yearly": "0 0 1 1 *",
    "@annually": "0 0 1 1 *",
    "@monthly": "0 0 1 * *",
    "@weekly": "0 0 * * 0",
    "@daily": "0 0 * * *",
    "@midnight": "0 0 * * *",
    "@hourly": "0 * * * *",
}


def _utc(ts: float) -> dt.datetime:
    return dt.datetime.fromtimestamp(ts, dt.UTC)


@dataclass(frozen=True)
class Cron:
    """A checked schedule."""

    expr: str

    @classmethod
    def parse(cls, expr: str) -> Cron:
        fields = MACROS.get(expr.strip().lower(), expr.strip())
        if len(fields.split()) != 5:
            raise InvalidInput(f"{expr!r} is not a cron schedule: use 5 fields, e.g. '*/15 * * * *', or @daily, "
                               "@hourly, @weekly, @monthly, @yearly")
        try:
            CronSim(fields, _utc(0))
        except CronSimError as exc:
            raise InvalidInput(cls._why(expr, fields, exc)) from exc
        return cls(fields)

    @staticmethod
    def _why(expr: str, fields: str, exc: CronSimError) -> str:
        parts = fields.split()
        if "day-of-month" in str(exc):
            try:  # the days exist in some month, only not in these
                CronSim(" ".join([*parts[:3], "*", parts[4]]), _utc(0))
            except CronSimError:
                pass
            else:
                return f"the cron schedule {expr!r} never matches: no such day in those months"
        return f"{expr!r} is not a cron schedule: {str(exc).lower()}"

    def next_after(self, ts: float) -> float:
        """The first matching minute strictly after ``ts`` (epoch seconds)."""
        after = _utc(ts).replace(second=0, microsecond=0)
        try:
            return next(iter(CronSim(self.expr, after))).timestamp()
        except StopIteration as exc:  # cronsim gives up after a bounded search
            raise InvalidInput(f"the cron schedule {self.expr!r} never matches") from exc

    def matches(self, at: dt.datetime) -> bool:
        """Whether the minute of ``at`` is a scheduled one."""
        minute = at.replace(second=0, microsecond=0)
        return self.next_after((minute - dt.timedelta(minutes=1)).timestamp()) == minute.timestamp()

    def due_between(self, start: float, end: float) -> bool:
        """Whether a scheduled minute falls in (start, end]."""
        return self.next_after(start) <= end

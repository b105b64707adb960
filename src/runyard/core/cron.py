"""Five-field cron schedules (minute hour day-of-month month day-of-week), UTC."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

from runyard.core.errors import InvalidInput

_RANGES = ((0, 59), (0, 23), (1, 31), (1, 12), (0, 6))
_NAMES = ("minute", "hour", "day of month", "month", "day of week")


def _field(text: str, lo: int, hi: int, name: str) -> frozenset[int]:
    values: set[int] = set()
    for part in text.split(","):
        base, _, step_text = part.partition("/")
        step = int(step_text) if step_text.isdigit() else (1 if not step_text else -1)
        if step < 1:
            raise InvalidInput(f"bad step in the {name} field: {part!r}")
        if base == "*":
            start, end = lo, hi
        elif "-" in base:
            a, _, b = base.partition("-")
            if not (a.isdigit() and b.isdigit()):
                raise InvalidInput(f"bad range in the {name} field: {part!r}")
            start, end = int(a), int(b)
        elif base.isdigit():
            start = int(base)
            end = hi if step_text else start
        else:
            raise InvalidInput(f"bad {name} field: {part!r}")
        if name == "day of week" and end == 7:  # 7 is Sunday, as 0 is
            if start == 7:
                start = 0
            else:
                values.add(0)
            end = 6 if start else 0
        if not (lo <= start <= hi and lo <= end <= hi and start <= end):
            raise InvalidInput(f"{name} {part!r} is outside {lo}-{hi}")
        values.update(range(start, end + 1, step))
    return frozenset(values)


@dataclass(frozen=True)
class Cron:
    minutes: frozenset[int]
    hours: frozenset[int]
    days: frozenset[int]
    months: frozenset[int]
    weekdays: frozenset[int]

    @classmethod
    def parse(cls, expr: str) -> Cron:
        parts = expr.split()
        if len(parts) != 5:
            raise InvalidInput(f"{expr!r} is not a cron schedule: use 5 fields, e.g. '*/15 * * * *'")
        fields = [_field(p, lo, hi, n) for p, (lo, hi), n in zip(parts, _RANGES, _NAMES, strict=True)]
        return cls(*fields)

    def matches(self, at: dt.datetime) -> bool:
        weekday = (at.weekday() + 1) % 7  # cron: Sunday is 0
        return (at.minute in self.minutes and at.hour in self.hours and at.day in self.days
                and at.month in self.months and weekday in self.weekdays)

    def next_after(self, ts: float) -> float:
        """The first matching minute strictly after ``ts`` (epoch seconds)."""
        at = dt.datetime.fromtimestamp(ts, dt.UTC).replace(second=0, microsecond=0)
        for _ in range(366 * 24 * 60):
            at += dt.timedelta(minutes=1)
            if self.matches(at):
                return at.timestamp()
        raise InvalidInput("the cron schedule never matches")

    def due_between(self, start: float, end: float) -> bool:
        """Whether a scheduled minute falls in (start, end]."""
        return self.next_after(start) <= end

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


# A day-of-month schedule like `0 0 29 2 *` may wait for the next leap year,
# which is at most eight years away (1896 -> 1904, 2096 -> 2104).
_SEARCH_DAYS = 8 * 366 + 1
_DAYS_IN_MONTH = (31, 29, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31)  # at most


@dataclass(frozen=True)
class Cron:
    minutes: frozenset[int]
    hours: frozenset[int]
    days: frozenset[int]
    months: frozenset[int]
    weekdays: frozenset[int]
    # As in cron: when both day fields are restricted, a day matching either one
    # is due; when one is `*`, only the other one counts.
    any_day: bool = True
    any_weekday: bool = True

    @classmethod
    def parse(cls, expr: str) -> Cron:
        parts = expr.split()
        if len(parts) != 5:
            raise InvalidInput(f"{expr!r} is not a cron schedule: use 5 fields, e.g. '*/15 * * * *'")
        fields = [_field(p, lo, hi, n) for p, (lo, hi), n in zip(parts, _RANGES, _NAMES, strict=True)]
        minutes, hours, days, months, weekdays = fields
        cron = cls(minutes, hours, days, months, weekdays,
                   any_day=parts[2].startswith("*"), any_weekday=parts[4].startswith("*"))
        if cron.any_weekday and not any(min(cron.days) <= _DAYS_IN_MONTH[m - 1] for m in cron.months):
            raise InvalidInput(f"the cron schedule {expr!r} never matches: no such day in those months")
        return cron

    def day_matches(self, day: dt.date) -> bool:
        if day.month not in self.months:
            return False
        weekday = (day.weekday() + 1) % 7  # cron: Sunday is 0
        by_day, by_weekday = day.day in self.days, weekday in self.weekdays
        if self.any_day or self.any_weekday:
            return by_day and by_weekday
        return by_day or by_weekday

    def matches(self, at: dt.datetime) -> bool:
        return at.minute in self.minutes and at.hour in self.hours and self.day_matches(at.date())

    def next_after(self, ts: float) -> float:
        """The first matching minute strictly after ``ts`` (epoch seconds)."""
        after = dt.datetime.fromtimestamp(ts, dt.UTC).replace(second=0, microsecond=0)
        hours, minutes = sorted(self.hours), sorted(self.minutes)
        day = after.date()
        for offset in range(_SEARCH_DAYS):
            if self.day_matches(day):
                for hour in hours:
                    if offset == 0 and hour < after.hour:
                        continue
                    for minute in minutes:
                        at = dt.datetime(day.year, day.month, day.day, hour, minute, tzinfo=dt.UTC)
                        if at > after:
                            return at.timestamp()
            day += dt.timedelta(days=1)
        raise InvalidInput("the cron schedule never matches")

    def due_between(self, start: float, end: float) -> bool:
        """Whether a scheduled minute falls in (start, end]."""
        return self.next_after(start) <= end

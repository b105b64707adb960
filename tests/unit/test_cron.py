import datetime as dt

import pytest

from runyard.core.errors import InvalidInput
from runyard.cron import Cron


def ts(year: int, month: int, day: int, hour: int = 0, minute: int = 0) -> float:
    return dt.datetime(year, month, day, hour, minute, tzinfo=dt.UTC).timestamp()


def test_every_fifteen_minutes():
    cron = Cron.parse("*/15 * * * *")
    assert cron.next_after(ts(2026, 1, 1, 10, 7)) == ts(2026, 1, 1, 10, 15)
    assert cron.due_between(ts(2026, 1, 1, 10, 14), ts(2026, 1, 1, 10, 15))
    assert not cron.due_between(ts(2026, 1, 1, 10, 15), ts(2026, 1, 1, 10, 29))


def test_ranges_lists_and_weekdays():
    cron = Cron.parse("30 8-9 * * 1-5")  # weekdays at 8:30 and 9:30
    saturday_noon = ts(2026, 11, 28, 12, 0)
    assert cron.next_after(saturday_noon) == ts(2026, 11, 30, 8, 30)  # Monday
    assert Cron.parse("0 0 1,15 * *").next_after(ts(2026, 3, 2)) == ts(2026, 3, 15)
    assert Cron.parse("0 0 * * 7").matches(dt.datetime(2026, 11, 29, tzinfo=dt.UTC))  # Sunday


@pytest.mark.parametrize("bad", ["* * * *", "61 * * * *", "*/0 * * * *", "a * * * *", "5-1 * * * *"])
def test_bad_schedules_are_refused(bad):
    with pytest.raises(InvalidInput):
        Cron.parse(bad)


def test_day_of_month_and_day_of_week_are_ored_as_cron_does():
    # The 13th of the month or any Friday; 2026-11-06 is a Friday.
    cron = Cron.parse("0 0 13 * 5")
    assert cron.next_after(ts(2026, 11, 1)) == ts(2026, 11, 6)
    assert cron.next_after(ts(2026, 11, 12)) == ts(2026, 11, 13)
    # With one of them `*`, only the other restricts.
    assert Cron.parse("0 0 * * 5").next_after(ts(2026, 11, 7)) == ts(2026, 11, 13)
    assert Cron.parse("0 0 13 * *").next_after(ts(2026, 11, 14)) == ts(2026, 12, 13)


def test_leap_day_schedule_keeps_working_after_a_leap_day():
    cron = Cron.parse("0 0 29 2 *")
    assert cron.next_after(ts(2028, 2, 29, 0, 0)) == ts(2032, 2, 29)
    assert cron.next_after(ts(2096, 3, 1)) == ts(2104, 2, 29)  # 2100 is not a leap year


def test_yearly_schedule_finds_next_year():
    assert Cron.parse("0 0 1 1 *").next_after(ts(2026, 1, 1, 0, 1)) == ts(2027, 1, 1)


@pytest.mark.parametrize("never", ["0 0 30 2 *", "0 0 31 4,6,9,11 *"])
def test_schedule_that_can_never_match_is_refused(never):
    with pytest.raises(InvalidInput, match="never matches"):
        Cron.parse(never)


def test_day_of_week_seven_is_sunday_in_a_range_too():
    """`0-7` is every day (0 and 7 are both Sunday), not Sunday alone."""
    cron = Cron.parse("0 0 * * 0-7")
    assert cron.next_after(ts(2026, 12, 1)) == ts(2026, 12, 2)  # a Wednesday


@pytest.mark.parametrize(("expr", "after", "due"), [
    ("@daily", ts(2026, 12, 1, 10), ts(2026, 12, 2)),
    ("@hourly", ts(2026, 12, 1, 10, 5), ts(2026, 12, 1, 11)),
    ("@weekly", ts(2026, 12, 1), ts(2026, 12, 6)),  # Sunday
    ("0 9 * * MON-FRI", ts(2026, 12, 5), ts(2026, 12, 7, 9)),  # Saturday -> Monday
    ("0 0 1 JAN *", ts(2026, 12, 1), ts(2027, 1, 1)),
])
def test_names_and_macros_are_read_as_cron_reads_them(expr, after, due):
    assert Cron.parse(expr).next_after(after) == due

import datetime as dt

import pytest

from runyard.core.cron import Cron
from runyard.core.errors import InvalidInput


def ts(*args: int) -> float:
    return dt.datetime(*args, tzinfo=dt.UTC).timestamp()


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

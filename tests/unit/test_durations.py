import pytest

from runyard.core.durations import format_duration, parse_duration
from runyard.core.errors import InvalidInput


@pytest.mark.parametrize("text,seconds", [("90s", 90), ("7m", 420), ("1h30m", 5400), ("250ms", 0.25), ("12", 12),
                                          ("1.5s", 1.5), (30, 30)])
def test_parse(text, seconds):
    assert parse_duration(text) == seconds


@pytest.mark.parametrize("text", ["", "abc", "5x", "1h 30m", "m5"])
def test_bad_durations_say_what_is_expected(text):
    with pytest.raises(InvalidInput, match="1h30m"):
        parse_duration(text)


def test_format_round_trips():
    assert format_duration(5400) == "1h30m"
    assert parse_duration(format_duration(425)) == 425

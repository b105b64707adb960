"""Human durations such as ``90s``, ``7m``, ``1h30m``."""

from __future__ import annotations

import re

from runyard.core.errors import InvalidInput

_PART = re.compile(r"(\d+(?:\.\d+)?)(ms|h|m|s)")
_UNIT_SECONDS = {"h": 3600.0, "m": 60.0, "s": 1.0, "ms": 0.001}


def parse_duration(text: str | float | int) -> float:
    """Seconds in ``text``. A bare number is seconds; ``0`` disables a limit."""
    if isinstance(text, (int, float)):
        return float(text)
    cleaned = text.strip().lower()
    if re.fullmatch(r"\d+(?:\.\d+)?", cleaned):
        return float(cleaned)
    pos = 0
    total = 0.0
    for match in _PART.finditer(cleaned):
        if match.start() != pos:
            break
        total += float(match.group(1)) * _UNIT_SECONDS[match.group(2)]
        pos = match.end()
    if pos != len(cleaned) or not cleaned:
        raise InvalidInput(
            f"{text!r} is not a duration: use a number of seconds or forms like 90s, 7m, 1h30m"
        )
    return total


def format_duration(seconds: float) -> str:
    """The inverse of :func:`parse_duration`, for display."""
    if seconds < 1:
        return f"{seconds * 1000:.0f}ms"
    whole = round(seconds)
    hours, rest = divmod(whole, 3600)
    minutes, secs = divmod(rest, 60)
    parts = [f"{hours}h" if hours else "", f"{minutes}m" if minutes else "", f"{secs}s" if secs else ""]
    return "".join(parts) or "0s"

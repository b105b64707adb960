"""The one syntax of an extra mount for runs: ``/host:/container[:ro|:rw]``."""

from __future__ import annotations

from runyard.core.errors import InvalidInput


def parse_mount(entry: str) -> tuple[str, str, bool]:
    """``/host:/container[:ro|:rw]`` -> (host, container, read_only)."""
    parts = entry.split(":")
    if len(parts) not in (2, 3) or not parts[0].startswith("/") or not parts[1].startswith("/"):
        raise InvalidInput(f"mount {entry!r} is not /host/path:/container/path[:ro]")
    if len(parts) == 3 and parts[2] not in ("ro", "rw"):
        raise InvalidInput(f"mount {entry!r}: the mode must be ro or rw")
    return parts[0], parts[1], len(parts) == 3 and parts[2] == "ro"

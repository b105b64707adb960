"""ULIDs: sortable, unique ids for runs, workers and everything else."""

from __future__ import annotations

import os
import time

_ALPHABET = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"


def ulid_time(ulid: str) -> float:
    """When a ULID was made (epoch seconds); ValueError if it is not one."""
    if len(ulid) != 26:
        raise ValueError(f"{ulid!r} is not a ULID")
    value = 0
    for ch in ulid[:10].upper():
        value = value * 32 + _ALPHABET.index(ch)
    return value / 1000


def new_ulid(now: float | None = None) -> str:
    """A 26-character Crockford base32 ULID: 48 bits of milliseconds, 80 random."""
    millis = int((time.time() if now is None else now) * 1000)
    value = (millis << 80) | int.from_bytes(os.urandom(10), "big")
    chars = []
    for _ in range(26):
        chars.append(_ALPHABET[value & 31])
        value >>= 5
    return "".join(reversed(chars))

"""Secret masking for streamed output.

A secret may leak in pieces: split across two reads of a pipe, spread over
several lines (a PEM key), or encoded (base64, URL-encoding). The
:class:`StreamMasker` holds back just enough text to see every form whole
before it lets a line go.
"""

from __future__ import annotations

import base64
import textwrap
import urllib.parse
from collections.abc import Iterable

from runyard.core.errors import InvalidInput

MASK = "***"
# Shorter secrets would blank ordinary words and numbers all over a log.
MIN_SECRET_LENGTH = 6


def check_maskable(name: str, value: str) -> None:
    """Refuse a secret that cannot be masked without wrecking the log."""
    if len(value.strip()) < MIN_SECRET_LENGTH:
        raise InvalidInput(
            f"secret {name} is shorter than {MIN_SECRET_LENGTH} characters, too short to mask "
            "safely in logs; use a longer value or make it a plain variable"
        )


def secret_forms(value: str) -> set[str]:
    """Every text form of ``value`` that must never appear in a log."""
    forms = {value, value.strip()}
    raw = value.encode()
    encoded = [
        base64.b64encode(raw).decode(),
        base64.urlsafe_b64encode(raw).decode(),
        urllib.parse.quote(value, safe=""),
        urllib.parse.quote_plus(value),
    ]
    for enc in encoded:
        forms.add(enc)
        forms.add(enc.rstrip("="))
    # `base64` wraps at 76 columns; every full wrapped line is a stable piece.
    for line in textwrap.wrap(encoded[0], 76):
        forms.add(line)
    # A multi-line value may come back with other line endings or indentation:
    # mask each of its lines that is long enough to be safely unique.
    if "\n" in value:
        for line in value.splitlines():
            forms.add(line.strip())
    return {f for f in forms if len(f) >= MIN_SECRET_LENGTH}


class StreamMasker:
    """Masks secrets in a stream of text chunks and yields whole, masked lines."""

    def __init__(self, secrets: Iterable[str]) -> None:
        forms: set[str] = set()
        for s in secrets:
            if s:
                forms |= secret_forms(s)
        # Longest first, so a secret containing another is replaced whole.
        self._forms = sorted(forms, key=len, reverse=True)
        self._hold = max((len(f) for f in self._forms), default=1) - 1
        self._firsts = {f[0] for f in self._forms}
        self._buffer = ""

    def mask(self, text: str) -> str:
        """Mask every complete secret form in ``text``."""
        for form in self._forms:
            if form in text:
                text = text.replace(form, MASK)
        return text

    def feed(self, chunk: str) -> list[str]:
        """Add ``chunk``; return the lines that can no longer hide part of a secret."""
        self._buffer = self.mask(self._buffer + chunk)
        cut = self._buffer.rfind("\n", 0, self._partial_start())
        if cut < 0:
            return []
        ready, self._buffer = self._buffer[:cut], self._buffer[cut + 1 :]
        return ready.split("\n")

    def _partial_start(self) -> int:
        """Where the earliest unfinished secret might begin (the end if nowhere).

        Only the last ``_hold`` characters can hold one, and only where the
        text so far is a prefix of some form.
        """
        buf = self._buffer
        for pos in range(max(0, len(buf) - self._hold), len(buf)):
            if buf[pos] in self._firsts:
                tail = buf[pos:]
                if any(form.startswith(tail) for form in self._forms):
                    return pos
        return len(buf)

    def flush(self) -> list[str]:
        """Everything still held, masked, as lines (at the end of the stream)."""
        rest, self._buffer = self.mask(self._buffer), ""
        if not rest:
            return []
        return rest.rstrip("\n").split("\n")

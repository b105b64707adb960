"""Secret masking for streamed output.

A secret may leak in pieces: split across two reads of a pipe, spread over
several lines (a PEM key), or encoded (base64 plain or wrapped, URL-encoding
of any flavour, JSON string escaping). Every such form of every secret is
looked for in the *raw* text; the union of all places where any form occurs
is masked. The :class:`StreamMasker` holds back just enough raw text to see
every form whole before it lets a line go.

Why raw text and a union: masking one form first (a line of a multi-line
secret, say) would break the longer form it sits in (the URL-encoding of the
whole value), and the rest of that longer form would then slip through.
"""

from __future__ import annotations

import base64
import json
import textwrap
import urllib.parse
from collections.abc import Iterable

from runyard.core.errors import InvalidInput

MASK = "***"
# Shorter secrets would blank ordinary words and numbers all over a log.
MIN_SECRET_LENGTH = 6
# A secret longer than this cannot be masked with a bounded hold-back buffer.
MAX_SECRET_LENGTH = 64 * 1024


def check_maskable(name: str, value: str) -> None:
    """Refuse a secret that cannot be masked without wrecking the log."""
    if len(value.strip()) < MIN_SECRET_LENGTH:
        raise InvalidInput(
            f"secret {name} is shorter than {MIN_SECRET_LENGTH} characters, too short to mask "
            "safely in logs; use a longer value or make it a plain variable"
        )
    if len(value) > MAX_SECRET_LENGTH:
        raise InvalidInput(f"secret {name} is longer than {MAX_SECRET_LENGTH} characters: store it in a file instead")


def _base64_forms(raw: bytes) -> set[str]:
    forms: set[str] = set()
    for enc in (base64.b64encode(raw).decode(), base64.urlsafe_b64encode(raw).decode()):
        forms |= {enc, enc.rstrip("=")}
        # `base64` wraps at 76 columns: the wrapped text whole, and each full line.
        lines = textwrap.wrap(enc, 76)
        forms.add("\n".join(lines))
        forms |= set(lines[:-1])
    return forms


def _url_forms(value: str) -> set[str]:
    raw = value.encode()
    percent_all = "".join(f"%{b:02X}" for b in raw)
    return {
        urllib.parse.quote(value, safe=""),
        urllib.parse.quote(value),  # the default keeps "/"
        urllib.parse.quote_plus(value),
        urllib.parse.quote_plus(value, safe="/"),
        percent_all,
        percent_all.lower(),
    }


def _json_forms(value: str) -> set[str]:
    return {json.dumps(value)[1:-1], json.dumps(value, ensure_ascii=False)[1:-1]}


def secret_forms(value: str) -> set[str]:
    """Every text form of ``value`` that must never appear in a log."""
    forms = {value, value.strip()}
    # `echo "$SECRET" | base64` encodes the trailing newline too.
    for variant in {value, value.strip(), value + "\n"}:
        forms |= _base64_forms(variant.encode())
        forms |= _url_forms(variant)
        forms |= _json_forms(variant)
    if "\n" in value:
        # A multi-line value may come back line by line, with other line endings
        # or indentation, or each line encoded on its own.
        for line in value.splitlines():
            line = line.strip()
            forms.add(line)
            forms |= _url_forms(line) | _json_forms(line)
        forms.add(value.replace("\n", "\r\n"))
    return {f for f in forms if len(f) >= MIN_SECRET_LENGTH}


class StreamMasker:
    """Masks secrets in a stream of text chunks and yields whole, masked lines."""

    def __init__(self, secrets: Iterable[str]) -> None:
        forms: set[str] = set()
        for s in secrets:
            if s:
                forms |= secret_forms(s)
        self._forms = sorted(forms, key=len, reverse=True)
        self._hold = max((len(f) for f in self._forms), default=1) - 1
        self._firsts = {f[0] for f in self._forms}
        self._buffer = ""  # raw, unmasked text not yet released

    def _spans(self, text: str) -> list[tuple[int, int]]:
        """Where any form occurs in ``text``, merged into disjoint spans."""
        spans: list[tuple[int, int]] = []
        for form in self._forms:
            start = text.find(form)
            while start >= 0:
                spans.append((start, start + len(form)))
                start = text.find(form, start + 1)
        spans.sort()
        merged: list[tuple[int, int]] = []
        for start, end in spans:
            if merged and start <= merged[-1][1]:
                merged[-1] = (merged[-1][0], max(merged[-1][1], end))
            else:
                merged.append((start, end))
        return merged

    @staticmethod
    def _apply(text: str, spans: list[tuple[int, int]]) -> str:
        out, pos = [], 0
        for start, end in spans:
            out += [text[pos:start], MASK]
            pos = end
        out.append(text[pos:])
        return "".join(out)

    def mask(self, text: str) -> str:
        """Mask every complete secret form in ``text``."""
        return self._apply(text, self._spans(text)) if self._forms else text

    def feed(self, chunk: str) -> list[str]:
        """Add ``chunk``; return the lines that can no longer hide part of a secret."""
        self._buffer += chunk
        buf = self._buffer
        spans = self._spans(buf)
        cut = buf.rfind("\n", 0, self._partial_start())
        # Never cut inside a secret (a multi-line value holds newlines).
        while cut >= 0:
            inside = next((s for s in spans if s[0] <= cut < s[1]), None)
            if inside is None:
                break
            cut = buf.rfind("\n", 0, inside[0])
        if cut < 0:
            return []
        ready = self._apply(buf[:cut], [s for s in spans if s[1] <= cut])
        self._buffer = buf[cut + 1 :]
        return ready.split("\n")

    def _partial_start(self) -> int:
        """Where the earliest unfinished secret might begin (the end if nowhere).

        Only the last ``_hold`` characters can hold one, and only where the
        text from there to the end is a prefix of some form.
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

"""Secret masking for streamed output; the one module that imports ``regex``.

A secret may leak in pieces (split across two reads of a pipe, spread over
several lines), encoded, or both. What is masked, for every secret:

- **Each character in any of its spellings**, chosen character by
  character: itself; any percent-encoding of its UTF-8 bytes, in either
  case (so every RFC 3986 safe set, ``jq @uri``, encodeURIComponent,
  ``quote_plus``'s ``+`` for a space); a backslash escape (``\\'``,
  ``\\"``, ``\\\\``, ``\\ `` of ``printf %q``, JSON's ``\\uXXXX`` and
  ``\\n``, Python's ``\\xHH``, ``\\U...`` and ``repr``, an octal
  ``\\047``, each behind up to four backslashes, as JSON inside JSON is);
  a ``'`` spliced as shell quoting does (``'"'"'``, ``'\\''``); and one
  space or tab between any two characters (a value spaced out).
- **Base64** of the value (and of it with echo's newline), standard or URL
  alphabet, wrapped at any width; and base64 of the value **gzip**-ed
  (``gzip | base64``, with or without ``-n``, from a file or a pipe): the
  deflate stream and trailer are the same whatever the header holds, so
  all but the header's few characters are masked.
- **Each line** of a multi-line value, the same ways.

Not masked, on purpose: hex dumps, reversed text, encryption, any encoding
of part of a value, and text spelled with other separators.

Why raw text and a union: masking one form first (a line of a multi-line
secret, say) would break the longer form it sits in (the URL-encoding of the
whole value), and the rest of that longer form would then slip through. The
:class:`StreamMasker` holds back just enough raw text to see every form
whole before it lets a line go: the partial matches of ``regex``.

A value of up to ``CLASS_MAX`` characters is matched in every spelling
above; a longer one (a key file) piece by piece of ``PIECE`` characters
(each piece found anywhere, in any spelling), and whole as itself and in
base64, URL and JSON encoding.
"""

from __future__ import annotations

import base64
import bisect
import json
import textwrap
import urllib.parse
import zlib
from collections.abc import Iterable

import regex

from runyard.core.errors import InvalidInput
from runyard.core.limits import MAX_SECRET_LENGTH

MASK = "***"
# Shorter secrets would blank ordinary words and numbers all over a log.
MIN_SECRET_LENGTH = 6
# Up to this long, a value is matched in every spelling, piece by piece of
# PIECE characters (the pattern of a character costs its compile time).
CLASS_MAX = 4096
PIECE = 256

_SEPARATOR = r"[ \t]?"
# A match the text ends inside of holds its lines back only if no line
# break comes in its first HOLD_ACROSS_LINES characters: else every line
# ending in a letter some base64 form starts with would wait for the next.
HOLD_ACROSS_LINES = 16
_BACKSLASHES = r"\\{1,4}"
_NAMED_ESCAPES = {"\n": "n", "\t": "t", "\r": "r", "\b": "b", "\f": "f", "\v": "v", "\a": "a", "\0": "0"}


def check_maskable(name: str, value: str) -> None:
    """Refuse a secret that cannot be masked without wrecking the log."""
    if len(value.strip()) < MIN_SECRET_LENGTH:
        raise InvalidInput(
            f"secret {name} is shorter than {MIN_SECRET_LENGTH} characters, too short to mask "
            "safely in logs; use a longer value or make it a plain variable"
        )
    if len(value) > MAX_SECRET_LENGTH:
        raise InvalidInput(f"secret {name} is longer than {MAX_SECRET_LENGTH} characters: store it in a file instead")


def _hex(number: int, width: int) -> str:
    """``number`` in hex digits of either case (a class per letter: cheaper
    to compile than a case-insensitive group, and compiling is most of what
    a masker costs to make)."""
    return "".join(f"[{d}{d.upper()}]" if d.isalpha() else d for d in f"{number:0{width}x}")


def _character(ch: str) -> str:
    """A pattern of every spelling of one character."""
    cp = ord(ch)
    escaped = [regex.escape(ch)]
    if cp < 0x10000:
        escaped.append("u" + _hex(cp, 4))
    else:
        high, low = 0xD800 + ((cp - 0x10000) >> 10), 0xDC00 + ((cp - 0x10000) & 0x3FF)
        escaped += ["U" + _hex(cp, 8), "u" + _hex(high, 4) + _BACKSLASHES + "u" + _hex(low, 4)]
    if cp < 0x100:
        escaped += ["x" + _hex(cp, 2), f"{cp:03o}"]
    if ch in _NAMED_ESCAPES:
        escaped.append(_NAMED_ESCAPES[ch])
    # The longer spellings first: a match takes the first that fits, and
    # must cover all of the text it stands for (both of JSON's "\\").
    spellings = [_BACKSLASHES + "(?:" + "|".join(escaped) + ")", "%" + "%".join(_hex(b, 2) for b in ch.encode())]
    if cp >= 0x80:  # its UTF-8 bytes escaped one by one (a bytes repr, $'\302\241')
        utf8 = ch.encode()
        spellings[:0] = ["".join(_BACKSLASHES + "x" + _hex(b, 2) for b in utf8),
                         "".join(_BACKSLASHES + f"{b:03o}" for b in utf8)]
    if ch == "'":
        spellings[:0] = [regex.escape("'\"'\"'"), regex.escape("'\\''")]
    elif ch == "\n":
        spellings.append(r"\r\n")
    spellings.append(regex.escape(ch))
    if ch == " ":
        spellings.append(r"\+")
    return "(?:" + "|".join(spellings) + ")"


def _spelled(text: str) -> str:
    """``text`` in any spelling of each of its characters."""
    return _SEPARATOR.join(_character(ch) for ch in text)


def _full_groups(data: bytes, alphabet: str) -> set[str]:
    """Base64 of ``data`` at each of the three alignments it may sit at in a
    longer stream, without the groups its neighbours share."""
    forms = set()
    for skip in range(3):
        part = data[skip:]
        encoded = (base64.b64encode(part) if alphabet == "std" else base64.urlsafe_b64encode(part)).decode()
        # Whole (the stream ends with it), and its full groups (more follows).
        forms |= {encoded, encoded.rstrip("="), encoded[: 4 * (len(part) // 3)]}
    return forms


def _gzip_bodies(raw: bytes) -> set[bytes]:
    """What follows a gzip header for ``raw``: the deflate stream of each
    level (gzip's own and zlib's agree) and the CRC-32 and size trailer."""
    trailer = zlib.crc32(raw).to_bytes(4, "little") + (len(raw) & 0xFFFFFFFF).to_bytes(4, "little")
    bodies = set()
    for level in range(1, 10):
        deflate = zlib.compressobj(level, zlib.DEFLATED, -15)
        bodies.add(deflate.compress(raw) + deflate.flush() + trailer)
    return bodies


def encoded_forms(value: str) -> set[str]:
    """Base64 and gzip-then-base64 of ``value`` (and with echo's newline).
    Looked for with line breaks taken out of the text: wrapped at any width."""
    forms: set[str] = set()
    for variant in {value, value.strip(), value + "\n", value.strip() + "\n"}:
        raw = variant.encode()
        for alphabet in ("std", "url"):
            forms |= _full_groups(raw, alphabet)
            for body in _gzip_bodies(raw):
                # The header's last byte shares a group with the stream's
                # first bytes: the OS byte (Unix, unknown, FAT) or a file
                # name's terminating NUL.
                for last in (b"", b"\x03", b"\xff", b"\x00"):
                    forms |= _full_groups(last + body, alphabet)
    return {f for f in forms if len(f) >= MIN_SECRET_LENGTH}


def _pieces(text: str) -> list[str]:
    pieces = [text[i:i + PIECE] for i in range(0, len(text), PIECE)]
    if len(pieces) > 1 and len(pieces[-1]) < MIN_SECRET_LENGTH:
        pieces[-2:] = [pieces[-2] + pieces[-1]]
    return pieces


def _parts(value: str) -> list[str]:
    """The value (stripped) and, if it has several, each of its lines."""
    core = value.strip()
    parts = [core] if "\n" not in core else [core, *(ln.strip() for ln in core.splitlines())]
    return [p for p in parts if len(p) >= MIN_SECRET_LENGTH]


# The longest spelling of one character (four backslashes and \x.. for each
# of four UTF-8 bytes), with the separator after it.
LONGEST_SPELLING = 4 * (4 + 4) + 1


def secret_patterns(value: str) -> list[tuple[str, int]]:
    """The patterns of ``value`` spelled character by character, a piece at
    a time; each with the longest text it can match."""
    return [(_spelled(piece), LONGEST_SPELLING * len(piece)) if len(part) <= CLASS_MAX
            else (regex.escape(piece), len(piece))
            for part in _parts(value) for piece in _pieces(part)]


def flat_forms(value: str) -> set[str]:
    """The forms of ``value`` looked for in the text without its line breaks."""
    forms: set[str] = set()
    for part in _parts(value):
        forms |= encoded_forms(value if part == value.strip() else part)
    return forms


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
        urllib.parse.quote(value),
        urllib.parse.quote_plus(value),
        percent_all,
        percent_all.lower(),
    }


def _json_forms(value: str) -> set[str]:
    return {json.dumps(value)[1:-1], json.dumps(value, ensure_ascii=False)[1:-1]}


def secret_forms(value: str) -> set[str]:
    """The literal forms of a value too long for :func:`secret_patterns` to
    spell whole: itself, base64, URL and JSON encodings, and its lines."""
    if len(value.strip()) <= CLASS_MAX:
        return set()
    forms = {value, value.strip()}
    for variant in {value, value.strip(), value + "\n"}:
        forms |= _base64_forms(variant.encode()) | _url_forms(variant) | _json_forms(variant)
    if "\n" in value:
        forms.add(value.replace("\n", "\r\n"))
    return {f for f in forms if len(f) >= MIN_SECRET_LENGTH}


_LINE_BREAK = regex.compile(r"[\r\n]")


class _Flat:
    """``text`` without CR and LF, and where each of its characters is in ``text``."""

    def __init__(self, text: str) -> None:
        breaks = [m.start() for m in _LINE_BREAK.finditer(text)]
        self.text = text.replace("\r", "").replace("\n", "") if breaks else text
        # The flat index before which each removed character stood.
        self._before = [pos - n for n, pos in enumerate(breaks)]

    def raw(self, index: int) -> int:
        """Where the flat text's character at ``index`` is in the raw text."""
        return index + bisect.bisect_right(self._before, index)


class _Literals:
    """Literal forms, found by ``str.find`` (every occurrence, overlaps too).
    A form that begins with a shorter one is looked for only where that one
    is found (base64 whole begins with its full groups): fewer passes."""

    def __init__(self, forms: Iterable[str]) -> None:
        self.forms = sorted(set(forms), key=len)
        self._longer: dict[str, list[str]] = {}  # a root form -> the forms that begin with it
        for form in self.forms:
            root = next((r for r in self._longer if form.startswith(r)), None)
            if root is None:
                self._longer[form] = []
            else:
                self._longer[root].append(form)
        self._hold = max((len(f) for f in self.forms), default=1) - 1
        self._firsts = {f[0] for f in self.forms}

    def scan(self, text: str) -> tuple[list[tuple[int, int]], int]:
        """The spans of every form in ``text``, and where the earliest form
        ``text`` ends inside of might begin (its length if nowhere): only the
        last ``_hold`` characters can hold one, where the text from there to
        the end is a prefix of some form."""
        spans = []
        for root, longer in self._longer.items():
            start = text.find(root)
            while start >= 0:
                end = start + len(root)
                for form in longer:
                    if text.startswith(form, start):
                        end = max(end, start + len(form))
                spans.append((start, end))
                start = text.find(root, start + 1)
        for pos in range(max(0, len(text) - self._hold), len(text)):
            if text[pos] in self._firsts:
                tail = text[pos:]
                if any(form.startswith(tail) for form in self.forms):
                    return spans, pos
        return spans, len(text)


def token_forms(token: str) -> set[str]:
    """The forms of a token runyard made (letters, digits, ``_`` and ``-``:
    every escaping leaves those as they are): itself, percent-encoded whole,
    and its base64."""
    raw = token.encode()
    percent = "".join(f"%{b:02X}" for b in raw)
    return {token, percent, percent.lower()} | _full_groups(raw, "std") | _full_groups((token + "\n").encode(), "std")


class StreamMasker:
    """Masks secrets in a stream of text chunks and yields whole, masked lines.
    ``tokens`` are credentials runyard made for the run (cheaper to match:
    no character of theirs is ever escaped)."""

    def __init__(self, secrets: Iterable[str], tokens: Iterable[str] = ()) -> None:
        forms: set[str] = set()
        flat: set[str] = set()
        patterns: dict[str, int] = {}
        for s in secrets:
            if s:
                forms |= secret_forms(s)
                flat |= flat_forms(s)
                patterns.update(secret_patterns(s))
        for token in tokens:
            if token:
                forms |= token_forms(token)
        self._forms = _Literals(forms)  # in the raw text
        self._flat = _Literals(flat)  # in the text without its line breaks
        self._patterns = [(regex.compile(p), longest) for p, longest in patterns.items()]
        self._buffer = ""  # raw, unmasked text not yet released

    def _scan(self, text: str) -> tuple[list[tuple[int, int]], int]:
        """Where any form occurs in ``text``, merged into disjoint spans; and
        where the earliest match that ``text`` ends inside of begins (its
        length if none does)."""
        spans, partial = self._forms.scan(text)
        if self._flat.forms:  # only then is the text without its line breaks needed
            flat = _Flat(text)
            flat_spans, flat_partial = self._flat.scan(flat.text)
            spans += [(flat.raw(start), flat.raw(end - 1) + 1) for start, end in flat_spans]
            if flat_partial < len(flat.text):
                partial = min(partial, self._holding(text, flat.raw(flat_partial)))
        for pattern, longest in self._patterns:
            # Every match, overlapping ones too (a search again just after
            # each: matches are rare, a second pass over the text is not).
            found = pattern.search(text)
            while found is not None:
                spans.append(found.span())
                found = pattern.search(text, found.start() + 1)
            # A match the text ends inside of starts no earlier than the
            # longest match before its end.
            found = pattern.search(text, max(0, len(text) - longest), partial=True)
            while found is not None and not found.partial:
                found = pattern.search(text, found.start() + 1, partial=True)
            if found is not None:
                partial = min(partial, self._holding(text, found.start()))
        spans.sort()
        merged: list[tuple[int, int]] = []
        for start, end in spans:
            if merged and start <= merged[-1][1]:
                merged[-1] = (merged[-1][0], max(merged[-1][1], end))
            else:
                merged.append((start, end))
        return merged, partial

    @staticmethod
    def _holding(text: str, start: int) -> int:
        """Where a match ``text`` ends inside of, from ``start``, holds the text
        back: there, unless a line break comes too soon after it."""
        line_break = text.find("\n", start)
        return start if line_break < 0 or line_break - start >= HOLD_ACROSS_LINES else len(text)

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
        if not self._forms.forms and not self._flat.forms and not self._patterns:
            return text
        spans, _ = self._scan(text)
        return self._apply(text, spans)

    def feed(self, chunk: str) -> list[str]:
        """Add ``chunk``; return the lines that can no longer hide part of a secret."""
        self._buffer += chunk
        buf = self._buffer
        spans, partial = self._scan(buf)
        cut = buf.rfind("\n", 0, partial)
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

    def flush(self) -> list[str]:
        """Everything still held, masked, as lines (at the end of the stream)."""
        rest, self._buffer = self.mask(self._buffer), ""
        if not rest:
            return []
        return rest.rstrip("\n").split("\n")

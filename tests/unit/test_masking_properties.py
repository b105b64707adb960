"""Property: no secret survives masking, whatever its encoding and however the
output is chunked."""

from __future__ import annotations

import base64
import json
import textwrap
import urllib.parse
from collections.abc import Callable

from hypothesis import given, settings
from hypothesis import strategies as st

from runyard.core.masking import MASK, StreamMasker

# Surrounding text uses characters no secret or encoding of one contains, so
# whatever is left of the secret after masking is plain to see.
FRAME = "<<~~>>"
SECRET_ALPHABET = st.characters(
    codec="utf-8", categories=("L", "N", "P", "S", "Zs"), exclude_characters="<>~\x00"
)
LINE = st.text(SECRET_ALPHABET, min_size=6, max_size=40).filter(lambda s: s.strip() == s and len(s) >= 6)
SINGLE = LINE
MULTI = st.lists(LINE, min_size=2, max_size=4).map("\n".join)


def b64(s: str) -> str:
    return base64.b64encode(s.encode()).decode()


ENCODINGS: dict[str, Callable[[str], str]] = {
    "raw": lambda s: s,
    "base64": b64,
    "base64 -w0 of echo": lambda s: b64(s + "\n"),
    "base64 wrapped": lambda s: "\n".join(textwrap.wrap(b64(s), 76)),
    "base64 wrapped of echo": lambda s: "\n".join(textwrap.wrap(b64(s + "\n"), 76)),
    "urlsafe base64": lambda s: base64.urlsafe_b64encode(s.encode()).decode(),
    "quote": urllib.parse.quote,
    "quote safe=''": lambda s: urllib.parse.quote(s, safe=""),
    "quote_plus": urllib.parse.quote_plus,
    "percent everything": lambda s: "".join(f"%{b:02X}" for b in s.encode()),
    "json": lambda s: json.dumps(s)[1:-1],
    "json unicode": lambda s: json.dumps(s, ensure_ascii=False)[1:-1],
    "crlf": lambda s: s.replace("\n", "\r\n"),
    "each line indented": lambda s: "\n".join("    " + line for line in s.split("\n")),
}


def run_masker(secret: str, text: str, cuts: list[int]) -> str:
    masker = StreamMasker([secret])
    out: list[str] = []
    prev = 0
    for cut in sorted(set(cuts)):
        out += masker.feed(text[prev:cut])
        prev = cut
    out += masker.feed(text[prev:])
    out += masker.flush()
    return "\n".join(out)


def leftover(masked: str) -> str:
    """What remains once the frame, the masks and line breaks are taken out."""
    rest = masked.replace(MASK, "").replace(FRAME, "")
    return "".join(ch for ch in rest if ch not in " \r\n")


@settings(max_examples=150, deadline=None)
@given(
    secret=st.one_of(SINGLE, MULTI),
    encoding=st.sampled_from(sorted(ENCODINGS)),
    cuts=st.lists(st.integers(min_value=0, max_value=400), max_size=8),
)
def test_no_encoding_of_a_secret_survives_any_chunking(secret: str, encoding: str, cuts: list[int]) -> None:
    encoded = ENCODINGS[encoding](secret)
    text = f"{FRAME}{encoded}{FRAME}\nnext {FRAME}\n"
    masked = run_masker(secret, text, cuts)
    assert leftover(masked) == "next", f"{encoding}: {masked!r}"


@settings(max_examples=50, deadline=None)
@given(secret=st.one_of(SINGLE, MULTI), cuts=st.lists(st.integers(min_value=0, max_value=200), max_size=6))
def test_text_without_secrets_passes_unchanged(secret: str, cuts: list[int]) -> None:
    text = f"{FRAME} plain line\n{FRAME} another ~~ line\n"
    assert run_masker(secret, text, cuts) == text.rstrip("\n")

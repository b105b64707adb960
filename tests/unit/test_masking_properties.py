"""Property: no secret survives masking, whatever its encoding and however the
output is chunked."""

from __future__ import annotations

import base64
import gzip
import io
import json
import textwrap
import urllib.parse
from collections.abc import Callable

from hypothesis import given, settings
from hypothesis import strategies as st

from runyard.masking import MASK, StreamMasker

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
    "base64 -w 64 of echo": lambda s: "\n".join(textwrap.wrap(b64(s + "\n"), 64)),
    "shell splice '\"'\"'": lambda s: s.replace("'", "'\"'\"'"),
    "shell splice '\\''": lambda s: s.replace("'", "'\\''"),
    "printf %q": lambda s: "".join("\\" + c if c.isascii() and not c.isalnum() and c != "\n" else c for c in s),
    "repr": lambda s: repr(s)[1:-1],
    "repr of bytes": lambda s: repr(s.encode())[2:-1],
    "json in json": lambda s: json.dumps(json.dumps(s)[1:-1])[1:-1],
    "jq @uri": lambda s: urllib.parse.quote(s, safe="-_.~"),
    "encodeURIComponent": lambda s: urllib.parse.quote(s, safe="-_.!~*'()"),
    "spaced": " ".join,
    "tab-spaced": "\t".join,
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
    return "".join(ch for ch in rest if ch not in " \t\r\n")


@settings(deadline=None)
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


@settings(deadline=None)
@given(secret=st.one_of(SINGLE, MULTI), cuts=st.lists(st.integers(min_value=0, max_value=200), max_size=6))
def test_text_without_secrets_passes_unchanged(secret: str, cuts: list[int]) -> None:
    text = f"{FRAME} plain line\n{FRAME} another ~~ line\n"
    assert run_masker(secret, text, cuts) == text.rstrip("\n")


RESERVED = ":/?#[]@!$&'()*+,;="


@settings(deadline=None)
@given(secret=st.one_of(SINGLE, MULTI), safe=st.sets(st.sampled_from(RESERVED)), plus=st.booleans(),
       lower=st.booleans(), cuts=st.lists(st.integers(min_value=0, max_value=400), max_size=6))
def test_every_rfc_3986_safe_set_is_masked(secret: str, safe: set[str], plus: bool, lower: bool,
                                           cuts: list[int]) -> None:
    quote = urllib.parse.quote_plus if plus else urllib.parse.quote
    encoded = quote(secret, safe="".join(sorted(safe)))
    if lower:
        encoded = "%".join(part[:2].lower() + part[2:] if i else part for i, part in enumerate(encoded.split("%")))
    text = f"{FRAME}{encoded}{FRAME}\nnext {FRAME}\n"
    assert leftover(run_masker(secret, text, cuts)) == "next", encoded


def _gzip(data: bytes, level: int, mtime: int, name: str) -> bytes:
    buf = io.BytesIO()
    with gzip.GzipFile(filename=name, mode="wb", fileobj=buf, compresslevel=level, mtime=mtime) as gz:
        gz.write(data)
    return buf.getvalue()


@settings(deadline=None)
@given(secret=st.one_of(SINGLE, MULTI), echo=st.booleans(), level=st.sampled_from([1, 6, 9]),
       mtime=st.integers(min_value=0, max_value=2**32 - 1), name=st.sampled_from(["", "secret.txt", "a"]),
       width=st.sampled_from([0, 76, 64]), cuts=st.lists(st.integers(min_value=0, max_value=400), max_size=6))
def test_gzip_then_base64_of_the_value_is_masked(secret: str, echo: bool, level: int, mtime: int, name: str,
                                                 width: int, cuts: list[int]) -> None:
    """`gzip | base64` (with or without -n, from a file or a pipe): all but
    the header's characters and the last group are masked, and those carry
    nothing of the value."""
    encoded = base64.b64encode(_gzip((secret + "\n" * echo).encode(), level, mtime, name)).decode()
    header = 10 + (len(name) + 1 if name else 0)
    shown = "\n".join(textwrap.wrap(encoded, width)) if width else encoded
    text = f"{FRAME}{shown}{FRAME}\nnext {FRAME}\n"
    rest = leftover(run_masker(secret, text, cuts))
    assert rest.endswith("next")
    residue = rest.removesuffix("next")
    head = 12 if not name else 4 * ((header + 2) // 3)  # a pipe's header: its first nine bytes alone
    assert len(residue) <= head + 4 and encoded.startswith(residue[:head]), (residue, encoded)

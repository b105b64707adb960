"""Secrets never reach a log, whatever shape they leak in."""

import base64
import urllib.parse

import pytest

from runyard.core.errors import InvalidInput
from runyard.masking import MASK, StreamMasker, check_maskable

PEM = (
    "-----BEGIN PRIVATE KEY-----\nMIIEvQIBADANBgkqhkiG9w0BAQEFAASC\n"
    "BKcwggSjAgEAAoIBAQC7VJTUt9Us8cKj\n-----END PRIVATE KEY-----"
)


def masked(secrets, chunks):
    m = StreamMasker(secrets)
    out = []
    for c in chunks:
        out += m.feed(c)
    out += m.flush()
    return "\n".join(out)


def test_plain_secret_is_masked():
    assert masked(["hunter2-secret"], ["pw=hunter2-secret ok\n"]) == f"pw={MASK} ok"


def test_secret_split_across_chunks_is_masked():
    text = masked(["hunter2-secret"], ["pw=hunt", "er2-se", "cret ok\n"])
    assert "hunter2" not in text and MASK in text


def test_multiline_secret_is_masked_whole_and_by_line():
    assert "MIIEvQ" not in masked([PEM], [PEM[:40], PEM[40:] + "\n"])
    # Printed with other line endings, each line is still caught.
    assert "MIIEvQ" not in masked([PEM], [PEM.replace("\n", "\r\n") + "\n"])


def test_encoded_forms_are_masked():
    secret = "p@ss w/rd&more"
    for form in (
        base64.b64encode(secret.encode()).decode(),
        base64.urlsafe_b64encode(secret.encode()).decode(),
        urllib.parse.quote(secret, safe=""),
        urllib.parse.quote_plus(secret),
    ):
        assert form not in masked([secret], [f"x {form} y\n"]), form


def test_wrapped_base64_of_a_long_secret_is_masked():
    encoded = base64.b64encode(PEM.encode()).decode()
    wrapped = "\n".join(encoded[i:i + 76] for i in range(0, len(encoded), 76))
    out = masked([PEM], [wrapped + "\n"])
    assert encoded[76:152] not in out


def test_lines_without_secrets_pass_untouched_and_in_order():
    lines = [f"line {i}" for i in range(100)]
    assert masked(["some-secret-value"], ["\n".join(lines) + "\n"]) == "\n".join(lines)


def test_line_is_released_once_no_secret_can_hide_in_it():
    m = StreamMasker(["a-long-secret-value"])
    assert m.feed("first line\nsecond") == ["first line"]


def test_short_secrets_are_refused():
    with pytest.raises(InvalidInput, match="too short to mask"):
        check_maskable("PIN", "1234")
    check_maskable("TOKEN", "123456")

"""JSON for the hot paths (log blocks, by the megabyte): orjson, with the
standard library for what orjson refuses (a lone surrogate, which output
decoded with surrogateescape may hold). The one place orjson is used."""

from __future__ import annotations

import json
from typing import Any

import orjson


def dumps(doc: Any) -> bytes:
    try:
        return orjson.dumps(doc)
    except orjson.JSONEncodeError:  # the standard encoder escapes a lone surrogate
        return json.dumps(doc).encode()


def loads(raw: str | bytes) -> Any:
    try:
        return orjson.loads(raw)
    except orjson.JSONDecodeError:  # an escaped lone surrogate reads back only here
        return json.loads(raw)

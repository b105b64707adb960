"""Browser sessions: a signed cookie naming the API key (by hash) it was
opened with, an expiry, and a CSRF token that every form must echo. Signed
with a key of its own (not the registration challenges')."""

from __future__ import annotations

import base64
import os
from dataclasses import dataclass

from runyard.crypto import open_token, sign_token

COOKIE = "runyard_session"
LIFETIME = 12 * 3600
PURPOSE = "ui-session"


@dataclass(frozen=True)
class Session:
    key_hash: str
    csrf: str
    expires: float


def encode(secret: bytes, key_hash: str, now: float) -> tuple[str, Session]:
    session = Session(key_hash, base64.urlsafe_b64encode(os.urandom(18)).decode(), now + LIFETIME)
    cookie = sign_token(secret, PURPOSE, {"k": session.key_hash, "c": session.csrf, "e": session.expires})
    return cookie, session


def decode(secret: bytes, cookie: str | None, now: float) -> Session | None:
    doc = open_token(secret, PURPOSE, cookie)
    if doc is None:
        return None
    try:
        session = Session(str(doc["k"]), str(doc["c"]), float(doc["e"]))
    except (KeyError, TypeError, ValueError):
        return None
    return session if session.expires > now else None

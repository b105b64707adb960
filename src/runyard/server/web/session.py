"""Browser sessions: a signed cookie naming the API key (by hash) it was
opened with, a session id, an expiry, and a CSRF token that every form must
echo. Signed with a key of its own (not the registration challenges').
Signing out revokes the session id on the server (every server reads the
revocation), so a copied cookie is no good after it."""

from __future__ import annotations

import base64
import os
from dataclasses import dataclass

from runyard.core.limits import MAX_FLASH
from runyard.crypto import open_token, sign_token

COOKIE = "runyard_session"
FLASH_COOKIE = "runyard_flash"  # what the last action did: set by the server, shown once
LIFETIME = 12 * 3600
PURPOSE = "ui-session"
FLASH_PURPOSE = "ui-flash"


@dataclass(frozen=True)
class Session:
    key_hash: str
    csrf: str
    expires: float
    id: str = ""


def _token() -> str:
    return base64.urlsafe_b64encode(os.urandom(18)).decode()


def encode(secret: bytes, key_hash: str, now: float) -> tuple[str, Session]:
    session = Session(key_hash, _token(), now + LIFETIME, _token())
    cookie = sign_token(secret, PURPOSE, {"k": session.key_hash, "c": session.csrf, "e": session.expires,
                                          "i": session.id})
    return cookie, session


def decode(secret: bytes, cookie: str | None, now: float) -> Session | None:
    doc = open_token(secret, PURPOSE, cookie)
    if doc is None:
        return None
    try:
        session = Session(str(doc["k"]), str(doc["c"]), float(doc["e"]), str(doc["i"]))
    except (KeyError, TypeError, ValueError):
        return None
    return session if session.expires > now and session.id else None


def encode_flash(secret: bytes, message: str) -> str:
    """A flash message only this server can have written: a link cannot make a page say anything."""
    return sign_token(secret, FLASH_PURPOSE, {"m": message[:MAX_FLASH]})


def decode_flash(secret: bytes, cookie: str | None) -> str:
    doc = open_token(secret, FLASH_PURPOSE, cookie)
    return str(doc.get("m", ""))[:MAX_FLASH] if isinstance(doc, dict) else ""

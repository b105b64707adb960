"""Browser sessions: an HMAC-signed cookie naming the API key (by hash) it
was opened with, an expiry, and a CSRF token that every form must echo."""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
import os
from dataclasses import dataclass

COOKIE = "runyard_session"
LIFETIME = 12 * 3600


@dataclass(frozen=True)
class Session:
    key_hash: str
    csrf: str
    expires: float


def encode(secret: bytes, key_hash: str, now: float) -> tuple[str, Session]:
    session = Session(key_hash, base64.urlsafe_b64encode(os.urandom(18)).decode(), now + LIFETIME)
    body = base64.urlsafe_b64encode(
        json.dumps({"k": session.key_hash, "c": session.csrf, "e": session.expires}).encode()
    ).decode()
    return f"{body}.{_mac(secret, body)}", session


def decode(secret: bytes, cookie: str | None, now: float) -> Session | None:
    if not cookie or "." not in cookie:
        return None
    body, mac = cookie.rsplit(".", 1)
    if not hmac.compare_digest(mac, _mac(secret, body)):
        return None
    try:
        doc = json.loads(base64.urlsafe_b64decode(body))
        session = Session(str(doc["k"]), str(doc["c"]), float(doc["e"]))
    except (ValueError, KeyError, TypeError, binascii.Error):
        return None
    return session if session.expires > now else None


def _mac(secret: bytes, body: str) -> str:
    return hmac.new(secret, b"ui-session:" + body.encode(), hashlib.sha256).hexdigest()

"""Keys, CSRs, the server's CA, pool tokens and proof of key possession.

Everything here is plain functions over PEM text and bytes, so the server, the
launcher and the CLI share one implementation and tests need no fixtures.
"""

from __future__ import annotations

import base64
import binascii
import datetime as dt
import functools
import hashlib
import hmac
import json
import os
import time
from dataclasses import dataclass
from typing import Any

from cryptography import x509
from cryptography.exceptions import InvalidSignature, InvalidTag
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from cryptography.x509.oid import NameOID

from runyard.core.errors import InvalidInput, RunyardError, Unauthorized

TOKEN_VERSION = 1
CHALLENGE_TTL_SECONDS = 300


def generate_key(bits: int = 4096) -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=bits)


def key_to_pem(key: rsa.RSAPrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


@functools.lru_cache(maxsize=16)
def load_private_key(pem: bytes) -> rsa.RSAPrivateKey:
    """The RSA key in ``pem``. Loading checks the key, which takes tens of
    milliseconds: a key loaded before is the same (immutable) object."""
    try:
        key = serialization.load_pem_private_key(pem, password=None)
    except (ValueError, TypeError) as exc:
        raise InvalidInput(f"not an unencrypted PEM private key: {exc}") from exc
    if not isinstance(key, rsa.RSAPrivateKey):
        raise InvalidInput("the pool private key must be an RSA key")
    return key


def load_private_key_b64(text: str) -> rsa.RSAPrivateKey:
    """The launcher's ``RUNYARD_POOL_PRIVATE_KEY``: a PEM key file in base64."""
    try:
        pem = base64.b64decode(text.strip(), validate=True)
    except (binascii.Error, ValueError) as exc:
        raise InvalidInput(
            "RUNYARD_POOL_PRIVATE_KEY is not base64: set it to the output of "
            "`base64 -w0 pool.key`"
        ) from exc
    return load_private_key(pem)


def make_csr(key: rsa.RSAPrivateKey, common_name: str = "runyard-pool") -> bytes:
    csr = (
        x509.CertificateSigningRequestBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)]))
        .sign(key, hashes.SHA256())
    )
    return csr.public_bytes(serialization.Encoding.PEM)


def load_csr(pem: bytes | str) -> x509.CertificateSigningRequest:
    data = pem.encode() if isinstance(pem, str) else pem
    try:
        csr = x509.load_pem_x509_csr(data)
    except ValueError as exc:
        raise InvalidInput(
            "that is not a PEM certificate signing request: make one with "
            "`runyard keygen` or `openssl req -new -newkey rsa:4096 -nodes`"
        ) from exc
    if not csr.is_signature_valid:
        raise InvalidInput("the CSR's signature does not match its key")
    if not isinstance(csr.public_key(), rsa.RSAPublicKey):
        raise InvalidInput("the CSR must be for an RSA key")
    return csr


@dataclass(frozen=True)
class CertificateAuthority:
    """The server's own CA: it signs pool CSRs."""

    key: rsa.RSAPrivateKey
    certificate: x509.Certificate

    @classmethod
    def create(cls, name: str = "runyard CA") -> CertificateAuthority:
        key = generate_key(2048)
        subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
        now = dt.datetime.now(dt.UTC)
        cert = (
            x509.CertificateBuilder()
            .subject_name(subject)
            .issuer_name(subject)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(minutes=5))
            .not_valid_after(now + dt.timedelta(days=3650))
            .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
            .sign(key, hashes.SHA256())
        )
        return cls(key, cert)

    @classmethod
    def from_pem(cls, key_pem: str, cert_pem: str) -> CertificateAuthority:
        return cls(load_private_key(key_pem.encode()), x509.load_pem_x509_certificate(cert_pem.encode()))

    def key_pem(self) -> str:
        return key_to_pem(self.key).decode()

    def cert_pem(self) -> str:
        return self.certificate.public_bytes(serialization.Encoding.PEM).decode()

    def sign_csr(self, csr: x509.CertificateSigningRequest, pool_id: str) -> x509.Certificate:
        now = dt.datetime.now(dt.UTC)
        return (
            x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, f"pool:{pool_id}")]))
            .issuer_name(self.certificate.subject)
            .public_key(csr.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(minutes=5))
            .not_valid_after(now + dt.timedelta(days=3650))
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .sign(self.key, hashes.SHA256())
        )

    def verify(self, cert: x509.Certificate) -> None:
        """Raise :class:`Unauthorized` unless this CA issued ``cert``."""
        try:
            cert.verify_directly_issued_by(self.certificate)
        except (ValueError, TypeError, InvalidSignature) as exc:
            raise Unauthorized("the token's certificate was not issued by this server") from exc


def cert_to_pem(cert: x509.Certificate) -> str:
    return cert.public_bytes(serialization.Encoding.PEM).decode()


def load_cert(pem: str) -> x509.Certificate:
    try:
        return x509.load_pem_x509_certificate(pem.encode())
    except ValueError as exc:
        raise InvalidInput("the token holds no valid certificate") from exc


def serial_of(cert: x509.Certificate) -> str:
    return format(cert.serial_number, "x")


@dataclass(frozen=True)
class PoolToken:
    """What a launcher needs to find and join its pool (besides the key)."""

    endpoints: tuple[str, ...]
    pool_id: str
    certificate_pem: str

    def encode(self) -> str:
        doc = {
            "version": TOKEN_VERSION,
            "endpoints": list(self.endpoints),
            "pool_id": self.pool_id,
            "certificate": self.certificate_pem,
        }
        return base64.b64encode(json.dumps(doc).encode()).decode()

    @classmethod
    def decode(cls, text: str) -> PoolToken:
        hint = "RUNYARD_TOKEN must be the token `runyard pool create` printed"
        try:
            doc = json.loads(base64.b64decode(text.strip(), validate=True))
            endpoints = tuple(str(e) for e in doc["endpoints"])
            token = cls(endpoints, str(doc["pool_id"]), str(doc["certificate"]))
        except (binascii.Error, ValueError, KeyError, TypeError) as exc:
            raise InvalidInput(f"malformed pool token: {hint}") from exc
        if not endpoints:
            raise InvalidInput(f"the pool token names no endpoint: {hint}")
        load_cert(token.certificate_pem)
        return token


# Signed tokens: a JSON document and an HMAC over it and its purpose, so any
# server instance holding the key can check one, and a token made for one
# purpose (a challenge) is never accepted for another (a UI session).


def sign_token(secret: bytes, purpose: str, doc: dict[str, Any]) -> str:
    body = base64.urlsafe_b64encode(json.dumps(doc, separators=(",", ":")).encode()).decode()
    return f"{body}.{_token_mac(secret, purpose, body)}"


def open_token(secret: bytes, purpose: str, token: str | None) -> dict[str, Any] | None:
    """The document of a token signed with ``secret`` for ``purpose``; None if not."""
    if not token or "." not in token:
        return None
    body, mac = token.rsplit(".", 1)
    if not hmac.compare_digest(mac, _token_mac(secret, purpose, body)):
        return None
    try:
        doc = json.loads(base64.urlsafe_b64decode(body))
    except (ValueError, binascii.Error):
        return None
    return doc if isinstance(doc, dict) else None


def _token_mac(secret: bytes, purpose: str, body: str) -> str:
    return hmac.new(secret, f"{purpose}:{body}".encode(), hashlib.sha256).hexdigest()


# Proof of possession: the server hands out a short-lived challenge, signed so
# any server instance can check it; the launcher signs it with the pool key.


def issue_challenge(secret: bytes, pool_id: str, now: float | None = None) -> str:
    expires = int((time.time() if now is None else now) + CHALLENGE_TTL_SECONDS)
    return sign_token(secret, "challenge", {"pool": pool_id, "exp": expires,
                                            "rnd": base64.b64encode(os.urandom(16)).decode()})


def check_challenge(secret: bytes, challenge: str, pool_id: str, now: float | None = None) -> None:
    doc = open_token(secret, "challenge", challenge)
    if doc is None or doc.get("pool") != pool_id:
        raise Unauthorized("the registration challenge was not issued for this pool: ask for a new one")
    if (time.time() if now is None else now) > doc.get("exp", 0):
        raise Unauthorized("the registration challenge expired: ask for a new one")


_PSS = padding.PSS(mgf=padding.MGF1(hashes.SHA256()), salt_length=padding.PSS.MAX_LENGTH)


def sign_challenge(key: rsa.RSAPrivateKey, challenge: str) -> str:
    return base64.b64encode(key.sign(challenge.encode(), _PSS, hashes.SHA256())).decode()


def verify_challenge_signature(cert: x509.Certificate, challenge: str, signature_b64: str) -> None:
    public = cert.public_key()
    assert isinstance(public, rsa.RSAPublicKey)
    try:
        public.verify(base64.b64decode(signature_b64), challenge.encode(), _PSS, hashes.SHA256())
    except (InvalidSignature, ValueError, binascii.Error) as exc:
        raise Unauthorized(
            "the launcher's private key does not belong to this pool: set "
            "RUNYARD_POOL_PRIVATE_KEY to the key whose CSR created the pool"
        ) from exc


def same_public_key(cert: x509.Certificate, key: rsa.RSAPrivateKey) -> bool:
    public = cert.public_key()
    assert isinstance(public, rsa.RSAPublicKey)
    return public.public_numbers() == key.public_key().public_numbers()


def hash_secret(value: str) -> str:
    """How API keys and worker tokens are stored: only their SHA-256."""
    return hashlib.sha256(value.encode()).hexdigest()


def new_secret(prefix: str) -> str:
    return prefix + base64.b32encode(os.urandom(20)).decode().rstrip("=").lower()


# Envelope encryption: what passes between plan and apply, and secrets, are
# sealed to a pool's public key. A fresh AES-256-GCM key per message, wrapped
# with RSA-OAEP; ``context`` (a run or variable id) is bound as associated
# data, so a blob moved to another run does not open.

_SEAL_MAGIC = b"RYS1"
_OAEP = padding.OAEP(mgf=padding.MGF1(hashes.SHA256()), algorithm=hashes.SHA256(), label=None)


class SealError(RunyardError):
    """A sealed blob does not open: tampered, foreign, or for another key."""

    code = "sealed"


def public_key_of(cert_pem: str) -> rsa.RSAPublicKey:
    public = load_cert(cert_pem).public_key()
    if not isinstance(public, rsa.RSAPublicKey):
        raise InvalidInput("the pool certificate does not hold an RSA key")
    return public


def seal(public: rsa.RSAPublicKey, data: bytes, context: str) -> bytes:
    key = AESGCM.generate_key(bit_length=256)
    nonce = os.urandom(12)
    wrapped = public.encrypt(key, _OAEP)
    body = AESGCM(key).encrypt(nonce, data, context.encode())
    return _SEAL_MAGIC + len(wrapped).to_bytes(2, "big") + wrapped + nonce + body


def unseal(key: rsa.RSAPrivateKey, blob: bytes, context: str) -> bytes:
    if not blob.startswith(_SEAL_MAGIC) or len(blob) < 6:
        raise SealError("not a runyard sealed blob")
    size = int.from_bytes(blob[4:6], "big")
    wrapped, nonce, body = blob[6 : 6 + size], blob[6 + size : 18 + size], blob[18 + size :]
    try:
        aes_key = key.decrypt(wrapped, _OAEP)
        return AESGCM(aes_key).decrypt(nonce, body, context.encode())
    except (ValueError, InvalidSignature) as exc:
        raise SealError("cannot open: sealed for another pool's key, or tampered with") from exc
    except Exception as exc:
        raise SealError("cannot open: sealed for another run, or tampered with") from exc


def secret_context(stack_id: str, name: str) -> str:
    """What a sealed stack secret is bound to: it opens only as this variable."""
    return f"stack:{stack_id}:var:{name}"


def workspace_context(run_id: str) -> str:
    return f"run:{run_id}:workspace"


def seal_text(public: rsa.RSAPublicKey, text: str, context: str) -> str:
    return base64.b64encode(seal(public, text.encode(), context)).decode()


def unseal_text(key: rsa.RSAPrivateKey, sealed_b64: str, context: str) -> str:
    try:
        blob = base64.b64decode(sealed_b64, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise SealError("not base64") from exc
    return unseal(key, blob, context).decode()


# Secrets the server keeps (its CA key, its signing keys) are encrypted at
# rest with a key the operator supplies: AES-256-GCM, the setting's name as
# associated data (a value copied under another name does not open).

_AT_REST = "enc:v1:"


class SecretBox:
    """Encrypts the server's own secrets with one 32-byte key."""

    def __init__(self, key: bytes) -> None:
        if len(key) != 32:
            raise InvalidInput("the secret key must be 32 bytes")
        self._aead = AESGCM(key)

    @classmethod
    def from_passphrase(cls, passphrase: str) -> SecretBox:
        if len(passphrase) < 16:
            raise InvalidInput("RUNYARD_SECRET_KEY is shorter than 16 characters: use a long random value "
                               "(e.g. `openssl rand -hex 32`) or kms:KEY_ID")
        key = HKDF(algorithm=hashes.SHA256(), length=32, salt=b"runyard-secret-key",
                   info=b"settings at rest").derive(passphrase.encode())
        return cls(key)

    @staticmethod
    def is_sealed(stored: str) -> bool:
        return stored.startswith(_AT_REST)

    def seal(self, name: str, value: str) -> str:
        nonce = os.urandom(12)
        return _AT_REST + base64.b64encode(nonce + self._aead.encrypt(nonce, value.encode(), name.encode())).decode()

    def open(self, name: str, stored: str) -> str:
        if not self.is_sealed(stored):
            raise SealError(f"the server's {name} in the database is not encrypted: it was not written by runyard")
        try:
            raw = base64.b64decode(stored[len(_AT_REST):])
            return self._aead.decrypt(raw[:12], raw[12:], name.encode()).decode()
        except (ValueError, InvalidTag, binascii.Error) as exc:
            raise SealError(
                f"the server's {name} in the database was encrypted with another secret key: give every "
                "server the same RUNYARD_SECRET_KEY (or kms:KEY_ID)"
            ) from exc

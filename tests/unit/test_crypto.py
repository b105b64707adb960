"""Pool credentials: CSR signing, tokens, and proof of key possession."""

import base64
import json

import pytest

from runyard import crypto
from runyard.core.errors import InvalidInput, Unauthorized


@pytest.fixture(scope="module")
def ca():
    return crypto.CertificateAuthority.create()


@pytest.fixture(scope="module")
def pool_key():
    return crypto.generate_key(2048)


@pytest.fixture(scope="module")
def other_key():
    return crypto.generate_key(2048)


def test_ca_signs_a_csr_for_the_csr_key(ca, pool_key):
    cert = ca.sign_csr(crypto.load_csr(crypto.make_csr(pool_key)), "pool1")
    ca.verify(cert)
    assert crypto.same_public_key(cert, pool_key)


def test_a_certificate_of_another_ca_is_refused(ca, pool_key):
    stranger = crypto.CertificateAuthority.create()
    cert = stranger.sign_csr(crypto.load_csr(crypto.make_csr(pool_key)), "pool1")
    with pytest.raises(Unauthorized, match="not issued by this server"):
        ca.verify(cert)


def test_garbage_is_not_a_csr():
    with pytest.raises(InvalidInput, match="not a PEM certificate signing request"):
        crypto.load_csr("-----BEGIN CERTIFICATE REQUEST-----\nnope\n-----END CERTIFICATE REQUEST-----\n")


def test_token_round_trips_and_is_base64_json(ca, pool_key):
    cert_pem = crypto.cert_to_pem(ca.sign_csr(crypto.load_csr(crypto.make_csr(pool_key)), "P1"))
    token = crypto.PoolToken(("http://a:1", "http://b:2"), "P1", cert_pem)
    encoded = token.encode()
    doc = json.loads(base64.b64decode(encoded))
    assert doc["pool_id"] == "P1" and doc["endpoints"] == ["http://a:1", "http://b:2"]
    assert crypto.PoolToken.decode(encoded) == token


@pytest.mark.parametrize("bad", ["", "not base64!", base64.b64encode(b"{}").decode(),
                                 base64.b64encode(b'{"endpoints": [], "pool_id": "x", "certificate": ""}').decode()])
def test_malformed_tokens_are_refused_clearly(bad):
    with pytest.raises(InvalidInput, match="token"):
        crypto.PoolToken.decode(bad)


def test_signed_challenge_proves_possession(ca, pool_key):
    secret = b"s" * 32
    cert = ca.sign_csr(crypto.load_csr(crypto.make_csr(pool_key)), "P1")
    challenge = crypto.issue_challenge(secret, "P1")
    crypto.check_challenge(secret, challenge, "P1")
    crypto.verify_challenge_signature(cert, challenge, crypto.sign_challenge(pool_key, challenge))


def test_another_pools_key_cannot_sign_for_this_pool(ca, pool_key, other_key):
    cert = ca.sign_csr(crypto.load_csr(crypto.make_csr(pool_key)), "P1")
    challenge = crypto.issue_challenge(b"s" * 32, "P1")
    with pytest.raises(Unauthorized, match="does not belong to this pool"):
        crypto.verify_challenge_signature(cert, challenge, crypto.sign_challenge(other_key, challenge))


def test_challenges_expire_and_are_bound_to_their_pool():
    secret = b"k" * 32
    challenge = crypto.issue_challenge(secret, "P1", now=1000.0)
    with pytest.raises(Unauthorized, match="expired"):
        crypto.check_challenge(secret, challenge, "P1", now=1000.0 + crypto.CHALLENGE_TTL_SECONDS + 1)
    with pytest.raises(Unauthorized, match="not issued for this pool"):
        crypto.check_challenge(secret, challenge, "P2", now=1000.0)
    with pytest.raises(Unauthorized, match="not issued for this pool"):
        crypto.check_challenge(b"x" * 32, challenge, "P1", now=1000.0)


def test_sealed_blobs_open_only_with_the_pool_key_and_their_context(pool_key, other_key):
    blob = crypto.seal(pool_key.public_key(), b"plan file bytes", "run-1")
    assert b"plan file bytes" not in blob
    assert crypto.unseal(pool_key, blob, "run-1") == b"plan file bytes"
    with pytest.raises(crypto.SealError):
        crypto.unseal(other_key, blob, "run-1")
    with pytest.raises(crypto.SealError):
        crypto.unseal(pool_key, blob, "run-2")  # moved to another run
    tampered = bytearray(blob)
    tampered[-5] ^= 1
    with pytest.raises(crypto.SealError):
        crypto.unseal(pool_key, bytes(tampered), "run-1")


def test_sealed_text_round_trips(pool_key):
    sealed = crypto.seal_text(pool_key.public_key(), "s3cr3t", "stack:TOKEN")
    assert "s3cr3t" not in sealed
    assert crypto.unseal_text(pool_key, sealed, "stack:TOKEN") == "s3cr3t"


def test_secret_box_round_trips_and_binds_the_name():
    box = crypto.SecretBox.from_passphrase("a-long-enough-passphrase")
    sealed = box.seal("ca_key", "PEM TEXT")
    assert crypto.SecretBox.is_sealed(sealed) and "PEM" not in sealed
    assert box.open("ca_key", sealed) == "PEM TEXT"
    with pytest.raises(crypto.SealError):
        box.open("session_secret", sealed)  # moved under another name: does not open
    with pytest.raises(crypto.SealError):
        crypto.SecretBox.from_passphrase("another-long-passphrase").open("ca_key", sealed)
    with pytest.raises(crypto.SealError, match="not encrypted"):
        box.open("x", "plain text")  # never written by runyard: no release stored secrets in the clear


def test_a_short_secret_key_is_refused():
    with pytest.raises(InvalidInput, match="16 characters"):
        crypto.SecretBox.from_passphrase("short")

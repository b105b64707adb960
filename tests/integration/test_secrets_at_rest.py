"""The server's own secrets (CA key, challenge and session keys) are stored
encrypted, with RUNYARD_SECRET_KEY, AWS KMS, or a key file."""

from __future__ import annotations

from pathlib import Path

import boto3
import pytest

from runyard.config import ServerSettings
from runyard.crypto import SealError, generate_key, make_csr
from runyard.server.app import build_services
from runyard.server.services.registry import Services

SECRETS = ("ca_key", "challenge_secret", "session_secret")


def server(tmp_path: Path, database_url: str, name: str, **settings: str) -> Services:
    resolved, _ = ServerSettings.resolve({"data_dir": tmp_path / name, "database_url": database_url, **settings},
                                         env={})
    return build_services(resolved)


def stored(svc: Services) -> dict[str, str]:
    with svc.ctx.tx() as repo:
        return {name: repo.get_setting(name) or "" for name in (*SECRETS, "ca_cert")}


def use_every_secret(svc: Services) -> None:
    svc.pools.create("p1", make_csr(generate_key(2048)).decode())
    svc.pools.challenge_secret()
    svc.auth.session_secret()


def test_secrets_are_stored_encrypted_and_servers_with_the_same_key_share_them(tmp_path: Path,
                                                                               database_url: str) -> None:
    key = "a-long-operator-supplied-passphrase"
    a = server(tmp_path, database_url, "a", secret_key=key)
    use_every_secret(a)
    rows = stored(a)
    for name in SECRETS:
        assert rows[name].startswith("enc:v1:"), name
    assert "PRIVATE KEY" not in rows["ca_key"] and "BEGIN CERTIFICATE" in rows["ca_cert"]
    b = server(tmp_path, database_url, "b", secret_key=key)
    assert b.pools.ca().cert_pem() == a.pools.ca().cert_pem()
    assert b.pools.challenge_secret() == a.pools.challenge_secret()
    other = server(tmp_path, database_url, "c", secret_key="another-long-passphrase-entirely")
    with pytest.raises(SealError, match="same RUNYARD_SECRET_KEY"):
        other.pools.ca()
    for svc in (a, b, other):
        svc.close()


def test_without_a_key_one_server_makes_a_key_file_readable_only_by_it(tmp_path: Path) -> None:
    svc = server(tmp_path, f"sqlite:///{tmp_path / 'one.db'}", "solo")
    use_every_secret(svc)
    key_file = tmp_path / "solo" / "secret-key"
    assert key_file.stat().st_mode & 0o777 == 0o600
    assert stored(svc)["ca_key"].startswith("enc:v1:")
    svc.close()


def test_an_aws_kms_key_encrypts_the_data_key(tmp_path: Path, aws_env: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AWS_ENDPOINT_URL", aws_env)
    key_id = boto3.client("kms").create_key()["KeyMetadata"]["KeyId"]
    url = f"sqlite:///{tmp_path / 'kms.db'}"
    a = server(tmp_path, url, "a", secret_key=f"kms:{key_id}")
    use_every_secret(a)
    with a.ctx.tx() as repo:
        wrapped = repo.get_setting("secret_data_key")
    assert wrapped and stored(a)["ca_key"].startswith("enc:v1:")
    b = server(tmp_path, url, "b", secret_key=f"kms:{key_id}")  # opens the same data key through KMS
    assert b.pools.ca().cert_pem() == a.pools.ca().cert_pem()
    a.close()
    b.close()

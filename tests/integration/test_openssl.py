"""Keys and CSRs made by openssl work as pool credentials."""

from __future__ import annotations

import base64
import shutil
import subprocess
from pathlib import Path

from runyard import crypto
from tests.conftest import missing


def test_openssl_made_key_and_csr_work(tmp_path: Path) -> None:
    if shutil.which("openssl") is None:
        missing("openssl is not installed")
    subprocess.run(
        ["openssl", "req", "-new", "-newkey", "rsa:2048", "-nodes", "-subj", "/CN=pool",
         "-keyout", str(tmp_path / "k"), "-out", str(tmp_path / "c")],
        check=True, capture_output=True, timeout=60,
    )
    ca = crypto.CertificateAuthority.create()
    cert = ca.sign_csr(crypto.load_csr((tmp_path / "c").read_bytes()), "p")
    key = crypto.load_private_key_b64(base64.b64encode((tmp_path / "k").read_bytes()).decode())
    assert crypto.same_public_key(cert, key)

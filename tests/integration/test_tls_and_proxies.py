"""A launcher trusts extra root CAs (RUNYARD_CA_CERTIFICATES) for its own
HTTPS and hands them to runs, with the host's proxy settings."""

from __future__ import annotations

import datetime as dt
import ipaddress
import os
import threading
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.x509.oid import NameOID

from runyard.archive import pack_directory
from runyard.client import Client
from runyard.config import LauncherSettings, ServerSettings
from runyard.core.states import RunKind, RunState
from runyard.crypto import generate_key, make_csr
from runyard.launcher.executors.process import ProcessExecutor
from runyard.launcher.launcher import Launcher
from runyard.server.app import build_services, create_app
from runyard.server.services.registry import Services
from runyard.wire import SourceIO, StackCreate
from tests.conftest import free_port
from tests.harness import wait_for
from tests.integration.conftest import ADMIN, b64key, running


def private_ca(tmp_path: Path) -> tuple[Path, Path, Path]:
    """A root CA of the organisation's own, and a server certificate it signed."""
    now = dt.datetime.now(dt.UTC)
    ca_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "Acme Internal Root CA")])
    ca = (x509.CertificateBuilder().subject_name(ca_name).issuer_name(ca_name).public_key(ca_key.public_key())
          .serial_number(x509.random_serial_number()).not_valid_before(now - dt.timedelta(minutes=5))
          .not_valid_after(now + dt.timedelta(days=1))
          .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
          .add_extension(x509.KeyUsage(True, False, False, False, False, True, True, False, False), critical=True)
          .sign(ca_key, hashes.SHA256()))
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    cert = (x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "runyard.acme.internal")]))
            .issuer_name(ca_name).public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(minutes=5)).not_valid_after(now + dt.timedelta(days=1))
            .add_extension(x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
                           critical=False)
            .sign(ca_key, hashes.SHA256()))
    paths = tmp_path / "ca.pem", tmp_path / "server.pem", tmp_path / "server.key"
    paths[0].write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    paths[1].write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    paths[2].write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    return paths


def test_a_launcher_reaches_an_https_server_signed_by_a_private_ca_and_runs_trust_it_too(tmp_path: Path) -> None:
    ca, cert, key = private_ca(tmp_path)
    port = free_port()
    settings, _ = ServerSettings.resolve({"data_dir": tmp_path / "data", "admin_api_key": ADMIN, "port": port,
                                          "public_endpoints": f"https://127.0.0.1:{port}"}, env={})
    svc = build_services(settings)
    svc.auth.bootstrap_admin_key(ADMIN)
    with running(create_app(settings, svc), port, ssl_certfile=str(cert), ssl_keyfile=str(key)):
        serve_and_run(tmp_path, svc, port, ca)
    svc.close()


def serve_and_run(tmp_path: Path, svc: Services, port: int, ca: Path) -> None:
    """Through the HTTPS server: a pool, a stack, a launcher, a run."""
    pool_key = generate_key(2048)
    _, token = svc.pools.create("p1", make_csr(pool_key).decode())
    src = tmp_path / "src"
    src.mkdir()
    (src / "x").write_text("x\n")
    with Client([f"https://127.0.0.1:{port}"], ADMIN, extra_ca=ca) as client:
        upload = client.upload_source(pack_directory(src))
        client.create_stack(StackCreate(name="s1", pool="p1", source=SourceIO(kind="upload", upload_id=upload),
                                        commands={"plan": "true"}))
    launcher_settings, _ = LauncherSettings.resolve(
        {"token": token, "pool_private_key": b64key(pool_key), "work_dir": tmp_path / "w",
         "executor": "process", "long_poll": "5s", "ca_certificates": ca}, env={})
    env = {"PATH": os.environ["PATH"], "HTTPS_PROXY": "http://proxy.acme.internal:3128",
           "no_proxy": "localhost,.acme.internal"}
    launcher = Launcher(launcher_settings, ProcessExecutor(), env=env)
    thread = threading.Thread(target=launcher.run, daemon=True)
    thread.start()
    marker = ca.read_text().splitlines()[1]
    run = svc.runs.trigger("s1", RunKind.TASK,
                           f'grep -q "{marker}" "$SSL_CERT_FILE" && echo extra-ca-trusted; '
                           'grep -c "BEGIN CERTIFICATE" "$REQUESTS_CA_BUNDLE"; '
                           'echo "proxy=$HTTPS_PROXY no_proxy=$no_proxy"')
    wait_for(lambda: svc.runs.get(run.id).state.terminal, 30, "the run to end")
    assert svc.runs.get(run.id).state == RunState.FINISHED
    lines = [ln.msg for ln in svc.logs.page(run.id).lines]
    assert "extra-ca-trusted" in lines
    assert int(next(ln for ln in lines if ln.isdigit())) > 1  # the system's roots too, not only ours
    assert "proxy=http://proxy.acme.internal:3128 no_proxy=localhost,.acme.internal" in lines
    launcher.interrupt()
    thread.join(30)

"""The CLI and the server's start-up, as a new user meets them."""

from __future__ import annotations

import json
import os
import stat
import subprocess

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from tests.conftest import free_port
from tests.harness import RUNYARD, ServerProcess, clean_env, cli


def test_keygen_makes_a_4096_bit_key_and_a_csr(tmp_path):
    run = subprocess.run([*RUNYARD, "keygen", "--key", str(tmp_path / "k"), "--csr", str(tmp_path / "c")],
                         capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stderr
    key = serialization.load_pem_private_key((tmp_path / "k").read_bytes(), None)
    assert isinstance(key, rsa.RSAPrivateKey) and key.key_size == 4096
    assert stat.S_IMODE(os.stat(tmp_path / "k").st_mode) == 0o600
    assert b"BEGIN CERTIFICATE REQUEST" in (tmp_path / "c").read_bytes()
    again = subprocess.run([*RUNYARD, "keygen", "--key", str(tmp_path / "k"), "--csr", str(tmp_path / "c2")],
                           capture_output=True, text=True, timeout=60)
    assert again.returncode != 0 and "exists already" in again.stderr


def test_first_start_makes_an_admin_key_once(tmp_path):
    data = tmp_path / "data"
    port = free_port()
    env = clean_env()
    proc = subprocess.Popen([*RUNYARD, "server", "--data-dir", str(data), "--port", str(port)], env=env,
                            stderr=subprocess.PIPE, text=True)
    try:
        assert proc.stderr is not None
        while not proc.stderr.readline().startswith("Admin API key"):
            pass
        key = proc.stderr.readline().strip()
        key_file = data / "admin-api-key"
        assert key_file.read_text().strip() == key
        assert stat.S_IMODE(os.stat(key_file).st_mode) == 0o600
        server = ServerProcess(data, port, admin_key=key)
        assert cli(server, "pool", "list").returncode == 0
        assert cli(server, "pool", "list", RUNYARD_API_KEY="wrong").returncode == 5
    finally:
        proc.terminate()
        proc.wait(20)
        if proc.stderr:
            proc.stderr.close()
    # A second start keeps the key and prints none.
    again = ServerProcess(data, free_port(), admin_key=key)
    again.extra_env = {"RUNYARD_ADMIN_API_KEY": ""}
    again.start()
    try:
        assert cli(again, "pool", "list").returncode == 0
        assert "Admin API key" not in again.read_log()
    finally:
        again.stop()


def test_a_second_server_on_one_sqlite_file_is_refused_and_the_first_goes_on(tmp_path):
    first = ServerProcess(tmp_path / "data", free_port()).start()
    assert first.proc is not None
    try:
        second = subprocess.run([*RUNYARD, "server", "--data-dir", str(tmp_path / "data"), "--port", str(free_port())],
                                env=clean_env(), capture_output=True, text=True, timeout=60)
        assert second.returncode != 0
        assert f"another runyard server (pid {first.proc.pid} on" in second.stderr
        assert "one server per SQLite file" in second.stderr
        assert cli(first, "pool", "list").returncode == 0
    finally:
        first.stop()
    # Its lock goes with it: the next server on the file starts.
    again = ServerProcess(tmp_path / "data", free_port(), admin_key=first.admin_key).start()
    again.stop()


def test_bad_input_gets_clear_errors_and_makes_nothing(server, tmp_path):
    (tmp_path / "bad.csr").write_text("not a csr")
    r = cli(server, "pool", "create", "x", "--csr", str(tmp_path / "bad.csr"))
    assert r.returncode == 2 and "certificate signing request" in r.stderr
    r = cli(server, "stack", "create", "s", "--pool", "p1", "--source", str(tmp_path / "nope"), "--plan", "x")
    assert r.returncode == 2 and "neither a directory nor a git URL" in r.stderr
    r = cli(server, "run", "trigger", "missing")
    assert r.returncode == 3 and "no stack 'missing'" in r.stderr
    r = cli(server, "pool", "show", "missing")
    assert r.returncode == 3 and "no pool" in r.stderr
    r = cli(server, "pool", "list", "--endpoint", "http://127.0.0.1:1")
    assert r.returncode == 6 and "cannot reach" in r.stderr
    assert json.loads(cli(server, "pool", "list", "-o", "json").stdout) == []
    assert json.loads(cli(server, "stack", "list", "-o", "json").stdout) == []


def test_demo_runs_a_real_run_and_prints_a_summary():
    r = subprocess.run([*RUNYARD, "demo"], capture_output=True, text=True, timeout=180, env=clean_env())
    assert r.returncode == 0, r.stdout + r.stderr
    assert "the token we would use is ***" in r.stdout
    assert "s3cr3t-demo-token" not in r.stdout + r.stderr
    assert "state:          FINISHED" in r.stdout
    assert "queue to start:" in r.stdout

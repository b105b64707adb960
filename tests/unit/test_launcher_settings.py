"""Every launcher setting is checked at start: a bad one is one line on
stderr that names it, and exit 2; nothing else is printed."""

from __future__ import annotations

import base64
import socket
from pathlib import Path

import pytest
from click.testing import CliRunner

from runyard.cli.main import main
from runyard.crypto import key_to_pem

from .conftest import World, pool_key

BAD_POLICY = 'package runyard\n\ndeny[msg] {\n  msg := "x" +\n}\n'


def _launch(world: World, tmp_path: Path, **env: str) -> tuple[int, str]:
    world.pool()
    base = {"RUNYARD_TOKEN": world.token, "RUNYARD_EXECUTOR": "process",
            "RUNYARD_POOL_PRIVATE_KEY": base64.b64encode(key_to_pem(pool_key())).decode(),
            "RUNYARD_WORK_DIR": str(tmp_path / "work"), "RUNYARD_ENDPOINTS": "http://127.0.0.1:9"}
    result = CliRunner().invoke(main, ["launcher"], env={**base, **env})
    return result.exit_code, result.stderr


@pytest.mark.parametrize(("variable", "value"), [
    ("RUNYARD_METADATA_" + "k" * 100, "v"),
    ("RUNYARD_METADATA_zone", "v" * 300),
    ("RUNYARD_METRICS_PORT", "99999"),
    ("RUNYARD_METRICS_PORT", "-1"),
    ("RUNYARD_WORKER_EXTRA_MOUNTS", "nocolon"),
    ("RUNYARD_WORKER_RO_EXTRA_MOUNTS", "/a:/b:maybe"),
    ("RUNYARD_WORKER_WO_EXTRA_MOUNTS", "relative:/b"),
    ("RUNYARD_WORKER_USER", "nosuchuser"),
    ("RUNYARD_WORKER_USER", "1000:"),
    ("RUNYARD_ENDPOINTS", "ftp://127.0.0.1:9"),
    ("RUNYARD_LAUNCHER_LOGS_TIMEOUT", "forever"),
])
def test_a_bad_setting_is_one_line_naming_it_and_exit_2(world: World, tmp_path: Path, capfd: pytest.CaptureFixture[str],
                                                         variable: str, value: str) -> None:
    code, err = _launch(world, tmp_path, **{variable: value})
    assert code == 2, err
    assert len(err.splitlines()) == 1 and err.startswith("error: "), err
    assert variable[:57] in err or variable.removeprefix("RUNYARD_").lower() in err, err
    assert capfd.readouterr() == ("", "")


def test_many_metadata_variables_are_refused_at_start(world: World, tmp_path: Path) -> None:
    code, err = _launch(world, tmp_path, **{f"RUNYARD_METADATA_k{i}": "v" for i in range(51)})
    assert code == 2 and len(err.splitlines()) == 1 and "RUNYARD_METADATA_" in err


def test_a_metrics_port_in_use_is_one_line(world: World, tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        code, err = _launch(world, tmp_path, RUNYARD_METRICS_PORT=str(taken.getsockname()[1]))
    assert code == 2 and len(err.splitlines()) == 1 and "RUNYARD_METRICS_PORT" in err, err


def test_a_policy_that_does_not_compile_is_one_line_and_the_engine_prints_nothing(
        world: World, tmp_path: Path, capfd: pytest.CaptureFixture[str]) -> None:
    policy = tmp_path / "bad.rego"
    policy.write_text(BAD_POLICY)
    code, err = _launch(world, tmp_path, RUNYARD_LAUNCHER_RUN_INITIALIZATION_POLICY=str(policy))
    assert code == 2
    assert err.splitlines() == [f"error: {policy}:4: Invalid arithmetic operator"]
    assert capfd.readouterr() == ("", "")

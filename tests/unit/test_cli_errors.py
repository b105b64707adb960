"""Every CLI error is one line on stderr with its exit code."""

from __future__ import annotations

from pathlib import Path

import pytest
from click.testing import CliRunner

from runyard.cli.main import main

UNREACHABLE = ["--endpoint", "http://127.0.0.1:9", "--api-key", "k"]


def run(*args: str) -> tuple[int, str]:
    result = CliRunner().invoke(main, list(args))
    return result.exit_code, result.stderr


def test_a_missing_csr_file_is_one_line_not_a_usage_block(tmp_path: Path) -> None:
    code, err = run("pool", "create", "p", "--csr", str(tmp_path / "nope.csr"), *UNREACHABLE)
    assert code == 2
    assert err.splitlines() == [f"error: Invalid value for '--csr': File '{tmp_path / 'nope.csr'}' does not exist. "
                                "(see `main pool create --help`)"]


@pytest.mark.parametrize("ref", ["../../etc/passwd", "a/b", "..", "run id"])
def test_an_id_that_would_change_the_request_path_is_refused_before_sending(ref: str) -> None:
    code, err = run("run", "show", ref, *UNREACHABLE)
    assert code == 2 and len(err.splitlines()) == 1
    assert err.startswith("error: ") and "is not a valid name or id" in err


def test_an_unreachable_server_is_exit_6() -> None:
    code, err = run("run", "show", "01ABC", *UNREACHABLE)
    assert code == 6 and err.startswith("error: cannot reach the runyard server")

"""Ansible stacks: check mode as the plan, a real run as the apply."""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path

import pytest

from tests.conftest import missing
from tests.e2e.test_runs import log_text
from tests.harness import ServerProcess, cli

PLAYBOOK = """\
- hosts: localhost
  connection: local
  gather_facts: false
  tasks:
    - name: write the greeting
      ansible.builtin.copy:
        dest: "{{ lookup('env', 'TARGET') }}"
        content: "{{ lookup('env', 'GREETING') }}\\n"
"""


@pytest.fixture
def ansible_bin() -> Path:
    found = shutil.which("ansible-playbook", path=str(Path(sys.executable).parent))
    if found is None:
        missing("ansible-playbook is not installed (pip install ansible-core)")
    return Path(str(found)).parent


@pytest.mark.parametrize("executor", ["process"], indirect=True)
def test_an_ansible_run_checks_first_then_applies_after_confirmation(
    server: ServerProcess, launcher, tmp_path: Path, sync_dir: Path, ansible_bin: Path
):
    launcher()
    src = tmp_path / "playbooks"
    src.mkdir()
    (src / "playbook.yml").write_text(PLAYBOOK)
    target = sync_dir / "greeting.txt"
    cli(server, "stack", "create", "config", "--pool", "p1", "--source", str(src), "--tool", "ansible",
        "--no-autodeploy", "--env", f"PATH={ansible_bin}:/usr/local/bin:/usr/bin:/bin",
        "--env", f"TARGET={target}", "--env", "GREETING=hello from ansible", check=True)
    planned = cli(server, "run", "trigger", "config", "--wait", "--output", "json", timeout=120)
    assert planned.returncode == 10, planned.stderr  # waiting for confirmation
    run = json.loads(planned.stdout)
    assert run["state"] == "UNCONFIRMED"
    plan_log = log_text(server, run["id"])
    assert "TASK [write the greeting]" in plan_log and "PLAY RECAP" in plan_log
    assert "changed=1" in plan_log
    assert not target.exists()  # check mode changed nothing
    applied = cli(server, "run", "confirm", run["id"], "--wait", "--output", "json", timeout=120)
    assert json.loads(applied.stdout)["state"] == "FINISHED", applied.stderr
    assert target.read_text() == "hello from ansible\n"

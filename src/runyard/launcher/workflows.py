"""What each tool executes in each phase of a run.

A run goes INITIALIZING -> PLANNING -> (UNCONFIRMED -> CONFIRMED ->) APPLYING,
or PERFORMING for a task; hooks run before and after each phase in the same
session. The shell tool runs the stack's own commands; Terraform and OpenTofu
run their binary against the server's state backend; Ansible plans with
``ansible-playbook --check --diff`` and applies with a real run.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from runyard.core.models import Stack, Tool

PLAN_FILE = "runyard.tfplan"
PLAN_JSON = ".runyard-plan.json"
OUTPUTS_JSON = ".runyard-outputs.json"
BACKEND_OVERRIDE = "runyard_backend_override.tf"
BACKEND_BLOCK = 'terraform {\n  backend "http" {}\n}\n'
ANSIBLE_PLAYBOOK = "playbook.yml"
TERRAFORM_TOOLS = frozenset({Tool.TERRAFORM, Tool.OPENTOFU})
# Collections and roles the project lists are installed first, when it lists any.
ANSIBLE_INIT = "[ ! -f requirements.yml ] || ansible-galaxy install -r requirements.yml"


@dataclass(frozen=True)
class ToolCommands:
    """Commands of one stack, by phase; empty: nothing to run."""

    init: str
    plan: str
    apply: str
    plans_changes: bool  # the plan reports counts and may say "no changes"
    outputs: str = ""  # writes OUTPUTS_JSON after apply


def commands_for(stack: Stack) -> ToolCommands:
    if stack.tool in TERRAFORM_TOOLS:
        tf = "terraform" if stack.tool == Tool.TERRAFORM else "tofu"
        return ToolCommands(
            init=stack.commands.get("init") or f"{tf} init -input=false -no-color",
            # -detailed-exitcode: 0 no changes, 2 changes, 1 error
            plan=stack.commands.get("plan") or (
                f"{tf} plan -input=false -no-color -detailed-exitcode -out={PLAN_FILE}; code=$?; "
                f'[ $code -eq 1 ] && exit 1; {tf} show -no-color -json {PLAN_FILE} > {PLAN_JSON} || exit 1; exit 0'
            ),
            apply=stack.commands.get("apply") or f"{tf} apply -input=false -no-color {PLAN_FILE}",
            plans_changes=True,
            outputs=f"{tf} output -no-color -json > {OUTPUTS_JSON}",
        )
    if stack.tool == Tool.ANSIBLE:
        playbook = f"${{RUNYARD_ANSIBLE_PLAYBOOK:-{ANSIBLE_PLAYBOOK}}}"
        return ToolCommands(
            init=stack.commands.get("init") or ANSIBLE_INIT,
            # Check mode changes nothing and shows what a real run would change.
            plan=stack.commands.get("plan") or f'ansible-playbook --check --diff "{playbook}"',
            apply=stack.commands.get("apply") or f'ansible-playbook "{playbook}"',
            plans_changes=False,
        )
    return ToolCommands(
        init=stack.commands.get("init", ""),
        plan=stack.commands.get("plan", ""),
        apply=stack.commands.get("apply", ""),
        plans_changes=False,
    )


def prepare_terraform(root: Path) -> None:
    """Point the stack's code at runyard's state backend. The file holds no
    credentials: those come from TF_HTTP_* variables of the run."""
    (root / BACKEND_OVERRIDE).write_text(BACKEND_BLOCK)


def count_changes(plan_json: Path) -> dict[str, int]:
    """add / change / destroy counts from ``terraform show -json PLAN``."""
    doc = json.loads(plan_json.read_text())
    counts = {"add": 0, "change": 0, "destroy": 0}
    for change in doc.get("resource_changes", []):
        actions = change.get("change", {}).get("actions", [])
        if "create" in actions:
            counts["add"] += 1
        if "delete" in actions:
            counts["destroy"] += 1
        if actions == ["update"]:
            counts["change"] += 1
    return counts


def ansible_env() -> dict[str, str]:
    """Settings every Ansible run gets: plain output, no prompts."""
    return {"ANSIBLE_NOCOLOR": "1", "ANSIBLE_FORCE_COLOR": "0", "ANSIBLE_HOST_KEY_CHECKING": "False",
            "ANSIBLE_RETRY_FILES_ENABLED": "False", "PYTHONUNBUFFERED": "1"}


def state_env(endpoint: str, stack_id: str, run_token: str) -> dict[str, str]:
    """The HTTP backend's settings for a run, through its environment only."""
    address = f"{endpoint.rstrip('/')}/api/v1/stacks/{stack_id}/state"
    return {
        "TF_HTTP_ADDRESS": address,
        "TF_HTTP_LOCK_ADDRESS": f"{address}/lock",
        "TF_HTTP_UNLOCK_ADDRESS": f"{address}/lock",
        "TF_HTTP_USERNAME": "run",
        "TF_HTTP_PASSWORD": run_token,
        "TF_IN_AUTOMATION": "1",
        "TF_INPUT": "0",
        "CHECKPOINT_DISABLE": "1",
    }

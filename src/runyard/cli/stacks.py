"""`runyard stack ...`: stacks, their sources and outputs."""

from __future__ import annotations

import json
from pathlib import Path

import click

from runyard.archive import pack_directory
from runyard.cli.output import OUTPUT_OPTION, emit_json, fields, table, with_client
from runyard.client import Client
from runyard.core.errors import InvalidInput
from runyard.core.models import SourceKind, Tool
from runyard.wire import EnvVarIO, SourceIO, StackCreate


def _pairs(values: tuple[str, ...], secret: bool) -> list[EnvVarIO]:
    out = []
    for item in values:
        if "=" not in item:
            raise InvalidInput(f"{item!r} is not KEY=VALUE")
        key, value = item.split("=", 1)
        out.append(EnvVarIO(name=key, value=value, secret=secret))
    return out


def _is_git_url(source: str) -> bool:
    return "://" in source or source.startswith("git@") or source.endswith(".git")


@click.group()
def stack() -> None:
    """Stacks: a source, a tool and a pool to run on."""


@stack.command("create")
@click.argument("name")
@click.option("--pool", "pool_name", required=True, help="pool whose workers run this stack")
@click.option("--source", required=True, help="a local directory (uploaded now) or a git URL")
@click.option("--branch", default="", help="git branch (git sources)")
@click.option("--project-root", default="", help="folder inside the source to run in")
@click.option("--tool", type=click.Choice([t.value for t in Tool]), default=Tool.SHELL.value,
              show_default=True)
@click.option("--runner-image", default="", help="container image for runs (default: the launcher's)")
@click.option("--init", "init_cmd", default="", help="shell: command of the init phase")
@click.option("--plan", "plan_cmd", default="", help="shell: command of the plan phase")
@click.option("--apply", "apply_cmd", default="", help="shell: command of the apply phase")
@click.option("--env", "env", multiple=True, help="KEY=VALUE variable (repeatable)")
@click.option("--secret", "secrets", multiple=True, help="KEY=VALUE secret variable, masked in logs (repeatable)")
@click.option("--label", "labels", multiple=True, help="a label (repeatable)")
@click.option("--hook", "hooks", multiple=True,
              help="PHASE=CMD, run in the run's container; PHASE is before_init, after_init, before_plan, "
                   "after_plan, before_apply, after_apply, before_perform or after_perform (repeatable)")
@click.option("--autodeploy/--no-autodeploy", default=None,
              help="apply tracked runs without confirmation [default: on for shell, off for terraform/opentofu]")
@click.option("--drift-schedule", default="", help="cron schedule of drift-detection runs, e.g. '0 * * * *'")
@OUTPUT_OPTION
@with_client
def stack_create(client: Client, name: str, pool_name: str, source: str, branch: str, project_root: str,
                 tool: str, runner_image: str, init_cmd: str, plan_cmd: str, apply_cmd: str,
                 env: tuple[str, ...], secrets: tuple[str, ...], labels: tuple[str, ...], hooks: tuple[str, ...],
                 autodeploy: bool | None, drift_schedule: str, output: str) -> None:
    """Create a stack. A local directory is uploaded as the stack's source.

    Terraform and OpenTofu stacks use runyard's state backend: the runs need no
    backend configuration of their own.
    """
    hook_map: dict[str, list[str]] = {}
    for item in hooks:
        phase, sep, command = item.partition("=")
        if not sep or not command:
            raise InvalidInput(f"hook {item!r} is not PHASE=COMMAND")
        hook_map.setdefault(phase, []).append(command)
    variables = _pairs(env, False) + _pairs(secrets, True)
    if _is_git_url(source):
        src = SourceIO(kind=SourceKind.GIT, url=source, branch=branch)
    else:
        directory = Path(source).expanduser().resolve()
        if not directory.is_dir():
            raise InvalidInput(f"source {source!r} is neither a directory nor a git URL")
        upload_id = client.upload_source(pack_directory(directory))
        src = SourceIO(kind=SourceKind.UPLOAD, upload_id=upload_id, origin=str(directory))
    body = StackCreate(
        name=name, pool=pool_name, source=src, tool=Tool(tool), project_root=project_root,
        runner_image=runner_image, commands={"init": init_cmd, "plan": plan_cmd, "apply": apply_cmd},
        env=variables, labels=list(labels), hooks=hook_map, drift_schedule=drift_schedule,
        autodeploy=(Tool(tool) == Tool.SHELL) if autodeploy is None else autodeploy,
    )
    created = client.create_stack(body)
    if output == "json":
        emit_json(created)
    else:
        click.echo(f"created stack {created.name} ({created.id})")


@stack.command("list")
@OUTPUT_OPTION
@with_client
def stack_list(client: Client, output: str) -> None:
    """List stacks."""
    stacks = client.stacks()
    if output == "json":
        emit_json(stacks)
        return
    table(["id", "name", "tool", "pool", "source"],
          [(s.id, s.name, s.tool, s.pool_id, s.source.url or s.source.origin) for s in stacks])


@stack.command("outputs")
@click.argument("name")
@OUTPUT_OPTION
@with_client
def stack_outputs(client: Client, name: str, output: str) -> None:
    """The outputs of the stack's last apply. Sensitive ones are never shown:
    they are stored sealed to the pool's key, if the launcher uploads them."""
    outputs = client.outputs(name)
    if output == "json":
        emit_json(outputs)
        return
    table(["name", "value"], [
        (o.name, "(sensitive, sealed)" if o.sealed else "(sensitive, not uploaded)" if o.sensitive
         else json.dumps(o.value)) for o in outputs])


@stack.command("show")
@click.argument("name")
@OUTPUT_OPTION
@with_client
def stack_show(client: Client, name: str, output: str) -> None:
    """Show a stack (secret values are never shown)."""
    s = client.stack(name)
    if output == "json":
        emit_json(s)
        return
    src = f"git {s.source.url}" + (f" ({s.source.branch})" if s.source.branch else "") if s.source.kind == "git" \
        else f"upload of {s.source.origin}"
    fields([("id", s.id), ("name", s.name), ("pool", s.pool_id), ("tool", s.tool), ("source", src),
            ("project root", s.project_root or "."), ("runner image", s.runner_image or "(launcher default)"),
            *[(f"{phase} command", cmd) for phase, cmd in s.commands.items()],
            ("variables", [f"{e.name}={'***' if e.secret else e.value}" for e in s.env]),
            ("labels", s.labels), ("created", s.created_at)])

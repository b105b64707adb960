"""`runyard pool|stack|run ...`: the API, for people and scripts."""

from __future__ import annotations

import functools
import json
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import click

from runyard.archive import pack_directory
from runyard.cli.output import OUTPUT_OPTION, emit_json, fields, table
from runyard.client import Client
from runyard.core.errors import InvalidInput, Unavailable
from runyard.core.states import RunKind, RunState
from runyard.wire import EnvVarIO, RunOut, SourceIO, StackCreate


def with_client(fn: Callable[..., Any]) -> Callable[..., Any]:
    """Adds --endpoint/--api-key (or RUNYARD_ENDPOINT/RUNYARD_API_KEY) and passes a Client."""

    @click.option("--endpoint", envvar="RUNYARD_ENDPOINT", default="http://127.0.0.1:8765",
                  show_default=True, help="server URL [env RUNYARD_ENDPOINT]")
    @click.option("--api-key", envvar="RUNYARD_API_KEY", default="", help="API key [env RUNYARD_API_KEY]")
    @functools.wraps(fn)
    def wrapper(endpoint: str, api_key: str, **kwargs: Any) -> Any:
        client = Client([endpoint], api_key)
        try:
            return fn(client, **kwargs)
        finally:
            client.close()

    return wrapper


# pools -----------------------------------------------------------------------


@click.group()
def pool() -> None:
    """Worker pools: create them and get their tokens."""


@pool.command("create")
@click.argument("name")
@click.option("--csr", "csr_path", type=click.Path(path_type=Path, exists=True, dir_okay=False), required=True,
              help="the pool's CSR (from `runyard keygen` or openssl)")
@click.option("--description", default="", help="markdown shown with the pool")
@click.option("--label", "labels", multiple=True, help="a label (repeatable)")
@click.option("--drift-detection-limit", type=click.IntRange(min=0), default=None,
              help="at most this many drift-detection runs at once (0 or unset: drift detection disabled)")
@OUTPUT_OPTION
@with_client
def pool_create(
    client: Client, name: str, csr_path: Path, description: str, labels: tuple[str, ...],
    drift_detection_limit: int | None, output: str,
) -> None:
    """Create a pool; prints its token (give it to launchers as RUNYARD_TOKEN)."""
    created = client.create_pool(name, csr_path.read_text(), description, labels, drift_detection_limit)
    if output == "json":
        emit_json(created)
    else:
        click.echo(created.token)


@pool.command("list")
@OUTPUT_OPTION
@with_client
def pool_list(client: Client, output: str) -> None:
    """List pools."""
    pools = client.pools()
    if output == "json":
        emit_json(pools)
        return
    table(["name", "idle", "busy", "drained", "queued", "running", "labels", "id"],
          [(p.name, p.workers.get("IDLE", 0), p.workers.get("BUSY", 0), p.workers.get("DRAINED", 0), p.queue_length,
            p.running, p.labels, p.id) for p in pools])


@pool.command("show")
@click.argument("name")
@OUTPUT_OPTION
@with_client
def pool_show(client: Client, name: str, output: str) -> None:
    """Show a pool and its workers."""
    p = client.pool(name)
    workers = client.workers(p.id)
    queue = client.pool_queue(p.id)
    used_by = client.pool_stacks(p.id)
    if output == "json":
        emit_json({"pool": p.model_dump(mode="json"), "workers": [w.model_dump(mode="json") for w in workers],
                   "queue": [r.model_dump(mode="json") for r in queue],
                   "used_by": [s.name for s in used_by]})
        return
    fields([("id", p.id), ("name", p.name), ("description", p.description), ("labels", p.labels),
            ("drift detection", f"at most {p.drift_detection_limit} at once" if p.drift_detection_limit
             else "disabled"), ("created", p.created_at), ("workers", p.workers), ("queued", p.queue_length),
            ("used by", [s.name for s in used_by])])
    if workers:
        click.echo()
        table(["worker", "status", "run", "version", "created", "last seen", "metadata"],
              [(w.id, w.status, w.current_run_id, w.version, w.created_at, w.last_seen_at, w.metadata)
               for w in workers])
    if queue:
        click.echo()
        table(["run", "stack", "kind", "state", "waiting for"],
              [(r.id, r.stack_id, r.kind.value, r.state.value, r.waiting_for) for r in queue])


@pool.command("update")
@click.argument("name")
@click.option("--description", default=None, help="new markdown description")
@click.option("--label", "labels", multiple=True, help="labels (repeatable; replaces the old ones)")
@click.option("--clear-labels", is_flag=True, help="remove every label")
@click.option("--drift-detection-limit", type=click.IntRange(min=0), default=None, help="0 disables drift detection")
@OUTPUT_OPTION
@with_client
def pool_update(client: Client, name: str, description: str | None, labels: tuple[str, ...], clear_labels: bool,
                drift_detection_limit: int | None, output: str) -> None:
    """Change a pool's description, labels or drift-detection limit."""
    body: dict[str, Any] = {"description": description, "drift_detection_limit": drift_detection_limit}
    if labels or clear_labels:
        body["labels"] = list(labels)
    updated = client.update_pool(name, body)
    if output == "json":
        emit_json(updated)
    else:
        click.echo(f"updated pool {updated.name}")


@pool.command("cycle")
@click.argument("name")
@with_client
def pool_cycle(client: Client, name: str) -> None:
    """Make every worker of the pool exit: idle ones at once, busy ones after their run."""
    count = client.cycle_pool(name)
    click.echo(f"told {count} worker(s) of pool {name} to exit; busy ones finish their run first")


@pool.command("reset")
@click.argument("name")
@click.option("--csr", "csr_path", type=click.Path(path_type=Path, exists=True, dir_okay=False), required=True,
              help="CSR of the pool's new key")
@with_client
def pool_reset(client: Client, name: str, csr_path: Path) -> None:
    """Give the pool a new certificate and token: the old token and key stop working at once,
    and workers using them stop. Prints the new token."""
    click.echo(client.reset_pool(name, csr_path.read_text()).token)


@click.group()
def worker() -> None:
    """Workers: drain them before maintenance."""


@worker.command("drain")
@click.argument("worker_id")
@with_client
def worker_drain(client: Client, worker_id: str) -> None:
    """The worker takes no new run; it finishes the one it has."""
    w = client.drain(worker_id, True)
    click.echo(f"worker {w.id} is {w.status}" + (f" (finishing run {w.current_run_id})" if w.current_run_id else ""))


@worker.command("undrain")
@click.argument("worker_id")
@with_client
def worker_undrain(client: Client, worker_id: str) -> None:
    """The worker takes runs again."""
    w = client.drain(worker_id, False)
    click.echo(f"worker {w.id} is {w.status}")


# stacks ----------------------------------------------------------------------


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
@click.option("--tool", type=click.Choice(["shell", "terraform", "opentofu", "ansible"]), default="shell",
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
        src = SourceIO(kind="git", url=source, branch=branch)
    else:
        directory = Path(source).expanduser().resolve()
        if not directory.is_dir():
            raise InvalidInput(f"source {source!r} is neither a directory nor a git URL")
        upload_id = client.upload_source(pack_directory(directory))
        src = SourceIO(kind="upload", upload_id=upload_id, origin=str(directory))
    body = StackCreate(
        name=name, pool=pool_name, source=src, tool=tool, project_root=project_root,
        runner_image=runner_image, commands={"init": init_cmd, "plan": plan_cmd, "apply": apply_cmd},
        env=variables, labels=list(labels), hooks=hook_map, drift_schedule=drift_schedule,
        autodeploy=(tool == "shell") if autodeploy is None else autodeploy,
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


# runs ------------------------------------------------------------------------


@click.group()
def run() -> None:
    """Runs: trigger them, follow their logs, cancel them."""


def _print_run(r: RunOut, output: str) -> None:
    if output == "json":
        emit_json(r)
        return
    changes = r.changes and f"+{r.changes['add']} ~{r.changes['change']} -{r.changes['destroy']}"
    fields([("id", r.id), ("kind", r.kind.value), ("state", r.state.value), ("stack", r.stack_id),
            ("worker", r.worker_id), ("changes", changes or "-"), ("waiting for", r.waiting_for or "-"),
            ("reason", r.reason or "-"), ("created", r.created_at)])
    click.echo()
    table(["state", "at", "note"], [(t.state.value, t.at.strftime("%H:%M:%S.%f")[:-3], t.note) for t in r.transitions])


def follow_logs(client: Client, run_id: str, out: Callable[[str], None] = click.echo,
                until_confirmation: bool = True) -> RunOut:
    """Print the run's log as it grows until the run ends (or, by default, waits
    for confirmation); survives server restarts."""
    after = 0
    backoff = 0.2
    while True:
        try:
            page = client.logs(run_id, after=after, wait=20)
        except Unavailable:
            time.sleep(backoff)
            backoff = min(backoff * 2, 5)
            continue
        backoff = 0.2
        for line in page.lines:
            out(line.msg)
            after = line.seq
        if page.done or (until_confirmation and not page.lines and page.state == RunState.UNCONFIRMED):
            return client.run(run_id)


AWAITING_CONFIRMATION = 10  # --wait's exit code when a plan waits for `run confirm`


def _wait_and_exit(client: Client, r: RunOut, follow: bool, output: str) -> None:
    """Wait for the end, or for the plan to need confirmation."""
    if follow:
        final = follow_logs(client, r.id, click.echo if output == "table" else lambda s: None)
    else:
        final = r
        while not final.state.terminal and final.state != RunState.UNCONFIRMED:
            final = _await_change(client, final)
    if output == "json":
        emit_json(final)
    elif final.state == RunState.UNCONFIRMED:
        click.echo(f"run {final.id} waits for confirmation: runyard run confirm {final.id}", err=True)
    else:
        click.echo(f"run {final.id} {final.state.value}" + (f": {final.reason}" if final.reason else ""), err=True)
    if final.state == RunState.UNCONFIRMED:
        sys.exit(AWAITING_CONFIRMATION)
    sys.exit(0 if final.state == RunState.FINISHED else 1)


def _await_change(client: Client, r: RunOut) -> RunOut:
    # The log long poll returns when the run's log or state moves.
    try:
        client.logs(r.id, after=10**12, wait=20)
        return client.run(r.id)
    except Unavailable:
        time.sleep(1)
        return r


@run.command("trigger")
@click.argument("stack_name")
@click.option("--proposed", is_flag=True, help="plan only, change nothing")
@click.option("--drift-detection", is_flag=True, help="a drift-detection run now, as the stack's schedule queues them")
@click.option("--wait", is_flag=True, help="wait for the end; exit non-zero unless it finished")
@click.option("--follow", "-f", is_flag=True, help="with --wait: print the log as it comes")
@OUTPUT_OPTION
@with_client
def run_trigger(client: Client, stack_name: str, proposed: bool, drift_detection: bool, wait: bool, follow: bool,
                output: str) -> None:
    """Queue a tracked run (or a proposed one) on a stack.

    With --wait: exit 0 when the run finished, 10 when its plan waits for
    `runyard run confirm`, 1 otherwise.
    """
    kind = RunKind.DRIFT_DETECTION if drift_detection else RunKind.PROPOSED if proposed else RunKind.TRACKED
    r = client.trigger(stack_name, kind)
    if wait or follow:
        click.echo(f"run {r.id} queued", err=True)
        _wait_and_exit(client, r, follow, output)
    _print_run(r, output) if output == "json" else click.echo(r.id)


@run.command("task")
@click.argument("stack_name")
@click.option("--command", "command", required=True, help="the command to run in the stack's workspace")
@click.option("--wait", is_flag=True, help="wait for the end; exit non-zero unless it finished")
@click.option("--follow", "-f", is_flag=True, help="with --wait: print the log as it comes")
@OUTPUT_OPTION
@with_client
def run_task(client: Client, stack_name: str, command: str, wait: bool, follow: bool, output: str) -> None:
    """Run one command on a stack's worker."""
    r = client.trigger(stack_name, RunKind.TASK, command)
    if wait or follow:
        click.echo(f"run {r.id} queued", err=True)
        _wait_and_exit(client, r, follow, output)
    _print_run(r, output) if output == "json" else click.echo(r.id)


@run.command("list")
@click.option("--stack", "stack_name", default=None, help="only this stack's runs")
@click.option("--limit", default=50, show_default=True)
@OUTPUT_OPTION
@with_client
def run_list(client: Client, stack_name: str | None, limit: int, output: str) -> None:
    """List runs, newest first."""
    runs = client.runs(stack_name, limit)
    if output == "json":
        emit_json(runs)
        return
    names = {s.id: s.name for s in client.stacks()}
    table(["id", "stack", "kind", "state", "created", "reason"],
          [(r.id, names.get(r.stack_id, r.stack_id), r.kind.value, r.state.value, r.created_at, r.reason)
           for r in runs])


@run.command("show")
@click.argument("run_id")
@OUTPUT_OPTION
@with_client
def run_show(client: Client, run_id: str, output: str) -> None:
    """Show a run with every state transition."""
    _print_run(client.run(run_id), output)


@run.command("logs")
@click.argument("run_id")
@click.option("--follow", "-f", is_flag=True, help="keep printing until the run ends")
@with_client
def run_logs(client: Client, run_id: str, follow: bool) -> None:
    """Print a run's log."""
    if follow:
        follow_logs(client, run_id)
        return
    after = 0
    while True:
        page = client.logs(run_id, after=after)
        for line in page.lines:
            click.echo(line.msg)
            after = line.seq
        if not page.lines:
            return


@run.command("confirm")
@click.argument("run_id")
@click.option("--wait", is_flag=True, help="wait for the apply to end; exit non-zero unless it finished")
@OUTPUT_OPTION
@with_client
def run_confirm(client: Client, run_id: str, wait: bool, output: str) -> None:
    """Apply an UNCONFIRMED run's saved plan (on any worker of the pool)."""
    r = client.confirm(run_id)
    if wait:
        _wait_and_exit(client, r, False, output)
    _print_run(r, output) if output == "json" else click.echo(f"run {r.id} {r.state.value}")


@run.command("discard")
@click.argument("run_id")
@OUTPUT_OPTION
@with_client
def run_discard(client: Client, run_id: str, output: str) -> None:
    """Throw away an UNCONFIRMED run's plan."""
    r = client.discard(run_id)
    _print_run(r, output) if output == "json" else click.echo(f"run {r.id} {r.state.value}")


@run.command("cancel")
@click.argument("run_id")
@OUTPUT_OPTION
@with_client
def run_cancel(client: Client, run_id: str, output: str) -> None:
    """Cancel a queued run, or stop a running one."""
    r = client.cancel(run_id)
    if output == "json":
        emit_json(r)
    elif r.state.terminal:
        click.echo(f"run {r.id} {r.state.value}")
    else:
        click.echo(f"run {r.id}: stop requested; the worker is stopping it")


# state -----------------------------------------------------------------------


@click.group()
def state() -> None:
    """Terraform state kept by the server: history and downloads."""


@state.command("versions")
@click.argument("stack_name")
@OUTPUT_OPTION
@with_client
def state_versions(client: Client, stack_name: str, output: str) -> None:
    """Every stored version of the stack's state, oldest first."""
    versions = client.state_versions(stack_name)
    if output == "json":
        emit_json(versions)
        return
    table(["version", "serial", "lineage", "run", "created"],
          [(v.version, v.serial, v.lineage, v.run_id, v.created_at) for v in versions])


@state.command("pull")
@click.argument("stack_name")
@click.option("--version", "version", type=int, default=None, help="a stored version (default: the newest)")
@with_client
def state_pull(client: Client, stack_name: str, version: int | None) -> None:
    """Print the stack's state (the newest, or --version N)."""
    click.echo(client.state(stack_name, version).decode())

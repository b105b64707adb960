"""`runyard run ...`: trigger, follow, decide on and cancel runs."""

from __future__ import annotations

import functools
import sys
import time
from collections.abc import Callable

import click

from runyard import retry
from runyard.cli.output import OUTPUT_OPTION, emit_json, fields, table, with_client
from runyard.client import Client
from runyard.core.errors import Unavailable
from runyard.core.states import RunKind, RunState
from runyard.wire import RunOut


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
    while True:
        page = retry.call(functools.partial(client.logs, run_id, after=after, wait=20), Unavailable)
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


KEY_OPTION = click.option(
    "--idempotency-key", "key", default="", metavar="KEY",
    help="the same KEY again (a CI job's retry) gets the run it queued first instead of a new one; "
         "up to 128 letters, digits and . _ : + = / -")


@run.command("trigger")
@click.argument("stack_name")
@click.option("--proposed", is_flag=True, help="plan only, change nothing")
@click.option("--drift-detection", is_flag=True, help="a drift-detection run now, as the stack's schedule queues them")
@click.option("--wait", is_flag=True, help="wait for the end; exit non-zero unless it finished")
@click.option("--follow", "-f", is_flag=True, help="with --wait: print the log as it comes")
@KEY_OPTION
@OUTPUT_OPTION
@with_client
def run_trigger(client: Client, stack_name: str, proposed: bool, drift_detection: bool, wait: bool, follow: bool,
                key: str, output: str) -> None:
    """Queue a tracked run (or a proposed one) on a stack.

    With --wait: exit 0 when the run finished, 10 when its plan waits for
    `runyard run confirm`, 1 otherwise.
    """
    kind = RunKind.DRIFT_DETECTION if drift_detection else RunKind.PROPOSED if proposed else RunKind.TRACKED
    r = client.trigger(stack_name, kind, key=key)
    if wait or follow:
        click.echo(f"run {r.id} queued", err=True)
        _wait_and_exit(client, r, follow, output)
    _print_run(r, output) if output == "json" else click.echo(r.id)


@run.command("task")
@click.argument("stack_name")
@click.option("--command", "command", required=True, help="the command to run in the stack's workspace")
@click.option("--wait", is_flag=True, help="wait for the end; exit non-zero unless it finished")
@click.option("--follow", "-f", is_flag=True, help="with --wait: print the log as it comes")
@KEY_OPTION
@OUTPUT_OPTION
@with_client
def run_task(client: Client, stack_name: str, command: str, wait: bool, follow: bool, key: str, output: str) -> None:
    """Run one command on a stack's worker."""
    r = client.trigger(stack_name, RunKind.TASK, command, key=key)
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

"""`runyard demo`: a server, a launcher and one real run, on this machine."""

from __future__ import annotations

import shutil
import socket
import sys
import tempfile
from pathlib import Path

import click

import runyard
from runyard.cli.runs import follow_logs
from runyard.config import RUNNER_IMAGE
from runyard.core.errors import RunyardError
from runyard.core.states import RunKind, RunState
from runyard.devstack import LauncherProcess, ServerProcess, free_port, make_pool, make_shell_stack, wait_for_launchers
from runyard.wire import EnvVarIO, RunOut

EXAMPLES = Path(runyard.__file__).resolve().parents[2] / "examples"


def pick_executor() -> str:
    """Docker when an engine answers and the runner image is here; else processes."""
    from runyard.launcher.executors.docker import image_available

    return "docker" if image_available(RUNNER_IMAGE) else "process"


def summary(r: RunOut) -> list[tuple[str, str]]:
    by_state = {t.state: t.at for t in r.transitions}
    queued = by_state.get(RunState.QUEUED)
    started = by_state.get(RunState.READY)
    ended = r.transitions[-1].at if r.transitions else None
    rows = [("run", r.id), ("state", r.state.value + (f" ({r.reason})" if r.reason else ""))]
    if queued and started:
        rows.append(("queue to start", f"{(started - queued).total_seconds() * 1000:.1f} ms"))
    if queued and ended:
        rows.append(("total", f"{(ended - queued).total_seconds():.2f} s"))
    return rows


@click.command()
@click.option("--example", type=click.Path(path_type=Path, file_okay=False), default=None,
              help="example directory to run [default: examples/hello-shell]")
@click.option("--keep", is_flag=True, help="keep the temporary directory (data, logs) afterwards")
def demo(example: Path | None, keep: bool) -> None:
    """Start a server and a launcher in a temporary directory and run an example stack.

    Everything runs on the embedded defaults (SQLite, local object store, local
    processes); the run's log follows live and a summary ends it.
    """
    example = (example or EXAMPLES / "hello-shell").resolve()
    if not example.is_dir():
        raise click.ClickException(f"example {example} not found: pass --example DIR")
    tmp = Path(tempfile.mkdtemp(prefix="runyard-demo-"))
    server = ServerProcess(tmp / "server", free_port())
    launcher: LauncherProcess | None = None
    code = 1
    try:
        click.secho(f"==> starting the server on {server.endpoint} (data in {tmp})", bold=True)
        server.start()
        client = server.client()

        click.secho("==> making a pool key and CSR, creating pool 'demo'", bold=True)
        creds = make_pool(client, "demo", bits=4096, description="Pool made by `runyard demo`.", labels=["demo"])

        executor = pick_executor()
        click.secho(f"==> starting a launcher for pool 'demo' (executor: {executor})", bold=True)
        launcher = LauncherProcess(creds, tmp / "work", extra_env={
            "RUNYARD_EXECUTOR": executor, "RUNYARD_METADATA_host": socket.gethostname()}).start()
        wait_for_launchers(client, creds.pool_id, 1, set(), [launcher])

        click.secho(f"==> creating stack 'hello' from {example}", bold=True)
        make_shell_stack(
            client, "hello", "demo", example,
            {"init": "sh main.sh init", "plan": "sh main.sh plan", "apply": "sh main.sh apply"},
            [EnvVarIO(name="GREETING", value="hello from runyard"),
             EnvVarIO(name="DEMO_TOKEN", value="s3cr3t-demo-token", secret=True)],
        )

        r = client.trigger("hello", RunKind.TRACKED)
        click.secho(f"==> run {r.id} queued; its log follows", bold=True)
        final = follow_logs(client, r.id, lambda line: click.echo(f"  | {line}"))
        click.secho("==> summary", bold=True)
        for name, value in summary(final):
            click.echo(f"  {name + ':':<16}{value}")
        code = 0 if final.state == RunState.FINISHED else 1
        client.close()
    except RunyardError as exc:
        click.echo(f"error: {exc.message}", err=True)
    finally:
        if launcher is not None:
            launcher.stop()
        server.stop()
        if keep or code != 0:
            click.echo(f"data and process logs kept in {tmp}")
        else:
            shutil.rmtree(tmp, ignore_errors=True)
    sys.exit(code)

"""`runyard demo`: a server, a launcher and one real run, on this machine."""

from __future__ import annotations

import base64
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import click

import runyard
from runyard.archive import pack_directory
from runyard.cli.runs import follow_logs
from runyard.client import Client
from runyard.config import RUNNER_IMAGE
from runyard.core.errors import RunyardError, Unavailable
from runyard.core.states import RunKind, RunState
from runyard.crypto import generate_key, key_to_pem, make_csr, new_secret
from runyard.wire import EnvVarIO, RunOut, SourceIO, StackCreate

EXAMPLES = Path(runyard.__file__).resolve().parents[2] / "examples"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_for_server(client: Client, proc: subprocess.Popen[bytes], timeout: float = 60) -> None:
    """Start-up only: wait until the server answers (or died)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise click.ClickException(f"the server exited with code {proc.returncode} at start-up")
        try:
            client.request("GET", "/healthz", timeout=2)
            return
        except Unavailable:
            time.sleep(0.1)
    raise click.ClickException("the server did not answer within 60s")


def pick_executor() -> str:
    """Docker when an engine answers and the runner image is here; else processes."""
    from runyard.launcher.executors.docker import image_available

    return "docker" if image_available(RUNNER_IMAGE) else "process"


def wait_for_worker(client: Client, pool_id: str, proc: subprocess.Popen[bytes], timeout: float = 60) -> None:
    """Start-up only: wait until the launcher has registered its worker."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise click.ClickException(f"the launcher exited with code {proc.returncode} at start-up")
        if client.workers(pool_id):
            return
        time.sleep(0.1)
    raise click.ClickException("the launcher did not register within 60s")


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
    port = free_port()
    endpoint = f"http://127.0.0.1:{port}"
    admin_key = new_secret("ryk_")
    base_env = {k: v for k, v in os.environ.items() if not k.startswith("RUNYARD_")}
    procs: list[subprocess.Popen[bytes]] = []
    code = 1
    try:
        click.secho(f"==> starting the server on {endpoint} (data in {tmp})", bold=True)
        server_log = open(tmp / "server.log", "wb")  # noqa: SIM115 - closed with the process
        procs.append(subprocess.Popen(
            [sys.executable, "-m", "runyard", "server", "--data-dir", str(tmp / "server"), "--port", str(port)],
            env={**base_env, "RUNYARD_ADMIN_API_KEY": admin_key}, stdout=server_log, stderr=subprocess.STDOUT,
        ))
        client = Client([endpoint], admin_key)
        wait_for_server(client, procs[0])

        click.secho("==> making a pool key and CSR, creating pool 'demo'", bold=True)
        key = generate_key(4096)
        created = client.create_pool("demo", make_csr(key).decode(), "Pool made by `runyard demo`.", ["demo"])

        executor = pick_executor()
        click.secho(f"==> starting a launcher for pool 'demo' (executor: {executor})", bold=True)
        launcher_env = {
            "RUNYARD_EXECUTOR": executor,
            **base_env,
            "RUNYARD_TOKEN": created.token,
            "RUNYARD_POOL_PRIVATE_KEY": base64.b64encode(key_to_pem(key)).decode(),
            "RUNYARD_WORK_DIR": str(tmp / "work"),
            "RUNYARD_METADATA_host": socket.gethostname(),
        }
        launcher_log = open(tmp / "launcher.log", "wb")  # noqa: SIM115 - closed with the process
        procs.append(subprocess.Popen([sys.executable, "-m", "runyard", "launcher"], env=launcher_env,
                                      stdout=launcher_log, stderr=subprocess.STDOUT))

        wait_for_worker(client, created.pool.id, procs[1])

        click.secho(f"==> creating stack 'hello' from {example}", bold=True)
        upload = client.upload_source(pack_directory(example))
        client.create_stack(StackCreate(
            name="hello", pool="demo", source=SourceIO(kind="upload", upload_id=upload, origin=str(example)),
            tool="shell",
            commands={"init": "sh main.sh init", "plan": "sh main.sh plan", "apply": "sh main.sh apply"},
            env=[EnvVarIO(name="GREETING", value="hello from runyard"),
                 EnvVarIO(name="DEMO_TOKEN", value="s3cr3t-demo-token", secret=True)],
        ))

        r = client.trigger("hello", RunKind.TRACKED)
        click.secho(f"==> run {r.id} queued; its log follows", bold=True)
        final = follow_logs(client, r.id, lambda line: click.echo(f"  | {line}"))
        click.secho("==> summary", bold=True)
        for name, value in summary(final):
            click.echo(f"  {name + ':':<16}{value}")
        code = 0 if final.state == RunState.FINISHED else 1
    except RunyardError as exc:
        click.echo(f"error: {exc.message}", err=True)
    finally:
        for proc in reversed(procs):
            proc.send_signal(signal.SIGTERM)
        for proc in reversed(procs):
            try:
                proc.wait(15)
            except subprocess.TimeoutExpired:
                proc.kill()
        if keep or code != 0:
            click.echo(f"data and process logs kept in {tmp}")
        else:
            shutil.rmtree(tmp, ignore_errors=True)
    sys.exit(code)

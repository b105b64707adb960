"""`runyard`: server, launcher, keygen, and the API command groups."""

from __future__ import annotations

import logging
import os
import signal
import sys
from pathlib import Path
from typing import Any

import click

from runyard import __version__
from runyard.cli.options import settings_options
from runyard.config import RUNNER_IMAGE, LauncherSettings, ServerSettings
from runyard.core.errors import RunyardError


class RunyardGroup(click.Group):
    """Turns every RunyardError into one line on stderr and its exit code."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except RunyardError as exc:
            click.echo(f"error: {exc.message}", err=True)
            sys.exit(exc.exit_code)
        except click.UsageError as exc:
            # One line, like every other error; the usage is one --help away.
            where = exc.ctx.command_path if exc.ctx is not None else ctx.command_path
            click.echo(f"error: {exc.format_message()} (see `{where} --help`)", err=True)
            sys.exit(2)


@click.group(cls=RunyardGroup)
@click.version_option(__version__, prog_name="runyard")
def main() -> None:
    """runyard: a control plane and self-hosted worker pools for Terraform and CI runs.

    Start a server (`runyard server`), make a pool key (`runyard keygen`), create
    a pool, start launchers on your hosts, then create stacks and trigger runs.
    `runyard demo` does all of it once on this machine.
    """
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s", stream=sys.stderr
    )
    for noisy in ("httpx", "alembic"):
        logging.getLogger(noisy).setLevel(logging.WARNING)


@main.command()
@settings_options(ServerSettings)
def server(**flags: Any) -> None:
    """Start the control plane (API, scheduler, state and logs)."""
    from runyard.server.app import bootstrap_admin_key, build_services, create_app, hold_sqlite_file
    from runyard.server.serve import serve

    settings, _ = ServerSettings.resolve(flags)
    held = hold_sqlite_file(settings)  # noqa: F841 - the lock lasts while it is open
    services = build_services(settings)
    key = bootstrap_admin_key(services, settings)
    if key:
        click.echo(
            f"Admin API key (shown once; also in {settings.data_dir / 'admin-api-key'}):\n  {key}", err=True
        )
    app = create_app(settings, services)
    serve(app, services.ctx.notifier, settings.host, settings.port)


@main.command()
@click.option("--key", "key_path", type=click.Path(path_type=Path), required=True, help="private key file to write")
@click.option("--csr", "csr_path", type=click.Path(path_type=Path), required=True, help="CSR file to write")
@click.option("--bits", type=int, default=4096, show_default=True, help="RSA key size")
def keygen(key_path: Path, csr_path: Path, bits: int) -> None:
    """Make an RSA key and a CSR for a pool (like `openssl req -new -newkey rsa:4096 -nodes`)."""
    from runyard.crypto import generate_key, key_to_pem, make_csr

    for path in (key_path, csr_path):
        if path.exists():
            raise click.ClickException(f"{path} exists already; not overwriting it")
    key = generate_key(bits)
    fd = os.open(key_path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as fh:
        fh.write(key_to_pem(key))
    csr_path.write_bytes(make_csr(key))
    click.echo(f"wrote {key_path} (keep it secret) and {csr_path}")
    click.echo(f"launchers take the key as: RUNYARD_POOL_PRIVATE_KEY=$(base64 -w0 {key_path})")


@main.command()
@click.option("--config", "config_file", type=click.Path(path_type=Path, exists=True, dir_okay=False),
              help="YAML settings file (keys: the setting names below, e.g. launcher_logs_timeout: 7m)")
@click.option("--explain-config", is_flag=True, help="print each setting, its value and where it came from, then exit")
@settings_options(LauncherSettings)
def launcher(config_file: Path | None, explain_config: bool, **flags: Any) -> None:
    """Join a worker pool and execute its runs.

    Needs RUNYARD_TOKEN (from `runyard pool create`) and RUNYARD_POOL_PRIVATE_KEY
    (the pool key, base64 on one line). RUNYARD_METADATA_<key> variables become
    worker tags. Every setting comes from a flag, a RUNYARD_* variable or the
    --config file, in that order.

    \b
    Exit codes (and RUNYARD_SHUTDOWN_REASON for the shutdown hook):
      0  job-finished, idle, cycled, interrupted, scaled-in, removed
      1  error: the pool was reset, registration refused, unknown pool
      2  error: bad settings (token, key, policy, masked variables)
    """
    from runyard.launcher.launcher import Launcher, LauncherExit, make_executor, run_shutdown_hook, with_pool_token

    settings, origin = LauncherSettings.resolve(flags, config_file=config_file)
    if explain_config:
        from runyard.cli.output import table

        table(["setting", "value", "from"], settings.explain(origin))
        return
    try:
        runner = Launcher(with_pool_token(settings), make_executor(settings))
    except RunyardError:
        # Bad settings (a wrong key, a broken policy): exit 2, but the hook still
        # runs, so a host that exists only for this launcher does not linger.
        hook = settings.shutdown_hook_path
        if hook is not None and os.access(hook, os.X_OK):
            from runyard.core.models import ExitReason

            run_shutdown_hook(hook, os.environ, ExitReason.ERROR)
        raise

    def on_signal(signum: int, _frame: Any) -> None:
        runner.interrupt()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    try:
        reason = runner.run()
    except LauncherExit as exc:
        click.echo(f"error: {exc}", err=True)
        sys.exit(1)
    click.echo(f"launcher exiting: {reason}", err=True)


@main.group("worker-host")
def worker_host() -> None:
    """Worker hosts: what the AWS template's user data runs."""


@worker_host.command("setup")
def worker_host_setup() -> None:
    """Read the pool's token and key (SSM or Secrets Manager), make the runyard
    user, write /etc/runyard/launcher.env and the systemd unit, start it.
    Reads RUNYARD_POOL, RUNYARD_STORE, RUNYARD_TOKEN_NAME, RUNYARD_KEY_NAME,
    RUNYARD_INSTANCE_ID, RUNYARD_SERVER_ENDPOINTS, RUNYARD_AS_ROOT,
    RUNYARD_POWER_OFF, RUNYARD_CUSTOM_USER_DATA, RUNYARD_CA_PARAMETER and the
    proxy variables."""
    from runyard.launcher.host import HostSettings, exec_launcher, fetch_secret, setup

    host = HostSettings.from_env(os.environ)
    root = Path(os.environ.get("RUNYARD_ROOT", "/"))
    env_file = setup(host, fetch_secret(host.region), root)
    if root == Path("/") and not Path("/run/systemd/system").is_dir():
        click.echo(f"launcher settings in {env_file}; no systemd here: running the launcher now", err=True)
        exec_launcher(env_file, "root" if host.as_root else "runyard")
    click.echo(f"launcher settings in {env_file}; runyard-launcher.service started")


@main.group("runner-image")
def runner_image() -> None:
    """Runner images for the Docker executor."""


@runner_image.command("build")
@click.option("--tag", default=RUNNER_IMAGE, show_default=True, help="image tag to build")
@click.option("--with-terraform", "terraform", type=click.Path(path_type=Path, dir_okay=False), default=None,
              help="a static terraform (or tofu) binary on this host to include")
@click.option("--busybox", type=click.Path(path_type=Path, dir_okay=False), default=Path("/bin/busybox"),
              show_default=True, help="a static busybox binary (Debian: busybox-static)")
def runner_image_build(tag: str, terraform: Path | None, busybox: Path) -> None:
    """Build a runner image offline: no registry, no base image pulled."""
    from runyard.launcher.executors import ExecutorError
    from runyard.launcher.executors.docker import build_runner_image

    try:
        image_id = build_runner_image(tag, busybox, terraform)
    except ExecutorError as exc:
        raise click.ClickException(str(exc)) from exc
    click.echo(f"built {tag} ({image_id[:19]})")


def _register_groups() -> None:
    from runyard.cli import autoscaler, demo, dr, pools, runs, stacks, state

    main.add_command(pools.pool)
    main.add_command(pools.worker)
    main.add_command(stacks.stack)
    main.add_command(runs.run)
    main.add_command(state.state)
    main.add_command(dr.dr)
    main.add_command(demo.demo)
    main.add_command(autoscaler.autoscaler)


_register_groups()

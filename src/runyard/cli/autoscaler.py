"""`runyard autoscaler`: size pools from their queues."""

from __future__ import annotations

import os
import signal
import threading
from pathlib import Path
from typing import Any

import click
from pydantic import ValidationError

from runyard.cli.options import settings_options
from runyard.config import AutoscalerSettings, PoolScaling


@click.group(invoke_without_command=True)
@click.option("--config", "config_file", type=click.Path(path_type=Path, exists=True, dir_okay=False),
              help="YAML file: the settings below, and a `pools` list of the per-pool options")
@settings_options(AutoscalerSettings, skip=("pools",))
@settings_options(PoolScaling, env=False)
@click.pass_context
def autoscaler(ctx: click.Context, /, config_file: Path | None, **flags: Any) -> None:
    """Size each pool's fleet from its queue: scale out at once when runs wait,
    scale in only idle workers (drain, check again, terminate with decrement),
    and end instances that never registered a worker.

    One pool comes from the per-pool flags (--pool NAME --provider ...),
    several from a --config file. For the local provider the launchers get
    RUNYARD_TOKEN and RUNYARD_POOL_PRIVATE_KEY (and any other RUNYARD_*
    launcher setting) from this process's environment.
    """
    if ctx.invoked_subcommand is not None:
        return
    pool_flags = {k: v for k, v in flags.items() if k in PoolScaling.model_fields and v is not None}
    settings_flags: dict[str, Any] = {k: v for k, v in flags.items() if k in AutoscalerSettings.model_fields}
    if pool_flags:
        if "pool" not in pool_flags:
            raise click.UsageError("per-pool flags need --pool NAME")
        try:
            settings_flags["pools"] = [PoolScaling(**pool_flags).model_dump()]
        except ValidationError as exc:
            raise click.UsageError(f"bad pool settings: {exc.errors()[0]['loc'][0]}: {exc.errors()[0]['msg']}") from exc
    settings, _ = AutoscalerSettings.resolve(settings_flags, config_file=config_file)
    if not settings.pools:
        raise click.UsageError("name a pool (--pool NAME ...) or give a --config file with a `pools` list")
    run_autoscalers(settings)


def run_autoscalers(settings: AutoscalerSettings) -> None:
    from runyard.autoscaler.loop import Autoscaler
    from runyard.autoscaler.metrics import serve
    from runyard.autoscaler.providers import LocalProcesses, Provider
    from runyard.aws import AutoScalingGroup
    from runyard.client import Client
    from runyard.core.scaling import Limits

    scalers: list[Autoscaler] = []
    locals_: list[LocalProcesses] = []
    for spec in settings.pools:
        provider: Provider
        if spec.provider == "aws":
            if not spec.asg_name:
                raise click.UsageError(f"pool {spec.pool}: the aws provider needs --asg-name")
            provider = AutoScalingGroup(spec.asg_name, spec.region or None, spec.aws_endpoint_url or None)
        else:
            launcher_env = dict(os.environ)
            if spec.launcher_idle_timeout:
                launcher_env["RUNYARD_DISCONNECT_AFTER_IDLE_TIMEOUT"] = str(spec.launcher_idle_timeout)
            local = LocalProcesses(launcher_env, settings.work_dir / spec.pool, spec.min, spec.max)
            locals_.append(local)
            provider = local
        limits = Limits(spec.min, spec.max, spec.scale_in_cooldown, spec.idle_before_scale_in)
        client = Client([settings.endpoint], settings.api_key.get_secret_value())
        scalers.append(Autoscaler(client, spec.pool, provider, limits, spec.boot_grace, settings.demand_wait))
    if settings.metrics_port:
        serve(scalers, settings.metrics_port)
    threads = [threading.Thread(target=s.run, name=f"scale-{s.pool}", daemon=True) for s in scalers]
    done = threading.Event()

    def on_signal(signum: int, _frame: Any) -> None:
        done.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    for thread in threads:
        thread.start()
    done.wait()
    for scaler in scalers:
        scaler.stop()
    for local in locals_:
        local.stop_all()
    click.echo("autoscaler stopped", err=True)


@autoscaler.command("terminate-self")
@click.option("--region", default=None)
def terminate_self(region: str | None) -> None:
    """For a launcher's shutdown hook on AWS: end this instance and lower its
    group's desired capacity by one. Reads RUNYARD_METADATA_instance_id."""
    from runyard.aws import terminate_instance

    # Metadata keys keep their case: the worker reports the tag as "instance_id".
    instance_id = os.environ.get("RUNYARD_METADATA_instance_id", "")  # noqa: SIM112
    if not instance_id:
        raise click.ClickException("RUNYARD_METADATA_instance_id is not set")
    terminate_instance(instance_id, region=region)
    click.echo(f"terminated {instance_id} with a capacity decrement")

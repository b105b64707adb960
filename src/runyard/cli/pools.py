"""`runyard pool ...` and `runyard worker ...`: pools, their tokens and workers."""

from __future__ import annotations

from pathlib import Path

import click

from runyard.cli.output import OUTPUT_OPTION, emit_json, fields, table, with_client
from runyard.client import Client
from runyard.core.models import WorkerStatus
from runyard.wire import PoolUpdate


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
          [(p.name, p.workers.get(WorkerStatus.IDLE, 0), p.workers.get(WorkerStatus.BUSY, 0),
            p.workers.get(WorkerStatus.DRAINED, 0), p.queue_length,
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
    body = PoolUpdate(description=description, drift_detection_limit=drift_detection_limit,
                      labels=list(labels) if labels or clear_labels else None)
    updated = client.update_pool(name, body)
    if output == "json":
        emit_json(updated)
    else:
        click.echo(f"updated pool {updated.name}")


@pool.command("token")
@click.argument("name")
@with_client
def pool_token(client: Client, name: str) -> None:
    """Print a fresh token for the pool: its current certificate and the
    server's endpoint list today (after adding servers, no reset needed)."""
    click.echo(client.pool_token(name))


@pool.command("deploy-template")
@click.argument("provider", type=click.Choice(["aws"]))
@click.argument("name")
@with_client
def pool_deploy_template(client: Client, provider: str, name: str) -> None:
    """Print a CloudFormation template for the pool's workers on an EC2 Auto
    Scaling group, with the pool's values filled in. Store the token and key
    where it reads them, then deploy it:

    \b
      runyard pool token NAME | aws ssm put-parameter --type SecureString \\
          --name /runyard/NAME/token --value file:///dev/stdin
      aws ssm put-parameter --type SecureString --name /runyard/NAME/private-key \\
          --value "$(base64 -w0 pool.key)"
      runyard pool deploy-template aws NAME > pool.yaml
      aws cloudformation deploy --template-file pool.yaml --stack-name runyard-NAME \\
          --capabilities CAPABILITY_NAMED_IAM --parameter-overrides ImageId=ami-... \\
          SubnetIds=subnet-... SecurityGroupIds=sg-...
    """
    from runyard.deploy import aws_pool_template

    found = client.pool(name)
    token = client.pool_token(name)
    from runyard.crypto import PoolToken

    endpoints = ",".join(PoolToken.decode(token).endpoints)
    click.echo(aws_pool_template(found.name, endpoints), nl=False)


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

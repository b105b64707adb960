"""`runyard state ...`: a stack's Terraform state history."""

from __future__ import annotations

import click

from runyard.cli.output import OUTPUT_OPTION, emit_json, table, with_client
from runyard.client import Client


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

"""What every API command shares: the client option, and printing results
(aligned tables for people, JSON for scripts)."""

from __future__ import annotations

import functools
import json
from collections.abc import Callable, Sequence
from datetime import datetime
from typing import Any

import click
from pydantic import BaseModel

from runyard.client import Client

OUTPUT_OPTION = click.option(
    "--output", "-o", type=click.Choice(["table", "json"]), default="table", show_default=True,
    help="table for people, json for scripts",
)


def emit_json(data: BaseModel | Sequence[BaseModel] | dict[str, Any]) -> None:
    if isinstance(data, BaseModel):
        click.echo(data.model_dump_json(indent=2))
    elif isinstance(data, dict):
        click.echo(json.dumps(data, indent=2, default=str))
    else:
        click.echo(json.dumps([d.model_dump(mode="json") for d in data], indent=2))


def table(headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> None:
    cells = [[_cell(v) for v in row] for row in rows]
    widths = [max(len(h), *(len(r[i]) for r in cells)) if cells else len(h) for i, h in enumerate(headers)]
    click.echo("  ".join(h.upper().ljust(w) for h, w in zip(headers, widths, strict=False)).rstrip())
    for row in cells:
        click.echo("  ".join(c.ljust(w) for c, w in zip(row, widths, strict=False)).rstrip())


def fields(pairs: Sequence[tuple[str, Any]]) -> None:
    width = max(len(k) for k, _ in pairs)
    for key, value in pairs:
        click.echo(f"{key + ':':<{width + 1}} {_cell(value)}")


def _cell(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, datetime):
        return value.strftime("%Y-%m-%d %H:%M:%S")
    if isinstance(value, (list, tuple)):
        return ",".join(str(v) for v in value) or "-"
    if isinstance(value, dict):
        return ",".join(f"{k}={v}" for k, v in value.items()) or "-"
    return str(value)


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

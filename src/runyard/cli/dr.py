"""`runyard dr ...`: disaster recovery. See who serves, move the primary role
(planned failover and failback), replicate the object store to the standby's
bucket and copy what replication has not."""

from __future__ import annotations

from typing import TYPE_CHECKING

import click

from runyard.cli.output import OUTPUT_OPTION, emit_json, table
from runyard.client import Client
from runyard.core.errors import InvalidInput, Unavailable
from runyard.server.blobs.url import parse_s3_url

if TYPE_CHECKING:
    from runyard.aws import S3BlobStore

ENDPOINTS = click.option("--endpoint", "endpoints", multiple=True, envvar="RUNYARD_ENDPOINTS",
                         help="a server to ask (repeatable) [env RUNYARD_ENDPOINTS, comma-separated]")
API_KEY = click.option("--api-key", envvar="RUNYARD_API_KEY", default="", help="API key [env RUNYARD_API_KEY]")


def _endpoints(given: tuple[str, ...]) -> list[str]:
    found = [e.strip() for item in given for e in item.split(",") if e.strip()]
    if not found:
        raise InvalidInput("name the servers: --endpoint URL (repeatable) or RUNYARD_ENDPOINTS")
    return found


def _store(url: str, endpoint_url: str | None = None) -> S3BlobStore:
    """The S3 store an ``s3://BUCKET/PREFIX[?endpoint_url=...]`` URL names."""
    from runyard.aws import S3BlobStore

    where = parse_s3_url(url)
    return S3BlobStore(where.bucket, where.prefix, where.region, where.endpoint_url or endpoint_url)


@click.group()
def dr() -> None:
    """Disaster recovery: roles, failover and failback, bucket replication."""


@dr.command("status")
@ENDPOINTS
@API_KEY
@click.option("--bucket", default="", help="the primary's bucket, s3://BUCKET/PREFIX: show the replica's lag")
@click.option("--replica", default="", help="the standby's bucket, s3://BUCKET/PREFIX")
@OUTPUT_OPTION
def dr_status(endpoints: tuple[str, ...], api_key: str, bucket: str, replica: str, output: str) -> None:
    """Each server's site and role, the lease holder, and (with --bucket and
    --replica) how many objects the replica still lacks."""
    rows, docs = [], []
    for endpoint in _endpoints(endpoints):
        with Client([endpoint], api_key) as client:
            try:
                status = client.cluster()
            except Unavailable as exc:  # a server that does not answer is part of the status
                rows.append((endpoint, "-", "unreachable", "-", "-", str(exc)[:60]))
                docs.append({"endpoint": endpoint, "role": "unreachable", "error": str(exc)})
                continue
        lease = status.lease
        holder = f"{lease.holder} (site {lease.site}, token {lease.token})" if lease else "nobody"
        rows.append((endpoint, status.site, status.role, "yes" if status.leading else "no", holder,
                     lease.expires_at.strftime("%H:%M:%S") if lease else "-"))
        docs.append({"endpoint": endpoint, **status.model_dump(mode="json")})
    lag = None
    if bucket and replica:
        from runyard.aws import missing_objects

        lag = len(missing_objects(_store(bucket), _store(replica)))
    if output == "json":
        emit_json({"servers": docs, "replica_missing_objects": lag})
        return
    table(["endpoint", "site", "role", "leads", "lease holder", "lease until"], rows)
    if lag is not None:
        click.echo(f"replica lag: {lag} object(s) of {bucket} not yet in {replica}"
                   + ("" if not lag else " (runyard dr backfill copies them)"))


def _role_change(endpoint: str, api_key: str, promote: bool, output: str) -> None:
    with Client([endpoint], api_key) as client:
        status = client.promote() if promote else client.demote()
    if output == "json":
        emit_json(status)
    else:
        click.echo(f"{endpoint}: site {status.site}, role {status.role}")


@dr.command("promote")
@click.option("--endpoint", required=True, envvar="RUNYARD_ENDPOINT", help="the server to make primary")
@API_KEY
@OUTPUT_OPTION
def dr_promote(endpoint: str, api_key: str, output: str) -> None:
    """Make this server's site the primary now (planned failover, or failback);
    the other site's servers stand by as soon as they see it. Safe twice."""
    _role_change(endpoint, api_key, True, output)


@dr.command("demote")
@click.option("--endpoint", required=True, envvar="RUNYARD_ENDPOINT", help="the server to make stand by")
@API_KEY
@OUTPUT_OPTION
def dr_demote(endpoint: str, api_key: str, output: str) -> None:
    """Make this server stand by now, giving its lease up. Safe twice."""
    _role_change(endpoint, api_key, False, output)


@dr.group("replication")
def replication() -> None:
    """S3 bucket replication from the primary's bucket to the standby's."""


@replication.command("apply")
@click.option("--source", required=True, help="the primary's bucket, s3://BUCKET[?endpoint_url=...]")
@click.option("--destination", required=True, help="the standby's bucket, s3://BUCKET")
@click.option("--role-name", default="runyard-replication", show_default=True, help="IAM role S3 copies as")
def replication_apply(source: str, destination: str, role_name: str) -> None:
    """Turn versioning on for both buckets, make the IAM role, and write the
    replication rule. Applying it again changes nothing."""
    from runyard.aws import apply_replication

    src, dst = parse_s3_url(source), parse_s3_url(destination)
    arn = apply_replication(src.bucket, dst.bucket, role_name, src.region, src.endpoint_url)
    click.echo(f"replicating s3://{src.bucket} to s3://{dst.bucket} as {arn}")


@dr.command("backfill")
@click.option("--source", required=True, help="the primary's store, s3://BUCKET/PREFIX[?endpoint_url=...]")
@click.option("--destination", required=True, help="the standby's store, s3://BUCKET/PREFIX")
def backfill(source: str, destination: str) -> None:
    """Copy the objects replication has not (those from before it was on).
    Resumable: run it again after an interruption and it copies what is left."""
    from runyard.aws import missing_objects

    source_store = _store(source)
    destination_store = _store(destination, parse_s3_url(source).endpoint_url)
    missing = missing_objects(source_store, destination_store)
    if not missing:
        click.echo("nothing to copy: the replica has every object")
        return
    total = len(missing)
    for done, key in enumerate(missing, start=1):
        destination_store.put(key, source_store.get(key))
        bar = "#" * (30 * done // total)
        click.echo(f"\r[{bar:<30}] {done}/{total} {key[-40:]:<40}", nl=False, err=True)
    click.echo("", err=True)
    click.echo(f"copied {len(missing)} object(s) from {source} to {destination}")



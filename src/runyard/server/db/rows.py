"""Rows to domain records: the one place that knows both shapes."""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from typing import Any

from runyard.core.models import (
    ApiKey,
    DriftSchedule,
    EnvVar,
    Lease,
    Output,
    Pool,
    Run,
    Source,
    SourceKind,
    Stack,
    StateLock,
    StateVersion,
    Tool,
    Transition,
    Worker,
)
from runyard.core.states import RunKind, RunState


def ts(value: float) -> dt.datetime:
    return dt.datetime.fromtimestamp(value, dt.UTC)


def pool(row: Any) -> Pool:
    return Pool(
        id=row.id,
        name=row.name,
        description=row.description,
        labels=tuple(row.labels),
        certificate_pem=row.certificate_pem,
        certificate_serial=row.certificate_serial,
        drift_detection_limit=row.drift_detection_limit,
        created_at=ts(row.created_at),
    )


def worker(row: Any) -> Worker:
    return Worker(
        id=row.id,
        pool_id=row.pool_id,
        metadata=dict(row.metadata),
        version=row.version,
        drained=row.drained,
        current_run_id=row.current_run_id,
        certificate_serial=row.certificate_serial,
        created_at=ts(row.created_at),
        last_seen_at=ts(row.last_seen_at),
        exit_requested=row.exit_requested,
    )


def stack(row: Any) -> Stack:
    return Stack(
        id=row.id,
        name=row.name,
        pool_id=row.pool_id,
        source=Source(**{**row.source, "kind": SourceKind(row.source["kind"])}),
        project_root=row.project_root,
        tool=Tool(row.tool),
        runner_image=row.runner_image,
        commands=dict(row.commands),
        env=tuple(EnvVar(**e) for e in row.env),
        labels=tuple(row.labels),
        autodeploy=row.autodeploy,
        created_at=ts(row.created_at),
        hooks={k: tuple(v) for k, v in (row.hooks or {}).items()},
        drift_schedule=row.drift_schedule or "",
    )


def run(row: Any, transitions: Sequence[Transition] = ()) -> Run:
    return Run(
        id=row.id,
        stack_id=row.stack_id,
        pool_id=row.pool_id,
        kind=RunKind(row.kind),
        state=RunState(row.state),
        command=row.command,
        worker_id=row.worker_id,
        lease=row.lease,
        stop_requested=row.stop_requested,
        reason=row.reason,
        created_at=ts(row.created_at),
        updated_at=ts(row.updated_at),
        transitions=tuple(transitions),
        changes=row.changes,
        has_workspace=bool(row.has_workspace),
        log_seq=int(row.log_seq or 0),
    )


def lease(row: Any) -> Lease:
    return Lease(name=row.name, holder=row.holder, token=int(row.token), expires_at=float(row.expires_at),
                 address=row.address or "", site=row.site or "")


def api_key(row: Any) -> ApiKey:
    return ApiKey(id=row.id, name=row.name, admin=bool(row.admin))


def state_version(row: Any) -> StateVersion:
    return StateVersion(stack_id=row.stack_id, version=int(row.version), serial=int(row.serial),
                        lineage=row.lineage, run_id=row.run_id, digest=row.digest, created_at=row.created_at)


def state_lock(row: Any) -> StateLock:
    return StateLock(lock_id=row.lock_id, info=dict(row.info), created_at=row.created_at)


def output(row: Any) -> Output:
    return Output(name=row.name, value=row.value, sensitive=bool(row.sensitive), sealed=row.sealed)


def drift_schedule(row: Any) -> DriftSchedule:
    return DriftSchedule(stack_id=row.id, pool_id=row.pool_id, schedule=row.drift_schedule,
                         checked_at=row.drift_checked_at or row.created_at)

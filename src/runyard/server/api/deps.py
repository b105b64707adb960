"""Dependencies shared by routes: the service container and authentication."""

from __future__ import annotations

import base64
import binascii
from dataclasses import dataclass
from typing import Annotated

from fastapi import Depends, Request

from runyard.core.models import Worker
from runyard.server.metrics import ServerMetrics
from runyard.server.services import Context
from runyard.server.services.auth import AuthService
from runyard.server.services.drift import DriftScheduler
from runyard.server.services.logs import LogService
from runyard.server.services.pools import PoolService
from runyard.server.services.runs import RunService
from runyard.server.services.stacks import StackService
from runyard.server.services.state import StateService
from runyard.server.services.workers import WorkerService


@dataclass
class Services:
    ctx: Context
    auth: AuthService
    pools: PoolService
    stacks: StackService
    runs: RunService
    workers: WorkerService
    logs: LogService
    state: StateService
    drift: DriftScheduler
    metrics: ServerMetrics
    long_poll: float

    @classmethod
    def build(cls, ctx: Context, long_poll: float) -> Services:
        logs = LogService(ctx)
        pools = PoolService(ctx)
        metrics = ServerMetrics(ctx)
        runs = RunService(ctx, logs, metrics)
        return cls(
            ctx=ctx,
            auth=AuthService(ctx),
            pools=pools,
            stacks=StackService(ctx),
            runs=runs,
            workers=WorkerService(ctx, pools, runs),
            logs=logs,
            state=StateService(ctx),
            drift=DriftScheduler(ctx, runs),
            metrics=metrics,
            long_poll=long_poll,
        )


def services(request: Request) -> Services:
    svc: Services = request.app.state.services
    return svc


def _bearer(request: Request) -> str | None:
    header = request.headers.get("authorization", "")
    if header.lower().startswith("bearer "):
        return header[7:].strip() or None
    return None


def credential(request: Request) -> str | None:
    """A bearer token, or the password of HTTP basic auth (what terraform's
    http backend sends)."""
    header = request.headers.get("authorization", "")
    if header.lower().startswith("basic "):
        try:
            decoded = base64.b64decode(header[6:].strip()).decode()
        except (ValueError, binascii.Error):
            return None
        return decoded.partition(":")[2] or None
    return _bearer(request)


def require_user(request: Request, svc: Annotated[Services, Depends(services)]) -> str:
    return svc.auth.check_api_key(_bearer(request))


def require_worker(request: Request, svc: Annotated[Services, Depends(services)]) -> Worker:
    return svc.auth.check_worker_token(_bearer(request))


Svc = Annotated[Services, Depends(services)]
User = Annotated[str, Depends(require_user)]
CurrentWorker = Annotated[Worker, Depends(require_worker)]

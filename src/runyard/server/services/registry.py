"""Every service of a server, wired once over one :class:`Context`."""

from __future__ import annotations

from dataclasses import dataclass

from runyard.server.metrics import ServerMetrics
from runyard.server.services import Context
from runyard.server.services.auth import AuthService
from runyard.server.services.dispatch import DispatchService
from runyard.server.services.drift import DriftDetection
from runyard.server.services.leases import LeaseService
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
    dispatch: DispatchService
    logs: LogService
    state: StateService
    drift: DriftDetection
    metrics: ServerMetrics
    leases: LeaseService

    @classmethod
    def build(cls, ctx: Context, identity: str = "server", lease_ttl: float = 10.0, site: str = "primary",
              allow_local_git: bool = False) -> Services:
        logs = LogService(ctx)
        pools = PoolService(ctx)
        metrics = ServerMetrics(ctx)
        runs = RunService(ctx, logs, metrics)
        workers = WorkerService(ctx, pools, runs)
        return cls(
            ctx=ctx,
            auth=AuthService(ctx),
            pools=pools,
            stacks=StackService(ctx, allow_local_git=allow_local_git),
            runs=runs,
            workers=workers,
            dispatch=DispatchService(ctx, runs, workers),
            logs=logs,
            state=StateService(ctx),
            drift=DriftDetection(ctx, runs),
            metrics=metrics,
            leases=LeaseService(ctx, identity, lease_ttl, ctx.endpoints[0] if ctx.endpoints else "", site),
        )

    def close(self) -> None:
        """Stop listening to other servers and close the database pool."""
        self.ctx.notifier.close()
        self.ctx.engine.dispose()

    @property
    def closing(self) -> bool:
        """The server is shutting down: long polls and streams end."""
        return self.ctx.notifier.closed

"""The composition root of the server: ``create_app(settings)`` wires it all."""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import logging
import os
from collections.abc import AsyncIterator
from pathlib import Path

from fastapi import FastAPI, Request
from fastapi.responses import RedirectResponse, Response

from runyard import __version__
from runyard.config import ServerSettings
from runyard.core.errors import Unauthorized
from runyard.server import errors
from runyard.server.api import pools, runs, stacks, state, workers
from runyard.server.blobs import BlobStore, LocalBlobStore
from runyard.server.bodylimit import BodyLimit
from runyard.server.db.dialects import make_engine
from runyard.server.db.migrate import upgrade
from runyard.server.loops import Loop
from runyard.server.services import Context
from runyard.server.services.registry import Services
from runyard.server.web import pages

log = logging.getLogger("runyard.server")


def build_services(settings: ServerSettings, blobs: BlobStore | None = None) -> Services:
    """Open the database (migrating it) and the object store; wire the services."""
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    engine = make_engine(settings.db_url())
    upgrade(engine)
    ctx = Context(
        engine=engine,
        blobs=blobs or LocalBlobStore(settings.data_dir / "blobs"),
        endpoints=settings.endpoints(),
        long_poll=settings.long_poll,
    )
    return Services.build(ctx)


def bootstrap_admin_key(svc: Services, settings: ServerSettings) -> str | None:
    """Ensure an admin key; a new one is written to DATA_DIR/admin-api-key (0600)."""
    key = svc.auth.bootstrap_admin_key(settings.admin_api_key.get_secret_value() or None)
    if key is not None:
        path: Path = settings.data_dir / "admin-api-key"
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as fh:
            fh.write(key + "\n")
    return key


def sweep(services: Services, settings: ServerSettings) -> None:
    """Housekeeping: uploads no stack names, logs a crash left unsealed."""
    services.stacks.sweep_uploads(settings.upload_grace)
    services.logs.seal_pending()


def create_app(settings: ServerSettings, svc: Services | None = None) -> FastAPI:
    services = svc or build_services(settings)

    started_at = services.ctx.clock()

    def reap() -> None:
        for worker_id in services.workers.reap(settings.worker_lost_after, started_at):
            log.warning("worker %s lost: no heartbeat for %.0fs", worker_id, settings.worker_lost_after)

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        loops = [
            Loop("reaper", reap, settings.reaper_interval),
            Loop("drift scheduler", services.drift.tick, settings.drift_interval),
            Loop("sweeper", lambda: sweep(services, settings), settings.sweep_interval),
        ]
        tasks = [asyncio.create_task(loop.run()) for loop in loops]
        try:
            yield
        finally:
            for loop in loops:
                loop.stop()
            await asyncio.gather(*tasks)
            services.ctx.engine.dispose()

    app = FastAPI(
        title="runyard",
        version=__version__,
        description="Control plane for self-hosted worker pools.",
        lifespan=lifespan,
    )
    app.state.services = services

    @app.exception_handler(pages.NeedLogin)
    async def _login(_: Request, exc: pages.NeedLogin) -> RedirectResponse:
        return RedirectResponse("/ui/login", status_code=303)

    errors.install(app)
    app.add_middleware(BodyLimit)

    metrics_token = settings.metrics_token.get_secret_value()

    @app.get("/metrics", tags=["meta"], include_in_schema=False)
    def metrics(request: Request) -> Response:
        if metrics_token:
            given = request.headers.get("authorization", "").removeprefix("Bearer ").strip()
            if not hmac.compare_digest(given.encode(), metrics_token.encode()):
                raise Unauthorized("/metrics needs `Authorization: Bearer` with the server's RUNYARD_METRICS_TOKEN")
        return Response(services.metrics.render(), media_type="text/plain; version=0.0.4")

    @app.get("/", include_in_schema=False)
    def root() -> RedirectResponse:
        return RedirectResponse("/ui/pools", status_code=303)

    @app.get("/healthz", tags=["meta"])
    def healthz() -> dict[str, str]:
        return {"status": "ok", "version": __version__}

    app.include_router(pages.router)
    app.include_router(pools.router)
    app.include_router(stacks.router)
    app.include_router(runs.router)
    app.include_router(state.router)
    app.include_router(workers.router)
    return app

"""The composition root of the server: ``create_app(settings)`` wires it all."""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import hmac
import logging
import os
import socket
from collections.abc import AsyncIterator
from pathlib import Path
from typing import IO

from fastapi import FastAPI, Request
from fastapi.responses import RedirectResponse, Response
from sqlalchemy import Engine, make_url

from runyard import __version__
from runyard.config import ServerSettings
from runyard.core.errors import InvalidInput, Unauthorized
from runyard.crypto import SecretBox, new_secret
from runyard.server import errors
from runyard.server.api import cluster, pools, runs, stacks, state, workers
from runyard.server.api.lane import WorkerLane
from runyard.server.blobs import BlobStore, FallbackBlobStore
from runyard.server.blobs.url import open_blob_store
from runyard.server.bodylimit import BodyLimit
from runyard.server.db.dialects import make_engine
from runyard.server.db.migrate import upgrade
from runyard.server.db.pgnotify import PgNotifyBus
from runyard.server.db.repository import Repository
from runyard.server.leader import Leader
from runyard.server.notifier import Notifier
from runyard.server.services import Context
from runyard.server.services.registry import Services
from runyard.server.standby import StandbyGate
from runyard.server.web import pages

log = logging.getLogger("runyard.server")


def build_services(settings: ServerSettings, blobs: BlobStore | None = None) -> Services:
    """Open the database (migrating it) and the object store; wire the services."""
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    engine = make_engine(settings.db_url())
    upgrade(engine)
    notifier = Notifier()
    if engine.dialect.name == "postgresql":
        bus = PgNotifyBus(settings.db_url(), notifier.wake, notifier.wake_all)
        bus.start()
        notifier.bus = bus
    ctx = Context(
        engine=engine,
        notifier=notifier,
        secrets=secret_box(settings, engine),
        blobs=blobs or site_blobs(settings),
        endpoints=settings.endpoints(),
        long_poll=settings.long_poll,
        worker_lost_after=settings.worker_lost_after,
    )
    identity = f"{socket.gethostname()}:{settings.port}:{os.getpid()}:{new_secret('')[:8]}"
    return Services.build(ctx, identity, settings.scheduler_lease_ttl, settings.site_name(),
                          settings.allow_local_git_sources)


def hold_sqlite_file(settings: ServerSettings) -> IO[str] | None:
    """On SQLite, make this process the one server of the database file, or
    refuse to start: a second server would contend with it for the write
    lock, and a server runs the workers' short calls on its event loop on
    the promise that no other process writes (``Context.short_call``). The
    lock (``<database>.server``) is held while the returned file stays open,
    and goes with the process however it ends."""
    url = make_url(settings.db_url())
    if url.get_backend_name() != "sqlite" or url.database in (None, "", ":memory:"):
        return None
    path = Path(f"{url.database}.server")
    path.parent.mkdir(parents=True, exist_ok=True)
    held = open(path, "a+")  # noqa: SIM115 - held open for the life of the process
    try:
        fcntl.flock(held, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        held.seek(0)
        holder = held.read().strip() or "a process"
        held.close()
        raise InvalidInput(
            f"another runyard server ({holder}) uses the SQLite database {url.database}: one server per "
            "SQLite file; several servers share a PostgreSQL database (docs/several-servers.md)"
        ) from None
    held.seek(0)
    held.truncate()
    held.write(f"pid {os.getpid()} on {socket.gethostname()}\n")
    held.flush()
    return held


def site_blobs(settings: ServerSettings) -> BlobStore:
    """This site's object store; with a peer's, reading from it what has not
    been replicated here yet."""
    own = open_blob_store(settings.blob_url, settings.data_dir / "blobs")
    if not settings.peer_blob_url:
        return own
    return FallbackBlobStore(own, open_blob_store(settings.peer_blob_url, settings.data_dir / "peer-blobs",
                                                  check=False))


def secret_box(settings: ServerSettings, engine: Engine) -> SecretBox:
    """The key the server's own secrets are encrypted with at rest: from
    RUNYARD_SECRET_KEY, from AWS KMS (kms:KEY_ID), or a key file made in the
    data directory on first start (one server only)."""
    given = settings.secret_key.get_secret_value()
    if given.startswith("kms:"):
        from runyard.aws import kms_data_key

        with engine.begin() as conn:
            stored = Repository(conn).get_setting("secret_data_key")
        key, wrapped = kms_data_key(given[4:], stored)
        if stored is None:
            with engine.begin() as conn:
                winner = Repository(conn).put_setting_if_absent("secret_data_key", wrapped)
            if winner != wrapped:  # another server made it first: use theirs
                key, _ = kms_data_key(given[4:], winner)
        return SecretBox(key)
    if given:
        return SecretBox.from_passphrase(given)
    path = settings.data_dir / "secret-key"
    if not path.exists():
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as fh:
            fh.write(os.urandom(32).hex() + "\n")
    return SecretBox(bytes.fromhex(path.read_text().strip()))


def bootstrap_admin_key(svc: Services, settings: ServerSettings) -> str | None:
    """Ensure an admin key; a new one is written to DATA_DIR/admin-api-key (0600)."""
    key = svc.auth.bootstrap_admin_key(settings.admin_api_key.get_secret_value() or None)
    if key is not None:
        path: Path = settings.data_dir / "admin-api-key"
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as fh:
            fh.write(key + "\n")
    return key


def create_app(settings: ServerSettings, svc: Services | None = None) -> FastAPI:
    services = svc or build_services(settings)

    scheduler = Leader(services, services.leases, settings)
    services.dispatch.gate = scheduler.check_serving

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        loops = scheduler.loops()
        tasks = [asyncio.create_task(loop.run()) for loop in loops]
        try:
            yield
        finally:
            for loop in loops:
                loop.stop()
            await asyncio.gather(*tasks)
            services.workers.flush_seen()
            services.runs.after_ends()
            scheduler.release()  # another server takes over at once, not after the lease expires
            services.ctx.notifier.close()
            services.ctx.engine.dispose()

    app = FastAPI(
        title="runyard",
        version=__version__,
        description="Control plane for self-hosted worker pools.",
        lifespan=lifespan,
    )
    app.state.services = services
    app.state.scheduler = scheduler

    @app.exception_handler(pages.NeedLogin)
    async def _login(_: Request, exc: pages.NeedLogin) -> RedirectResponse:
        return RedirectResponse("/ui/login", status_code=303)

    errors.install(app)
    app.add_middleware(WorkerLane)  # innermost: inside the body limits and the standby gate
    app.add_middleware(BodyLimit)
    app.add_middleware(StandbyGate, scheduler=scheduler, retry_after=int(settings.scheduler_lease_ttl) or 1)

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
        """Alive: 200 on a standby too (its role says so)."""
        return {"status": "ok", "version": __version__, "role": scheduler.role, "site": services.leases.site,
                "primary": scheduler.primary_address()}

    @app.get("/readyz", tags=["meta"])
    def readyz() -> Response:
        """For load balancers: 200 where the API is served; 503 on a standby,
        or while the database is full or unreachable (saying which)."""
        trouble = services.ctx.trouble.now(services.ctx.clock())
        if trouble is not None:
            return Response(f"{scheduler.role}: {trouble.message}", status_code=503, media_type="text/plain")
        status = 200 if scheduler.serving else 503
        return Response(scheduler.role, status_code=status, media_type="text/plain")

    # Routes are matched in order: launchers' (a thousand workers' heartbeats
    # and polls) first.
    app.include_router(workers.router)
    app.include_router(runs.router)
    app.include_router(state.router)
    app.include_router(stacks.router)
    app.include_router(pools.router)
    app.include_router(cluster.router)
    app.include_router(pages.router)
    return app

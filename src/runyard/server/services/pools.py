"""Pools and the server's CA."""

from __future__ import annotations

import builtins
import datetime as dt
import os
import re

from runyard.core.errors import AlreadyExists, InvalidInput, NotFound
from runyard.core.ids import new_ulid
from runyard.core.models import Pool, PoolStats, WorkerStatus
from runyard.core.states import ON_WORKER, SCHEDULABLE
from runyard.crypto import (
    CertificateAuthority,
    PoolToken,
    cert_to_pem,
    load_csr,
    serial_of,
)
from runyard.server.db.repository import Repository
from runyard.server.notifier import fleet_topic, pool_topic
from runyard.server.services import Context

NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,99}$")


def check_name(kind: str, name: str) -> None:
    if not NAME_RE.match(name):
        raise InvalidInput(
            f"{kind} name {name!r} is not valid: use 1-100 letters, digits, '.', '_' or '-', "
            "starting with a letter or digit"
        )


class PoolService:
    def __init__(self, ctx: Context) -> None:
        self.ctx = ctx
        self._ca: CertificateAuthority | None = None
        self._hmac: bytes | None = None

    def ca(self) -> CertificateAuthority:
        """The server's CA, made at first use and shared by every server process."""
        if self._ca is None:
            secrets = self.ctx.secrets
            with self.ctx.tx() as repo:
                key_pem = repo.get_setting("ca_key")
                cert_pem = repo.get_setting("ca_cert")
                if key_pem is None or cert_pem is None:
                    fresh = CertificateAuthority.create()
                    key_pem = repo.put_setting_if_absent("ca_key", secrets.seal("ca_key", fresh.key_pem()))
                    cert_pem = repo.put_setting_if_absent("ca_cert", fresh.cert_pem())
            self._ca = CertificateAuthority.from_pem(secrets.open("ca_key", key_pem), cert_pem)
        return self._ca

    def preload_ca(self, ca: CertificateAuthority) -> None:
        """Use ``ca`` without reading (and parsing) it from the database: it
        must be the one stored there. Loading an RSA key costs tens of ms."""
        self._ca = ca

    def challenge_secret(self) -> bytes:
        if self._hmac is None:
            self._hmac = bytes.fromhex(self.ctx.secret_setting("challenge_secret", lambda: os.urandom(32).hex()))
        return self._hmac

    def create(
        self,
        name: str,
        csr_pem: str,
        description: str = "",
        labels: tuple[str, ...] = (),
        drift_detection_limit: int | None = None,
    ) -> tuple[Pool, str]:
        """Make a pool; returns it and its token."""
        check_name("pool", name)
        csr = load_csr(csr_pem)
        pool_id = new_ulid()
        cert = self.ca().sign_csr(csr, pool_id)
        pool = Pool(
            id=pool_id,
            name=name,
            description=description,
            labels=tuple(labels),
            certificate_pem=cert_to_pem(cert),
            certificate_serial=serial_of(cert),
            drift_detection_limit=drift_detection_limit,
            created_at=dt.datetime.fromtimestamp(self.ctx.clock(), dt.UTC),
        )
        with self.ctx.tx() as repo:
            if repo.pool(name) is not None:
                raise AlreadyExists(f"a pool named {name!r} exists already")
            repo.add_pool(pool)
        return pool, self.token(pool)

    def token(self, pool: Pool) -> str:
        return PoolToken(self.ctx.endpoints, pool.id, pool.certificate_pem).encode()

    def update(
        self,
        ref: str,
        description: str | None = None,
        labels: tuple[str, ...] | None = None,
        drift_detection_limit: int | None = None,
    ) -> Pool:
        """Change a pool's settings; None leaves a setting as it is (a limit of 0 disables drift runs)."""
        pool = self.get(ref)
        values: dict[str, object] = {}
        if description is not None:
            values["description"] = description
        if labels is not None:
            values["labels"] = list(labels)
        if drift_detection_limit is not None:
            if drift_detection_limit < 0:
                raise InvalidInput("the drift-detection limit must be 0 (disabled) or more")
            values["drift_detection_limit"] = drift_detection_limit or None
        if values:
            with self.ctx.tx() as repo:
                repo.update_pool(pool.id, **values)
            self.ctx.notifier.notify(pool_topic(pool.id))
        return self.get(pool.id)

    def cycle(self, ref: str) -> int:
        """Tell every worker of the pool to exit: idle ones at once (their held
        poll answers), busy ones after their run (their next heartbeat says so)."""
        pool = self.get(ref)
        with self.ctx.tx() as repo:
            count = repo.request_pool_exit(pool.id)
        self.ctx.notifier.notify(pool_topic(pool.id), fleet_topic(pool.id))
        return count

    def new_certificate(self, pool: Pool, csr_pem: str) -> tuple[str, str]:
        """Sign a fresh CSR for ``pool`` and store it: the old certificate stops working."""
        cert = self.ca().sign_csr(load_csr(csr_pem), pool.id)
        pem, serial = cert_to_pem(cert), serial_of(cert)
        with self.ctx.tx() as repo:
            repo.update_pool(pool.id, certificate_pem=pem, certificate_serial=serial)
        return pem, serial

    def get(self, ref: str) -> Pool:
        with self.ctx.read() as repo:
            pool = repo.pool(ref)
        if pool is None:
            raise NotFound(f"no pool {ref!r}: `runyard pool list` shows the pools")
        return pool

    def list(self) -> list[Pool]:
        with self.ctx.read() as repo:
            return repo.pools()

    def stats(self, pool: Pool) -> PoolStats:
        """Worker counts by status and queue length: what operators look at first."""
        with self.ctx.read() as repo:
            return pool_stats(repo, pool.id)

    def summaries(self) -> builtins.list[tuple[Pool, PoolStats]]:
        """Every pool with its stats, read in one transaction."""
        with self.ctx.read() as repo:
            return [(pool, pool_stats(repo, pool.id)) for pool in repo.pools()]


def pool_stats(repo: Repository, pool_id: str) -> PoolStats:
    counts = dict.fromkeys(WorkerStatus, 0)
    for worker in repo.workers(pool_id):
        counts[worker.status] += 1
    return PoolStats(counts, repo.count_runs(pool_id, SCHEDULABLE), repo.count_runs(pool_id, ON_WORKER))

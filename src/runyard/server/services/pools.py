"""Pools and the server's CA."""

from __future__ import annotations

import datetime as dt
import os
import re

from runyard.core.errors import AlreadyExists, InvalidInput, NotFound
from runyard.core.ids import new_ulid
from runyard.core.models import Pool
from runyard.crypto import (
    CertificateAuthority,
    PoolToken,
    cert_to_pem,
    load_csr,
    serial_of,
)
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
            with self.ctx.tx() as repo:
                key_pem = repo.get_setting("ca_key")
                cert_pem = repo.get_setting("ca_cert")
                if key_pem is None or cert_pem is None:
                    fresh = CertificateAuthority.create()
                    key_pem = repo.put_setting_if_absent("ca_key", fresh.key_pem())
                    cert_pem = repo.put_setting_if_absent("ca_cert", fresh.cert_pem())
            self._ca = CertificateAuthority.from_pem(key_pem, cert_pem)
        return self._ca

    def challenge_secret(self) -> bytes:
        if self._hmac is None:
            with self.ctx.tx() as repo:
                value = repo.get_setting("challenge_secret") or repo.put_setting_if_absent(
                    "challenge_secret", os.urandom(32).hex()
                )
            self._hmac = bytes.fromhex(value)
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

    def get(self, ref: str) -> Pool:
        with self.ctx.tx() as repo:
            pool = repo.pool(ref)
        if pool is None:
            raise NotFound(f"no pool {ref!r}: `runyard pool list` shows the pools")
        return pool

    def list(self) -> list[Pool]:
        with self.ctx.tx() as repo:
            return repo.pools()

"""An in-process app on a real database, spoken to through runyard's own client."""

from __future__ import annotations

import base64
import contextlib
import functools
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
import uvicorn
from cryptography.hazmat.primitives.asymmetric.rsa import RSAPrivateKey
from fastapi import FastAPI

from runyard.client import Client
from runyard.config import ServerSettings
from runyard.core.states import RunState
from runyard.crypto import generate_key, key_to_pem, make_csr, sign_challenge
from runyard.server.app import build_services, create_app
from runyard.server.httpguard import GuardedProtocol
from runyard.server.services.registry import Services
from runyard.wire import RegisterIn, SourceIO, StackCreate
from tests.conftest import free_port
from tests.harness import wait_for

ADMIN = "ryk_test_admin_key"


@dataclass
class Api:
    svc: Services
    url: str
    client: Client
    tmp: Path
    opened: list[Client | httpx.Client] = field(default_factory=list)

    @functools.cached_property
    def http(self) -> httpx.Client:
        client = httpx.Client(base_url=self.url, timeout=30)
        self.opened.append(client)
        return client

    def anonymous(self) -> Client:
        client = Client([self.url], "")
        self.opened.append(client)
        return client

    def pool(self, name: str = "p1") -> tuple[str, str, RSAPrivateKey]:
        key = generate_key(2048)
        created = self.client.create_pool(name, make_csr(key).decode())
        return created.pool.id, created.token, key

    def worker(self, pool_id: str, token: str, key: RSAPrivateKey, metadata: dict[str, str] | None = None) -> Client:
        from runyard.crypto import PoolToken

        w = self.anonymous()
        challenge = w.challenge(pool_id)
        reply = w.register(RegisterIn(**{
            "pool_id": pool_id,
            "certificate": PoolToken.decode(token).certificate_pem,
            "challenge": challenge,
            "signature": sign_challenge(key, challenge),
            "metadata": metadata or {"zone": "test"},
            "version": "test",
        }))
        w.credential = reply.token
        return w

    def stack(self, name: str = "s1", pool: str = "p1", **kw: object) -> None:
        src = self.tmp / f"src-{name}"
        src.mkdir(exist_ok=True)
        (src / "main.sh").write_text("echo hi\n")
        from runyard.archive import pack_directory

        upload = self.client.upload_source(pack_directory(src))
        body = {"name": name, "pool": pool, "source": SourceIO(kind="upload", upload_id=upload),
                "tool": "shell", "commands": {"plan": "sh main.sh"}, "autodeploy": False, **kw}
        self.client.create_stack(StackCreate.model_validate(body))


@contextlib.contextmanager
def running(app: FastAPI, port: int, **config: Any) -> Iterator[None]:
    """``app`` served by uvicorn on 127.0.0.1:``port``, in a thread, for the block."""
    config.setdefault("http", GuardedProtocol)  # what `runyard server` speaks (server/httpguard.py)
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", **config))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    wait_for(lambda: server.started, 30, "the test server to start")
    try:
        yield
    finally:
        server.should_exit = True
        thread.join(30)


@pytest.fixture
def api(database_url: str, tmp_path: Path) -> Iterator[Api]:
    settings, _ = ServerSettings.resolve(
        {"data_dir": tmp_path / "data", "database_url": database_url, "admin_api_key": ADMIN, "long_poll": "5s"},
        env={},
    )
    svc = build_services(settings)
    svc.auth.bootstrap_admin_key(ADMIN)
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    with running(create_app(settings, svc), port):
        api = Api(svc, url, Client([url], ADMIN), tmp_path)
        api.opened.append(api.client)
        try:
            yield api
        finally:
            for client in api.opened:
                client.close()


def walk(worker: Client, run_id: str, lease: int, *states: RunState) -> None:
    for state in states:
        worker.report(run_id, lease, state)


def b64key(key: object) -> str:
    return base64.b64encode(key_to_pem(key)).decode()  # type: ignore[arg-type]

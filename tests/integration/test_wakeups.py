"""Wake-ups cross servers that share a PostgreSQL (LISTEN/NOTIFY): a run
triggered on one server reaches a worker polling another at once."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from runyard.config import ServerSettings
from runyard.core.models import PollAnswer, Source, SourceKind, Tool
from runyard.core.states import RunKind
from runyard.crypto import PoolToken, generate_key, make_csr, sign_challenge
from runyard.devstack import PostgresCluster
from runyard.server.app import build_services
from runyard.server.notifier import pool_topic
from runyard.server.services.registry import Services

SHARED_KEY = "the-same-secret-key-on-every-server"


@pytest.fixture
def servers(postgres: PostgresCluster, tmp_path: Path) -> Iterator[tuple[Services, Services]]:
    url = postgres.new_database()
    made = []
    for name in ("a", "b"):
        settings, _ = ServerSettings.resolve({"data_dir": tmp_path / name, "database_url": url,
                                              "long_poll": "20s", "secret_key": SHARED_KEY}, env={})
        made.append(build_services(settings))
    yield made[0], made[1]
    for svc in made:
        svc.close()


def test_a_notification_on_one_server_wakes_a_waiter_on_another(servers) -> None:
    a, b = servers
    topic = pool_topic("p")
    seen = b.ctx.notifier.generation(topic)
    woke: list[float] = []

    def wait() -> None:
        began = time.monotonic()
        assert asyncio.run(b.ctx.notifier.wait(topic, seen, 10))
        woke.append(time.monotonic() - began)

    waiter = threading.Thread(target=wait)
    waiter.start()
    deadline = time.monotonic() + 5
    while b.ctx.notifier.waiting(topic) == 0 and time.monotonic() < deadline:
        time.sleep(0.005)
    a.ctx.notifier.notify(pool_topic("another"), topic)  # several topics travel in one NOTIFY round trip
    waiter.join(10)
    assert woke and woke[0] < 5  # not the 10 s timeout


def test_a_run_triggered_on_one_server_is_claimed_by_a_poll_held_on_another(servers, tmp_path: Path) -> None:
    a, b = servers
    key = generate_key(2048)
    pool, token = a.pools.create("p1", make_csr(key).decode())
    upload = a.stacks.upload_source(_tar(tmp_path))
    # Both servers share the database, but this test gives each its own blob
    # directory: the stack's source is what only server a holds; that is fine here.
    a.stacks.create("s1", "p1", Source(SourceKind.UPLOAD, upload_id=upload), Tool.SHELL, commands={"plan": "true"})
    challenge = b.workers.challenge(pool.id)
    worker, _ = b.workers.register(pool.id, PoolToken.decode(token).certificate_pem, challenge,
                                   sign_challenge(key, challenge), {}, "test")
    answers: list[PollAnswer] = []
    polling = threading.Thread(target=lambda: answers.append(asyncio.run(b.dispatch.poll(worker, 20))))
    polling.start()
    deadline = time.monotonic() + 5
    while b.ctx.notifier.waiting(pool_topic(pool.id)) == 0 and time.monotonic() < deadline:
        time.sleep(0.005)
    triggered = a.runs.trigger("s1", RunKind.PROPOSED)
    began = time.monotonic()
    polling.join(20)
    assert answers and answers[0].assignment is not None and answers[0].assignment.run.id == triggered.id
    assert time.monotonic() - began < 5  # woken, not the 20 s poll timeout


def _tar(tmp_path: Path) -> bytes:
    from runyard.archive import pack_directory

    src = tmp_path / "src"
    src.mkdir()
    (src / "main.sh").write_text("true\n")
    return pack_directory(src)

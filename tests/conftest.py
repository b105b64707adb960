"""Shared fixtures: real PostgreSQL, a real Chromium, real server and launcher processes.

Locally, a missing component skips the tests that need it, saying why; in CI
(CI=true) it is a failure: nothing is silently skipped there.
"""

from __future__ import annotations

import os
import shutil
import uuid
from collections.abc import Generator, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pluggy
import pytest
from hypothesis import settings as hypothesis_settings

from runyard.devstack import PG_BIN, PostgresCluster, cannot_drop_packets, migrate, packets_dropped
from runyard.devstack import free_port as devstack_free_port

IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")
CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"


# Property tests without a count of their own try this many examples: ten
# where a developer runs the unit tier on every save, many more in CI.
hypothesis_settings.register_profile("dev", max_examples=10)
hypothesis_settings.register_profile("ci", max_examples=200)
hypothesis_settings.load_profile("ci" if os.environ.get("CI") else "dev")


def missing(reason: str) -> None:
    """Skip locally; fail in CI."""
    if IN_CI:
        pytest.fail(f"required test component missing in CI: {reason}")
    pytest.skip(reason)


@contextmanager
def gone(port: int) -> Iterator[None]:
    """The host behind ``port`` is lost: its packets are dropped for the block."""
    reason = cannot_drop_packets()
    if reason:
        missing(reason)
    with packets_dropped(port):
        yield


def free_port() -> int:
    return devstack_free_port()


LOG_TAIL_LINES = 80


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(
    item: pytest.Item, call: pytest.CallInfo[None]
) -> Generator[None, pluggy.Result[pytest.TestReport], None]:
    """A failed test's report ends with the tails of the server and launcher
    logs it left in its tmp_path: a failure in CI can be read from its output."""
    outcome = yield
    report = outcome.get_result()
    tmp_path = getattr(item, "funcargs", {}).get("tmp_path")
    if not report.failed or not isinstance(tmp_path, Path):
        return
    for log in sorted(tmp_path.glob("*.log")):
        lines = log.read_text(errors="replace").splitlines()[-LOG_TAIL_LINES:]
        report.sections.append((f"{log.name} (last {len(lines)} lines)", "\n".join(lines)))


@pytest.fixture(scope="session")
def postgres() -> Iterator[PostgresCluster]:
    if not (PG_BIN / "initdb").exists():
        missing(f"PostgreSQL binaries not found in {PG_BIN}")
    cluster = PostgresCluster()
    cluster.start()
    try:
        yield cluster
    finally:
        cluster.stop()


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    """Chromium through Playwright (the system's: Playwright's own download needs the internet).
    For a module at most: Playwright's sync API keeps an event loop running in
    this thread while it is open, and asyncio.run() refuses to start beside it."""
    if not Path(CHROMIUM).exists():
        missing("no Chromium at /usr/bin/chromium (apt-get install chromium)")
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        missing("the playwright package is not installed")
    with sync_playwright() as pw:
        chromium = pw.chromium.launch(
            executable_path=CHROMIUM,
            args=["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                  "--disable-background-networking", "--disable-component-update", "--disable-sync"],
        )
        try:
            yield chromium
        finally:
            chromium.close()


@pytest.fixture(scope="session")
def sqlite_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("template") / "runyard.db"
    migrate(f"sqlite:///{path}")
    return path


@pytest.fixture(params=["sqlite", "postgres"])
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """A fresh database of each kind, made from a migrated template."""
    if request.param == "sqlite":
        shutil.copyfile(request.getfixturevalue("sqlite_template"), tmp_path / "runyard.db")
        return f"sqlite:///{tmp_path / 'runyard.db'}"
    cluster: PostgresCluster = request.getfixturevalue("postgres")
    return cluster.new_database()


@pytest.fixture(params=["sqlite", "postgres"])
def empty_database_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """A fresh, empty database of each kind (for the migrations themselves)."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'empty.db'}"
    cluster: PostgresCluster = request.getfixturevalue("postgres")
    return cluster.new_database(migrated=False)


@pytest.fixture(scope="session")
def moto_endpoint() -> Iterator[str]:
    """AWS's APIs, emulated by moto's server on a local port."""
    from moto.server import ThreadedMotoServer

    port = free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.stop()


@pytest.fixture
def aws_env(moto_endpoint: str, monkeypatch: pytest.MonkeyPatch) -> str:
    """Credentials and a region for boto3, the way AWS tools read them."""
    for name, value in {"AWS_ACCESS_KEY_ID": "test", "AWS_SECRET_ACCESS_KEY": "test",
                        "AWS_DEFAULT_REGION": "us-east-1"}.items():
        monkeypatch.setenv(name, value)
    return moto_endpoint


@pytest.fixture
def bucket(aws_env: str) -> str:
    """A fresh, empty bucket on moto; its name."""

    import boto3

    name = f"runyard-{uuid.uuid4().hex[:12]}"
    boto3.client("s3", endpoint_url=aws_env).create_bucket(Bucket=name)
    return name

"""A standby over real HTTP: it answers health checks and the cluster status
only, points clients at the primary, and serves once promoted."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from runyard.client import Client
from runyard.config import ServerSettings
from runyard.server.app import build_services, create_app
from tests.conftest import free_port
from tests.harness import wait_for
from tests.integration.conftest import running

ADMIN = "ryk_standby_test_admin"
KEY = "one-secret-key-for-both-sites"
# Short, for quick role changes, but long enough that a holder on a busy
# machine renews in time: at 1 s, a renewal late by a second in CI let the
# old primary take the lease back right after a promote.
LEASE_TTL = 3


@contextlib.contextmanager
def serve(tmp_path: Path, name: str, database_url: str, **settings: object) -> Iterator[str]:
    port = free_port()
    resolved, _ = ServerSettings.resolve(
        {"data_dir": tmp_path / name, "database_url": database_url, "admin_api_key": ADMIN, "secret_key": KEY,
         "port": port, "scheduler_lease_ttl": f"{LEASE_TTL}s", **settings}, env={})
    svc = build_services(resolved)
    svc.auth.bootstrap_admin_key(ADMIN)
    with running(create_app(resolved, svc), port):
        yield f"http://127.0.0.1:{port}"


def role(url: str) -> str:
    return str(httpx.get(f"{url}/healthz").json()["role"])


def test_a_standby_refuses_the_api_names_the_primary_and_serves_once_promoted(tmp_path: Path,
                                                                              database_url: str) -> None:
    with serve(tmp_path, "a", database_url, site="eu-west") as primary, \
            serve(tmp_path, "b", database_url, standby=True, site="eu-central") as standby:
        wait_for(lambda: role(primary) == "primary", 10, "the primary to take the lease")
        assert role(standby) == "standby"
        auth = {"Authorization": f"Bearer {ADMIN}"}
        refused = httpx.get(f"{standby}/api/v1/pools", headers=auth)
        assert refused.status_code == 503 and refused.headers["retry-after"] == str(LEASE_TTL)
        assert refused.json()["error"] == "standby" and refused.json()["primary"] == primary
        assert httpx.get(f"{standby}/readyz").status_code == 503
        assert httpx.get(f"{primary}/readyz").status_code == 200
        # A client with both endpoints goes on to the one that serves.
        with Client([standby, primary], ADMIN) as client:
            assert client.pools() == []
            assert client.endpoint == primary
            status = client.cluster()
        assert status.lease is not None and status.lease.site == "eu-west"
        # Planned failover: promote the standby (twice: the same outcome).
        with Client([standby], ADMIN) as client:
            first = client.promote()
            again = client.promote()
        assert first.role == again.role == "primary" and again.lease is not None and again.lease.site == "eu-central"
        wait_for(lambda: role(primary) == "standby", 10, "the old primary to stand by")
        assert httpx.get(f"{standby}/api/v1/pools", headers=auth).status_code == 200
        assert httpx.get(f"{primary}/api/v1/pools", headers=auth).status_code == 503
        # Failback.
        with Client([primary], ADMIN) as client:
            assert client.promote().role == "primary"
        wait_for(lambda: role(standby) == "standby", 10, "the standby to stand by again")


@pytest.mark.timeout(120)
@pytest.mark.parametrize("database_url", ["postgres"], indirect=True)
def test_a_person_on_the_standby_is_shown_the_same_page_on_the_primary(tmp_path: Path, database_url: str,
                                                                       browser: Any) -> None:
    with serve(tmp_path, "a", database_url, site="eu-west") as primary, \
            serve(tmp_path, "b", database_url, standby=True, site="eu-central") as standby:
        wait_for(lambda: role(primary) == "primary", 10, "the primary to take the lease")
        answer = httpx.get(f"{standby}/ui/stacks")
        assert answer.status_code == 503 and answer.headers["content-type"].startswith("text/html")
        assert answer.headers["retry-after"] == str(LEASE_TTL) and answer.headers["x-runyard-primary"] == primary
        page = browser.new_page()
        try:
            page.goto(f"{standby}/ui/stacks?label=a%26b")
            assert page.inner_text("h1") == "This runyard server is a standby"
            assert page.get_attribute("#primary", "href") == f"{primary}/ui/stacks?label=a%26b"
            page.click("#primary")
            page.wait_for_url(f"{primary}/ui/login")  # the primary serves it: it asks who is there
            # The API still answers clients in JSON.
            assert httpx.get(f"{standby}/api/v1/pools").json()["primary"] == primary
        finally:
            page.close()


@pytest.mark.timeout(120)
@pytest.mark.parametrize("database_url", ["postgres"], indirect=True)
def test_an_open_page_says_when_its_server_stands_by_and_links_to_the_new_primary(
        tmp_path: Path, database_url: str, browser: Any) -> None:
    with serve(tmp_path, "a", database_url, site="eu-west") as primary, \
            serve(tmp_path, "b", database_url, standby=True, site="eu-central") as standby:
        wait_for(lambda: role(primary) == "primary", 10, "the primary to take the lease")
        page = browser.new_page()
        try:
            page.goto(f"{primary}/ui/pools")
            page.fill("#api_key", ADMIN)
            page.click("button[type=submit]")
            page.wait_for_url(f"{primary}/ui/pools")
            assert page.is_hidden("#standby")
            with Client([standby], ADMIN) as client:
                client.promote()  # the page's server stands by within a second
            page.wait_for_selector("#standby", state="visible", timeout=15_000)
            assert page.get_attribute("#standby-primary", "href") == f"{standby}/ui/pools"
            page.click("#standby-primary")
            page.wait_for_url(f"{standby}/ui/pools")  # one session key for both sites: still signed in
            assert page.inner_text("h1") == "Worker pools"
        finally:
            page.close()

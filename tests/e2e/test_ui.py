"""The web UI in a real Chromium (Playwright), against a real server and launcher.

Screenshots of every page go to artifacts/screenshots/.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from runyard.crypto import generate_key, key_to_pem, make_csr
from tests.e2e.test_runs import make_stack
from tests.harness import LauncherProcess, PoolCreds, ServerProcess, cli, wait_for

SHOTS = Path(__file__).resolve().parents[2] / "artifacts" / "screenshots"
TIMEOUT_MS = 20_000


@pytest.fixture
def page(browser: Any, server: ServerProcess) -> Iterator[Any]:
    context = browser.new_context(viewport={"width": 1280, "height": 860})
    context.set_default_timeout(TIMEOUT_MS)
    pg = context.new_page()
    dialogs: list[str] = []
    def on_dialog(dialog: Any) -> None:
        dialogs.append(dialog.message)
        dialog.dismiss()

    pg.on("dialog", on_dialog)
    pg.dialogs = dialogs
    try:
        yield pg
    finally:
        context.close()


def shot(page: Any, name: str) -> None:
    SHOTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(SHOTS / f"{name}.png"), full_page=True)


def sign_in(page: Any, server: ServerProcess) -> None:
    page.goto(f"{server.endpoint}/ui/pools")
    assert page.url.endswith("/ui/login")
    page.fill("#api_key", "not-the-key")
    page.click("button[type=submit]")
    assert "not valid" in page.inner_text(".error")
    shot(page, "01-sign-in-refused")
    page.fill("#api_key", server.admin_key)
    page.click("button[type=submit]")
    page.wait_for_url("**/ui/pools")


def worker_status(page: Any) -> str:
    return page.inner_text("#workers [data-status]")


def test_operator_watches_a_worker_and_a_run_and_drains_the_worker(server, pool, launcher, tmp_path, page, sync_dir):
    launcher()
    make_stack(server, tmp_path)
    sign_in(page, server)
    page.wait_for_selector("text=p1")
    shot(page, "02-pools")
    page.click("text=p1")
    page.wait_for_selector("#workers")
    assert worker_status(page) == "IDLE"
    cmd = f"echo first-line; while [ ! -e {sync_dir}/go ]; do sleep 0.05; done; echo last-line"
    run_id = cli(server, "run", "task", "s1", "--command", cmd, check=True).stdout.strip()
    # No reload: the page refreshes itself.
    page.wait_for_function("document.querySelector('#workers [data-status]').innerText === 'BUSY'")
    shot(page, "03-pool-worker-busy")
    page.click(".tabs >> text=Queue")
    page.wait_for_selector(f"#queue >> text={run_id}")
    shot(page, "04-pool-queue")
    page.click(".tabs >> text=Used by")
    page.wait_for_selector("#used-by >> text=s1")
    shot(page, "05-pool-used-by")

    page.goto(f"{server.endpoint}/ui/runs/{run_id}")
    page.wait_for_function("document.getElementById('log').innerText.includes('first-line')")
    assert "last-line" not in page.inner_text("#log")
    shot(page, "06-run-log-live")
    (sync_dir / "go").touch()
    page.wait_for_function("document.getElementById('log').innerText.includes('last-line')")
    page.wait_for_function("document.getElementById('state').innerText === 'FINISHED'")
    assert "PERFORMING" in page.inner_text("#history")
    shot(page, "07-run-finished")

    page.goto(f"{server.endpoint}/ui/pools/p1")
    page.wait_for_function("document.querySelector('#workers [data-status]').innerText === 'IDLE'")
    page.click("#workers button:has-text('Drain')")
    page.wait_for_selector(".flash")
    assert worker_status(page) == "DRAINED"
    shot(page, "08-worker-drained")
    queued = cli(server, "run", "task", "s1", "--command", "echo after-undrain", check=True).stdout.strip()
    assert json.loads(cli(server, "run", "show", queued, "-o", "json").stdout)["state"] == "QUEUED"
    page.click("#workers button:has-text('Undrain')")
    page.wait_for_selector(".flash")
    wait_for(lambda: json.loads(cli(server, "run", "show", queued, "-o", "json").stdout)["state"] == "FINISHED",
             30, "the queued run to run on the undrained worker")
    page.wait_for_function("document.querySelector('#workers [data-status]').innerText === 'IDLE'")


def test_cycle_from_the_ui_makes_the_launcher_exit(server, pool, launcher, page):
    proc = launcher()
    sign_in(page, server)
    page.goto(f"{server.endpoint}/ui/pools/p1")
    page.click("text=Cycle…")
    assert "Every worker of this pool will exit" in page.inner_text("main")
    shot(page, "09-cycle-confirmation")
    page.click("button:has-text('Cycle the pool')")
    page.wait_for_selector(".flash")
    assert proc.wait(20) == 0
    assert "launcher exiting: cycled" in proc.read_log()
    page.wait_for_selector("text=No workers")


def test_reset_from_the_ui_refuses_the_old_token(server, pool: PoolCreds, launcher, page, tmp_path):
    old = launcher()
    sign_in(page, server)
    page.goto(f"{server.endpoint}/ui/pools/p1/reset")
    shot(page, "10-reset-confirmation")
    key = generate_key(2048)
    page.fill("textarea[name=csr]", make_csr(key).decode())
    page.click("button:has-text('Reset the pool')")
    token = page.input_value("#token")
    shot(page, "11-reset-new-token")
    assert old.wait(20) != 0
    assert "the pool was reset" in old.read_log()
    again = LauncherProcess(pool, tmp_path / "again").start()
    assert again.wait(30) != 0 and "the pool was reset" in again.read_log()
    again.stop()
    import base64

    fresh = LauncherProcess(PoolCreds("p1", pool.pool_id, token, base64.b64encode(key_to_pem(key)).decode()),
                            tmp_path / "fresh", extra_env={"RUNYARD_EXECUTOR": "process"}).start()
    try:
        with server.client() as client:
            wait_for(lambda: client.workers("p1"), 30, "a launcher with the new token to register")
    finally:
        fresh.stop()


def test_user_provided_text_is_shown_not_run(server, page, tmp_path):
    evil = "<script>alert('pwned')</script>"
    csr = tmp_path / "p.csr"
    csr.write_bytes(make_csr(generate_key(2048)))
    description = f"**bold** {evil} [x](javascript:alert(1))"
    cli(server, "pool", "create", "evil", "--csr", str(csr), "--description", description,
        "--label", "<img src=x onerror=alert(2)>", check=True)
    src = tmp_path / "src"
    src.mkdir()
    cli(server, "stack", "create", "s-script", "--pool", "evil", "--source", str(src), "--plan", "true",
        "--label", evil, "--env", f"NOTE={evil}", check=True)
    sign_in(page, server)
    page.goto(f"{server.endpoint}/ui/pools")
    assert evil in page.inner_text("main")
    assert page.locator("strong", has_text="bold").count() == 1  # markdown renders, HTML does not
    page.goto(f"{server.endpoint}/ui/stacks/s-script")
    assert evil in page.inner_text("main")
    shot(page, "12-escaped")
    assert page.dialogs == []
    assert page.locator("script", has_text="pwned").count() == 0


def test_pages_need_a_session_and_forms_need_its_csrf_token(server, pool):
    import httpx

    with httpx.Client(base_url=server.endpoint, follow_redirects=False) as http:
        assert http.get("/ui/pools").headers["location"] == "/ui/login"
        signed = http.post("/ui/login", data={"api_key": server.admin_key})
        assert signed.status_code == 303
        assert http.get("/ui/pools").status_code == 200
        forged = http.post("/ui/pools/p1/cycle", data={"csrf": "forged"})
        assert forged.status_code == 303 and forged.headers["location"] == "/ui/login"
    with server.client() as client:
        assert client.pool("p1").workers == {"IDLE": 0, "BUSY": 0, "DRAINED": 0}


def test_pool_settings_and_plan_confirmation_from_the_ui(server, pool, launcher, page, tmp_path):
    launcher()
    src = tmp_path / "src-confirm"
    src.mkdir()
    cli(server, "stack", "create", "gated", "--pool", "p1", "--source", str(src), "--plan", "echo planned",
        "--apply", "echo applied", "--no-autodeploy", check=True)
    sign_in(page, server)
    page.goto(f"{server.endpoint}/ui/pools/p1?tab=settings")
    page.fill("#description", "Build hosts in **eu-1**")
    page.fill("#labels", "linux, eu")
    page.fill("#drift", "2")
    page.click("button:has-text('Save settings')")
    page.wait_for_selector(".flash")
    shot(page, "13-pool-settings")
    with server.client() as client:
        saved = client.pool("p1")
    assert (saved.description, saved.labels, saved.drift_detection_limit) == ("Build hosts in **eu-1**",
                                                                              ["linux", "eu"], 2)
    assert page.locator("strong", has_text="eu-1").count() == 1

    page.goto(f"{server.endpoint}/ui/stacks/gated")
    page.click("button:has-text('Trigger run')")
    page.wait_for_url("**/ui/runs/**")
    page.wait_for_function("document.getElementById('state').innerText === 'UNCONFIRMED'")
    shot(page, "14-run-unconfirmed")
    page.click("button:has-text('Confirm')")
    page.wait_for_function("document.getElementById('state').innerText === 'FINISHED'")
    page.wait_for_function("document.getElementById('log').innerText.includes('applied')")
    shot(page, "15-run-confirmed-and-applied")

    # A double click sends a trigger form twice: one run.
    page.goto(f"{server.endpoint}/ui/stacks/gated")
    with server.client() as client:
        before = len(client.runs("gated"))
    page.evaluate("""async () => {
        const form = [...document.querySelectorAll("form")]
            .find((f) => f.querySelector("input[name=kind][value=PROPOSED]"));
        for (let i = 0; i < 2; i++) {
            await fetch(form.action, {method: "POST", body: new FormData(form), credentials: "same-origin"});
        }
    }""")
    with server.client() as client:
        assert len(client.runs("gated")) == before + 1

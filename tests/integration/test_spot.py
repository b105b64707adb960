"""Spot interruption notices, from a local HTTP server that answers the
IMDSv2 token and spot/instance-action paths as EC2 documents them."""

from __future__ import annotations

import datetime as dt
import json
import os
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from runyard.config import LauncherSettings
from runyard.core.states import RunKind, RunState
from runyard.launcher.executors.process import ProcessExecutor
from runyard.launcher.launcher import Launcher
from runyard.launcher.spot import MARGIN, SpotWatcher
from tests.harness import wait_for
from tests.integration.conftest import Api, b64key

TOKEN = "AQAEAFakeImdsV2Token=="


class Imds(BaseHTTPRequestHandler):
    notice: dict[str, str] | None = None
    token_requests = 0

    def log_message(self, *args: object) -> None:
        pass

    def do_PUT(self) -> None:
        if self.path != "/latest/api/token" or "X-aws-ec2-metadata-token-ttl-seconds" not in self.headers:
            self.send_error(400)
            return
        type(self).token_requests += 1
        self._answer(200, TOKEN.encode())

    def do_GET(self) -> None:
        if self.headers.get("X-aws-ec2-metadata-token") != TOKEN:
            self.send_error(401)  # IMDSv2: no token, no answer
            return
        if self.path != "/latest/meta-data/spot/instance-action" or type(self).notice is None:
            self.send_error(404)
            return
        self._answer(200, json.dumps(type(self).notice).encode())

    def _answer(self, code: int, body: bytes) -> None:
        self.send_response(code)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)


@pytest.fixture
def imds() -> Iterator[str]:
    Imds.notice, Imds.token_requests = None, 0
    server = ThreadingHTTPServer(("127.0.0.1", 0), Imds)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


def notice_in(seconds: float) -> dict[str, str]:
    at = dt.datetime.now(dt.UTC) + dt.timedelta(seconds=seconds)
    return {"action": "terminate", "time": at.strftime("%Y-%m-%dT%H:%M:%SZ")}


def test_the_watcher_reads_a_notice_only_with_an_imdsv2_token(imds: str) -> None:
    watcher = SpotWatcher(imds, lambda _: None)
    now = time.time()
    assert watcher.check(now) is None  # 404: no interruption
    Imds.notice = notice_in(120)
    notice = watcher.check(now)
    assert notice is not None and notice.action == "terminate" and 100 < notice.deadline - now < 130
    assert Imds.token_requests == 1  # the token is reused until near its expiry


def test_a_notice_drains_the_worker_and_stops_its_run_before_the_deadline(api: Api, imds: str,
                                                                         tmp_path: Path) -> None:
    _, token, key = api.pool()
    api.stack()
    settings, _ = LauncherSettings.resolve(
        {"token": token, "pool_private_key": b64key(key), "work_dir": tmp_path / "w", "executor": "process",
         "endpoints": api.url, "long_poll": "5s", "spot_interruption_watch": True, "imds_endpoint": imds},
        env={})
    launcher = Launcher(settings, ProcessExecutor(), env={"PATH": os.environ["PATH"]})
    launcher.spot_interval = 0.1
    reasons: list[str] = []
    thread = threading.Thread(target=lambda: reasons.append(launcher.run()), daemon=True)
    thread.start()
    run = api.client.trigger("s1", RunKind.TASK, "echo started; sleep 600")
    wait_for(lambda: api.client.run(run.id).state == RunState.PERFORMING, 30, "the run to start")
    Imds.notice = notice_in(MARGIN + 2)  # two seconds of grace before the margin
    wait_for(lambda: [w.status for w in api.client.workers("p1")] == ["DRAINED"], 15,
             "the worker to drain itself")
    thread.join(30)
    done = api.client.run(run.id)
    assert (done.state, done.reason) == (RunState.STOPPED, "interrupted")
    assert reasons == ["interrupted"]

"""Spot interruption notices from the EC2 instance metadata service (IMDSv2).

EC2 gives a spot instance two minutes' notice before it takes it back: the
metadata path ``spot/instance-action`` answers 404 until then, and then
``{"action": "terminate" | "stop", "time": "2026-11-26T10:00:00Z"}``. The
launcher treats a notice as SIGTERM with that deadline: it takes no more
work, drains itself so autoscalers stop counting it as capacity, and gives
its run until shortly before the deadline to finish.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import threading
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass

log = logging.getLogger("runyard.launcher")
TOKEN_TTL = 21600
# Report the run before the instance goes: stop it this long before the deadline.
MARGIN = 15.0


@dataclass(frozen=True)
class Notice:
    action: str  # terminate, stop or hibernate
    deadline: float  # epoch seconds


class SpotWatcher:
    """Polls the metadata service; calls ``on_notice`` once, with the notice."""

    def __init__(self, endpoint: str, on_notice: Callable[[Notice], None], interval: float = 5.0,
                 timeout: float = 2.0) -> None:
        self.endpoint = endpoint.rstrip("/")
        self.on_notice = on_notice
        self.interval = interval
        self.timeout = timeout
        self._stop = threading.Event()
        self._token = ""
        self._token_expires = 0.0
        self._thread = threading.Thread(target=self._loop, name="spot-watch", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()

    def _request(self, method: str, path: str, headers: dict[str, str]) -> bytes | None:
        request = urllib.request.Request(f"{self.endpoint}{path}", method=method, headers=headers)
        try:
            with urllib.request.urlopen(request, timeout=self.timeout) as response:
                return bytes(response.read())
        except urllib.error.HTTPError as exc:
            if exc.code == 404:
                return None
            raise

    def _imds_token(self, now: float) -> str:
        if not self._token or now > self._token_expires - 60:
            body = self._request("PUT", "/latest/api/token",
                                 {"X-aws-ec2-metadata-token-ttl-seconds": str(TOKEN_TTL)})
            self._token = (body or b"").decode().strip()
            self._token_expires = now + TOKEN_TTL
        return self._token

    def check(self, now: float) -> Notice | None:
        """One look at the metadata service: the notice, or None."""
        token = self._imds_token(now)
        body = self._request("GET", "/latest/meta-data/spot/instance-action",
                             {"X-aws-ec2-metadata-token": token})
        if body is None:
            return None
        doc = json.loads(body)
        deadline = dt.datetime.fromisoformat(str(doc["time"]).replace("Z", "+00:00")).timestamp()
        return Notice(str(doc.get("action", "terminate")), deadline)

    def _loop(self) -> None:
        while not self._stop.is_set():
            try:
                notice = self.check(dt.datetime.now(dt.UTC).timestamp())
            except (OSError, ValueError, KeyError) as exc:
                log.debug("instance metadata service: %s", exc)
                notice = None
            if notice is not None:
                log.warning("spot interruption notice: %s at %s", notice.action,
                            dt.datetime.fromtimestamp(notice.deadline, dt.UTC).isoformat())
                self.on_notice(notice)
                return
            self._stop.wait(self.interval)

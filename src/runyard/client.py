"""The HTTP API client, used by the CLI, the launcher and the autoscaler.

It speaks HTTP through :mod:`runyard.transport`. Errors come back as the
same :class:`RunyardError` subclasses the server raised; a server that
cannot be reached is :class:`Unavailable`.
"""

from __future__ import annotations

import functools
import os
import re
import ssl
import time
import uuid
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any, Protocol, TypeVar
from urllib.parse import urlencode

from pydantic import BaseModel

from runyard import jsonfast
from runyard.core.errors import (
    AlreadyExists,
    Conflict,
    DatabaseUnavailable,
    InvalidInput,
    NotFound,
    RunyardError,
    StaleLease,
    Standby,
    StorageFull,
    Unauthorized,
    Unavailable,
    WorkerGone,
)
from runyard.core.models import LogBlock, RunEnd
from runyard.core.states import RunKind, RunState
from runyard.transport import Connections, ProxiedHttp, Reply, TransportError, proxy_for
from runyard.wire import (
    API,
    ChallengeIn,
    ChallengeOut,
    ClusterOut,
    CycleOut,
    DemandOut,
    HeartbeatOut,
    LogsAck,
    LogsOut,
    OutputIO,
    OutputsIn,
    PollOut,
    PoolCreate,
    PoolCreated,
    PoolReset,
    PoolSummary,
    PoolUpdate,
    RegisterIn,
    RegisterOut,
    ReportIn,
    RunOut,
    RunTrigger,
    StackCreate,
    StackOut,
    StateVersionOut,
    TokenOut,
    UploadOut,
    WorkerOut,
)

M = TypeVar("M", bound=BaseModel)

# An endpoint that was silent (its host is gone: see TransportError) is tried
# after the others for this long, and not at all when another one answered
# (a standby saying so) unless that standby names it as the primary (it holds
# a live lease, so it is back): each try costs seconds of waiting. One that
# refused or reset the connection costs nothing to try again (a restart), and
# one that was slow to answer is still there.
PASS_OVER_FOR = 10.0
# A held call (a poll, a log follow, a demand watch) is answered when its wait
# ends; this long past that, its server is taken to be gone. A server whose
# process hangs while its machine lives acknowledges everything, so only this
# tells: it bounds how long a launcher's idle poll stays with such a server.
HELD_ANSWER_MARGIN = 10.0

_BY_CODE: dict[str, type[RunyardError]] = {
    cls.code: cls
    for cls in (InvalidInput, NotFound, AlreadyExists, Conflict, StaleLease, Unauthorized, WorkerGone, Standby,
                StorageFull, DatabaseUnavailable)
}


def _error(response: Reply) -> RunyardError:
    try:
        doc = response.json()
        code, message = str(doc.get("error", "")), str(doc.get("message", response.text))
    except ValueError:
        code, message = "", response.text or response.reason_phrase
    cls = _BY_CODE.get(code)
    if cls is None:
        cls = {401: Unauthorized, 404: NotFound, 409: Conflict, 410: WorkerGone}.get(
            response.status_code, InvalidInput if response.status_code < 500 else Unavailable
        )
    if cls is WorkerGone:
        return WorkerGone(message, reason=str(doc.get("reason", "")) if code else "")
    if cls is Standby:
        return Standby(str(doc.get("primary", "")))
    return cls(message)


class WorkerApi(Protocol):
    """What a launcher asks of the server. :class:`Client` speaks it over
    HTTP; ``runyard.testing.InProcessWorkerApi`` calls the services directly."""

    credential: str

    @property
    def endpoint(self) -> str: ...

    def challenge(self, pool_id: str) -> str: ...

    def register(self, body: RegisterIn) -> RegisterOut: ...

    def heartbeat(self) -> HeartbeatOut: ...

    def deregister(self, reason: str) -> None: ...

    def drain_self(self) -> None: ...

    def poll(self, wait: float) -> PollOut: ...

    def report(self, run_id: str, lease: int, state: RunState, note: str = "",
               changes: dict[str, int] | None = None, via: Sequence[RunState] = ()) -> RunOut: ...

    def put_workspace(self, run_id: str, lease: int, sealed: bytes) -> None: ...

    def get_workspace(self, run_id: str, lease: int) -> bytes: ...

    def put_outputs(self, run_id: str, lease: int, outputs: Sequence[OutputIO]) -> None: ...

    def send_logs(self, run_id: str, lease: int, blocks: Sequence[LogBlock], end: RunEnd | None = None,
                  take_next: bool = False) -> LogsAck:
        """Store log lines; with ``end``, then report the run's end (in the
        same transaction); with ``take_next`` too, the answer may carry the
        worker's next run."""

    def source_archive(self, upload_id: str) -> bytes: ...

    def close(self) -> None: ...


class FleetApi(Protocol):
    """What an autoscaler asks of the server."""

    def demand(self, pool: str, since: int = -1, wait: float = 0) -> DemandOut: ...

    def workers(self, pool: str) -> list[WorkerOut]: ...

    def drain(self, worker_id: str, drained: bool = True) -> WorkerOut: ...

    def remove_worker(self, worker_id: str, reason: str) -> None: ...


@functools.cache
def _system_trust() -> ssl.SSLContext:
    """The system's root CAs, loaded once a process: loading them is tens of
    milliseconds, and every client (each CLI call, each test) would pay it."""
    return ssl.create_default_context()


def _trust(extra_ca: Path | None) -> ssl.SSLContext:
    """The system's root CAs, plus ``extra_ca`` (a PEM file) when given."""
    if extra_ca is None:
        return _system_trust()
    context = ssl.create_default_context()
    try:
        context.load_verify_locations(cafile=str(extra_ca))
    except (OSError, ssl.SSLError) as exc:
        raise InvalidInput(f"cannot load the CA certificates {extra_ca}: {exc}") from exc
    return context


def _standby_names(response: Reply) -> str | None:
    """A standby's answer: the primary it names ("" while none holds the
    lease); None for any other answer."""
    if response.status_code != 503:
        return None
    try:
        doc = response.json()
    except ValueError:
        return None
    if not isinstance(doc, dict) or doc.get("error") != "standby":
        return None
    return str(doc.get("primary") or "").rstrip("/")


def _query_value(value: object) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


_SEGMENT = re.compile(r"^[A-Za-z0-9_.~-]+$")


def _seg(value: object) -> str:
    """A name or id as one path segment: refuse one that would change the path."""
    text = str(value)
    if text in (".", "..") or not _SEGMENT.match(text):
        raise InvalidInput(f"{text!r} is not a valid name or id: use letters, digits, '-', '_' or '.'")
    return text


class Client:
    """Talks to the first endpoint that answers: the one that answered last,
    then the others in the order given (see PASS_OVER_FOR)."""

    def __init__(
        self,
        endpoints: Sequence[str],
        credential: str = "",
        timeout: float = 30.0,
        extra_ca: Path | None = None,
        environ: Mapping[str, str] | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if not endpoints:
            raise InvalidInput("no server endpoint: pass --endpoint or set RUNYARD_ENDPOINT")
        self.endpoints = [e.rstrip("/") for e in endpoints]
        self._current = 0
        self._clock = clock
        self._silent_at: dict[int, float] = {}  # endpoint index -> when it was last silent
        self.credential = credential
        context = _trust(extra_ca)
        self._direct = Connections(context, timeout)
        # HTTP(S)_PROXY, ALL_PROXY and NO_PROXY are honoured from the environment:
        # an endpoint a proxy applies to is reached through httpx.
        env = os.environ if environ is None else environ
        proxies = {e: proxy_for(e, env) for e in self.endpoints}
        self._proxied = {p: ProxiedHttp(p, context, timeout) for p in set(proxies.values()) if p}
        self._routes: list[Connections | ProxiedHttp] = [
            self._proxied[p] if p else self._direct for p in (proxies[e] for e in self.endpoints)]

    def close(self) -> None:
        self._direct.close()
        for proxied in self._proxied.values():
            proxied.close()

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @property
    def endpoint(self) -> str:
        return self.endpoints[self._current]

    def request(
        self, method: str, path: str, *, timeout: float | None = None, params: Mapping[str, Any] | None = None,
        content: bytes | str | None = None, json: Any = None, headers: Mapping[str, str] | None = None,
    ) -> Reply:
        sent = {"User-Agent": "runyard", **(headers or {})}
        if json is not None:
            content = jsonfast.dumps(json)
            sent["Content-Type"] = "application/json"
        body = content.encode() if isinstance(content, str) else content
        if self.credential:
            sent["Authorization"] = f"Bearer {self.credential}"
        if params:
            path += "?" + urlencode({k: _query_value(v) for k, v in params.items()})
        last: Exception | None = None
        answered = False
        vouched: set[int] = set()  # passed over, but a standby says it holds the lease
        for index, passed_over in self._order():
            if passed_over and answered and index not in vouched:
                continue
            try:
                response = self._routes[index].request(method, self.endpoints[index] + path, sent, body, timeout)
            except TransportError as exc:
                last = exc
                if exc.silent:
                    self._silent_at[index] = self._clock()
                continue
            except ValueError as exc:  # a header that would break the request apart
                raise InvalidInput(f"cannot send the request: {exc}") from exc
            self._silent_at.pop(index, None)
            answered = True
            named = _standby_names(response) if len(self.endpoints) > 1 else None
            if named is not None:
                last = _error(response)  # a standby: the primary is another endpoint of the list
                if named in self.endpoints:
                    vouched.add(self.endpoints.index(named))
                continue
            self._current = index
            if response.status_code >= 400:
                raise _error(response)
            return response
        raise Unavailable(f"cannot reach the runyard server at {', '.join(self.endpoints)}: {last}")

    def _order(self) -> list[tuple[int, bool]]:
        """The endpoints to try, from the one that answered last, those silent
        lately at the end; each with whether it was silent lately."""
        count = len(self.endpoints)
        rotated = [(self._current + step) % count for step in range(count)]
        if not self._silent_at:  # every call of a healthy client: no clock, no sets
            return [(i, False) for i in rotated]
        now = self._clock()
        silent = {i for i, at in self._silent_at.items() if now - at < PASS_OVER_FOR}
        return [(i, False) for i in rotated if i not in silent] + [(i, True) for i in rotated if i in silent]

    def _get(self, path: str, model: type[M], **kw: Any) -> M:
        return model.model_validate_json(self.request("GET", path, **kw).content)

    def _post(self, path: str, model: type[M], body: BaseModel | None = None, **kw: Any) -> M:
        # Encoded and decoded by pydantic itself, without Python dicts between.
        if body is not None:
            kw["content"] = body.model_dump_json()
            kw["headers"] = {**kw.get("headers", {}), "Content-Type": "application/json"}
        return model.model_validate_json(self.request("POST", path, **kw).content)

    # people -------------------------------------------------------------------

    def create_pool(
        self, name: str, csr: str, description: str = "", labels: Sequence[str] = (),
        drift_detection_limit: int | None = None,
    ) -> PoolCreated:
        body = PoolCreate(name=name, csr=csr, description=description, labels=list(labels),
                          drift_detection_limit=drift_detection_limit)
        return self._post(f"{API}/pools", PoolCreated, body)

    def pools(self) -> list[PoolSummary]:
        return [PoolSummary.model_validate(p) for p in self.request("GET", f"{API}/pools").json()]

    def pool(self, ref: str) -> PoolSummary:
        return self._get(f"{API}/pools/{_seg(ref)}", PoolSummary)

    def update_pool(self, ref: str, body: PoolUpdate) -> PoolSummary:
        payload = body.model_dump(mode="json", exclude_none=True)
        return PoolSummary.model_validate(self.request("PATCH", f"{API}/pools/{_seg(ref)}", json=payload).json())

    def cluster(self) -> ClusterOut:
        return self._get(f"{API}/cluster", ClusterOut)

    def promote(self) -> ClusterOut:
        return self._post(f"{API}/cluster/promote", ClusterOut)

    def demote(self) -> ClusterOut:
        return self._post(f"{API}/cluster/demote", ClusterOut)

    def pool_token(self, ref: str) -> str:
        return self._get(f"{API}/pools/{_seg(ref)}/token", TokenOut).token

    def cycle_pool(self, ref: str) -> int:
        return self._post(f"{API}/pools/{_seg(ref)}/cycle", CycleOut).workers

    def reset_pool(self, ref: str, csr: str) -> PoolCreated:
        return self._post(f"{API}/pools/{_seg(ref)}/reset", PoolCreated, PoolReset(csr=csr))

    def pool_queue(self, ref: str) -> list[RunOut]:
        return [RunOut.model_validate(r) for r in self.request("GET", f"{API}/pools/{_seg(ref)}/queue").json()]

    def pool_stacks(self, ref: str) -> list[StackOut]:
        return [StackOut.model_validate(s) for s in self.request("GET", f"{API}/pools/{_seg(ref)}/stacks").json()]

    def demand(self, pool: str, since: int = -1, wait: float = 0) -> DemandOut:
        return self._get(f"{API}/pools/{_seg(pool)}/demand", DemandOut, params={"since": since, "wait": wait},
                         timeout=wait + HELD_ANSWER_MARGIN)

    def remove_worker(self, worker_id: str, reason: str) -> None:
        self.request("POST", f"{API}/workers/{_seg(worker_id)}/remove", params={"reason": reason})

    def drain(self, worker_id: str, drained: bool = True) -> WorkerOut:
        verb = "drain" if drained else "undrain"
        return self._post(f"{API}/workers/{_seg(worker_id)}/{_seg(verb)}", WorkerOut)

    def workers(self, pool: str) -> list[WorkerOut]:
        return [WorkerOut.model_validate(w) for w in self.request("GET", f"{API}/pools/{_seg(pool)}/workers").json()]

    def upload_source(self, archive: bytes) -> str:
        response = self.request(
            "POST", f"{API}/sources", content=archive, headers={"Content-Type": "application/gzip"}
        )
        return UploadOut.model_validate(response.json()).upload_id

    def create_stack(self, body: StackCreate) -> StackOut:
        return self._post(f"{API}/stacks", StackOut, body)

    def stacks(self) -> list[StackOut]:
        return [StackOut.model_validate(s) for s in self.request("GET", f"{API}/stacks").json()]

    def stack(self, ref: str) -> StackOut:
        return self._get(f"{API}/stacks/{_seg(ref)}", StackOut)

    def trigger(self, stack: str, kind: RunKind = RunKind.TRACKED, command: str = "", key: str = "") -> RunOut:
        """Queue a run. Every try of this call (each endpoint) carries one
        Idempotency-Key, ``key`` or a new random one, so a trigger whose answer
        was lost and that another server then took queues one run, not two."""
        return self._post(f"{API}/stacks/{_seg(stack)}/runs", RunOut, RunTrigger(kind=kind, command=command),
                          headers={"Idempotency-Key": key or uuid.uuid4().hex})

    def runs(self, stack: str | None = None, limit: int = 100) -> list[RunOut]:
        params: dict[str, Any] = {"limit": limit}
        if stack:
            params["stack"] = stack
        return [RunOut.model_validate(r) for r in self.request("GET", f"{API}/runs", params=params).json()]

    def run(self, run_id: str) -> RunOut:
        return self._get(f"{API}/runs/{_seg(run_id)}", RunOut)

    def cancel(self, run_id: str) -> RunOut:
        return self._post(f"{API}/runs/{_seg(run_id)}/cancel", RunOut)

    def confirm(self, run_id: str) -> RunOut:
        return self._post(f"{API}/runs/{_seg(run_id)}/confirm", RunOut)

    def discard(self, run_id: str) -> RunOut:
        return self._post(f"{API}/runs/{_seg(run_id)}/discard", RunOut)

    def outputs(self, stack: str) -> list[OutputIO]:
        return [OutputIO.model_validate(o) for o in self.request("GET", f"{API}/stacks/{_seg(stack)}/outputs").json()]

    def state_versions(self, stack: str) -> list[StateVersionOut]:
        rows = self.request("GET", f"{API}/stacks/{_seg(stack)}/state/versions").json()
        return [StateVersionOut.model_validate(v) for v in rows]

    def state(self, stack: str, version: int | None = None) -> bytes:
        if version is None:
            response = self.request("GET", f"{API}/stacks/{_seg(stack)}/state")
            if response.status_code == 204:
                raise NotFound(f"stack {stack!r} has no state yet")
            return response.content
        return self.request("GET", f"{API}/stacks/{_seg(stack)}/state/versions/{_seg(version)}").content

    def logs(self, run_id: str, after: int = 0, wait: float = 0) -> LogsOut:
        return self._get(
            f"{API}/runs/{_seg(run_id)}/logs", LogsOut, params={"after": after, "wait": wait},
            timeout=wait + HELD_ANSWER_MARGIN)

    # workers ------------------------------------------------------------------

    def challenge(self, pool_id: str) -> str:
        return self._post(f"{API}/worker/challenge", ChallengeOut, ChallengeIn(pool_id=pool_id)).challenge

    def register(self, body: RegisterIn) -> RegisterOut:
        return self._post(f"{API}/worker/register", RegisterOut, body)

    def heartbeat(self) -> HeartbeatOut:
        return self._post(f"{API}/worker/heartbeat", HeartbeatOut)

    def deregister(self, reason: str) -> None:
        self.request("POST", f"{API}/worker/deregister", params={"reason": reason})

    def drain_self(self) -> None:
        self.request("POST", f"{API}/worker/drain")

    def poll(self, wait: float) -> PollOut:
        return self._post(f"{API}/worker/poll", PollOut, params={"wait": wait}, timeout=wait + HELD_ANSWER_MARGIN)

    def report(
        self, run_id: str, lease: int, state: RunState, note: str = "", changes: dict[str, int] | None = None,
        via: Sequence[RunState] = (),
    ) -> RunOut:
        body = ReportIn(lease=lease, state=state, note=note, changes=changes, via=list(via))
        return self._post(f"{API}/worker/runs/{_seg(run_id)}/transition", RunOut, body)

    def put_workspace(self, run_id: str, lease: int, sealed: bytes) -> None:
        self.request("PUT", f"{API}/worker/runs/{_seg(run_id)}/workspace", params={"lease": lease}, content=sealed,
                     headers={"Content-Type": "application/octet-stream"}, timeout=300)

    def get_workspace(self, run_id: str, lease: int) -> bytes:
        return self.request("GET", f"{API}/worker/runs/{_seg(run_id)}/workspace", params={"lease": lease},
                            timeout=300).content

    def put_outputs(self, run_id: str, lease: int, outputs: Sequence[OutputIO]) -> None:
        body = OutputsIn(lease=lease, outputs=list(outputs))
        self.request("POST", f"{API}/worker/runs/{_seg(run_id)}/outputs", json=body.model_dump(mode="json"))

    def send_logs(self, run_id: str, lease: int, blocks: Sequence[LogBlock], end: RunEnd | None = None,
                  take_next: bool = False) -> LogsAck:
        # The LogsIn document, encoded directly: a batch may hold megabytes.
        doc: dict[str, object] = {"lease": lease,
                                  "blocks": [{"seq": b.seq, "ts": b.ts, "text": b.text} for b in blocks]}
        if end is not None:
            ending: dict[str, object] = {"state": end.state.value, "note": end.note, "changes": end.changes}
            if end.via:
                ending["via"] = [phase.value for phase in end.via]
            doc["end"] = ending
            doc["take_next"] = take_next
        body = jsonfast.dumps(doc)
        response = self.request("POST", f"{API}/worker/runs/{_seg(run_id)}/logs", content=body,
                                headers={"Content-Type": "application/json"})
        return LogsAck.model_validate_json(response.content)

    def source_archive(self, upload_id: str) -> bytes:
        return self.request("GET", f"{API}/worker/sources/{_seg(upload_id)}", timeout=300).content

"""Executes one assigned run: policy, workspace, session, phases, logs, reports."""

from __future__ import annotations

import contextlib
import json
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

from cryptography.hazmat.primitives.asymmetric import rsa
from pydantic import TypeAdapter

from runyard import retry
from runyard.client import WorkerApi
from runyard.config import LauncherSettings
from runyard.core.durations import format_duration
from runyard.core.errors import Conflict, RunyardError, Unauthorized, Unavailable, WorkerGone
from runyard.core.limits import MAX_TEXT
from runyard.core.models import Assignment, Run, RunEnd, Stack, Tool
from runyard.core.states import RunKind, RunState
from runyard.crypto import SealError, seal, seal_text, secret_context, unseal, unseal_text, workspace_context
from runyard.launcher import workspace
from runyard.launcher.executors import Executor, ExecutorError, RunSpec, Session, StepStopped
from runyard.launcher.logship import LINGER, LogShipper
from runyard.launcher.policy import InitializationPolicy
from runyard.launcher.reports import PhaseReports
from runyard.launcher.workflows import (
    OUTPUTS_JSON,
    PLAN_JSON,
    TERRAFORM_TOOLS,
    ToolCommands,
    ansible_env,
    commands_for,
    count_changes,
    prepare_terraform,
    state_env,
)
from runyard.launcher.workspace import pack_tree, unpack_tree
from runyard.masking import StreamMasker
from runyard.wire import OutputIO

log = logging.getLogger("runyard.launcher")
PROXY_VARIABLES = frozenset({"HTTP_PROXY", "HTTPS_PROXY", "NO_PROXY", "ALL_PROXY"})
T = TypeVar("T")


class RunAbandoned(Exception):
    """The server no longer lets this worker report on the run."""


@dataclass
class RunContext:
    """What the launcher hands every run: its settings and shared parts."""

    client: WorkerApi
    executor: Executor
    settings: LauncherSettings
    env: dict[str, str]  # the launcher's own environment
    key: rsa.RSAPrivateKey  # the pool's private key: opens secrets and saved workspaces
    worker: dict[str, Any] = field(default_factory=dict)  # id, pool, metadata: policy input
    policy: InitializationPolicy | None = None
    ca_bundle: Path | None = None  # system and extra root CAs, for runs
    clock: Callable[[], float] = time.monotonic
    sleep: Callable[[float], None] = time.sleep
    # Set when the launcher leaves for good (its interruption grace is over):
    # calls to a server that is away are given up instead of retried.
    leaving: threading.Event = field(default_factory=threading.Event)
    tick: float = 0.2  # how often the watchdog looks at the timeouts
    linger: float = LINGER  # how long a batch of log lines waits for more before it goes
    sources: workspace.SourceCache = field(default_factory=workspace.SourceCache)  # shared by the runs
    # Whether the worker takes another run after this one: then the run's end
    # asks for it, and the answer may carry it (no poll between the two).
    wants_next: Callable[[], bool] = lambda: False

    def pool_public_key(self) -> rsa.RSAPublicKey:
        return self.key.public_key()


class RunExecution:
    """One run on this worker, from PREPARING to its end."""

    def __init__(self, ctx: RunContext, assignment: Assignment) -> None:
        self.ctx = ctx
        self.client = ctx.client
        self.run = assignment.run
        self.stack = assignment.stack
        self.lease = assignment.lease
        self.settings = ctx.settings
        self.stop = threading.Event()
        self.stop_reason = "stopped by user"
        self.stop_state = RunState.STOPPED
        self.unopened: list[str] = []
        self.run_token = assignment.run_token
        self.passed_env = ctx.settings.passed_env(ctx.env, self.run.kind.writes)
        self.variables, secrets = self._open_variables()
        mask = [ctx.env[n] for n in ctx.settings.mask_envs if ctx.env.get(n)]
        self.masker = StreamMasker([*secrets, *mask], tokens=[self.run_token])
        self.shipper = LogShipper(
            ctx.client, self.run.id, self.stack.id, self.lease, self.request_stop,
            stdout_json=ctx.settings.run_logs_on_standard_output_enabled, start_seq=assignment.log_seq,
            sleep=ctx.sleep, leaving=ctx.leaving, linger=ctx.linger,
        )
        self._ws: Path | None = None
        self._session: Session | None = None
        self.next: Assignment | None = None  # the worker's next run, if the end's answer carried it
        # Phases go to the server together where they may (reports.py).
        self.reports = PhaseReports(self._send_report, ctx.settings.report_hold,
                                    lambda exc: self.request_stop(f"the server refused a report: {exc}"))
        self.started = ctx.clock()
        self.last_output = self.started

    def _open_variables(self) -> tuple[dict[str, str], list[str]]:
        """The stack's variables, secret ones unsealed with the pool's key."""
        values, secrets = {}, []
        for var in self.stack.env:
            if not var.secret:
                values[var.name] = var.value
                continue
            try:
                values[var.name] = unseal_text(self.ctx.key, var.value, secret_context(self.stack.id, var.name))
            except SealError:
                # Not ours to open (another pool's key?): the run must not start with it.
                values[var.name] = ""
                self.unopened.append(var.name)
                continue
            secrets.append(values[var.name])
        return values, secrets

    def request_stop(self, reason: str = "stopped by user", state: RunState = RunState.STOPPED) -> None:
        if not self.stop.is_set():
            self.stop_reason = reason
            self.stop_state = state
            self.stop.set()

    # output -------------------------------------------------------------------

    def output(self, chunk: str) -> None:
        self.last_output = self.ctx.clock()
        lines = self.masker.feed(chunk)
        if lines:
            self.shipper.write_lines(lines)

    def _flush_output(self) -> None:
        lines = self.masker.flush()
        if lines:
            self.shipper.write_lines(lines)

    def say(self, text: str) -> None:
        """A line from runyard itself (masked like everything else)."""
        self._flush_output()
        self.output(f"[runyard] {text}\n")
        self._flush_output()

    # reports ------------------------------------------------------------------

    def report(self, state: RunState, note: str = "", changes: dict[str, int] | None = None) -> None:
        with self.reports.next() as passed:
            self._send_report(state, passed, _summary(note), changes)

    def _send_report(self, state: RunState, passed: tuple[RunState, ...], note: str = "",
                     changes: dict[str, int] | None = None) -> None:
        self._call(lambda: self.client.report(self.run.id, self.lease, state, note, changes, passed),
                   f"reporting {state.value}")

    def _end(self, state: RunState, note: str, changes: dict[str, int] | None = None) -> RunState:
        """Ship every log line, then report the end (the server then seals the
        log): the last batch of lines and the end go in one request."""
        if note and state not in (RunState.FINISHED, RunState.UNCONFIRMED):
            self.say(note)
        self._flush_output()
        try:
            last = self.shipper.close(hold_last=True)
        except RunyardError as exc:
            raise RunAbandoned(str(exc)) from exc
        # Container, processes and workspace are gone before anyone sees the run end.
        self._release()
        take_next = self.ctx.wants_next()
        with self.reports.next() as passed:
            end = RunEnd(state, _summary(note), changes, passed)
            ack = self._call(lambda: self.client.send_logs(self.run.id, self.lease, last, end, take_next),
                             f"reporting {state.value}")
        if ack.assignment is not None:
            self.next = ack.assignment.to_domain()
        return state

    def _release(self) -> None:
        """Remove what the run left on this host (idempotent)."""
        self.stop.set()  # ends the watchdog (and any command still running)
        session, self._session = self._session, None
        if session is not None:
            session.close()
        ws, self._ws = self._ws, None
        if ws is not None:
            workspace.remove(ws)

    # the run ------------------------------------------------------------------

    def execute(self) -> RunState:
        """Run to the end; returns the state reported (or raises RunAbandoned)."""
        watchdog = threading.Thread(target=self._watchdog, name=f"watchdog-{self.run.id}", daemon=True)
        try:
            if self.unopened:
                return self._end(RunState.FAILED, f"cannot open secret variable(s) {', '.join(self.unopened)} "
                                                  "with this pool's key")
            denied = self._policy_denials()
            if denied:
                return self._end(RunState.FAILED, "denied by the run initialization policy: " + "; ".join(denied))
            self.reports.hold(RunState.PREPARING)  # nothing of the user's runs in it
            watchdog.start()
            ws = self._ws = workspace.create(self.settings.work_dir, self.run.id)
            # A confirmed run resumes from the workspace its plan left, on any worker.
            resuming = any(t.state == RunState.CONFIRMED for t in self.run.transitions)
            try:
                if resuming:
                    self._restore_workspace(ws)
                else:
                    workspace.fetch_source(self.stack, ws, self._upload, self.settings.allow_local_git_sources)
                    if self.stack.tool in TERRAFORM_TOOLS:
                        prepare_terraform(ws / self.stack.project_root)
                session = self._session = self.ctx.executor.open(self._spec(ws))
            except _Ended as end:
                return self._end(end.state, end.note)
            except (workspace.WorkspaceError, ExecutorError, RunyardError) as exc:
                return self._end(RunState.FAILED, f"preparing the run failed: {exc}")
            return self._phases(session, ws, resuming)
        except RunAbandoned as exc:
            self.stop.set()
            log.warning("run %s abandoned: %s", self.run.id, exc)
            raise
        except Exception as exc:
            # A bug or an unexpected failure must end this run, not the launcher.
            log.exception("run %s failed inside the launcher", self.run.id)
            return self._end(RunState.FAILED, f"launcher error: {type(exc).__name__}: {exc}")
        finally:
            self.reports.close()
            self._release()
            if self.shipper.failure is None:
                with contextlib.suppress(RunyardError):
                    self.shipper.close(timeout=0)

    def _spec(self, ws: Path) -> RunSpec:
        env = ansible_env() if self.stack.tool == Tool.ANSIBLE else {}
        env.update(self.variables)
        env.update(self.passed_env)
        if self.stack.tool in TERRAFORM_TOOLS:
            endpoint = self.ctx.executor.reach(self.client.endpoint)
            env.update(state_env(endpoint, self.stack.id, self.run_token))
        # Proxies the launcher has, the run has (tools read either case).
        env.update({k: v for k, v in self.ctx.env.items() if k.upper() in PROXY_VARIABLES})
        env.update(
            RUNYARD_RUN_ID=self.run.id,
            RUNYARD_STACK_ID=self.stack.id,
            RUNYARD_STACK_NAME=self.stack.name,
            RUNYARD_RUN_KIND=self.run.kind.value,
        )
        image = self.stack.runner_image or (
            self.settings.default_ansible_runner_image if self.stack.tool == Tool.ANSIBLE
            else self.settings.default_runner_image
        )
        writes = self.run.kind.writes
        return RunSpec(self.run.id, self.stack.id, ws, image, env, writes, tuple(self.settings.mounts(writes)),
                       ca_bundle=self.ctx.ca_bundle, user=self.settings.worker_user)

    def _policy_denials(self) -> list[str]:
        if self.ctx.policy is None:
            return []
        data = {
            "run": {k: v for k, v in _as_json(self.run).items() if k != "transitions"},
            # Variables by name only: a policy never sees a value.
            "stack": _as_json(self.stack) | {"env": [{"name": e.name, "secret": e.secret} for e in self.stack.env]},
            "worker": self.ctx.worker,
        }
        return self.ctx.policy.evaluate(data)

    def _watchdog(self) -> None:
        """Kill a run that went quiet or ran too long (launcher timeouts)."""
        while not self.stop.wait(self.ctx.tick):
            reason = self.timed_out(self.ctx.clock())
            if reason:
                self.request_stop(reason, RunState.FAILED)

    def timed_out(self, now: float) -> str:
        """Why the run must be killed at ``now`` by the launcher's timeouts ("" if not)."""
        quiet_limit = self.settings.launcher_logs_timeout
        total_limit = self.settings.launcher_run_timeout
        if quiet_limit and now - self.last_output > quiet_limit:
            return f"printed nothing for {format_duration(quiet_limit)}: killed (RUNYARD_LAUNCHER_LOGS_TIMEOUT)"
        if total_limit and now - self.started > total_limit:
            return f"ran longer than {format_duration(total_limit)}: killed (RUNYARD_LAUNCHER_RUN_TIMEOUT)"
        return ""

    # phases -------------------------------------------------------------------

    def _step(self, session: Session, name: str, command: str) -> None:
        """Run one command of the run; raises _Ended when it must not go on."""
        if not command:
            return
        if self.stop.is_set():
            raise _Ended(self.stop_state, self.stop_reason)
        workdir = self.stack.project_root
        self.say(f"{name}: {session.describe(command, workdir)}" if self.settings.debug else name)
        try:
            code = session.run(command, workdir, self.output, self.stop)
        except StepStopped:
            raise _Ended(self.stop_state, self.stop_reason) from None
        except ExecutorError as exc:
            raise _Ended(RunState.FAILED, f"{name} command could not start: {exc}") from None
        self._flush_output()
        if self.stop.is_set():  # a timeout fired as the command ended
            raise _Ended(self.stop_state, self.stop_reason)
        if code != 0:
            raise _Ended(RunState.FAILED, f"{name} command exited with code {code}")

    def _phase(self, session: Session, state: RunState, name: str, command: str, hooks: str = "") -> None:
        """Report ``state``, then run the phase with its before/after hooks.
        The server knows of the phase before its first command runs if the
        run may change something; else it may hear of it with the next report."""
        if self.stop.is_set():
            raise _Ended(self.stop_state, self.stop_reason)
        hooks = hooks or name
        if not command and not any(self.stack.hooks.get(f"{when}_{hooks}")
                                            for when in ("before", "after")):
            self.reports.ride(state)  # nothing runs in it
            return
        if self.run.kind.writes:
            self.reports.report(state)
        else:
            self.reports.hold(state)
        for hook in self.stack.hooks.get(f"before_{hooks}", []):
            self._step(session, f"before_{hooks} hook", hook)
        self._step(session, name, command)
        for hook in self.stack.hooks.get(f"after_{hooks}", []):
            self._step(session, f"after_{hooks} hook", hook)

    def _phases(self, session: Session, ws: Path, resuming: bool) -> RunState:
        tool = commands_for(self.stack)
        kind = self.run.kind
        try:
            if resuming:
                return self._apply(session, ws, tool)
            if kind == RunKind.TASK:
                if tool.plans_changes:
                    self._phase(session, RunState.INITIALIZING, "init", tool.init)
                self._phase(session, RunState.PERFORMING, "task", self.run.command, hooks="perform")
                return self._end(RunState.FINISHED, "")
            self._phase(session, RunState.INITIALIZING, "init", tool.init)
            self._phase(session, RunState.PLANNING, "plan", tool.plan)
            changes = self._changes(ws, tool)
            if kind in (RunKind.PROPOSED, RunKind.DRIFT_DETECTION):
                return self._end(RunState.FINISHED, self._plan_note(changes), changes)
            if changes is not None and not any(changes.values()):
                return self._end(RunState.FINISHED, "no changes", changes)
            if self.stack.autodeploy:
                return self._apply(session, ws, tool, changes)
            self._save_workspace(ws)
            return self._end(RunState.UNCONFIRMED, "waiting for confirmation", changes)
        except _Ended as end:
            return self._end(end.state, end.note)

    def _apply(self, session: Session, ws: Path, tool: ToolCommands, changes: dict[str, int] | None = None) -> RunState:
        self._phase(session, RunState.APPLYING, "apply", tool.apply)
        if tool.outputs:
            self._step(session, "outputs", tool.outputs)
            self._upload_outputs(ws / self.stack.project_root / OUTPUTS_JSON)
        return self._end(RunState.FINISHED, "", changes)

    def _changes(self, ws: Path, tool: ToolCommands) -> dict[str, int] | None:
        if not tool.plans_changes:
            return None
        plan_json = ws / self.stack.project_root / PLAN_JSON
        if not plan_json.is_file():
            return None  # a custom plan command: counts unknown
        changes = count_changes(plan_json)
        self.say(self._plan_note(changes))
        return changes

    def _plan_note(self, changes: dict[str, int] | None) -> str:
        if changes is None:
            return ""
        counts = f"{changes['add']} to add, {changes['change']} to change, {changes['destroy']} to destroy"
        if self.run.kind == RunKind.DRIFT_DETECTION:
            return ("drift detected: " + counts) if any(changes.values()) else "no drift"
        return counts if any(changes.values()) else "no changes"

    def _save_workspace(self, ws: Path) -> None:
        """Seal the plan's workspace to the pool's key and hand it to the server."""
        sealed = seal(self.ctx.pool_public_key(), pack_tree(ws), workspace_context(self.run.id))
        self._call(lambda: self.client.put_workspace(self.run.id, self.lease, sealed), "saving the workspace")

    def _restore_workspace(self, ws: Path) -> None:
        blob = self._call(lambda: self.client.get_workspace(self.run.id, self.lease))
        try:
            data = unseal(self.ctx.key, blob, workspace_context(self.run.id))
        except SealError as exc:
            raise _Ended(RunState.FAILED, f"the saved workspace cannot be opened: {exc}") from exc
        unpack_tree(data, ws)

    def _upload_outputs(self, path: Path) -> None:
        if not path.is_file():
            return
        outputs = []
        for name, doc in json.loads(path.read_text()).items():
            if not doc.get("sensitive"):
                outputs.append(OutputIO(name=name, value=doc.get("value")))
            elif self.settings.sensitive_output_upload_enabled:
                sealed = seal_text(self.ctx.pool_public_key(), json.dumps(doc.get("value")),
                                   f"stack:{self.stack.id}:output:{name}")
                outputs.append(OutputIO(name=name, sensitive=True, sealed=sealed))
            else:
                outputs.append(OutputIO(name=name, sensitive=True))  # its name only
        path.unlink()
        self._call(lambda: self.client.put_outputs(self.run.id, self.lease, outputs))

    def _upload(self, upload_id: str) -> bytes:
        """An uploaded source: fetched once per launcher, and (like every call
        a run makes) retried while the server is away, as in a failover."""
        return self.ctx.sources.get(upload_id, lambda: self._call(lambda: self.client.source_archive(upload_id),
                                                                  "fetching the source"))

    def _call(self, fn: Callable[[], T], what: str = "a call to the server") -> T:
        """A worker call retried while the server is away, until the launcher
        leaves (told to stop, its grace over); refusals end the run."""
        try:
            return retry.call(fn, Unavailable, stop=self.ctx.leaving, sleep=self.ctx.sleep, log=log,
                              what=f"{what} for run {self.run.id}")
        except Unavailable as exc:
            raise RunAbandoned(f"the server is unreachable and the launcher is leaving: {exc}") from exc
        except (Conflict, WorkerGone, Unauthorized) as exc:
            raise RunAbandoned(str(exc)) from exc


def _summary(note: str) -> str:
    """A report's note: the whole text is in the log, the note is its summary."""
    return note if len(note) <= MAX_TEXT else note[: MAX_TEXT - 3] + "..."


_RUN_ADAPTER: TypeAdapter[Run] = TypeAdapter(Run)
_STACK_ADAPTER: TypeAdapter[Stack] = TypeAdapter(Stack)


def _as_json(record: Run | Stack) -> dict[str, Any]:
    adapter: TypeAdapter[Any] = _RUN_ADAPTER if isinstance(record, Run) else _STACK_ADAPTER
    doc: dict[str, Any] = adapter.dump_python(record, mode="json")
    return doc


class _Ended(Exception):
    """A phase ended the run: how, and why."""

    def __init__(self, state: RunState, note: str) -> None:
        super().__init__(note)
        self.state = state
        self.note = note

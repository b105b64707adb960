"""Executes one assigned run: policy, workspace, session, phases, logs, reports."""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from runyard.client import Client
from runyard.config import LauncherSettings
from runyard.core.durations import format_duration
from runyard.core.errors import Conflict, RunyardError, Unauthorized, Unavailable, WorkerGone
from runyard.core.masking import StreamMasker
from runyard.core.models import Tool
from runyard.core.states import RunState
from runyard.launcher import workspace
from runyard.launcher.executors import Executor, ExecutorError, RunSpec, Session, StepStopped
from runyard.launcher.logship import LogShipper
from runyard.launcher.policy import InitializationPolicy
from runyard.launcher.workflows import shell_phases
from runyard.wire import AssignmentOut

log = logging.getLogger("runyard.launcher")
BACKOFF_MAX = 5.0


class RunAbandoned(Exception):
    """The server no longer lets this worker report on the run."""


@dataclass
class RunContext:
    """What the launcher hands every run: its settings and shared parts."""

    client: Client
    executor: Executor
    settings: LauncherSettings
    env: dict[str, str]  # the launcher's own environment
    worker: dict[str, Any] = field(default_factory=dict)  # id, pool, metadata: policy input
    policy: InitializationPolicy | None = None
    clock: Callable[[], float] = time.monotonic


class RunExecution:
    """One run on this worker, from PREPARING to its end."""

    def __init__(self, ctx: RunContext, assignment: AssignmentOut) -> None:
        self.ctx = ctx
        self.client = ctx.client
        self.run = assignment.run
        self.stack = assignment.stack
        self.lease = assignment.lease
        self.settings = ctx.settings
        self.stop = threading.Event()
        self.stop_reason = "stopped by user"
        self.stop_state = RunState.STOPPED
        self.passed_env = ctx.settings.passed_env(ctx.env, self.run.kind.writes)
        mask = [ctx.env[n] for n in ctx.settings.mask_envs if ctx.env.get(n)]
        self.masker = StreamMasker([e.value for e in self.stack.env if e.secret] + mask)
        self.shipper = LogShipper(
            ctx.client, self.run.id, self.stack.id, self.lease, self.request_stop,
            stdout_json=ctx.settings.run_logs_on_standard_output_enabled,
        )
        self.started = ctx.clock()
        self.last_output = self.started

    def request_stop(self, reason: str = "stopped by user", state: RunState = RunState.STOPPED) -> None:
        if not self.stop.is_set():
            self.stop_reason = reason
            self.stop_state = state
            self.stop.set()

    # output -------------------------------------------------------------------

    def output(self, chunk: str) -> None:
        self.last_output = self.ctx.clock()
        for line in self.masker.feed(chunk):
            self.shipper.write(line)

    def _flush_output(self) -> None:
        for line in self.masker.flush():
            self.shipper.write(line)

    def say(self, text: str) -> None:
        """A line from runyard itself (masked like everything else)."""
        self._flush_output()
        self.output(f"[runyard] {text}\n")
        self._flush_output()

    # reports ------------------------------------------------------------------

    def report(self, state: RunState, note: str = "") -> None:
        backoff = 0.2
        while True:
            try:
                self.client.report(self.run.id, self.lease, state, note)
                return
            except Unavailable as exc:
                log.warning("reporting %s for run %s failed, retrying: %s", state.value, self.run.id, exc)
                time.sleep(backoff)
                backoff = min(backoff * 2, BACKOFF_MAX)
            except (Conflict, WorkerGone, Unauthorized) as exc:
                raise RunAbandoned(str(exc)) from exc

    def _end(self, state: RunState, note: str) -> RunState:
        """Flush every log line first, then report the end: the server seals the log."""
        if note and state != RunState.FINISHED:
            self.say(note)
        self._flush_output()
        try:
            self.shipper.close()
        except RunyardError as exc:
            raise RunAbandoned(str(exc)) from exc
        self.report(state, note)
        return state

    # the run ------------------------------------------------------------------

    def execute(self) -> RunState:
        """Run to the end; returns the state reported (or raises RunAbandoned)."""
        ws: Path | None = None
        session: Session | None = None
        watchdog = threading.Thread(target=self._watchdog, name=f"watchdog-{self.run.id}", daemon=True)
        try:
            denied = self._policy_denials()
            if denied:
                return self._end(RunState.FAILED, "denied by the run initialization policy: " + "; ".join(denied))
            self.report(RunState.PREPARING)
            watchdog.start()
            ws = workspace.create(self.settings.work_dir, self.run.id)
            try:
                workspace.fetch_source(self.client, self.stack, ws)
                session = self.ctx.executor.open(self._spec(ws))
            except (workspace.WorkspaceError, ExecutorError, RunyardError) as exc:
                return self._end(RunState.FAILED, f"preparing the run failed: {exc}")
            return self._phases(session)
        except RunAbandoned as exc:
            self.stop.set()
            log.warning("run %s abandoned: %s", self.run.id, exc)
            raise
        except Exception as exc:
            # A bug or an unexpected failure must end this run, not the launcher.
            log.exception("run %s failed inside the launcher", self.run.id)
            return self._end(RunState.FAILED, f"launcher error: {type(exc).__name__}: {exc}")
        finally:
            self.stop.set()  # ends the watchdog
            if session is not None:
                session.close()
            if self.shipper.failure is None:
                with contextlib.suppress(RunyardError):
                    self.shipper.close(timeout=0)
            if ws is not None:
                workspace.remove(ws)

    def _spec(self, ws: Path) -> RunSpec:
        env = {e.name: e.value for e in self.stack.env}
        env.update(self.passed_env)
        env.update(
            RUNYARD_RUN_ID=self.run.id,
            RUNYARD_STACK_ID=self.stack.id,
            RUNYARD_STACK_NAME=self.stack.name,
            RUNYARD_RUN_KIND=self.run.kind.value,
        )
        image = self.stack.runner_image or (
            self.settings.default_ansible_runner_image if self.stack.tool == Tool.ANSIBLE.value
            else self.settings.default_runner_image
        )
        writes = self.run.kind.writes
        return RunSpec(self.run.id, self.stack.id, ws, image, env, writes, tuple(self.settings.mounts(writes)))

    def _policy_denials(self) -> list[str]:
        if self.ctx.policy is None:
            return []
        data = {
            "run": self.run.model_dump(mode="json", exclude={"transitions"}),
            "stack": self.stack.model_dump(mode="json", exclude={"env"}) | {
                "env": [{"name": e.name, "secret": e.secret} for e in self.stack.env]
            },
            "worker": self.ctx.worker,
        }
        return self.ctx.policy.evaluate(data)

    def _watchdog(self) -> None:
        """Kill a run that went quiet or ran too long (launcher timeouts)."""
        quiet_limit = self.settings.launcher_logs_timeout
        total_limit = self.settings.launcher_run_timeout
        while not self.stop.wait(0.2):
            now = self.ctx.clock()
            if quiet_limit and now - self.last_output > quiet_limit:
                self.request_stop(
                    f"printed nothing for {format_duration(quiet_limit)}: killed (RUNYARD_LAUNCHER_LOGS_TIMEOUT)",
                    RunState.FAILED,
                )
            elif total_limit and now - self.started > total_limit:
                self.request_stop(
                    f"ran longer than {format_duration(total_limit)}: killed (RUNYARD_LAUNCHER_RUN_TIMEOUT)",
                    RunState.FAILED,
                )

    def _phases(self, session: Session) -> RunState:
        for phase in shell_phases(self.run, self.stack):
            if self.stop.is_set():
                return self._end(self.stop_state, self.stop_reason)
            self.report(phase.state)
            if not phase.command:
                continue
            workdir = self.stack.project_root
            if self.settings.debug:
                self.say(f"{phase.name}: {session.describe(phase.command, workdir)}")
            else:
                self.say(phase.name)
            try:
                code = session.run(phase.command, workdir, self.output, self.stop)
            except StepStopped:
                return self._end(self.stop_state, self.stop_reason)
            self._flush_output()
            if self.stop.is_set():  # a timeout fired as the command ended
                return self._end(self.stop_state, self.stop_reason)
            if code != 0:
                return self._end(RunState.FAILED, f"{phase.name} command exited with code {code}")
        return self._end(RunState.FINISHED, "")

"""Executes one assigned run: workspace, phases, logs, reports."""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from collections.abc import Callable
from pathlib import Path

from runyard.client import Client
from runyard.core.errors import Conflict, RunyardError, Unauthorized, Unavailable, WorkerGone
from runyard.core.masking import StreamMasker
from runyard.core.states import RunState
from runyard.launcher import workspace
from runyard.launcher.executors import Executor, Step, StepStopped
from runyard.launcher.logship import LogShipper
from runyard.launcher.workflows import shell_phases
from runyard.wire import AssignmentOut

log = logging.getLogger("runyard.launcher")
BACKOFF_MAX = 5.0


class RunAbandoned(Exception):
    """The server no longer lets this worker report on the run."""


class RunExecution:
    """One run on this worker, from PREPARING to its end."""

    def __init__(
        self,
        client: Client,
        executor: Executor,
        assignment: AssignmentOut,
        work_dir: Path,
        mask_values: list[str],
        stdout_json: bool = False,
        debug: bool = False,
        is_stopping: Callable[[], bool] = lambda: False,
    ) -> None:
        self.client = client
        self.executor = executor
        self.run = assignment.run
        self.stack = assignment.stack
        self.lease = assignment.lease
        self.work_dir = work_dir
        self.debug = debug
        self.is_stopping = is_stopping
        self.stop = threading.Event()
        self.stop_reason = "stopped by user"
        secrets = [e.value for e in self.stack.env if e.secret] + mask_values
        self.masker = StreamMasker(secrets)
        self.shipper = LogShipper(
            client, self.run.id, self.stack.id, self.lease, self.request_stop, stdout_json=stdout_json
        )

    def request_stop(self, reason: str = "stopped by user") -> None:
        if not self.stop.is_set():
            self.stop_reason = reason
            self.stop.set()

    # output -------------------------------------------------------------------

    def output(self, chunk: str) -> None:
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

    def _end(self, state: RunState, note: str) -> None:
        """Flush every log line first, then report the end: the server seals the log."""
        self._flush_output()
        try:
            self.shipper.close()
        except RunyardError as exc:
            raise RunAbandoned(str(exc)) from exc
        self.report(state, note)

    # the run ------------------------------------------------------------------

    def execute(self) -> RunState:
        """Run to the end; returns the state reported (or raises RunAbandoned)."""
        ws: Path | None = None
        try:
            self.report(RunState.PREPARING)
            ws = workspace.create(self.work_dir, self.run.id)
            try:
                workspace.fetch_source(self.client, self.stack, ws)
            except (workspace.WorkspaceError, RunyardError) as exc:
                self.say(f"preparing the workspace failed: {exc}")
                self._end(RunState.FAILED, f"preparing the workspace failed: {exc}")
                return RunState.FAILED
            return self._phases(ws)
        except RunAbandoned as exc:
            self.stop.set()
            log.warning("run %s abandoned: %s", self.run.id, exc)
            raise
        finally:
            if self.shipper.failure is None:
                with contextlib.suppress(RunyardError):
                    self.shipper.close(timeout=0)
            if ws is not None:
                workspace.remove(ws)

    def _phases(self, ws: Path) -> RunState:
        env = {e.name: e.value for e in self.stack.env}
        env.update(
            RUNYARD_RUN_ID=self.run.id,
            RUNYARD_STACK_ID=self.stack.id,
            RUNYARD_STACK_NAME=self.stack.name,
            RUNYARD_RUN_KIND=self.run.kind.value,
        )
        for phase in shell_phases(self.run, self.stack):
            if self.stop.is_set():
                self._end(RunState.STOPPED, self.stop_reason)
                return RunState.STOPPED
            self.report(phase.state)
            if not phase.command:
                continue
            self.say(f"{phase.name}: {phase.command}" if self.debug else f"{phase.name}")
            step = Step(phase.command, ws, self.stack.project_root, env, self.stack.runner_image)
            try:
                code = self.executor.run(step, self.output, self.stop)
            except StepStopped:
                self.say(f"{phase.name} was stopped: {self.stop_reason}")
                self._end(RunState.STOPPED, self.stop_reason)
                return RunState.STOPPED
            self._flush_output()
            if code != 0:
                note = f"{phase.name} command exited with code {code}"
                self.say(note)
                self._end(RunState.FAILED, note)
                return RunState.FAILED
        self._end(RunState.FINISHED, "")
        return RunState.FINISHED

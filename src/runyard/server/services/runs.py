"""Runs: the state machine (one writer of run state), triggers, people's
decisions, worker reports, cancellation. Which run goes where: dispatch.py."""

from __future__ import annotations

import builtins
import datetime as dt
import logging
import re
import threading
from collections.abc import Sequence
from typing import Protocol

from runyard.core import limits as lim
from runyard.core.errors import Conflict, InvalidInput, NotFound, StaleLease
from runyard.core.ids import new_ulid
from runyard.core.models import LogBlock, Output, Run, RunEnd, Transition, Worker
from runyard.core.states import SCHEDULABLE, Actor, RunKind, RunState, check_transition
from runyard.server.db.repository import Repository
from runyard.server.notifier import pool_topic, run_topic
from runyard.server.services import Context
from runyard.server.services.logs import LogService

log = logging.getLogger("runyard.server")
_TRIGGER_KEY = re.compile(lim.TRIGGER_KEY_PATTERN)
CANCELED_BY_USER = "canceled by user"  # the note of a cancel's move


def workspace_key(run_id: str) -> str:
    return f"workspaces/{run_id}.sealed"


class RunMetrics(Protocol):
    def assigned(self, pool_id: str, waited: float) -> None: ...

    def ended_run(self, pool_id: str, state: RunState, took: float) -> None: ...


class _NoMetrics:
    def assigned(self, pool_id: str, waited: float) -> None:
        pass

    def ended_run(self, pool_id: str, state: RunState, took: float) -> None:
        pass


class RunService:
    def __init__(self, ctx: Context, logs: LogService, metrics: RunMetrics | None = None) -> None:
        self.ctx = ctx
        self.logs = logs
        self.metrics: RunMetrics = metrics or _NoMetrics()
        # Runs that ended here since the last after_ends pass: whether each
        # left a workspace to drop.
        self._ended: dict[str, bool] = {}
        self._lock = threading.Lock()

    # people ---------------------------------------------------------------

    def trigger(self, stack_ref: str, kind: RunKind, command: str = "", key: str | None = None) -> Run:
        """Queue a run. With a ``key`` (the client's Idempotency-Key), a trigger
        sent again, to this server or another, gets the run the first one
        queued; the same key with another stack, kind or command is a Conflict."""
        if kind == RunKind.TASK and not command.strip():
            raise InvalidInput("a task needs a command: --command 'CMD'")
        if key is not None and not _TRIGGER_KEY.match(key):
            raise InvalidInput(f"an Idempotency-Key is 1 to {lim.MAX_TRIGGER_KEY} letters, digits and . _ : + = / -")
        now = self.ctx.clock()
        stamp = dt.datetime.fromtimestamp(now, dt.UTC)
        with self.ctx.tx() as repo:
            stack = repo.stack(stack_ref)
            if stack is None:
                raise NotFound(f"no stack {stack_ref!r}: `runyard stack list` shows the stacks")
            if kind == RunKind.DRIFT_DETECTION:
                pool = repo.pool(stack.pool_id)
                if pool is None or not pool.drift_detection_limit:
                    raise InvalidInput("the stack's pool has drift detection disabled: set its drift-detection limit")
            run = Run(
                id=new_ulid(now),
                stack_id=stack.id,
                pool_id=stack.pool_id,
                kind=kind,
                state=RunState.QUEUED,
                command=command,
                worker_id=None,
                lease=0,
                stop_requested=False,
                reason="",
                created_at=stamp,
                updated_at=stamp,
                transitions=(Transition(RunState.QUEUED, stamp),),
            )
            if not repo.add_run(run, key or ""):
                assert key  # only a key can be held already
                first = repo.run_by_trigger_key(key)
                assert first is not None  # the row that holds it
                if (first.stack_id, first.kind, first.command) != (stack.id, kind, command):
                    raise Conflict(f"the Idempotency-Key {key!r} was sent with another run ({first.id}): "
                                   "a new run needs a new key")
                return first
            repo.add_transitions(run.id, now, [(RunState.QUEUED, "")])
        self.ctx.notifier.notify(pool_topic(run.pool_id))
        return run  # as stored: no second read

    def get(self, run_id: str) -> Run:
        with self.ctx.read() as repo:
            run = repo.run(run_id)
        if run is None:
            raise NotFound(f"no run {run_id!r}: `runyard run list` shows the runs")
        return run

    def stop_requested(self, run_id: str) -> bool:
        with self.ctx.read() as repo:
            run = repo.run(run_id, with_transitions=False)
        return bool(run and run.stop_requested)

    def list(self, stack_ref: str | None = None, limit: int = 100) -> list[Run]:
        with self.ctx.read() as repo:
            stack_id = None
            if stack_ref:
                stack = repo.stack(stack_ref)
                if stack is None:
                    raise NotFound(f"no stack {stack_ref!r}")
                stack_id = stack.id
            return repo.runs(stack_id=stack_id, limit=limit)

    def confirm(self, run_id: str) -> Run:
        """Approve an UNCONFIRMED run's plan: any worker of the pool applies it."""
        return self._decide(run_id, RunState.CONFIRMED, "confirmed by user")

    def discard(self, run_id: str) -> Run:
        return self._decide(run_id, RunState.DISCARDED, "discarded by user")

    def _decide(self, run_id: str, target: RunState, note: str) -> Run:
        run = self.get(run_id)
        if run.state != RunState.UNCONFIRMED:
            if _decided(run, target):
                return run  # the same decision sent again (its answer was lost): it stands
            raise Conflict(f"run {run.id} is {run.state.value}: only an UNCONFIRMED run can be confirmed or discarded")
        with self.ctx.tx() as repo:
            self.move(repo, run, target, Actor.SERVER, note)
        self.finish([run] if target.terminal else [])
        self.ctx.notifier.notify(run_topic(run.id), pool_topic(run.pool_id))
        return self.get(run_id)

    def cancel(self, run_id: str) -> Run:
        """Cancel a waiting run at once; ask the worker to stop a running one."""
        run = self.get(run_id)
        if _canceled(run):
            return run  # sent again (its answer was lost): the cancel stands
        with self.ctx.tx() as repo:
            ended = True
            if run.state in SCHEDULABLE:
                self.move(repo, run, RunState.CANCELED, Actor.SERVER, CANCELED_BY_USER)
            elif run.state == RunState.UNCONFIRMED:
                # stop_requested: a person's cancel, as of a run on a worker.
                self.move(repo, run, RunState.DISCARDED, Actor.SERVER, CANCELED_BY_USER, stop_requested=True)
            elif run.state.on_worker:
                repo.set_run_flags(run.id, stop_requested=True)
                ended = False
            else:
                raise Conflict(f"run {run.id} is already {run.state.value}")
        self.finish([run] if ended else [])
        self.ctx.notifier.notify(run_topic(run.id), pool_topic(run.pool_id))
        return self.get(run_id)

    # workers' reports -------------------------------------------------------

    def _held(self, repo: Repository, worker: Worker, run_id: str, lease: int) -> Run:
        return self._holding(worker, repo.run(run_id, with_transitions=False), run_id, lease)

    @staticmethod
    def _holding(worker: Worker, run: Run | None, run_id: str, lease: int) -> Run:
        """``run`` (as read) if ``worker`` holds it under ``lease``; else StaleLease or NotFound."""
        if run is None:
            raise NotFound(f"no run {run_id!r}")
        if run.worker_id != worker.id or run.lease != lease:
            raise StaleLease(
                f"worker {worker.id} no longer holds run {run_id} (lease {lease} is stale); "
                "the report was refused and changed nothing"
            )
        if not run.state.on_worker:
            raise StaleLease(f"run {run_id} is {run.state.value} and no longer on a worker")
        return run

    def report(
        self,
        worker: Worker,
        run_id: str,
        lease: int,
        target: RunState,
        note: str = "",
        changes: dict[str, int] | None = None,
        blocks: Sequence[LogBlock] = (),
        via: Sequence[RunState] = (),
    ) -> Run:
        """A worker proposes a transition for a run it holds (with the plan's
        change counts, when it has them, and the log lines printed before
        it: its last batch and the end of the run in one transaction). The
        same report sent again (its answer was lost: the server died, the
        network dropped it) changes nothing and answers as the first did:
        its lines were stored with it. The answer is the run as it stands,
        without its transitions (a worker needs none of them). ``via``: the
        phases it passed through on the way that it did not report on their
        own (each checked and recorded, in order, with the same move)."""
        with self.ctx.tx() as repo:
            current = repo.run(run_id, with_transitions=False)
            repeated = current is not None and current.state == target and current.worker_id == worker.id \
                and current.lease == lease
            if not repeated:
                run = self._holding(worker, current, run_id, lease)
                if target == RunState.UNCONFIRMED and not run.has_workspace:
                    raise Conflict("upload the run's encrypted workspace before asking for confirmation")
                if blocks:
                    self.logs.append(repo, run, blocks)
                counts = {} if changes is None else {"changes": {k: int(v) for k, v in changes.items()}}
                current = self.move(repo, run, target, Actor.WORKER, note, via=via, **counts)
        assert current is not None
        if not repeated:
            self.finish([run] if target.terminal else [])
            topics = [run_topic(run_id)]
            if not target.on_worker:
                # A worker and maybe a stack's write lane are free: wake the pool.
                topics.append(pool_topic(run.pool_id))
            self.ctx.notifier.notify(*topics)
        return current

    def append_logs(self, worker: Worker, run_id: str, lease: int, blocks: Sequence[LogBlock],
                    end: RunEnd | None = None) -> bool:
        """Store blocks of log lines; returns whether the run was asked to
        stop. With ``end``, the run's last batch: the lines go with its end
        in one :meth:`report`."""
        if end is not None:
            self.report(worker, run_id, lease, end.state, end.note, end.changes, blocks, end.via)
            return False
        with self.ctx.tx() as repo:
            run = self._held(repo, worker, run_id, lease)
            self.logs.append(repo, run, blocks)
        self.ctx.notifier.notify(run_topic(run_id))
        return run.stop_requested

    def put_workspace(self, worker: Worker, run_id: str, lease: int, sealed: bytes) -> None:
        """Keep what the plan left for the apply: sealed by the worker to the
        pool's key, so the server holds only ciphertext."""
        with self.ctx.tx() as repo:
            self._held(repo, worker, run_id, lease)
        # The blob first, then the row that points to it: no blob I/O holds a transaction open.
        self.ctx.blobs.put(workspace_key(run_id), sealed)
        try:
            with self.ctx.tx() as repo:
                self._held(repo, worker, run_id, lease)
                repo.set_run_flags(run_id, has_workspace=True)
        except StaleLease:
            self.ctx.blobs.delete(workspace_key(run_id))  # the run moved on meanwhile: nothing points to it
            raise

    def get_workspace(self, worker: Worker, run_id: str, lease: int) -> bytes:
        with self.ctx.read() as repo:
            run = self._held(repo, worker, run_id, lease)
        if not run.has_workspace:
            raise NotFound(f"run {run_id} has no saved workspace")
        return self.ctx.blobs.get(workspace_key(run_id))

    def put_outputs(self, worker: Worker, run_id: str, lease: int, outputs: Sequence[Output]) -> None:
        with self.ctx.tx() as repo:
            run = self._held(repo, worker, run_id, lease)
            repo.replace_outputs(run.stack_id, run_id, outputs, self.ctx.clock())

    def outputs(self, stack_id: str) -> builtins.list[Output]:
        with self.ctx.read() as repo:
            return repo.outputs(stack_id)

    def release_from_worker(self, repo: Repository, run: Run, reason: str) -> bool:
        """The run's worker is gone. A run it never started goes back to the
        queue; one it started ends FAILED with ``reason``: it is never started
        a second time behind the user's back. True if the run ended: the
        caller hands it to :meth:`finish` once its transaction commits."""
        if run.state == RunState.READY:
            self.move(repo, run, RunState.QUEUED, Actor.SERVER, f"requeued: {reason} before starting it",
                       worker_id=None)
            return False
        self.move(repo, run, RunState.FAILED, Actor.SERVER, reason)
        return True

    def move(self, repo: Repository, run: Run, target: RunState, actor: Actor, note: str,
              via: Sequence[RunState] = (), **values: object) -> Run:
        """The one writer of run state: the transition table (for each phase
        of ``via`` on the way, then ``target``), then one compare-and-set on
        (state, lease) with any other column it changes, and the transitions
        in one insert. Returns the run as moved (without its transitions)."""
        state = run.state
        for step in (*via, target):
            check_transition(state, step, actor)
            state = step
        now = self.ctx.clock()
        values["state"] = target.value
        if target.terminal:
            values["reason"] = note
        moved = repo.move_run(run.id, run.state, run.lease, now, **values)
        if moved is None:
            raise StaleLease(f"run {run.id} changed meanwhile; the report was refused")
        repo.add_transitions(run.id, now, [*((phase, "") for phase in via), (target, note)])
        if run.worker_id and run.state.on_worker and not target.on_worker:
            repo.set_worker_run(run.worker_id, None, expect=run.id)
        if target.terminal:
            self.metrics.ended_run(run.pool_id, target, now - run.created_at.timestamp())
        return moved

    def finish(self, ended: Sequence[Run]) -> None:
        """After the transaction that ended these runs committed: have each log
        sealed into the object store and the workspace an apply no longer
        needs dropped, both by :meth:`after_ends`, off the request (which
        may be a worker's short call: the object store is never used in one).
        Each run is as read in that transaction, so ``has_workspace`` is current."""
        with self._lock:
            for run in ended:
                self._ended[run.id] = run.has_workspace

    def after_ends(self) -> builtins.list[str]:
        """The object store's part of ending the runs that ended here since
        the last pass (the log sealer's loop): drop their workspaces, seal
        their logs. Returns the runs whose logs it sealed."""
        with self._lock:
            ended, self._ended = self._ended, {}
        for run_id in sorted(run_id for run_id, has_workspace in ended.items() if has_workspace):
            try:
                self.ctx.blobs.delete(workspace_key(run_id))
            except Exception:  # a leftover blob costs storage only: logged, not retried
                log.exception("dropping the workspace of run %s failed", run_id)
        sealing = sorted(ended)
        self.logs.seal(sealing)
        return sealing


def _decided(run: Run, target: RunState) -> bool:
    """Whether a person already made this decision on the run's plan: it was
    confirmed (and may have gone on since), or it was discarded."""
    if target == RunState.DISCARDED:
        return run.state == RunState.DISCARDED
    return any(t.state == target for t in run.transitions)


def _canceled(run: Run) -> bool:
    """Whether a person's cancel already ended the run."""
    return run.state == RunState.CANCELED or (run.state in (RunState.STOPPED, RunState.DISCARDED)
                                              and run.stop_requested)

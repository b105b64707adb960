"""Dispatch: which run goes to which worker, and when. Every server dispatches.

- The waiting runs a worker may take, oldest first, and what each other one
  waits for: one walk (``_walk``) gives both, so the reasons people see are
  the rules a claim follows.
- The claim: the oldest run a worker may take is moved to READY for it
  (RunService.move, the one writer of run state: a compare-and-set), or a
  READY run it never heard of is handed over again (redelivery).
- The held poll: an idle worker waits on its pool's turn; a queued run wakes
  one poll, which passes the turn on once it claimed (more may be queued).
- The next run, given in the answer to a run's end (no poll between them).
- The pool's demand, for autoscalers (what is schedulable, what runs).

RunService keeps the state machine and people's decisions; WorkerService
keeps registration and liveness (a held poll counts as a heartbeat there).
"""

from __future__ import annotations

import asyncio
import dataclasses
import random
import time
from collections.abc import Callable, Iterator, Sequence

from anyio import to_thread

from runyard.core.errors import Conflict, StaleLease
from runyard.core.models import (
    Assignment,
    Demand,
    ExitReason,
    FleetMember,
    LogBlock,
    PollAnswer,
    Pool,
    Run,
    RunEnd,
    Worker,
)
from runyard.core.states import ON_WORKER, SCHEDULABLE, Actor, RunKind, RunState
from runyard.crypto import hash_secret, new_secret
from runyard.server.db.repository import Repository
from runyard.server.notifier import ANY_TOPIC, Woken, fleet_topic, pool_topic, run_topic, worker_topic
from runyard.server.services import Context
from runyard.server.services.runs import RunService
from runyard.server.services.workers import WorkerService

LOOKS_KEPT = 50_000  # idle workers whose last look is remembered (see poll)


class DispatchService:
    def __init__(self, ctx: Context, runs: RunService, workers: WorkerService) -> None:
        self.ctx = ctx
        self.runs = runs
        self.workers = workers
        # Checked in every claim's transaction: raises when this server must
        # not assign runs (it stands by). Set by the app; none in tests.
        self.gate: Callable[[Repository], None] = lambda repo: None
        # What the last look found for an idle worker, and the generations of
        # its topics then: until one moves, a renewed poll need not look again.
        self._looked: dict[str, tuple[dict[str, int], Worker]] = {}

    # what waits -------------------------------------------------------------

    def queue(self, pool_id: str) -> list[tuple[Run, str]]:
        """Runs on a worker, then runs waiting (each with what it waits for), oldest first."""
        with self.ctx.read() as repo:
            running = repo.runs(pool_id=pool_id, states=ON_WORKER, oldest_first=True, limit=500)
            waiting = list(self._walk(repo, pool_id, limit=500))
        return [(r, "") for r in running] + waiting

    def waiting_for(self, run: Run) -> str:
        """Why a waiting run has not started, by the rules a claim follows ("": nothing)."""
        if run.state not in SCHEDULABLE:
            return ""
        with self.ctx.read() as repo:
            return next((why for waiting, why in self._walk(repo, run.pool_id) if waiting.id == run.id), "")

    def claim(self, worker_id: str) -> Assignment | None:
        """Give the worker the oldest run it may take, or None."""
        with self.ctx.tx() as repo:
            now = self.ctx.clock()  # inside the transaction: after any run we can see was queued
            self.gate(repo)
            worker = repo.worker(worker_id)
            if worker is None:
                return None
            if worker.current_run_id:
                return self._redeliver(repo, worker)
            if worker.drained or worker.exit_requested:
                return None
            for run in self._schedulable(repo, worker.pool_id):
                lease = run.lease + 1
                run_token = new_secret("ryr_")
                try:
                    moved = self.runs.move(repo, run, RunState.READY, Actor.SERVER, f"assigned to worker {worker.id}",
                                       worker_id=worker.id, lease=lease, run_token_hash=hash_secret(run_token))
                except StaleLease:
                    continue  # another server claimed it first
                if not repo.set_worker_run(worker.id, run.id, expect=None):
                    raise Conflict(f"worker {worker.id} took another run meanwhile")
                stack = repo.stack(run.stack_id)
                assert stack is not None
                # The row as moved; the transitions, for a confirmed run's resumption.
                claimed = dataclasses.replace(moved, transitions=tuple(repo.transitions(run.id)))
                log_seq = claimed.log_seq
                break
            else:
                return None
        # The worker's topic too: what servers remember of the worker (its
        # current run, for heartbeats) is out of date.
        self.ctx.notifier.notify(run_topic(claimed.id), worker_topic(worker.id))
        if claimed.state == RunState.READY and lease == 1:
            self.runs.metrics.assigned(claimed.pool_id, now - claimed.created_at.timestamp())
        return Assignment(claimed, stack, lease, run_token, log_seq)

    def _redeliver(self, repo: Repository, worker: Worker) -> Assignment | None:
        """A worker that polls while the server thinks it holds a READY run
        never got the answer that assigned it (the server died, the network
        dropped it): hand the same run over again, with a fresh run token.
        Nothing ran, so nothing runs twice; a run it started is not READY."""
        run = repo.run(worker.current_run_id or "")
        if run is None or run.state != RunState.READY or run.worker_id != worker.id:
            return None
        run_token = new_secret("ryr_")
        repo.set_run_flags(run.id, run_token_hash=hash_secret(run_token))
        stack = repo.stack(run.stack_id)
        assert stack is not None
        return Assignment(run, stack, run.lease, run_token, run.log_seq)

    def _walk(self, repo: Repository, pool_id: str, limit: int = 1000) -> Iterator[tuple[Run, str]]:
        """Waiting runs of the pool, oldest first, each with what it waits
        for ("": a worker of the pool could take it now). The rules: a write
        run (tracked, task) waits behind its stack's other write runs, one
        at a time, oldest first; a drift-detection run waits for room under
        the pool's limit. Read a page at a time (a claim takes the first,
        however long the queue), and what blocks a run only once a run it
        could block comes."""
        busy: dict[str, tuple[str, str]] | None = None  # stack -> the write run it waits for
        drift_room: int | None = None
        after, page_size = "", 4
        while limit > 0:
            page = repo.waiting_runs(pool_id, after, min(page_size, limit))
            for run in page:
                if run.kind.writes and run.state == RunState.QUEUED:
                    if busy is None:
                        busy = repo.active_write_runs(pool_id)
                    blocker = busy.setdefault(run.stack_id, (run.id, run.state.value))
                    if blocker[0] != run.id:
                        yield run, f"run {blocker[0]} ({blocker[1]}) of this stack must end first"
                        continue
                if run.kind == RunKind.DRIFT_DETECTION:
                    if drift_room is None:
                        pool = repo.pool(pool_id)
                        limit_of_pool = (pool.drift_detection_limit or 0) if pool else 0
                        drift_room = limit_of_pool - repo.count_active_drift_runs(pool_id)
                    if drift_room <= 0:
                        yield run, ("drift detection is off for this pool (its limit is 0)" if not limit_of_pool
                                    else f"the pool runs {limit_of_pool} drift detection(s) at once already")
                        continue
                    drift_room -= 1
                yield run, ""
            if len(page) < min(page_size, limit):
                return
            limit -= len(page)
            after, page_size = page[-1].id, min(page_size * 4, 500)

    def _schedulable(self, repo: Repository, pool_id: str) -> Iterator[Run]:
        """The waiting runs a worker of the pool could take now, oldest first."""
        return (run for run, why in self._walk(repo, pool_id) if not why)

    def schedulable_count(self, pool_id: str) -> int:
        with self.ctx.read() as repo:
            return sum(1 for _ in self._schedulable(repo, pool_id))

    # the held poll ----------------------------------------------------------

    async def poll(self, worker: Worker, wait: float) -> PollAnswer:
        """A worker's long poll: an assignment, an exit reason, or (after
        ``wait``, bounded by the server's limit) nothing.

        Dispatch runs the moment a run is queued, so a run starts as
        soon as an idle worker holds a poll: no polling interval sits in
        between. Idle polls wait their turn on the pool: a queued run wakes
        one of them, which passes the turn on when it got the run (more may
        be queued). Generations are read before each look, so a run queued
        between the look and the wait is never missed; while none has moved
        since a look found nothing, a renewed poll does not look again.

        While it is held, the poll is the worker's heartbeat (flush_seen
        stores it): an idle fleet sends polls only. The route ends a poll
        whose connection closed, so a dead launcher is not kept alive."""
        # Held for a little less than asked, by a random fifth at most: polls
        # begun together (launchers reconnecting after a restart) do not stay
        # in step and renew all at once for ever.
        deadline = time.monotonic() + min(max(wait, 0.0), self.ctx.long_poll) * random.uniform(0.8, 1.0)
        self.workers.saw(worker.id)
        self.workers.hold(worker.id)  # the poll is the worker's heartbeat while it is held
        try:
            return await self._poll(worker, deadline)
        finally:
            self.workers.unhold(worker.id)

    async def _poll(self, worker: Worker, deadline: float) -> PollAnswer:
        pool = pool_topic(worker.pool_id)
        watch = (pool, fleet_topic(worker.pool_id), worker_topic(worker.id), ANY_TOPIC)
        for_work = False  # woken for work: claim before anything else
        while True:
            seen = self.ctx.notifier.generations(*watch)
            if for_work and (assignment := await self._claim(worker.id, pool)) is not None:
                return PollAnswer(assignment=assignment)
            looked = self._looked.get(worker.id)
            if looked is not None and looked[0] == seen:
                current, may_claim = looked[1], False  # nothing moved since the last look found nothing
            else:
                current, may_claim = await self.ctx.short_call(self._look, worker.id)
                if len(self._looked) >= LOOKS_KEPT:
                    self._looked.clear()
                if not may_claim:
                    self._looked[worker.id] = (seen, current)
            if may_claim and not for_work and (assignment := await self._claim(worker.id, pool)) is not None:
                return PollAnswer(assignment=assignment)
            if current.exit_requested:
                return PollAnswer(exit_reason=ExitReason.CYCLED)
            remaining = deadline - time.monotonic()
            if remaining <= 0 or self.ctx.notifier.closed:
                return PollAnswer()  # the launcher polls again (another server, or this one restarted)
            idle = current.current_run_id is None and not current.drained
            ended: dict[str, int] = {}
            woken = await self.ctx.notifier.wait_any(seen, remaining, turn_on=pool if idle else None, ended=ended)
            if not woken and idle and self._looked.get(worker.id) == (seen, current):
                # Parked until it timed out: what moved the pool meanwhile
                # was another poll's turn, so the renewal need not look either.
                self._looked[worker.id] = (ended, current)
            # Woken for work: its turn came, or the pool moved before it could
            # park (that move was nobody's turn). After a timeout, a move
            # while it was parked was another poll's turn.
            for_work = idle and (woken == Woken.TURN or (woken == Woken.MOVED and ended[pool] != seen[pool]))

    async def _claim(self, worker_id: str, pool: str) -> Assignment | None:
        try:
            return await self.ctx.short_call(self._claim_now, worker_id, pool)
        except asyncio.CancelledError:  # the poll ended (its launcher went): its turn goes on
            self.ctx.notifier.pass_on(pool)
            raise

    def _claim_now(self, worker_id: str, pool: str) -> Assignment | None:
        """Claim a run for the worker; whoever claims one (or fails) passes
        the pool's turn on: more may be queued, and this claim may have had it."""
        try:
            assignment = self.claim(worker_id)
        except BaseException:
            self.ctx.notifier.pass_on(pool)
            raise
        if assignment is not None:
            self.ctx.notifier.pass_on(pool)
        return assignment

    # a run's end, the pool's demand -----------------------------------------

    def append_logs(self, worker: Worker, run_id: str, lease: int, blocks: Sequence[LogBlock],
                    end: RunEnd | None = None, take_next: bool = False) -> tuple[bool, Assignment | None]:
        """A worker's log batch (RunService.append_logs: whether the run was
        asked to stop); with its run's end and ``take_next``, its next run
        too, in the same request."""
        stop = self.runs.append_logs(worker, run_id, lease, blocks, end)
        return stop, self.next_run(worker) if end is not None and take_next else None

    def next_run(self, worker: Worker) -> Assignment | None:
        """The worker's next run, asked for as its run ended (in the same
        request): what its next poll would claim at once, or None (it polls).
        One the server gave it already and it never got is given again. The
        claim without a look first (a poll's look spares an idle pool's polls
        a write transaction each): when nothing waits, the claim reads what
        the look would have; when something does, the look was a
        transaction more."""
        return self._claim_now(worker.id, pool_topic(worker.pool_id))

    def _look(self, worker_id: str) -> tuple[Worker, bool]:
        """The worker as stored, and whether a claim could give it a run: one
        it was assigned already, or (idle) any run waiting in its pool. A
        read: an idle pool's polls take no write lock."""
        with self.ctx.read() as repo:
            worker = repo.worker(worker_id)
            if worker is not None:
                if worker.current_run_id:
                    return worker, True
                idle = not worker.drained and not worker.exit_requested
                return worker, idle and repo.has_waiting_runs(worker.pool_id)
        return self.workers.refresh(worker_id), False  # raises WorkerGone with the reason

    async def demand(self, pool: Pool, since: int = -1, wait: float = 0) -> Demand:
        """The pool's demand and fleet. Given the last ``version`` seen and a
        ``wait``, held until something changes: autoscalers react at once."""
        topic = pool_topic(pool.id)
        version = self.ctx.notifier.generation(topic)
        if version == since and wait > 0:
            await self.ctx.notifier.wait(topic, since, min(wait, self.ctx.long_poll))
            version = self.ctx.notifier.generation(topic)
        return await to_thread.run_sync(self._demand, pool, version)

    def _demand(self, pool: Pool, version: int) -> Demand:
        queued = self.schedulable_count(pool.id)
        with self.ctx.read() as repo:
            fleet = tuple(FleetMember(w, repo.idle_since(w)) for w in repo.workers(pool.id))
            running = repo.count_runs(pool.id, ON_WORKER)
        return Demand(version, queued, running, fleet)

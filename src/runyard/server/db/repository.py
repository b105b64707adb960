"""The one repository of queries. It works inside a connection whose
transaction the calling service owns; it never commits."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

from sqlalchemy import Connection, Table, and_, bindparam, delete, func, insert, select, text, update

from runyard.core.models import (
    ApiKey,
    DriftSchedule,
    Lease,
    Output,
    Pool,
    Run,
    Stack,
    StateLock,
    StateVersion,
    Transition,
    Worker,
)
from runyard.core.states import RunKind, RunState
from runyard.server.db import rows
from runyard.server.db import tables as t
from runyard.server.db.dialects import insert_ignoring_duplicates
from runyard.server.db.logqueries import LogQueries

# The queries of every run's hot path (claims, reports, log pages, worker
# tokens), built once with bound parameters: SQLAlchemy then skips building
# the statement and its cache key on each call, which cost more than a
# SQLite query itself, and a run makes dozens. Bound names are prefixed "b_" where a column has the same name.
_RUN = select(t.runs).where(t.runs.c.id == bindparam("b_id"))
_TRANSITIONS = select(t.run_transitions).where(t.run_transitions.c.run_id == bindparam("b_id")) \
    .order_by(t.run_transitions.c.id)
_ADD_TRANSITION = insert(t.run_transitions)
_MOVE_RUN = update(t.runs).where(t.runs.c.id == bindparam("b_id"), t.runs.c.state == bindparam("b_state"),
                                 t.runs.c.lease == bindparam("b_lease")).returning(t.runs)
_WORKER = select(t.workers).where(t.workers.c.id == bindparam("b_id"), t.workers.c.gone_at.is_(None))
_WORKER_BY_TOKEN = select(t.workers).where(t.workers.c.token_hash == bindparam("b_hash"))
_STACK = select(t.stacks).where((t.stacks.c.id == bindparam("b_ref")) | (t.stacks.c.name == bindparam("b_ref")))
_FREE_WORKER = update(t.workers).where(t.workers.c.id == bindparam("b_id"), t.workers.c.current_run_id.is_(None))
_BUSY_WORKER = update(t.workers).where(t.workers.c.id == bindparam("b_id"),
                                       t.workers.c.current_run_id == bindparam("b_expect"))
_LEASE = select(t.leases).where(t.leases.c.name == bindparam("b_name"))
_ADD_RUN = insert(t.runs)
# The waiting states as literals, as ix_runs_waiting names them: the index
# serves the queue only to a query whose condition is visibly its own
# (tests/unit/test_states.py checks they are SCHEDULABLE's).
_WAITING = select(t.runs).where(t.runs.c.pool_id == bindparam("b_pool"), text(t.WAITING))
_SCHEDULABLE = _WAITING.where(t.runs.c.id > bindparam("b_after")).order_by(t.runs.c.id).limit(bindparam("b_limit"))
_HAS_WAITING = _WAITING.with_only_columns(t.runs.c.id).limit(1)


class Repository(LogQueries):
    """Queries over one connection (and the transaction its caller opened)."""

    def __init__(self, conn: Connection) -> None:
        self.conn = conn

    # settings -------------------------------------------------------------

    def get_setting(self, key: str) -> str | None:
        return self.conn.execute(select(t.settings.c.value).where(t.settings.c.key == key)).scalar()

    def set_setting(self, key: str, value: str) -> None:
        self.conn.execute(update(t.settings).where(t.settings.c.key == key).values(value=value))

    def _insert_if_absent(self, table: Table, **values: Any) -> bool:
        """Insert a row unless its key exists; True if this call inserted it.
        (The row count of ON CONFLICT DO NOTHING is -1 on psycopg: RETURNING
        tells on both databases.)"""
        stmt = insert_ignoring_duplicates(self.conn.dialect.name, table).values(**values)
        return self.conn.execute(stmt.returning(*table.primary_key.columns)).first() is not None

    def put_setting_if_absent(self, key: str, value: str) -> str:
        """Store ``value`` unless another process stored one first; return the winner."""
        stmt = insert_ignoring_duplicates(self.conn.dialect.name, t.settings).values(key=key, value=value)
        self.conn.execute(stmt)
        stored = self.get_setting(key)
        assert stored is not None
        return stored

    # leases ---------------------------------------------------------------

    def lease(self, name: str) -> Lease | None:
        row = self.conn.execute(_LEASE, {"b_name": name}).first()
        return rows.lease(row) if row else None

    def create_lease(self, lease: Lease) -> bool:
        """Insert ``lease`` unless one of that name exists; True if inserted."""
        return self._insert_if_absent(t.leases, name=lease.name, holder=lease.holder, token=lease.token,
                                      expires_at=lease.expires_at, address=lease.address, site=lease.site)

    def swap_lease(self, name: str, expect_token: int, expect_holder: str | None, **values: Any) -> bool:
        """Compare-and-set on the lease's token (and holder, when given)."""
        cond = [t.leases.c.name == name, t.leases.c.token == expect_token]
        if expect_holder is not None:
            cond.append(t.leases.c.holder == expect_holder)
        return self.conn.execute(update(t.leases).where(*cond).values(**values)).rowcount == 1

    # api keys -------------------------------------------------------------

    def add_api_key(self, key_id: str, name: str, key_hash: str, admin: bool, now: float) -> None:
        self.conn.execute(
            insert(t.api_keys).values(id=key_id, name=name, key_hash=key_hash, admin=admin, created_at=now)
        )

    def api_key_by_hash(self, key_hash: str) -> ApiKey | None:
        row = self.conn.execute(select(t.api_keys).where(t.api_keys.c.key_hash == key_hash)).first()
        return rows.api_key(row) if row else None

    def count_api_keys(self) -> int:
        return int(self.conn.execute(select(func.count()).select_from(t.api_keys)).scalar_one())

    # ui sessions ----------------------------------------------------------

    def revoke_session(self, session_id: str, expires_at: float) -> None:
        if not self.session_revoked(session_id):
            self.conn.execute(insert(t.revoked_sessions).values(id=session_id, expires_at=expires_at))

    def session_revoked(self, session_id: str) -> bool:
        found = self.conn.execute(select(t.revoked_sessions.c.id).where(t.revoked_sessions.c.id == session_id))
        return found.first() is not None

    def forget_revoked_sessions(self, before: float) -> int:
        """Revocations of sessions that have expired anyway."""
        return int(self.conn.execute(delete(t.revoked_sessions).where(t.revoked_sessions.c.expires_at < before))
                   .rowcount)

    # pools ----------------------------------------------------------------

    def add_pool(self, pool: Pool) -> None:
        self.conn.execute(
            insert(t.pools).values(
                id=pool.id,
                name=pool.name,
                description=pool.description,
                labels=list(pool.labels),
                certificate_pem=pool.certificate_pem,
                certificate_serial=pool.certificate_serial,
                drift_detection_limit=pool.drift_detection_limit,
                created_at=pool.created_at.timestamp(),
            )
        )

    def pool(self, ref: str) -> Pool | None:
        """A pool by id or name."""
        row = self.conn.execute(
            select(t.pools).where((t.pools.c.id == ref) | (t.pools.c.name == ref))
        ).first()
        return rows.pool(row) if row else None

    def update_pool(self, pool_id: str, **values: Any) -> None:
        self.conn.execute(update(t.pools).where(t.pools.c.id == pool_id).values(**values))

    def request_pool_exit(self, pool_id: str) -> int:
        result = self.conn.execute(
            update(t.workers).where(t.workers.c.pool_id == pool_id, t.workers.c.gone_at.is_(None))
            .values(exit_requested=True))
        return int(result.rowcount)

    def pools(self) -> list[Pool]:
        return [rows.pool(r) for r in self.conn.execute(select(t.pools).order_by(t.pools.c.name))]

    # workers --------------------------------------------------------------

    def add_worker(self, worker: Worker, token_hash: str, nonce: str) -> None:
        self.conn.execute(
            insert(t.workers).values(
                id=worker.id,
                pool_id=worker.pool_id,
                metadata=worker.metadata,
                version=worker.version,
                drained=worker.drained,
                current_run_id=None,
                certificate_serial=worker.certificate_serial,
                token_hash=token_hash,
                registration_nonce=nonce,
                exit_requested=False,
                created_at=worker.created_at.timestamp(),
                last_seen_at=worker.last_seen_at.timestamp(),
            )
        )

    def nonce_used(self, nonce: str) -> bool:
        return (
            self.conn.execute(select(t.workers.c.id).where(t.workers.c.registration_nonce == nonce)).first()
            is not None
        )

    def worker(self, worker_id: str) -> Worker | None:
        row = self.conn.execute(_WORKER, {"b_id": worker_id}).first()
        return rows.worker(row) if row else None

    def worker_by_token(self, token_hash: str) -> tuple[Worker | None, str | None]:
        """The live worker holding ``token_hash``; else None and why it is gone
        (None: no worker ever held the token)."""
        row = self.conn.execute(_WORKER_BY_TOKEN, {"b_hash": token_hash}).first()
        if row is None:
            return None, None
        if row.gone_at is not None:
            return None, row.gone_reason or "worker removed"
        return rows.worker(row), ""

    def gone_reason(self, worker_id: str) -> str:
        """Why a removed worker left ("" if it is unknown or still here)."""
        row = self.conn.execute(
            select(t.workers.c.gone_at, t.workers.c.gone_reason).where(t.workers.c.id == worker_id)
        ).first()
        return (row.gone_reason or "worker removed") if row is not None and row.gone_at is not None else ""

    def gone_workers(self, pool_id: str, reason: str, since: float) -> list[Worker]:
        """Workers of the pool removed for ``reason`` after ``since``."""
        found = self.conn.execute(
            select(t.workers).where(t.workers.c.pool_id == pool_id, t.workers.c.gone_reason == reason,
                                    t.workers.c.gone_at >= since)
        )
        return [rows.worker(r) for r in found]

    def purge_gone_workers(self, before: float) -> int:
        """Forget workers removed before ``before`` that never held a run (a run
        keeps naming the worker it ran on)."""
        used = select(t.runs.c.worker_id).where(t.runs.c.worker_id.is_not(None))
        result = self.conn.execute(
            delete(t.workers).where(t.workers.c.gone_at.is_not(None), t.workers.c.gone_at < before,
                                    t.workers.c.id.not_in(used))
        )
        return int(result.rowcount or 0)

    def workers(self, pool_id: str | None = None) -> list[Worker]:
        stmt = select(t.workers).where(t.workers.c.gone_at.is_(None))
        if pool_id:
            stmt = stmt.where(t.workers.c.pool_id == pool_id)
        return [rows.worker(r) for r in self.conn.execute(stmt.order_by(t.workers.c.created_at))]

    def idle_since(self, worker: Worker) -> float:
        """When the worker last finished a run (or registered)."""
        last = self.conn.execute(select(func.max(t.runs.c.updated_at)).where(t.runs.c.worker_id == worker.id)).scalar()
        return max(worker.created_at.timestamp(), float(last or 0))

    def touch_workers(self, seen: dict[str, float]) -> None:
        """Store when each worker was last seen (never moving a time back:
        another server may have stored a later one)."""
        stmt = (update(t.workers)
                .where(t.workers.c.id == bindparam("wid"), t.workers.c.last_seen_at < bindparam("seen"))
                .values(last_seen_at=bindparam("seen")))
        self.conn.execute(stmt, [{"wid": wid, "seen": at} for wid, at in seen.items()])

    def stale_workers(self, cutoff: float) -> list[Worker]:
        found = self.conn.execute(
            select(t.workers).where(t.workers.c.gone_at.is_(None), t.workers.c.last_seen_at < cutoff)
        )
        return [rows.worker(r) for r in found]

    def remove_worker(self, worker_id: str, reason: str, now: float) -> bool:
        result = self.conn.execute(
            update(t.workers)
            .where(t.workers.c.id == worker_id, t.workers.c.gone_at.is_(None))
            .values(gone_at=now, gone_reason=reason, current_run_id=None)
        )
        return result.rowcount == 1

    def set_worker_run(self, worker_id: str, run_id: str | None, expect: str | None) -> bool:
        """Compare-and-set the worker's current run."""
        if expect is None:
            result = self.conn.execute(_FREE_WORKER, {"b_id": worker_id, "current_run_id": run_id})
        else:
            result = self.conn.execute(_BUSY_WORKER, {"b_id": worker_id, "b_expect": expect, "current_run_id": run_id})
        return result.rowcount == 1

    def update_worker(self, worker_id: str, **values: Any) -> None:
        self.conn.execute(update(t.workers).where(t.workers.c.id == worker_id).values(**values))

    # stacks ---------------------------------------------------------------

    def add_stack(self, stack: Stack) -> None:
        self.conn.execute(
            insert(t.stacks).values(
                id=stack.id,
                name=stack.name,
                pool_id=stack.pool_id,
                source=stack.source.__dict__,
                project_root=stack.project_root,
                tool=stack.tool.value,
                runner_image=stack.runner_image,
                commands=stack.commands,
                env=[e.__dict__ for e in stack.env],
                labels=list(stack.labels),
                autodeploy=stack.autodeploy,
                created_at=stack.created_at.timestamp(),
                hooks={k: list(v) for k, v in stack.hooks.items()},
                drift_schedule=stack.drift_schedule,
            )
        )

    def stack(self, ref: str) -> Stack | None:
        row = self.conn.execute(_STACK, {"b_ref": ref}).first()
        return rows.stack(row) if row else None

    def stacks(self, pool_id: str | None = None) -> list[Stack]:
        stmt = select(t.stacks).order_by(t.stacks.c.name)
        if pool_id:
            stmt = stmt.where(t.stacks.c.pool_id == pool_id)
        return [rows.stack(r) for r in self.conn.execute(stmt)]

    # runs -----------------------------------------------------------------

    def add_run(self, run: Run, trigger_key: str = "") -> bool:
        """Store a new run; with a ``trigger_key`` another run holds, store
        nothing and return False."""
        values = {
            "id": run.id, "stack_id": run.stack_id, "pool_id": run.pool_id, "kind": run.kind.value,
            "state": run.state.value, "command": run.command, "worker_id": None, "lease": 0,
            "stop_requested": False, "reason": "", "log_sealed": False,
            "created_at": run.created_at.timestamp(), "updated_at": run.updated_at.timestamp(),
        }
        if trigger_key:
            return self._insert_if_absent(t.runs, **values, trigger_key=trigger_key)
        self.conn.execute(_ADD_RUN, values)
        return True

    def run_by_trigger_key(self, key: str) -> Run | None:
        row = self.conn.execute(select(t.runs).where(t.runs.c.trigger_key == key)).first()
        return rows.run(row, self.transitions(row.id)) if row else None

    def run(self, run_id: str, with_transitions: bool = True) -> Run | None:
        row = self.conn.execute(_RUN, {"b_id": run_id}).first()
        if row is None:
            return None
        return rows.run(row, self.transitions(run_id) if with_transitions else ())

    def has_waiting_runs(self, pool_id: str) -> bool:
        """Whether any run of the pool waits for a worker (queued or confirmed)."""
        return self.conn.execute(_HAS_WAITING, {"b_pool": pool_id}).first() is not None

    def waiting_runs(self, pool_id: str, after: str, limit: int) -> list[Run]:
        """Runs of the pool waiting for a worker (queued or confirmed), oldest
        first, from after the id ``after`` ("": from the first)."""
        found = self.conn.execute(_SCHEDULABLE, {"b_pool": pool_id, "b_after": after, "b_limit": limit})
        return [rows.run(r) for r in found]

    def unsealed_ended_runs(self, limit: int) -> list[str]:
        ended = [s.value for s in RunState if s.terminal]
        stmt = select(t.runs.c.id).where(t.runs.c.state.in_(ended), t.runs.c.log_sealed.is_(False)).limit(limit)
        return [r.id for r in self.conn.execute(stmt)]

    def runs(
        self,
        stack_id: str | None = None,
        pool_id: str | None = None,
        states: Iterable[RunState] | None = None,
        limit: int = 100,
        oldest_first: bool = False,
    ) -> list[Run]:
        """Runs newest first (or oldest first). (The scheduler's pages of
        waiting runs: :meth:`waiting_runs`.)"""
        stmt = select(t.runs)
        if stack_id:
            stmt = stmt.where(t.runs.c.stack_id == stack_id)
        if pool_id:
            stmt = stmt.where(t.runs.c.pool_id == pool_id)
        if states is not None:
            stmt = stmt.where(t.runs.c.state.in_([s.value for s in states]))
        order = t.runs.c.id if oldest_first else t.runs.c.id.desc()
        return [rows.run(r) for r in self.conn.execute(stmt.order_by(order).limit(limit))]

    def transitions(self, run_id: str) -> list[Transition]:
        found = self.conn.execute(_TRANSITIONS, {"b_id": run_id})
        return [Transition(RunState(r.state), rows.ts(r.at), r.note) for r in found]

    def add_transitions(self, run_id: str, now: float, moves: Sequence[tuple[RunState, str]]) -> None:
        """Record the run's moves at ``now``, in order: (state, note) each, in
        one statement (a report that passed through phases is one)."""
        self.conn.execute(_ADD_TRANSITION, [{"run_id": run_id, "state": state.value, "at": now, "note": note}
                                            for state, note in moves])

    def move_run(
        self,
        run_id: str,
        expect_state: RunState,
        expect_lease: int,
        now: float,
        **values: Any,
    ) -> Run | None:
        """Compare-and-set on (state, lease): the fencing that stops stale
        writers. The run as moved (without its transitions), None if it was not."""
        row = self.conn.execute(_MOVE_RUN, {"b_id": run_id, "b_state": expect_state.value,
                                            "b_lease": expect_lease, "updated_at": now, **values}).first()
        return rows.run(row) if row is not None else None

    def set_run_flags(self, run_id: str, **values: Any) -> None:
        self.conn.execute(update(t.runs).where(t.runs.c.id == run_id).values(**values))

    def active_write_runs(self, pool_id: str) -> dict[str, tuple[str, str]]:
        """The stacks of the pool with a tracked run or task past the queue and
        not ended: the (oldest) such run of each, and its state."""
        busy = [s.value for s in RunState if not s.terminal and s != RunState.QUEUED]
        found = self.conn.execute(
            select(t.runs.c.stack_id, t.runs.c.id, t.runs.c.state).where(
                t.runs.c.pool_id == pool_id,
                t.runs.c.kind.in_([RunKind.TRACKED.value, RunKind.TASK.value]),
                t.runs.c.state.in_(busy),
            ).order_by(t.runs.c.id.desc())
        )
        return {r.stack_id: (r.id, r.state) for r in found}

    def count_runs(self, pool_id: str, states: Iterable[RunState]) -> int:
        stmt = select(func.count()).select_from(t.runs).where(
            and_(t.runs.c.pool_id == pool_id, t.runs.c.state.in_([s.value for s in states]))
        )
        return int(self.conn.execute(stmt).scalar_one())

    def count_ended_runs(self) -> dict[tuple[str, RunState], int]:
        """Runs that ended, by pool and end state (every server reads the same)."""
        ended = [s.value for s in RunState if s.terminal]
        stmt = (select(t.runs.c.pool_id, t.runs.c.state, func.count()).where(t.runs.c.state.in_(ended))
                .group_by(t.runs.c.pool_id, t.runs.c.state))
        return {(r[0], RunState(r[1])): int(r[2]) for r in self.conn.execute(stmt)}

    def run_by_token(self, token_hash: str) -> Run | None:
        row = self.conn.execute(select(t.runs).where(t.runs.c.run_token_hash == token_hash)).first()
        return rows.run(row) if row else None

    def drift_schedules(self) -> list[DriftSchedule]:
        return [rows.drift_schedule(r) for r in self.conn.execute(
            select(t.stacks.c.id, t.stacks.c.pool_id, t.stacks.c.drift_schedule, t.stacks.c.drift_checked_at,
                   t.stacks.c.created_at).where(t.stacks.c.drift_schedule != "")
        )]

    def set_drift_checked(self, stack_id: str, at: float) -> None:
        self.conn.execute(update(t.stacks).where(t.stacks.c.id == stack_id).values(drift_checked_at=at))

    # state ------------------------------------------------------------------

    def state_versions(self, stack_id: str) -> list[StateVersion]:
        return [rows.state_version(r) for r in self.conn.execute(
            select(t.state_versions).where(t.state_versions.c.stack_id == stack_id)
            .order_by(t.state_versions.c.version)
        )]

    def latest_state(self, stack_id: str) -> StateVersion | None:
        row = self.conn.execute(
            select(t.state_versions).where(t.state_versions.c.stack_id == stack_id)
            .order_by(t.state_versions.c.version.desc()).limit(1)
        ).first()
        return rows.state_version(row) if row else None

    def add_state_version(self, stack_id: str, version: int, serial: int, lineage: str, run_id: str | None,
                          digest: str, now: float) -> None:
        self.conn.execute(insert(t.state_versions).values(
            stack_id=stack_id, version=version, serial=serial, lineage=lineage, run_id=run_id, digest=digest,
            created_at=now))

    def state_lock(self, stack_id: str) -> StateLock | None:
        row = self.conn.execute(select(t.state_locks).where(t.state_locks.c.stack_id == stack_id)).first()
        return rows.state_lock(row) if row else None

    def take_state_lock(self, stack_id: str, lock_id: str, info: dict[str, Any], now: float) -> bool:
        return self._insert_if_absent(t.state_locks, stack_id=stack_id, lock_id=lock_id, info=info, created_at=now)

    def drop_state_lock(self, stack_id: str) -> None:
        self.conn.execute(delete(t.state_locks).where(t.state_locks.c.stack_id == stack_id))

    # outputs ----------------------------------------------------------------

    def replace_outputs(self, stack_id: str, run_id: str, outputs: Sequence[Output], now: float) -> None:
        self.conn.execute(delete(t.stack_outputs).where(t.stack_outputs.c.stack_id == stack_id))
        if outputs:
            self.conn.execute(insert(t.stack_outputs), [
                {"stack_id": stack_id, "run_id": run_id, "updated_at": now, "name": o.name, "value": o.value,
                 "sensitive": o.sensitive, "sealed": o.sealed} for o in outputs])

    def outputs(self, stack_id: str) -> list[Output]:
        return [rows.output(r) for r in self.conn.execute(
            select(t.stack_outputs).where(t.stack_outputs.c.stack_id == stack_id).order_by(t.stack_outputs.c.name))]

    def count_active_drift_runs(self, pool_id: str) -> int:
        active = [s.value for s in RunState if s.on_worker]
        stmt = select(func.count()).select_from(t.runs).where(
            t.runs.c.pool_id == pool_id, t.runs.c.kind == RunKind.DRIFT_DETECTION.value, t.runs.c.state.in_(active))
        return int(self.conn.execute(stmt).scalar_one())

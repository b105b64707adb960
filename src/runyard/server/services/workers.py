"""Workers: registration with proof of key possession, liveness (heartbeats,
held polls, the reaper), drain and removal. Their work: dispatch.py."""

from __future__ import annotations

import builtins
import datetime as dt
import threading
from collections.abc import Callable

from runyard.core.errors import NotFound, Unauthorized, WorkerGone
from runyard.core.ids import new_ulid
from runyard.core.models import (
    INSTANCE_KEY,
    POOL_RESET,
    SCALED_IN,
    WORKER_LOST,
    HeartbeatAnswer,
    Worker,
    may_register_again,
)
from runyard.crypto import (
    check_challenge,
    hash_secret,
    issue_challenge,
    load_cert,
    new_secret,
    serial_of,
    verify_challenge_signature,
)
from runyard.server.db.repository import Repository
from runyard.server.notifier import pool_topic, run_topic, worker_topic
from runyard.server.services import Context
from runyard.server.services.pools import PoolService
from runyard.server.services.runs import RunService

# How long removed workers are remembered: what their launchers are told, and
# which instances were scaled in and must not join again.
GONE_RETENTION = 3600.0


class WorkerService:
    def __init__(self, ctx: Context, pools: PoolService, runs: RunService) -> None:
        self.ctx = ctx
        self.pools = pools
        self.runs = runs
        # Heartbeats land here and are written in one batch by flush_seen
        # (every second or so, and before each reaper pass): a heartbeat costs
        # no write transaction of its own.
        self._seen: dict[str, float] = {}
        self._seen_lock = threading.Lock()
        # A held poll is its worker's heartbeat (an idle launcher holding one
        # sends none): polls held now per worker, and when each such worker
        # was last counted as seen; flush_seen counts it again every
        # keep_alive_every seconds while the poll is held.
        self._holding: dict[str, int] = {}
        self._counted: dict[str, float] = {}
        self.keep_alive_every = ctx.worker_lost_after / 12

    def challenge(self, pool_id: str) -> str:
        """A challenge for ``pool_id``, whether or not such a pool exists: the
        answer tells a pool that exists from one that does not to nobody
        (registration refuses both alike)."""
        return issue_challenge(self.pools.challenge_secret(), pool_id, self.ctx.clock())

    def register(
        self,
        pool_id: str,
        certificate_pem: str,
        challenge: str,
        signature: str,
        metadata: dict[str, str],
        version: str,
    ) -> tuple[Worker, str]:
        """Admit a worker that signed our challenge with the pool's private key."""
        check_challenge(self.pools.challenge_secret(), challenge, pool_id, self.ctx.clock())
        with self.ctx.read() as repo:
            pool = repo.pool(pool_id)
        cert = load_cert(certificate_pem)
        self.pools.ca().verify(cert)
        if pool is None or serial_of(cert) != pool.certificate_serial:
            # One answer for an unknown pool and another pool's token.
            raise Unauthorized(
                "this token's certificate is not the pool's current one: the pool was reset "
                "or the token belongs to another pool; use the newest token"
            )
        verify_challenge_signature(cert, challenge, signature)
        now = self.ctx.clock()
        stamp = dt.datetime.fromtimestamp(now, dt.UTC)
        worker = Worker(
            id=new_ulid(now),
            pool_id=pool.id,
            metadata=dict(metadata),
            version=version,
            drained=False,
            current_run_id=None,
            certificate_serial=pool.certificate_serial,
            created_at=stamp,
            last_seen_at=stamp,
        )
        token = new_secret("ryw_")
        with self.ctx.tx() as repo:
            instance = metadata.get(INSTANCE_KEY)
            if instance and any(w.metadata.get(INSTANCE_KEY) == instance
                                for w in repo.gone_workers(pool.id, SCALED_IN, now - GONE_RETENTION)):
                raise WorkerGone(f"instance {instance} was scaled in and is being terminated: "
                                 "its launcher must not join again", reason=SCALED_IN)
            if repo.nonce_used(challenge):
                raise Unauthorized("that registration challenge was used already: ask for a new one")
            repo.add_worker(worker, hash_secret(token), challenge)
        self.ctx.notifier.notify(pool_topic(pool.id))
        return worker, token

    async def heartbeat(self, worker: Worker) -> HeartbeatAnswer:
        """The worker is alive; tells it whether to stop its run or exit. An
        idle worker's heartbeat touches no database."""
        self.saw(worker.id)
        stop = False
        if worker.current_run_id:
            stop = await self.ctx.short_call(self.runs.stop_requested, worker.current_run_id)
        return HeartbeatAnswer(stop, "cycled" if worker.exit_requested else "")

    def saw(self, worker_id: str) -> None:
        """The worker is alive now (stored by the next :meth:`flush_seen`)."""
        now = self.ctx.clock()
        with self._seen_lock:
            self._seen[worker_id] = now

    def flush_seen(self) -> int:
        """Store when workers were last seen, all in one transaction: those
        that sent a heartbeat and, every ``keep_alive_every``, those holding
        a poll."""
        now = self.ctx.clock()
        with self._seen_lock:
            seen, self._seen = self._seen, {}
            for worker_id in self._holding:
                if worker_id in seen or now - self._counted.get(worker_id, 0.0) >= self.keep_alive_every:
                    seen.setdefault(worker_id, now)
                    self._counted[worker_id] = now
        if seen:
            with self.ctx.tx() as repo:
                repo.touch_workers(seen)
        return len(seen)

    def polls_held(self, worker_id: str) -> int:
        """How many polls of the worker this server holds now."""
        with self._seen_lock:
            return self._holding.get(worker_id, 0)

    def hold(self, worker_id: str) -> None:
        with self._seen_lock:
            self._holding[worker_id] = self._holding.get(worker_id, 0) + 1

    def unhold(self, worker_id: str) -> None:
        with self._seen_lock:
            left = self._holding.pop(worker_id, 1) - 1
            if left > 0:
                self._holding[worker_id] = left
            else:
                self._counted.pop(worker_id, None)

    def reset_pool(self, ref: str, csr_pem: str) -> tuple[str, int]:
        """A new certificate (and token) for the pool. Every worker holding the
        old one is removed at once: its requests are refused, its run fails."""
        pool = self.pools.get(ref)
        _, serial = self.pools.new_certificate(pool, csr_pem)
        with self.ctx.tx() as repo:
            # Only holders of the old certificate: a worker that already joined with the new one stays.
            old = [w.id for w in repo.workers(pool.id) if w.certificate_serial != serial]
        for worker_id in old:
            self._remove(worker_id, POOL_RESET)
        fresh = self.pools.get(pool.id)
        return self.pools.token(fresh), len(old)

    def remove(self, worker_id: str, reason: str) -> None:
        """Take a worker out of its pool (its instance is gone); a run it held fails."""
        with self.ctx.tx() as repo:
            if repo.worker(worker_id) is None:
                raise NotFound(f"no worker {worker_id!r}")
        self._remove(worker_id, reason)

    def drain(self, worker_id: str, drained: bool) -> Worker:
        """A drained worker takes no new run; it finishes the one it has."""
        with self.ctx.tx() as repo:
            worker = repo.worker(worker_id)
            if worker is None:
                raise NotFound(f"no worker {worker_id!r}: `runyard pool show POOL` lists the workers")
            repo.update_worker(worker_id, drained=drained)
        self.ctx.notifier.notify(pool_topic(worker.pool_id), worker_topic(worker_id))
        return self.refresh(worker_id)

    def refresh(self, worker_id: str) -> Worker:
        """The worker as stored now; :class:`WorkerGone` if it was removed."""
        with self.ctx.read() as repo:
            worker = repo.worker(worker_id)
            why = repo.gone_reason(worker_id) if worker is None else ""
        if worker is None:
            hint = "register again" if may_register_again(why) else "it must not join again"
            raise WorkerGone(f"this worker was removed ({why or 'unknown'}): {hint}", reason=why)
        return worker

    def list(self, pool_id: str) -> builtins.list[Worker]:
        with self.ctx.read() as repo:
            return repo.workers(pool_id)

    def deregister(self, worker: Worker, reason: str) -> None:
        """A launcher leaving on purpose; its run (if any) fails with ``reason``."""
        self._remove(worker.id, reason)

    def reap(self, lost_after: float, started_at: float,
             fence: Callable[[Repository], None] | None = None) -> builtins.list[str]:
        """Remove workers silent for ``lost_after`` seconds and fail their runs.

        Silence during the server's own downtime does not count: a worker is
        judged only once the server has been up for ``lost_after`` itself.
        """
        now = self.ctx.clock()
        if now - started_at < lost_after:
            return []
        self.flush_seen()
        with self.ctx.read() as repo:
            stale = [w.id for w in repo.stale_workers(now - lost_after)]
        for worker_id in stale:
            self._remove(worker_id, WORKER_LOST, fence)
        with self.ctx.tx() as repo:
            if fence is not None:
                fence(repo)
            repo.purge_gone_workers(now - GONE_RETENTION)
        return stale

    def _remove(self, worker_id: str, reason: str, fence: Callable[[Repository], None] | None = None) -> None:
        now = self.ctx.clock()
        topics = []
        ended = []
        with self.ctx.tx() as repo:
            if fence is not None:
                fence(repo)
            worker = repo.worker(worker_id)
            if worker is None or not repo.remove_worker(worker_id, reason, now):
                return
            topics += [pool_topic(worker.pool_id), worker_topic(worker_id)]
            run = repo.run(worker.current_run_id, False) if worker.current_run_id else None
            if run is not None and run.state.on_worker and run.worker_id == worker_id:
                if self.runs.release_from_worker(repo, run, reason):
                    ended.append(run)
                topics.append(run_topic(run.id))
        self.runs.finish(ended)
        self.ctx.notifier.notify(*topics)

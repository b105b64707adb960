"""The autoscaler loop for one pool: watch demand, decide, act, reconcile."""

from __future__ import annotations

import contextlib
import functools
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from runyard import retry
from runyard.autoscaler.providers import TERMINATED, Provider
from runyard.client import FleetApi
from runyard.core.errors import NotFound, RunyardError
from runyard.core.models import INSTANCE_KEY, SCALED_IN, WORKER_LOST, WorkerStatus
from runyard.core.scaling import Decision, Fleet, IdleWorker, Instance, Limits, Reason, decide
from runyard.wire import DemandOut, FleetWorker

log = logging.getLogger("runyard.autoscaler")


@dataclass
class Observed:
    """What the last pass saw and did, for metrics and tests."""

    desired: int = 0
    in_service: int = 0
    booting: int = 0
    decisions: dict[str, int] = field(default_factory=dict)


class Autoscaler:
    def __init__(
        self,
        client: FleetApi,
        pool: str,
        provider: Provider,
        limits: Limits,
        boot_grace: float = 300.0,
        demand_wait: float = 5.0,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.client = client
        self.pool = pool
        self.provider = provider
        self.limits = limits
        self.boot_grace = boot_grace
        self.demand_wait = demand_wait
        self.clock = clock
        self.last_change = 0.0
        self.observed = Observed()
        self._stop = threading.Event()

    def stop(self) -> None:
        self._stop.set()

    def run(self) -> None:
        """React whenever the pool's demand changes (a long poll), and at least
        every ``demand_wait`` seconds for time-based rules (cooldown, grace)."""
        version = -1
        while not self._stop.is_set():
            try:
                demand = retry.call(functools.partial(self.client.demand, self.pool, since=version,
                                                      wait=self.demand_wait),
                                    RunyardError, stop=self._stop, log=log, what=f"pool {self.pool}: its demand")
            except RunyardError:
                break  # told to stop while the server was away
            version = demand.version
            try:
                self.step(demand)
            except RunyardError as exc:  # the provider refused: the next look tries again
                log.error("pool %s: %s", self.pool, exc)

    def step(self, demand: DemandOut) -> Decision:
        now = self.clock()
        group = self.provider.describe()
        live = {i.id: i for i in group.instances if i.state not in TERMINATED}
        workers = demand.workers
        self._forget_ghosts(workers, live)
        with_worker = {w.metadata.get(INSTANCE_KEY) for w in workers}
        booting = 0
        for instance in live.values():
            if instance.id in with_worker:
                continue
            if now - instance.launched_at > self.boot_grace:
                log.warning("instance %s registered no worker in %.0fs: terminating it", instance.id,
                            self.boot_grace)
                self.provider.terminate(instance.id)
                group = self.provider.describe()
            else:
                booting += 1
        mine = [w for w in workers if w.metadata.get(INSTANCE_KEY) in live]
        fleet = Fleet(
            desired=group.desired,
            busy=sum(1 for w in mine if w.current_run_id),
            idle=tuple(IdleWorker(w.id, w.metadata[INSTANCE_KEY], w.idle_since)
                       for w in mine if w.status == WorkerStatus.IDLE),
            drained_idle=sum(1 for w in mine if w.status == WorkerStatus.DRAINED and not w.current_run_id),
            booting=booting,
        )
        decision = decide(demand.queued, fleet, self.limits, now, self.last_change)
        if decision.desired > group.desired:
            log.info("pool %s: %s to %d (queued %d, busy %d, booting %d)", self.pool, decision.reason.value,
                     decision.desired, demand.queued, fleet.busy, booting)
            self.provider.set_desired(decision.desired)
            self.last_change = now
        retired = sum(1 for w in decision.retire if self._retire(w))
        if decision.retire and not retired:
            decision = Decision(group.desired, Reason.NO_IDLE)
        # What the metrics show is the fleet after this pass acted.
        after = self.provider.describe()
        alive = [i for i in after.instances if i.state not in TERMINATED]
        self.observed.desired = after.desired
        self.observed.booting = sum(1 for i in alive if i.id not in with_worker)
        self.observed.in_service = len(alive) - self.observed.booting
        self.observed.decisions[decision.reason.value] = self.observed.decisions.get(decision.reason.value, 0) + 1
        return decision

    def _forget_ghosts(self, workers: list[FleetWorker], live: dict[str, Instance]) -> None:
        """Workers whose instance is gone leave the pool; a run they held fails."""
        for w in workers:
            iid = w.metadata.get(INSTANCE_KEY)
            if iid and iid not in live:
                log.warning("worker %s: its instance %s is gone; removing it", w.id, iid)
                with contextlib.suppress(NotFound):  # it may have left meanwhile
                    self.client.remove_worker(w.id, WORKER_LOST)

    def _retire(self, worker: IdleWorker) -> bool:
        """Drain, check again that it is still idle, then terminate with decrement.
        A worker that took a run in between is undrained and kept."""
        try:
            self.client.drain(worker.worker_id, True)
        except NotFound:
            return False
        current = next((w for w in self.client.workers(self.pool) if w.id == worker.worker_id), None)
        if current is None:
            return False
        if current.current_run_id:
            log.info("worker %s took run %s while being retired: keeping it", worker.worker_id,
                     current.current_run_id)
            self.client.drain(worker.worker_id, False)
            return False
        log.info("pool %s: retiring idle worker %s (instance %s)", self.pool, worker.worker_id, worker.instance_id)
        self.provider.terminate(worker.instance_id)
        with contextlib.suppress(NotFound):  # it deregistered on its way out
            self.client.remove_worker(worker.worker_id, SCALED_IN)
        self.last_change = self.clock()
        return True

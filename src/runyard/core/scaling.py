"""The autoscaler's decision: one pure function from demand, fleet, limits
and clock to what to do. No I/O; the autoscaler loop carries it out."""

from __future__ import annotations

import enum
from dataclasses import dataclass, field


class Reason(enum.StrEnum):
    SCALE_OUT = "scale-out"
    SCALE_IN = "scale-in"
    STEADY = "steady"
    AT_MAX = "at-max"
    AT_MIN = "at-min"
    COOLDOWN = "cooldown"
    NO_IDLE = "no-idle-worker"  # too many instances, but none idle: nothing is killed


@dataclass(frozen=True)
class Instance:
    """One machine of a worker fleet, as its provider (AWS, local) reports it."""

    id: str
    state: str  # Pending, InService, Terminating, ... (AWS lifecycle states)
    launched_at: float  # epoch seconds


@dataclass(frozen=True)
class GroupState:
    desired: int
    min_size: int
    max_size: int
    instances: tuple[Instance, ...]


@dataclass(frozen=True)
class Limits:
    min_size: int
    max_size: int
    scale_in_cooldown: float = 60.0  # seconds after any change before scaling in
    idle_before_scale_in: float = 30.0  # a worker idle this long may be retired


@dataclass(frozen=True)
class IdleWorker:
    worker_id: str
    instance_id: str
    idle_since: float


@dataclass(frozen=True)
class Fleet:
    """What exists now. ``desired`` is the group's desired capacity, which
    already counts instances still booting; drained workers still occupy an
    instance but are not capacity."""

    desired: int
    busy: int  # workers running a run (drained or not)
    idle: tuple[IdleWorker, ...] = ()
    drained_idle: int = 0  # drained, idle: leaving, not capacity
    booting: int = 0  # instances with no worker yet


@dataclass(frozen=True)
class Decision:
    desired: int  # the group's desired capacity after this decision
    reason: Reason
    retire: tuple[IdleWorker, ...] = field(default=())  # drain, re-check, terminate with decrement


def decide(queued: int, fleet: Fleet, limits: Limits, now: float, last_change: float) -> Decision:
    """How many instances the pool needs, and which idle workers may go.

    Every queued run (that can be scheduled) and every busy worker needs an
    instance; drained idle workers keep theirs until they are gone. Booting
    instances are in ``fleet.desired`` already, so a burst is never counted
    twice. Scale-out is immediate; scale-in waits out the cooldown, takes
    only workers idle long enough, and never goes below the minimum.
    """
    wanted = queued + fleet.busy + fleet.drained_idle
    target = max(limits.min_size, min(limits.max_size, wanted))
    if target > fleet.desired:
        return Decision(target, Reason.SCALE_OUT if wanted <= limits.max_size else Reason.AT_MAX)
    if target == fleet.desired:
        reason = Reason.AT_MIN if target == limits.min_size and wanted < target else Reason.STEADY
        return Decision(fleet.desired, Reason.AT_MAX if wanted > limits.max_size else reason)
    # Fewer instances would do.
    if now - last_change < limits.scale_in_cooldown:
        return Decision(fleet.desired, Reason.COOLDOWN)
    # Booting instances have no worker to drain: the reconciler ends them if
    # they never register; here only idle workers are retired.
    surplus = fleet.desired - target
    ripe = sorted((w for w in fleet.idle if now - w.idle_since >= limits.idle_before_scale_in),
                  key=lambda w: w.idle_since)
    retire = tuple(ripe[:surplus])
    if not retire:
        return Decision(fleet.desired, Reason.NO_IDLE if surplus else Reason.STEADY)
    # Each retirement terminates one instance with a decrement: desired falls with it.
    return Decision(fleet.desired - len(retire), Reason.SCALE_IN, retire)

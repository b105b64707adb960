"""The run state machine: one table, owned by the server.

A worker *proposes* a transition; the server checks it against this table and
the run's lease, then records it. Anything not in the table is a 409.
"""

from __future__ import annotations

import enum

from runyard.core.errors import Conflict


class RunKind(enum.StrEnum):
    """What a run does."""

    PROPOSED = "PROPOSED"  # plan only, read-only
    TRACKED = "TRACKED"  # plan, (confirm), apply
    TASK = "TASK"  # one command
    DRIFT_DETECTION = "DRIFT_DETECTION"  # a scheduled proposed run

    @property
    def writes(self) -> bool:
        """Whether the run may change infrastructure (tracked runs and tasks)."""
        return self in (RunKind.TRACKED, RunKind.TASK)


class RunState(enum.StrEnum):
    """Where a run is. The last four, with FINISHED, are terminal."""

    QUEUED = "QUEUED"
    READY = "READY"
    PREPARING = "PREPARING"
    INITIALIZING = "INITIALIZING"
    PLANNING = "PLANNING"
    UNCONFIRMED = "UNCONFIRMED"
    CONFIRMED = "CONFIRMED"
    APPLYING = "APPLYING"
    PERFORMING = "PERFORMING"
    FINISHED = "FINISHED"
    FAILED = "FAILED"
    STOPPED = "STOPPED"
    CANCELED = "CANCELED"
    DISCARDED = "DISCARDED"

    @property
    def terminal(self) -> bool:
        return self in TERMINAL

    @property
    def on_worker(self) -> bool:
        """A worker holds the run (it has a lease) in these states."""
        return self in ON_WORKER


class Actor(enum.StrEnum):
    """Who proposes a transition."""

    WORKER = "worker"  # the launcher holding the run's lease
    SERVER = "server"  # the scheduler, the reaper, or a person through the API


TERMINAL = frozenset(
    {RunState.FINISHED, RunState.FAILED, RunState.STOPPED, RunState.CANCELED, RunState.DISCARDED}
)
ON_WORKER = frozenset(
    {
        RunState.READY,
        RunState.PREPARING,
        RunState.INITIALIZING,
        RunState.PLANNING,
        RunState.APPLYING,
        RunState.PERFORMING,
    }
)
# States a run waits in for the scheduler: it needs a worker.
SCHEDULABLE = frozenset({RunState.QUEUED, RunState.CONFIRMED})

_W = frozenset({Actor.WORKER})
_S = frozenset({Actor.SERVER})
_WS = frozenset({Actor.WORKER, Actor.SERVER})

S = RunState
# from-state -> {to-state: who may propose it}
TRANSITIONS: dict[RunState, dict[RunState, frozenset[Actor]]] = {
    S.QUEUED: {S.READY: _S, S.CANCELED: _S, S.FAILED: _S},
    # READY -> QUEUED: the worker left before it started the run; nothing ran,
    # and its lease can no longer report, so the run may go to another worker.
    S.READY: {S.PREPARING: _W, S.QUEUED: _S, S.CANCELED: _S, S.FAILED: _WS, S.STOPPED: _WS},
    S.PREPARING: {
        S.INITIALIZING: _W,
        S.PERFORMING: _W,
        S.APPLYING: _W,  # the apply phase of a confirmed run, on a fresh worker
        S.FAILED: _WS,
        S.STOPPED: _W,
    },
    S.INITIALIZING: {S.PLANNING: _W, S.PERFORMING: _W, S.FAILED: _WS, S.STOPPED: _W},
    S.PLANNING: {
        S.UNCONFIRMED: _W,
        S.APPLYING: _W,  # autodeploy
        S.FINISHED: _W,  # proposed runs, and tracked runs with no changes
        S.FAILED: _WS,
        S.STOPPED: _W,
    },
    S.UNCONFIRMED: {S.CONFIRMED: _S, S.DISCARDED: _S, S.FAILED: _S},
    S.CONFIRMED: {S.READY: _S, S.FAILED: _S, S.DISCARDED: _S},
    S.APPLYING: {S.FINISHED: _W, S.FAILED: _WS, S.STOPPED: _W},
    S.PERFORMING: {S.FINISHED: _W, S.FAILED: _WS, S.STOPPED: _W},
}
del S


def check_transition(current: RunState, target: RunState, actor: Actor) -> None:
    """Raise :class:`Conflict` unless ``actor`` may move a run from ``current`` to ``target``."""
    allowed = TRANSITIONS.get(current, {})
    if target not in allowed:
        if current.terminal:
            raise Conflict(f"run is already {current.value}; it cannot become {target.value}")
        raise Conflict(f"a run cannot go from {current.value} to {target.value}")
    if actor not in allowed[target]:
        raise Conflict(
            f"only the {' or '.join(sorted(a.value for a in allowed[target]))} may move a run "
            f"from {current.value} to {target.value}"
        )


def can_transition(current: RunState, target: RunState, actor: Actor) -> bool:
    """Whether :func:`check_transition` would accept the move."""
    try:
        check_transition(current, target, actor)
    except Conflict:
        return False
    return True

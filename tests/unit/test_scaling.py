"""The scaling decision, as a table: demand and fleet in, decision out."""

import pytest

from runyard.core.scaling import Decision, Fleet, IdleWorker, Limits, Reason, decide

NOW = 10_000.0
LIMITS = Limits(min_size=0, max_size=4, scale_in_cooldown=60, idle_before_scale_in=30)


def idle(n: int, since: float = NOW - 300) -> tuple[IdleWorker, ...]:
    return tuple(IdleWorker(f"w{i}", f"i-{i}", since + i) for i in range(n))


@pytest.mark.parametrize("name,queued,fleet,limits,expect", [
    ("scale out from zero", 3, Fleet(desired=0, busy=0), LIMITS, Decision(3, Reason.SCALE_OUT)),
    ("never above max", 10, Fleet(desired=0, busy=0), LIMITS, Decision(4, Reason.AT_MAX)),
    ("booting instances count: no overshoot", 3, Fleet(desired=3, busy=0, booting=3), LIMITS,
     Decision(3, Reason.STEADY)),
    ("busy workers keep their instances", 1, Fleet(desired=2, busy=2), LIMITS, Decision(3, Reason.SCALE_OUT)),
    ("a drained worker is not capacity", 1, Fleet(desired=1, busy=0, drained_idle=1), LIMITS,
     Decision(2, Reason.SCALE_OUT)),
    ("min holds with no demand", 0, Fleet(desired=1, busy=0, idle=idle(1)), Limits(1, 4, 0, 0),
     Decision(1, Reason.AT_MIN)),
    ("min of one from zero", 0, Fleet(desired=0, busy=0), Limits(1, 4), Decision(1, Reason.SCALE_OUT)),
    ("scale in idle workers, longest idle first", 0, Fleet(desired=3, busy=1, idle=idle(2)), LIMITS,
     Decision(1, Reason.SCALE_IN, idle(2))),
    ("scale in never below min", 0, Fleet(desired=3, busy=0, idle=idle(3)), Limits(2, 4, 60, 30),
     Decision(2, Reason.SCALE_IN, idle(1))),
    ("busy workers are never retired", 0, Fleet(desired=2, busy=2), LIMITS, Decision(2, Reason.STEADY)),
    ("surplus but nobody idle long enough", 0, Fleet(desired=2, busy=0, idle=idle(2, since=NOW - 5)), LIMITS,
     Decision(2, Reason.NO_IDLE)),
    ("surplus of booting instances only", 0, Fleet(desired=2, busy=0, booting=2), LIMITS,
     Decision(2, Reason.NO_IDLE)),
])
def test_decisions(name, queued, fleet, limits, expect):
    assert decide(queued, fleet, limits, NOW, last_change=NOW - 3600) == expect, name


def test_cooldown_stops_flapping():
    fleet = Fleet(desired=3, busy=0, idle=idle(3))
    assert decide(0, fleet, LIMITS, NOW, last_change=NOW - 10) == Decision(3, Reason.COOLDOWN)
    assert decide(0, fleet, LIMITS, NOW, last_change=NOW - 61).reason == Reason.SCALE_IN


def test_one_scale_in_decrements_capacity_exactly_once_per_retired_worker():
    decision = decide(0, Fleet(desired=4, busy=1, idle=idle(3)), LIMITS, NOW, last_change=0)
    assert len(decision.retire) == 3 and decision.desired == 4 - 3
    # Scale-out is immediate even inside the cooldown.
    assert decide(5, Fleet(desired=1, busy=1), LIMITS, NOW, last_change=NOW).reason == Reason.AT_MAX

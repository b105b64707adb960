"""The scheduler's rules, on the services over SQLite in memory."""

from __future__ import annotations

from runyard.core.states import RunKind, RunState
from runyard.crypto import PoolToken, sign_challenge
from tests.unit.conftest import World, pool_key


def worker(world: World, name: str = "w") -> str:
    cert = PoolToken.decode(world.token).certificate_pem
    challenge = world.svc.workers.challenge(world.pool_id)
    registered, _ = world.svc.workers.register(world.pool_id, cert, challenge, sign_challenge(pool_key(), challenge),
                                               {"name": name}, "test")
    return registered.id


def claim(world: World, worker_id: str) -> str | None:
    assignment = world.svc.dispatch.claim(worker_id)
    return assignment.run.id if assignment else None


def test_tracked_runs_of_one_stack_go_one_at_a_time_oldest_first(world: World) -> None:
    world.pool()
    world.stack()
    first, second = world.trigger(), world.trigger()
    a, b = worker(world, "a"), worker(world, "b")
    assert claim(world, a) == first
    assert claim(world, b) is None  # the stack's write lane is busy
    assert world.svc.dispatch.waiting_for(world.svc.runs.get(second)).startswith(f"run {first}")


def test_proposed_runs_are_not_held_behind_a_tracked_run(world: World) -> None:
    world.pool()
    world.stack()
    tracked = world.trigger()
    proposed = world.trigger(kind=RunKind.PROPOSED)
    a, b = worker(world, "a"), worker(world, "b")
    assert [claim(world, a), claim(world, b)] == [tracked, proposed]


def test_tasks_share_the_write_lane_with_tracked_runs(world: World) -> None:
    world.pool()
    world.stack()
    world.trigger()
    world.trigger(kind=RunKind.TASK, command="ls")
    a, b = worker(world, "a"), worker(world, "b")
    assert claim(world, a) is not None
    assert claim(world, b) is None


def test_drift_runs_respect_the_pools_limit(world: World) -> None:
    world.pool(drift_detection_limit=1)
    world.stack("s1")
    world.stack("s2")
    first = world.trigger("s1", RunKind.DRIFT_DETECTION)
    world.trigger("s2", RunKind.DRIFT_DETECTION)
    a, b = worker(world, "a"), worker(world, "b")
    assert claim(world, a) == first
    assert claim(world, b) is None  # one drift run at a time in this pool


def test_a_drained_worker_takes_nothing_and_takes_work_again_when_undrained(world: World) -> None:
    world.pool()
    world.stack()
    run = world.trigger(kind=RunKind.PROPOSED)
    a = worker(world)
    world.svc.workers.drain(a, True)
    assert claim(world, a) is None
    world.svc.workers.drain(a, False)
    assert claim(world, a) == run


def test_a_claim_is_a_recorded_transition_with_a_new_lease(world: World) -> None:
    world.pool()
    world.stack()
    run_id = world.trigger(kind=RunKind.PROPOSED)
    a = worker(world)
    assignment = world.svc.dispatch.claim(a)
    assert assignment is not None and assignment.lease == 1 and assignment.run_token
    run = world.svc.runs.get(run_id)
    assert [t.state for t in run.transitions] == [RunState.QUEUED, RunState.READY]
    assert run.transitions[-1].note == f"assigned to worker {a}"


def test_a_worker_removed_before_starting_its_run_gives_it_back_to_the_queue(world: World) -> None:
    world.pool()
    world.stack()
    run_id = world.trigger(kind=RunKind.PROPOSED)
    a, b = worker(world, "a"), worker(world, "b")
    assert claim(world, a) == run_id
    world.svc.workers.remove(a, "worker lost")
    assert world.svc.runs.get(run_id).state == RunState.QUEUED
    assignment = world.svc.dispatch.claim(b)
    assert assignment is not None and assignment.lease == 2  # the old lease can no longer report


def test_a_worker_that_lost_the_answer_assigning_it_a_run_gets_the_same_run_again(world: World) -> None:
    world.pool()
    world.stack()
    run_id = world.trigger(kind=RunKind.PROPOSED)
    a = worker(world)
    first = world.svc.dispatch.claim(a)  # the answer is lost on its way (server died, network dropped it)
    assert first is not None
    again = world.svc.dispatch.claim(a)
    assert again is not None and again.run.id == run_id and again.lease == first.lease
    assert again.run_token != first.run_token  # only the newest token works for the state backend
    assert [t.state for t in world.svc.runs.get(run_id).transitions] == [RunState.QUEUED, RunState.READY]


def test_a_trigger_answers_the_run_as_stored(world: World) -> None:
    world.pool()
    world.stack()
    for kind, command in ((RunKind.TRACKED, ""), (RunKind.TASK, "do-it"), (RunKind.PROPOSED, "")):
        world.clock.advance(0.002)
        run = world.svc.runs.trigger("s1", kind, command)
        assert run == world.svc.runs.get(run.id)


def test_what_a_waiting_run_waits_for_comes_from_the_rules_a_claim_follows(world: World) -> None:
    """Each run a claim passes over says why, in the pool's queue and on its own."""
    world.pool(drift_detection_limit=1)
    world.stack()
    world.stack("s2")
    tracked, behind = world.trigger(), world.trigger()
    drift_a = world.trigger("s2", kind=RunKind.DRIFT_DETECTION)
    drift_b = world.trigger("s2", kind=RunKind.DRIFT_DETECTION)
    proposed = world.trigger(kind=RunKind.PROPOSED)
    reasons = {run.id: why for run, why in world.svc.dispatch.queue(world.pool_id)}
    assert reasons == {tracked: "", behind: f"run {tracked} (QUEUED) of this stack must end first", drift_a: "",
                       drift_b: "the pool runs 1 drift detection(s) at once already", proposed: ""}
    for run_id, why in reasons.items():
        assert world.svc.dispatch.waiting_for(world.svc.runs.get(run_id)) == why
    a, b, c, d = (worker(world, name) for name in "abcd")
    assert [claim(world, w) for w in (a, b, c, d)] == [tracked, drift_a, proposed, None]  # as the reasons said

"""The run state machine: what may move a run where, and who may."""

import itertools

import pytest

from runyard.core.errors import Conflict
from runyard.core.states import (
    ON_WORKER,
    TERMINAL,
    TRANSITIONS,
    Actor,
    RunState,
    can_transition,
    check_transition,
)


def test_terminal_states_have_no_way_out():
    for state in TERMINAL:
        assert TRANSITIONS.get(state, {}) == {}
        for target in RunState:
            assert not can_transition(state, target, Actor.SERVER)
            assert not can_transition(state, target, Actor.WORKER)


def test_every_non_terminal_state_can_fail():
    for state in RunState:
        if not state.terminal:
            assert any(can_transition(state, RunState.FAILED, a) for a in Actor), state


def test_only_the_server_assigns_and_only_workers_execute():
    assert can_transition(RunState.QUEUED, RunState.READY, Actor.SERVER)
    assert not can_transition(RunState.QUEUED, RunState.READY, Actor.WORKER)
    assert can_transition(RunState.READY, RunState.PREPARING, Actor.WORKER)
    assert not can_transition(RunState.READY, RunState.PREPARING, Actor.SERVER)


def test_a_worker_cannot_confirm_its_own_plan():
    with pytest.raises(Conflict, match="only the server"):
        check_transition(RunState.UNCONFIRMED, RunState.CONFIRMED, Actor.WORKER)


def test_skipping_states_is_refused_with_a_reason():
    with pytest.raises(Conflict, match="cannot go from QUEUED to APPLYING"):
        check_transition(RunState.QUEUED, RunState.APPLYING, Actor.WORKER)
    with pytest.raises(Conflict, match="already FINISHED"):
        check_transition(RunState.FINISHED, RunState.FAILED, Actor.SERVER)


def test_server_can_fail_any_run_held_by_a_worker():
    # The reaper ends runs of lost workers from the server's side.
    for state in ON_WORKER:
        assert can_transition(state, RunState.FAILED, Actor.SERVER), state


@pytest.mark.parametrize(
    "path",
    [
        ["QUEUED", "READY", "PREPARING", "INITIALIZING", "PLANNING", "APPLYING", "FINISHED"],
        ["QUEUED", "READY", "PREPARING", "INITIALIZING", "PLANNING", "FINISHED"],
        ["QUEUED", "READY", "PREPARING", "PERFORMING", "FINISHED"],
        ["QUEUED", "READY", "PREPARING", "INITIALIZING", "PLANNING", "UNCONFIRMED", "CONFIRMED", "READY",
         "PREPARING", "APPLYING", "FINISHED"],
    ],
)
def test_happy_paths_are_allowed(path):
    for a, b in itertools.pairwise(path):
        src, dst = RunState(a), RunState(b)
        assert can_transition(src, dst, Actor.WORKER) or can_transition(src, dst, Actor.SERVER), (a, b)


def test_the_queue_index_names_exactly_the_states_a_run_waits_in_for_a_worker():
    import re

    from runyard.core.states import SCHEDULABLE
    from runyard.server.db.tables import WAITING

    assert set(re.findall(r"'([A-Z_]+)'", WAITING)) == {s.value for s in SCHEDULABLE}

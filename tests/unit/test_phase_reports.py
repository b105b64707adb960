"""A run's phase reports: whatever the timing of holds, reports and the
hold's timer, the server hears every phase once, in order."""

from __future__ import annotations

import threading
import time

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from runyard.core.errors import Conflict
from runyard.core.states import RunState
from runyard.launcher.reports import PhaseReports

PHASES = [RunState.PREPARING, RunState.INITIALIZING, RunState.PLANNING, RunState.APPLYING]


class Server:
    def __init__(self, slow: float = 0.0) -> None:
        self.sent: list[tuple[RunState, tuple[RunState, ...]]] = []
        self.slow = slow
        self.busy = threading.Lock()
        self.overlapped = False

    def send(self, state: RunState, passed: tuple[RunState, ...]) -> None:
        if not self.busy.acquire(blocking=False):
            self.overlapped = True
            self.busy.acquire()
        try:
            time.sleep(self.slow)
            self.sent.append((state, passed))
        finally:
            self.busy.release()

    def heard(self) -> list[RunState]:
        return [phase for state, passed in self.sent for phase in (*passed, state)]


@settings(deadline=None)
@given(steps=st.lists(st.tuples(st.sampled_from(["ride", "hold", "report", "pause"]), st.sampled_from(PHASES),
                                st.floats(0, 0.003)), max_size=12),
       slow=st.sampled_from([0.0, 0.002]))
def test_every_phase_is_heard_once_in_order_whatever_the_timing(steps: list[tuple[str, RunState, float]],
                                                                slow: float) -> None:
    server = Server(slow)
    reports = PhaseReports(server.send, 0.001, lambda exc: None)
    entered: list[RunState] = []
    for op, phase, pause in steps:
        if op == "pause":
            time.sleep(pause)
            continue
        getattr(reports, op)(phase)
        entered.append(phase)
    with reports.next() as passed:  # the run's end
        server.send(RunState.FINISHED, passed)
    reports.close()
    time.sleep(0.005)  # a timer that was due must not send after the end
    assert server.heard() == [*entered, RunState.FINISHED]
    assert not server.overlapped  # one report at a time


def test_a_report_takes_what_is_held_along_and_the_hold_sends_nothing_more() -> None:
    server = Server()
    reports = PhaseReports(server.send, 0.05, lambda exc: None)
    reports.hold(RunState.PREPARING)
    reports.ride(RunState.INITIALIZING)
    reports.report(RunState.APPLYING)
    time.sleep(0.1)
    assert server.sent == [(RunState.APPLYING, (RunState.PREPARING, RunState.INITIALIZING))]


def test_without_a_hold_a_held_phase_is_reported_at_once() -> None:
    server = Server()
    reports = PhaseReports(server.send, 0.0, lambda exc: None)
    reports.hold(RunState.PREPARING)
    assert server.sent == [(RunState.PREPARING, ())]


def test_a_refused_held_report_is_raised_by_the_next_one_and_stops_the_run() -> None:
    stopped: list[BaseException] = []
    done = threading.Event()

    def refuse(state: RunState, passed: tuple[RunState, ...]) -> None:
        raise Conflict("run changed meanwhile")

    def on_failure(exc: BaseException) -> None:
        stopped.append(exc)
        done.set()

    reports = PhaseReports(refuse, 0.001, on_failure)
    reports.hold(RunState.PREPARING)
    assert done.wait(5)
    assert isinstance(stopped[0], Conflict)
    with pytest.raises(Conflict), reports.next():
        pass

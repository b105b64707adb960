"""One run on a launcher: phase order, hooks, failures, both timeouts, stops.
The launcher is real; the server is in process and the executor a fake."""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from typing import Any

import pytest

from runyard.core.errors import Conflict
from runyard.core.models import LogBlock, RunEnd
from runyard.core.states import RunKind, RunState
from runyard.devstack import wait_for
from runyard.launcher.launcher import Launcher
from runyard.server.services.registry import Services
from runyard.testing import FakeExecutor, Flaky, InProcessWorkerApi, Step
from runyard.wire import LogsAck, PollOut, RunOut
from tests.unit.conftest import World, calls_of

S = RunState


def run_once(launcher: Launcher) -> str:
    """Run the launcher until it has done one run (disconnect-after-job)."""
    return launcher.run()


def states(world: World, run_id: str) -> list[RunState]:
    return [t.state for t in world.svc.runs.get(run_id).transitions]


def test_a_tracked_run_with_autodeploy_goes_through_every_phase_in_order(world: World) -> None:
    world.pool()
    world.stack(autodeploy=True, hooks={"before_plan": ("hook-1",), "after_apply": ("hook-2",)})
    run_id = world.trigger()
    executor = FakeExecutor()
    assert run_once(world.launcher(executor, disconnect_after_job=True)) == "job-finished"
    assert states(world, run_id) == [S.QUEUED, S.READY, S.PREPARING, S.INITIALIZING, S.PLANNING, S.APPLYING,
                                     S.FINISHED]
    assert executor.commands == ["init", "hook-1", "plan", "apply", "hook-2"]
    assert executor.closed == 1  # the session is gone before the end is reported


def test_a_task_performs_its_command_with_its_hooks(world: World) -> None:
    world.pool()
    world.stack(hooks={"before_perform": ("prep",)})
    run_id = world.trigger(kind=RunKind.TASK, command="do-it")
    executor = FakeExecutor()
    run_once(world.launcher(executor, disconnect_after_job=True))
    assert states(world, run_id)[-2:] == [S.PERFORMING, S.FINISHED]
    assert executor.commands == ["prep", "do-it"]


def test_a_failing_command_fails_the_run_with_its_exit_code_and_skips_the_rest(world: World) -> None:
    world.pool()
    world.stack(autodeploy=True)
    run_id = world.trigger()
    executor = FakeExecutor({"plan": Step("bad things\n", code=3)})
    run_once(world.launcher(executor, disconnect_after_job=True))
    run = world.svc.runs.get(run_id)
    assert run.state == S.FAILED and run.reason == "plan command exited with code 3"
    assert executor.commands == ["init", "plan"]
    assert "bad things" in [ln.msg for ln in world.svc.logs.page(run_id).lines]


def test_a_run_that_prints_nothing_for_the_logs_timeout_is_killed(world: World) -> None:
    world.pool()
    world.stack(autodeploy=True)
    run_id = world.trigger()
    executor = FakeExecutor({"plan": Step(hang=True, on_start=lambda: world.clock.advance(61))})
    launcher = world.launcher(executor, disconnect_after_job=True, launcher_logs_timeout="1m")
    launcher.watchdog_tick = 0.002
    run_once(launcher)
    run = world.svc.runs.get(run_id)
    assert run.state == S.FAILED
    assert run.reason == "printed nothing for 1m: killed (RUNYARD_LAUNCHER_LOGS_TIMEOUT)"


def test_a_run_longer_than_the_run_timeout_is_killed(world: World) -> None:
    world.pool()
    world.stack(autodeploy=True)
    run_id = world.trigger()

    def busy() -> None:
        world.clock.advance(3 * 3600)

    executor = FakeExecutor({"apply": Step(output="still going\n", hang=True, on_start=busy)})
    launcher = world.launcher(executor, disconnect_after_job=True, launcher_run_timeout="2h",
                              launcher_logs_timeout="0")
    launcher.watchdog_tick = 0.002
    run_once(launcher)
    run = world.svc.runs.get(run_id)
    assert run.state == S.FAILED and run.reason == "ran longer than 2h: killed (RUNYARD_LAUNCHER_RUN_TIMEOUT)"


def test_a_cancel_stops_the_running_command_and_the_run_ends_stopped(world: World) -> None:
    world.pool()
    world.stack()
    run_id = world.trigger(kind=RunKind.TASK, command="forever")
    started = threading.Event()
    executor = FakeExecutor({"forever": Step(hang=True, on_start=started.set)})
    launcher = world.launcher(executor, disconnect_after_job=True)
    thread = threading.Thread(target=launcher.run)
    thread.start()
    assert started.wait(5)
    world.svc.runs.cancel(run_id)
    thread.join(5)
    run = world.svc.runs.get(run_id)
    assert run.state == S.STOPPED and run.reason == "stopped by user"


def test_a_plan_waits_for_confirmation_then_any_worker_applies_it(world: World) -> None:
    world.pool()
    world.stack(autodeploy=False)
    run_id = world.trigger()
    first = FakeExecutor()
    run_once(world.launcher(first, disconnect_after_job=True))
    assert world.svc.runs.get(run_id).state == S.UNCONFIRMED
    assert first.commands == ["init", "plan"]
    world.svc.runs.confirm(run_id)
    second = FakeExecutor()
    run_once(world.launcher(second, disconnect_after_job=True))
    assert world.svc.runs.get(run_id).state == S.FINISHED
    assert second.commands == ["apply"]  # resumed from the sealed workspace, not planned again


def test_an_uploaded_source_is_fetched_once_for_every_run_of_its_stack(world: World,
                                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    """An upload never changes: a launcher fetches it from the server once."""
    world.pool()
    world.stack()
    api = InProcessWorkerApi(world.svc)
    fetched = calls_of(monkeypatch, api, "source_archive")
    launcher = world.launcher(api=api)
    runs = [world.trigger(kind=RunKind.PROPOSED) for _ in range(3)]
    thread = threading.Thread(target=launcher.run, daemon=True)
    thread.start()
    wait_for(lambda: all(world.svc.runs.get(r).state.terminal for r in runs), 10, "the runs to end")
    launcher.stop("test over")
    thread.join(10)
    assert {world.svc.runs.get(r).state for r in runs} == {RunState.FINISHED}
    assert len(fetched) == 1


def test_a_source_fetched_while_the_server_is_away_is_fetched_again_not_failed(world: World) -> None:
    """A failover between a run's assignment and its source: the run waits, it does not fail."""
    world.pool()
    world.stack()
    api = Flaky(InProcessWorkerApi(world.svc), failures={"source_archive": 3})
    launcher = world.launcher(api=api)
    run_id = world.trigger(kind=RunKind.PROPOSED)
    thread = threading.Thread(target=launcher.run, daemon=True)
    thread.start()
    wait_for(lambda: world.svc.runs.get(run_id).state.terminal, 10, "the run to end")
    launcher.stop("test over")
    thread.join(10)
    assert world.svc.runs.get(run_id).state == RunState.FINISHED
    assert api.failures["source_archive"] == 0


class SendsLogs(InProcessWorkerApi):
    """Records each log batch sent: how many lines, and the end it carried."""

    def __init__(self, svc: Services) -> None:
        super().__init__(svc)
        self.batches: list[tuple[int, str]] = []
        self.reports: list[RunState] = []
        self.polled: list[str] = []  # the run each poll gave ("": none)
        self.given: list[str] = []  # the run each end's answer gave ("": none, or not asked)

    def poll(self, wait: float) -> PollOut:
        answer = super().poll(wait)
        self.polled.append(answer.assignment.run.id if answer.assignment else "")
        return answer

    def send_logs(self, run_id: str, lease: int, blocks: Sequence[LogBlock], end: RunEnd | None = None,
                  take_next: bool = False) -> LogsAck:
        self.batches.append((sum(b.line_count for b in blocks), end.state.value if end else ""))
        ack = super().send_logs(run_id, lease, blocks, end, take_next)
        if end is not None:
            self.given.append(ack.assignment.run.id if ack.assignment else "")
        return ack

    def report(self, run_id: str, lease: int, state: RunState, note: str = "",
               changes: dict[str, int] | None = None, via: Sequence[RunState] = ()) -> RunOut:
        self.reports.append(state)
        return super().report(run_id, lease, state, note, changes, via)


def test_a_runs_last_lines_and_its_end_go_in_one_request(world: World) -> None:
    world.pool()
    world.stack()
    run_id = world.trigger(kind=RunKind.TASK, command="do-it")
    api = SendsLogs(world.svc)
    run_once(world.launcher(FakeExecutor({"do-it": Step("one\ntwo\n")}), api=api, disconnect_after_job=True))
    assert world.svc.runs.get(run_id).state == S.FINISHED
    assert api.batches[-1][1] == "FINISHED"  # the end rode on the last batch
    assert S.FINISHED not in api.reports  # and was not reported again on its own
    assert [ln.msg for ln in world.svc.logs.page(run_id).lines][-2:] == ["one", "two"]


def test_an_end_whose_answer_was_lost_is_sent_again_and_changes_nothing(world: World) -> None:
    world.pool()
    world.stack()
    run_id = world.trigger(kind=RunKind.TASK, command="do-it")
    api = SendsLogs(world.svc)
    flaky = Flaky(api, lose_answers={"send_logs": 1})  # the one batch of this run: its end
    run_once(world.launcher(FakeExecutor({"do-it": Step("one\ntwo\n")}), api=flaky, disconnect_after_job=True))
    assert [state for _, state in api.batches] == ["FINISHED", "FINISHED"]
    assert states(world, run_id)[-1] == S.FINISHED
    assert states(world, run_id).count(S.FINISHED) == 1
    msgs = [ln.msg for ln in world.svc.logs.page(run_id).lines]
    assert msgs.count("one") == 1 and msgs.count("two") == 1


def test_an_end_on_a_stale_lease_stores_neither_its_lines_nor_its_state(world: World) -> None:
    from runyard.core.errors import StaleLease
    from tests.unit.test_launcher_life import held_run

    api, run_id, lease = held_run(world)
    worker = world.svc.auth.check_worker_token(api.credential)
    world.svc.runs.report(worker, run_id, lease, S.PREPARING)
    with pytest.raises(StaleLease):
        world.svc.runs.report(worker, run_id, lease + 1, S.FINISHED, blocks=[LogBlock(1, 1.0, "ghost")])
    assert world.svc.runs.get(run_id).state == S.PREPARING
    assert world.svc.logs.page(run_id).lines == ()


def run_until(world: World, launcher: Launcher, done: Callable[[], bool]) -> None:
    thread = threading.Thread(target=launcher.run, daemon=True)
    thread.start()
    wait_for(done, 10, "the runs to end")
    launcher.stop("test over")
    thread.join(10)


def test_waiting_runs_follow_one_another_with_no_poll_between(world: World) -> None:
    world.pool()
    world.stack()
    runs = [world.trigger(kind=RunKind.TASK, command="do-it") for _ in range(3)]
    api = SendsLogs(world.svc)
    launcher = world.launcher(FakeExecutor({"do-it": Step("done\n")}), api=api)
    run_until(world, launcher, lambda: all(world.svc.runs.get(r).state == S.FINISHED for r in runs))
    # One poll gave the first run; each end's answer gave the next; the
    # last end found none waiting (the launcher polls again after it).
    assert [r for r in api.polled if r] == runs[:1]
    assert api.given == [runs[1], runs[2], ""]


def test_a_next_run_whose_answer_was_lost_is_given_again_and_runs_once(world: World) -> None:
    world.pool()
    world.stack()
    first, second = (world.trigger(kind=RunKind.TASK, command="do-it") for _ in range(2))
    api = SendsLogs(world.svc)
    flaky = Flaky(api, lose_answers={"send_logs": 1})  # the first run's end: it gave the second run
    launcher = world.launcher(FakeExecutor({"do-it": Step("done\n")}), api=flaky)
    run_until(world, launcher, lambda: world.svc.runs.get(second).state == S.FINISHED)
    # Sent again, the end was answered as before: the same run, given again.
    assert api.given[:2] == [second, second]
    assert states(world, first).count(S.FINISHED) == 1
    assert states(world, second) == [S.QUEUED, S.READY, S.PREPARING, S.PERFORMING, S.FINISHED]


def test_a_launcher_that_takes_no_more_runs_asks_for_none(world: World) -> None:
    world.pool()
    world.stack()
    first, second = (world.trigger(kind=RunKind.TASK, command="do-it") for _ in range(2))
    api = SendsLogs(world.svc)
    run_once(world.launcher(FakeExecutor({"do-it": Step("done\n")}), api=api, disconnect_after_job=True))
    assert api.given == [""]
    assert world.svc.runs.get(first).state == S.FINISHED
    assert world.svc.runs.get(second).state == S.QUEUED  # for another worker


def test_a_next_run_given_as_the_launcher_stops_goes_back_to_the_queue(world: World) -> None:
    world.pool()
    world.stack()
    first, second = (world.trigger(kind=RunKind.TASK, command="do-it") for _ in range(2))

    class StopsAtTheEnd(SendsLogs):
        launcher: Launcher

        def send_logs(self, *args: Any, **kw: Any) -> LogsAck:
            ack = super().send_logs(*args, **kw)
            self.launcher.stop("interrupted")  # SIGTERM, just as the answer gave the next run
            return ack

    api = StopsAtTheEnd(world.svc)
    api.launcher = world.launcher(FakeExecutor({"do-it": Step("done\n")}), api=api)
    api.launcher.run()
    assert api.given == [second]
    assert world.svc.runs.get(first).state == S.FINISHED
    # Never started: back in the queue for another worker, not failed.
    assert states(world, second) == [S.QUEUED, S.READY, S.QUEUED]


PROPOSED_PATH = [S.QUEUED, S.READY, S.PREPARING, S.INITIALIZING, S.PLANNING, S.FINISHED]


def test_a_phase_with_nothing_to_run_is_recorded_with_the_next_report(world: World) -> None:
    world.pool()
    world.stack(commands={"plan": "plan"})  # no init command, no init hooks
    run_id = world.trigger(kind=RunKind.PROPOSED)
    api = SendsLogs(world.svc)
    run_once(world.launcher(FakeExecutor(), api=api, disconnect_after_job=True))
    assert states(world, run_id) == PROPOSED_PATH  # every phase recorded, in order
    assert api.reports == [S.PREPARING, S.PLANNING]  # INITIALIZING rode on PLANNING's report


def test_phases_with_nothing_to_run_at_the_end_ride_on_the_end(world: World) -> None:
    world.pool()
    world.stack(commands={"apply": "apply"})  # a proposed run runs nothing of it
    run_id = world.trigger(kind=RunKind.PROPOSED)
    api = SendsLogs(world.svc)
    run_once(world.launcher(FakeExecutor(), api=api, disconnect_after_job=True))
    assert states(world, run_id) == PROPOSED_PATH
    assert api.reports == [S.PREPARING] and api.batches[-1][1] == "FINISHED"


def test_a_phase_with_a_hook_is_reported_on_its_own(world: World) -> None:
    world.pool()
    world.stack("hooked", commands={"plan": "plan"}, hooks={"after_init": ("hook",)})
    api = SendsLogs(world.svc)
    run_id = world.trigger("hooked", kind=RunKind.PROPOSED)
    run_once(world.launcher(FakeExecutor(), api=api, disconnect_after_job=True))
    assert states(world, run_id) == PROPOSED_PATH
    assert api.reports == [S.PREPARING, S.INITIALIZING, S.PLANNING]


# held reports (launcher/reports.py) ---------------------------------------------


def test_a_run_that_changes_nothing_and_passes_within_the_hold_costs_one_request(world: World) -> None:
    world.pool()
    world.stack(commands={"init": "init", "plan": "plan"})
    run_id = world.trigger(kind=RunKind.PROPOSED)
    api = SendsLogs(world.svc)
    run_once(world.launcher(FakeExecutor(), api=api, disconnect_after_job=True, report_hold="10s"))
    assert states(world, run_id) == PROPOSED_PATH  # every phase recorded, in order
    assert api.reports == [] and api.batches == [(2, "FINISHED")]  # all of it with the end


def test_a_held_phase_is_reported_on_its_own_when_the_hold_ends(world: World) -> None:
    world.pool()
    world.stack(commands={"plan": "plan"})
    run_id = world.trigger(kind=RunKind.PROPOSED)
    heard = threading.Event()

    class Hears(SendsLogs):
        def report(self, *args: Any, **kw: Any) -> RunOut:
            answer = super().report(*args, **kw)
            heard.set()
            return answer

    api = Hears(world.svc)
    seen_while_planning: list[RunState] = []

    def slow_plan() -> None:  # a plan longer than the hold
        assert heard.wait(10)
        seen_while_planning.append(world.svc.runs.get(run_id).state)

    executor = FakeExecutor({"plan": Step(on_start=slow_plan)})
    run_once(world.launcher(executor, api=api, disconnect_after_job=True, report_hold="20ms"))
    assert seen_while_planning == [S.PLANNING]  # shown while it ran, with the phases before it
    assert api.reports == [S.PLANNING]
    assert states(world, run_id) == PROPOSED_PATH


@pytest.mark.parametrize(("kind", "command", "first"), [(RunKind.TASK, "do-it", S.PERFORMING),
                                                        (RunKind.TRACKED, "", S.INITIALIZING)])
def test_a_run_that_may_change_something_is_reported_before_its_first_command(
        world: World, kind: RunKind, command: str, first: RunState) -> None:
    world.pool()
    world.stack(autodeploy=True)
    run_id = world.trigger(kind=kind, command=command)
    api = SendsLogs(world.svc)
    known_at_first_command: list[RunState] = []

    def first_command() -> None:
        if not known_at_first_command:
            known_at_first_command.append(world.svc.runs.get(run_id).state)

    steps = {name: Step(on_start=first_command) for name in ("do-it", "init")}
    run_once(world.launcher(FakeExecutor(steps), api=api, disconnect_after_job=True, report_hold="10s"))
    assert known_at_first_command == [first]
    assert api.reports[0] == first  # PREPARING went with it
    assert S.PREPARING in states(world, run_id) and world.svc.runs.get(run_id).state == S.FINISHED


def test_a_held_report_the_server_refuses_stops_the_run_and_abandons_it(world: World) -> None:
    world.pool()
    world.stack(commands={"plan": "plan"})
    run_id = world.trigger(kind=RunKind.PROPOSED)

    class Refuses(SendsLogs):
        def report(self, *args: Any, **kw: Any) -> RunOut:
            raise Conflict("run changed meanwhile; the report was refused")

    api = Refuses(world.svc)
    executor = FakeExecutor({"plan": Step(hang=True)})  # runs until stopped
    run_once(world.launcher(executor, api=api, disconnect_after_job=True, report_hold="20ms"))
    assert executor.commands == ["plan"]  # stopped once the refusal came
    assert [end for _, end in api.batches if end] == []  # and never reported an end
    # The server never heard the run start: back in the queue once the worker left.
    assert states(world, run_id) == [S.QUEUED, S.READY, S.QUEUED]


def test_a_report_through_several_phases_is_one_move_and_one_insert(world: World) -> None:
    from sqlalchemy import event

    world.pool()
    world.stack(commands={"plan": "plan"})
    world.trigger(kind=RunKind.PROPOSED)
    launcher = world.launcher()
    launcher.register()
    api = launcher.client
    assert isinstance(api, InProcessWorkerApi)
    assignment = api.poll(0).assignment
    assert assignment is not None
    writes: list[tuple[str, bool]] = []

    def seen(_conn: Any, _cursor: Any, statement: str, _params: Any, _context: Any, many: bool) -> None:
        if statement.split()[0] in ("UPDATE", "INSERT"):
            writes.append((" ".join(statement.split()[:3]), many))

    event.listen(world.svc.ctx.engine, "before_cursor_execute", seen)
    try:
        api.send_logs(assignment.run.id, assignment.lease, [],
                      RunEnd(S.FINISHED, via=(S.PREPARING, S.INITIALIZING, S.PLANNING)))
    finally:
        event.remove(world.svc.ctx.engine, "before_cursor_execute", seen)
    assert states(world, assignment.run.id) == PROPOSED_PATH
    assert writes == [("UPDATE runs SET", False), ("INSERT INTO run_transitions", True),
                      ("UPDATE workers SET", False)]

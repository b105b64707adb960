"""One run on a launcher: phase order, hooks, failures, both timeouts, stops.
The launcher is real; the server is in process and the executor a fake."""

from __future__ import annotations

import threading

import pytest

from runyard.core.states import RunKind, RunState
from runyard.devstack import wait_for
from runyard.launcher.launcher import Launcher
from runyard.testing import FakeExecutor, Flaky, InProcessWorkerApi, Step
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

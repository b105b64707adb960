"""The launcher's life: log shipping, SIGTERM grace, cycle and reset,
removal. A real launcher against the in-process server and a fake executor."""

from __future__ import annotations

import threading

import pytest

from runyard.core.errors import StaleLease
from runyard.core.models import LogBlock, LogLine
from runyard.core.states import RunKind, RunState
from runyard.crypto import make_csr
from runyard.devstack import wait_for
from runyard.launcher.launcher import LauncherExit
from runyard.launcher.logship import BATCH, LogShipper
from runyard.testing import FakeExecutor, Flaky, InProcessWorkerApi, Step
from runyard.wire import LogsAck
from tests.unit.conftest import World, pool_key


def start(launcher: object) -> threading.Thread:
    thread = threading.Thread(target=launcher.run, daemon=True)  # type: ignore[attr-defined]
    thread.start()
    return thread


def held_run(world: World, command: str = "work") -> tuple[InProcessWorkerApi, str, int]:
    """A worker registered through the in-process API, holding a task."""
    world.pool()
    world.stack()
    run_id = world.trigger(kind=RunKind.TASK, command=command)
    launcher = world.launcher()
    launcher.register()
    api = launcher.client
    assert isinstance(api, InProcessWorkerApi)
    answer = api.poll(0)
    assert answer.assignment is not None
    return api, run_id, answer.assignment.lease


def test_log_lines_arrive_in_order_exactly_once_through_failures_and_lost_answers(world: World) -> None:
    api, run_id, lease = held_run(world)
    flaky = Flaky(api, failures={"send_logs": 3}, lose_answers={"send_logs": 2})
    shipper = LogShipper(flaky, run_id, "s", lease, lambda: None, sleep=lambda _: None)
    for i in range(1, 1201):
        shipper.write(f"line {i}")
    shipper.close(timeout=5)
    lines = world.svc.logs.page(run_id).lines
    assert [ln.msg for ln in lines] == [f"line {i}" for i in range(1, 1201)]
    assert [ln.seq for ln in lines] == list(range(1, 1201))


def test_a_log_batch_for_a_lost_lease_ends_shipping_and_close_says_why(world: World) -> None:
    api, run_id, lease = held_run(world)
    shipper = LogShipper(api, run_id, "s", lease + 1, lambda: None)
    shipper.write("from a stale worker")
    with pytest.raises(StaleLease):
        shipper.close(timeout=5)
    assert world.svc.logs.page(run_id).lines == ()


def test_an_over_long_line_is_sent_as_several(world: World) -> None:
    api, run_id, lease = held_run(world)
    shipper = LogShipper(api, run_id, "s", lease, lambda: None)
    shipper.write("x" * 40_000)
    shipper.close(timeout=5)
    assert [len(ln.msg) for ln in world.svc.logs.page(run_id).lines] == [16384, 16384, 7232]


class Batches:
    """A worker API that only counts the log batches it is sent."""

    def __init__(self) -> None:
        self.sizes: list[int] = []
        self.first = threading.Event()

    def send_logs(self, run_id: str, lease: int, blocks: list[LogBlock], end: object = None) -> LogsAck:
        self.sizes.append(sum(b.line_count for b in blocks))
        self.first.set()
        return LogsAck(stop_run=False)


def test_lines_written_one_at_a_time_travel_together_until_close() -> None:
    sent = Batches()
    shipper = LogShipper(sent, "r1", "s", 1, lambda: None, linger=60)  # type: ignore[arg-type]
    for i in range(300):
        shipper.write(f"line {i}")
    assert not sent.first.wait(0.05)  # lingering: nothing sent yet
    shipper.close(timeout=5)  # ends the linger at once
    assert sent.sizes == [300]


def test_a_full_batch_does_not_linger_and_the_last_one_can_be_held() -> None:
    sent = Batches()
    shipper = LogShipper(sent, "r1", "s", 1, lambda: None, linger=60)  # type: ignore[arg-type]
    for i in range(BATCH + 10):
        shipper.write(f"line {i}")
    assert sent.first.wait(5)  # a whole request's worth went without waiting
    last = shipper.close(timeout=5, hold_last=True)
    assert sent.sizes == [BATCH]
    assert sum(b.line_count for b in last) == 10 and last[0].seq == BATCH + 1


def test_sigterm_lets_a_run_finish_within_the_grace(world: World) -> None:
    world.pool()
    world.stack()
    run_id = world.trigger(kind=RunKind.TASK, command="short")
    release = threading.Event()
    started = threading.Event()

    def begin() -> None:
        started.set()
        release.wait(5)

    launcher = world.launcher(FakeExecutor({"short": Step(on_start=begin)}), interruption_grace_period="5s")
    thread = start(launcher)
    assert started.wait(5)
    launcher.interrupt()
    release.set()
    thread.join(5)
    assert not thread.is_alive()
    assert world.svc.runs.get(run_id).state == RunState.FINISHED


def test_sigterm_stops_a_run_still_going_after_the_grace(world: World) -> None:
    world.pool()
    world.stack()
    run_id = world.trigger(kind=RunKind.TASK, command="long")
    started = threading.Event()
    launcher = world.launcher(FakeExecutor({"long": Step(hang=True, on_start=started.set)}),
                              interruption_grace_period="0.05s")
    thread = start(launcher)
    assert started.wait(5)
    launcher.interrupt()
    thread.join(5)
    run = world.svc.runs.get(run_id)
    assert (run.state, run.reason) == (RunState.STOPPED, "interrupted")


def test_a_cycled_pool_ends_an_idle_launcher_with_reason_cycled(world: World) -> None:
    world.pool()
    launcher = world.launcher()
    reasons: list[str] = []
    thread = threading.Thread(target=lambda: reasons.append(launcher.run()), daemon=True)
    thread.start()
    wait_for(lambda: world.svc.workers.list(world.pool_id), 5, "the launcher", interval=0.002)
    assert world.svc.pools.cycle("p1") == 1
    thread.join(5)
    assert reasons == ["cycled"]


def test_a_reset_pool_ends_its_launchers_with_an_error(world: World) -> None:
    world.pool()
    launcher = world.launcher()
    failures: list[BaseException] = []

    def run() -> None:
        try:
            launcher.run()
        except LauncherExit as exc:
            failures.append(exc)

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    wait_for(lambda: world.svc.workers.list(world.pool_id), 5, "the launcher", interval=0.002)
    world.svc.workers.reset_pool("p1", make_csr(pool_key()).decode())
    thread.join(5)
    assert len(failures) == 1 and "reset" in str(failures[0])


def test_a_lost_worker_registers_again_and_a_scaled_in_one_leaves(world: World) -> None:
    world.pool()
    launcher = world.launcher()
    # retry's testing mode (tests/unit/conftest.py): it joins again without waiting
    reasons: list[str] = []
    thread = threading.Thread(target=lambda: reasons.append(launcher.run()), daemon=True)
    thread.start()
    first = wait_for(lambda: world.svc.workers.list(world.pool_id), 5, "the launcher", interval=0.002)[0]
    world.svc.workers.remove(first.id, "worker lost")
    second = wait_for(lambda: [w for w in world.svc.workers.list(world.pool_id) if w.id != first.id], 5,
                      "the launcher to join again", interval=0.002)[0]
    world.svc.workers.remove(second.id, "scaled in")
    thread.join(5)
    assert reasons == ["scaled-in"] and launcher.registrations == 2
    assert world.svc.workers.list(world.pool_id) == []


def test_log_line_numbers_of_a_resumed_run_follow_on_from_its_plan(world: World) -> None:
    world.pool()
    world.stack(autodeploy=False)
    run_id = world.trigger()
    world.launcher(FakeExecutor({"plan": Step("planned\n")}), disconnect_after_job=True).run()
    world.svc.runs.confirm(run_id)
    world.launcher(FakeExecutor({"apply": Step("applied\n")}), disconnect_after_job=True).run()
    lines: tuple[LogLine, ...] = world.svc.logs.page(run_id).lines
    assert [ln.seq for ln in lines] == list(range(1, len(lines) + 1))
    assert "planned" in [ln.msg for ln in lines] and "applied" in [ln.msg for ln in lines]


def test_a_report_whose_answer_was_lost_is_sent_again_and_the_run_goes_on(world: World) -> None:
    world.pool()
    world.stack(autodeploy=True)
    run_id = world.trigger()
    api = Flaky(InProcessWorkerApi(world.svc), lose_answers={"report": 3})
    launcher = world.launcher(FakeExecutor(), api=api, disconnect_after_job=True)
    launcher.run()
    run = world.svc.runs.get(run_id)
    assert run.state == RunState.FINISHED
    assert [t.state for t in run.transitions].count(RunState.PREPARING) == 1


def test_a_launcher_told_to_stop_while_its_server_is_gone_leaves(world: World) -> None:
    """Every retry loop honours stop: with the server gone mid-run, two
    interrupts end the run and the launcher, whose calls would otherwise
    be retried for ever."""
    world.pool()
    world.stack()
    world.trigger(kind=RunKind.TASK, command="work")
    executor = FakeExecutor({"work": Step(hang=True)})
    api = Flaky(InProcessWorkerApi(world.svc))
    launcher = world.launcher(executor, api=api)
    reasons: list[str] = []
    thread = threading.Thread(target=lambda: reasons.append(launcher.run()), daemon=True)
    thread.start()
    wait_for(lambda: executor.commands == ["work"], 5, "the run's command", interval=0.002)
    api.failures.update({name: 10**9 for name in ("report", "send_logs", "poll", "heartbeat", "deregister")})
    launcher.interrupt()
    launcher.interrupt()
    thread.join(5)
    assert not thread.is_alive(), "the launcher still retries calls to a server that is gone"
    assert reasons == ["interrupted"]

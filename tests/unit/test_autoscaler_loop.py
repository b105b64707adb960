"""The autoscaler's step and reconciliation, on the in-process server and a
fake cloud group."""

from __future__ import annotations

from runyard.autoscaler.loop import Autoscaler
from runyard.core.scaling import Limits, Reason
from runyard.core.states import RunKind, RunState
from runyard.crypto import PoolToken, sign_challenge
from runyard.testing import FakeProvider, InProcessFleetApi
from tests.unit.conftest import World, pool_key


def register(world: World, instance: str) -> str:
    cert = PoolToken.decode(world.token).certificate_pem
    challenge = world.svc.workers.challenge(world.pool_id)
    worker, _ = world.svc.workers.register(world.pool_id, cert, challenge, sign_challenge(pool_key(), challenge),
                                           {"instance_id": instance}, "test")
    return worker.id


def scaler(world: World, provider: FakeProvider, limits: Limits, boot_grace: float = 300) -> Autoscaler:
    return Autoscaler(InProcessFleetApi(world.svc), "p1", provider, limits, boot_grace=boot_grace, clock=world.clock)


def step(auto: Autoscaler) -> Reason:
    return auto.step(auto.client.demand("p1")).reason


def test_scale_out_counts_booting_instances_and_stops_at_max(world: World) -> None:
    world.pool()
    world.stack()
    for _ in range(3):
        world.trigger(kind=RunKind.PROPOSED)
    provider = FakeProvider(world.clock)
    auto = scaler(world, provider, Limits(0, 4))
    assert step(auto) == Reason.SCALE_OUT and len(provider.instances) == 3
    assert step(auto) == Reason.STEADY and len(provider.instances) == 3  # booting: no overshoot
    for _ in range(5):
        world.trigger(kind=RunKind.PROPOSED)
    assert step(auto) == Reason.AT_MAX and len(provider.instances) == 4


def test_scale_in_retires_only_idle_workers_and_never_a_busy_one(world: World) -> None:
    world.pool()
    world.stack()
    provider = FakeProvider(world.clock, desired=3)
    ids = list(provider.instances)
    workers = {iid: register(world, iid) for iid in ids}
    run_id = world.trigger(kind=RunKind.PROPOSED)
    assignment = world.svc.dispatch.claim(workers[ids[0]])
    assert assignment is not None and assignment.run.id == run_id
    world.clock.advance(600)
    auto = scaler(world, provider, Limits(0, 4, scale_in_cooldown=0, idle_before_scale_in=0))
    assert step(auto) == Reason.SCALE_IN
    assert list(provider.instances) == [ids[0]]  # the busy worker's instance stays
    assert [w.id for w in world.svc.workers.list(world.pool_id)] == [workers[ids[0]]]
    assert world.svc.runs.get(run_id).state == RunState.READY


def test_an_instance_that_never_registers_is_ended_after_the_boot_grace(world: World) -> None:
    world.pool()
    provider = FakeProvider(world.clock, desired=2)
    served, stray = list(provider.instances)
    register(world, served)
    auto = scaler(world, provider, Limits(1, 4), boot_grace=60)
    step(auto)
    assert sorted(provider.instances) == sorted([served, stray])  # still within the grace
    world.clock.advance(61)
    step(auto)
    assert list(provider.instances) == [served] and provider.terminated == [stray]


def test_a_worker_whose_instance_is_gone_is_removed_and_its_run_fails(world: World) -> None:
    world.pool()
    world.stack()
    provider = FakeProvider(world.clock, desired=1)
    ghost = register(world, "i-gone")
    run_id = world.trigger(kind=RunKind.PROPOSED)
    assignment = world.svc.dispatch.claim(ghost)
    assert assignment is not None
    auto = scaler(world, provider, Limits(0, 4, scale_in_cooldown=3600))
    step(auto)
    assert ghost not in [w.id for w in world.svc.workers.list(world.pool_id)]
    assert world.svc.runs.get(run_id).state == RunState.QUEUED  # never started: it goes to another worker

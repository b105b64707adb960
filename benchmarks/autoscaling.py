"""Autoscaling policies on the same bursty demand trace.

A discrete-event simulation (1 s steps) of one pool: jobs arrive in bursts,
each runs for a fixed time on one worker; an instance takes BOOT seconds
from launch to taking work. Three policies size the fleet:

- runyard: core.scaling.decide, the autoscaler's own function, reacting as
  soon as demand changes; scale-in retires workers idle >= 30 s after a 60 s
  cooldown (drain, re-check, terminate with decrement).
- Semaphore agent-aws-stack (as documented): a scaler polls the job API
  every 60 s and sets desired = occupied + waiting within [min, max]; it never
  scales in: agents shut themselves down after an idle timeout (300 s).
- Buildkite agent-scaler (as documented): polls every 10 s, desired =
  ceil((scheduled + running) / agents_per_instance) within [min, max], one
  agent per instance; scale-in lowers the desired capacity after a 300 s
  cooldown, and the group ends the oldest instances, a busy one only after
  its job (the elastic stack's lifecycle hook lets the agent finish).

For each it prints the mean and p95 queue wait and the idle worker-minutes
(instances up but not running a job, booting included).

Usage: python benchmarks/autoscaling.py [--seed 7]
"""

from __future__ import annotations

import argparse
import math
import random
from dataclasses import dataclass, field

from runyard.core.scaling import Fleet, IdleWorker, Limits, decide

BOOT = 45  # seconds from launch to taking work
JOB = 90  # seconds a job runs
HORIZON = 4 * 3600
MIN, MAX = 0, 20


def trace(seed: int) -> list[int]:
    """Arrival second of every job: quiet stretches, then bursts."""
    rng = random.Random(seed)
    arrivals = []
    t = 0
    while t < HORIZON - 900:
        t += rng.randint(300, 1500)  # quiet
        burst = rng.randint(5, 40)
        for _ in range(burst):
            arrivals.append(t + rng.randint(0, 120))
    return sorted(a for a in arrivals if a < HORIZON - 600)


@dataclass
class Instance:
    launched: float
    job_end: float = -1.0  # busy until then
    idle_since: float = 0.0
    name: str = ""
    draining: bool = False  # takes no new job; goes when its job ends


@dataclass
class Sim:
    arrivals: list[int]
    queue: list[int] = field(default_factory=list)  # arrival times waiting
    instances: list[Instance] = field(default_factory=list)
    waits: list[float] = field(default_factory=list)
    idle_seconds: float = 0.0
    seq: int = 0

    def launch(self, now: float) -> None:
        self.seq += 1
        self.instances.append(Instance(now, idle_since=now + BOOT, name=f"i{self.seq}"))

    def ready(self, inst: Instance, now: float) -> bool:
        return now >= inst.launched + BOOT

    def tick(self, now: int) -> None:
        while self.arrivals and self.arrivals[0] <= now:
            self.queue.append(self.arrivals.pop(0))
        for inst in self.instances:
            if inst.job_end >= 0 and now >= inst.job_end:
                inst.job_end = -1.0
                inst.idle_since = now
        self.instances = [i for i in self.instances if not (i.draining and i.job_end < 0)]
        for inst in self.instances:
            if self.queue and inst.job_end < 0 and self.ready(inst, now) and not inst.draining:
                arrived = self.queue.pop(0)
                self.waits.append(now - arrived)
                inst.job_end = now + JOB
        self.idle_seconds += sum(1 for i in self.instances if i.job_end < 0)

    def busy(self, now: float) -> int:
        return sum(1 for i in self.instances if i.job_end >= 0)


def run_runyard(arrivals: list[int]) -> Sim:
    sim = Sim(list(arrivals))
    limits = Limits(MIN, MAX, scale_in_cooldown=60, idle_before_scale_in=30)
    last_change = -1e9
    for now in range(HORIZON):
        sim.tick(now)
        idle = tuple(IdleWorker(i.name, i.name, i.idle_since) for i in sim.instances
                     if i.job_end < 0 and sim.ready(i, now))
        booting = sum(1 for i in sim.instances if not sim.ready(i, now))
        fleet = Fleet(desired=len(sim.instances), busy=sim.busy(now), idle=idle, booting=booting)
        decision = decide(len(sim.queue), fleet, limits, now, last_change)
        if decision.desired > len(sim.instances):
            for _ in range(decision.desired - len(sim.instances)):
                sim.launch(now)
            last_change = now
        gone = {w.instance_id for w in decision.retire}
        if gone:
            sim.instances = [i for i in sim.instances if i.name not in gone]
            last_change = now
    return sim


def run_semaphore(arrivals: list[int], poll: int = 60, idle_timeout: int = 300) -> Sim:
    sim = Sim(list(arrivals))
    for now in range(HORIZON):
        sim.tick(now)
        # Agents shut themselves down (with a decrement) after the idle timeout.
        sim.instances = [i for i in sim.instances
                         if not (i.job_end < 0 and sim.ready(i, now) and now - i.idle_since >= idle_timeout)]
        if now % poll == 0:
            desired = max(MIN, min(MAX, sim.busy(now) + len(sim.queue)))
            while len(sim.instances) < desired:
                sim.launch(now)
    return sim


def run_buildkite(arrivals: list[int], poll: int = 10, cooldown: int = 300) -> Sim:
    sim = Sim(list(arrivals))
    last_in = -1e9
    for now in range(HORIZON):
        sim.tick(now)
        if now % poll:
            continue
        desired = max(MIN, min(MAX, math.ceil(sim.busy(now) + len(sim.queue))))
        live = [i for i in sim.instances if not i.draining]
        if desired > len(live):
            for _ in range(desired - len(live)):
                sim.launch(now)
        elif desired < len(live) and now - last_in >= cooldown:
            # The group ends the oldest instances; a busy one finishes its job first.
            for victim in sorted(live, key=lambda i: i.launched)[: len(live) - desired]:
                victim.draining = True
            sim.instances = [i for i in sim.instances if not (i.draining and i.job_end < 0)]
            last_in = now
    return sim


def summary(name: str, sim: Sim) -> str:
    waits = sorted(sim.waits)
    mean = sum(waits) / len(waits)
    p95 = waits[min(len(waits) - 1, int(0.95 * len(waits)))]
    return f"| {name} | {mean:.1f} s | {p95:.1f} s | {sim.idle_seconds / 60:.0f} |"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seed", type=int, default=7)
    args = parser.parse_args()
    arrivals = trace(args.seed)
    print(f"{len(arrivals)} jobs over {HORIZON // 3600} h, {JOB} s each, {BOOT} s boot, max {MAX} workers\n")
    print("| policy | mean queue wait | p95 queue wait | idle worker-minutes |")
    print("| --- | --- | --- | --- |")
    print(summary("runyard", run_runyard(arrivals)))
    print(summary("Semaphore agent-aws-stack", run_semaphore(arrivals)))
    print(summary("Buildkite agent-scaler", run_buildkite(arrivals)))


if __name__ == "__main__":
    main()

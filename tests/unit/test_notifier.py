"""The notifier: ordinary waiters wake together; polls wait their turn, so a
change wakes one of them however many there are, and a turn is never lost."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from runyard.server.notifier import ANY_TOPIC, Notifier, Woken

TOPIC = "pool:p1"


async def parked(notifier: Notifier, count: int, turn: bool) -> list[asyncio.Task[Woken]]:
    seen = notifier.generations(TOPIC)
    tasks = [asyncio.create_task(notifier.wait_any(seen, 5, turn_on=TOPIC if turn else None)) for _ in range(count)]
    while notifier.waiting(TOPIC) < count:
        await asyncio.sleep(0)
    return tasks


async def settle() -> None:
    for _ in range(5):
        await asyncio.sleep(0)


def test_a_change_wakes_every_ordinary_waiter_but_one_waiting_its_turn() -> None:
    async def scenario() -> tuple[tuple[int, int], list[Woken]]:
        notifier = Notifier()
        everyone = await parked(notifier, 3, turn=False)
        turns = await parked(notifier, 500, turn=True)
        notifier.wake(TOPIC)
        await settle()
        woken = (sum(t.done() for t in everyone), sum(t.done() for t in turns))
        why = sorted({t.result() for t in [*everyone, *turns] if t.done()})
        notifier.close()
        await asyncio.gather(*everyone, *turns)
        return woken, why

    assert asyncio.run(scenario()) == ((3, 1), ["moved", "turn"])


def test_passing_the_turn_on_wakes_the_next_without_moving_the_topic() -> None:
    async def scenario() -> tuple[int, int, int]:
        notifier = Notifier()
        turns = await parked(notifier, 3, turn=True)
        before = notifier.generation(TOPIC)
        assert notifier.pass_on(TOPIC)
        await settle()
        first = sum(t.done() for t in turns)
        assert notifier.pass_on(TOPIC)
        await settle()
        woken = sum(t.done() for t in turns)
        notifier.close()
        await asyncio.gather(*turns)
        return first, woken, notifier.generation(TOPIC) - before

    assert asyncio.run(scenario()) == (1, 2, 0)
    assert not Notifier().pass_on(TOPIC)  # nobody waits: nothing to pass


def test_a_waiter_cancelled_after_its_turn_came_hands_it_to_the_next() -> None:
    async def scenario() -> list[bool]:
        notifier = Notifier()
        first, second = await parked(notifier, 2, turn=True)
        notifier.wake(TOPIC)  # the first's turn; it is cancelled before it could look
        first.cancel()
        await settle()
        done = [first.cancelled(), second.done()]
        notifier.close()
        await asyncio.gather(second)
        return done

    assert asyncio.run(scenario()) == [True, True]


def test_a_change_between_the_look_and_the_wait_is_never_missed() -> None:
    async def scenario() -> str:
        notifier = Notifier()
        seen = notifier.generations(TOPIC)
        notifier.wake(TOPIC)  # a run queued after the look
        return await asyncio.wait_for(notifier.wait_any(seen, 5, turn_on=TOPIC), 1)

    assert asyncio.run(scenario()) == "moved"


def test_when_wake_ups_may_have_been_missed_every_topic_moves_even_one_never_notified() -> None:
    notifier = Notifier()
    before = notifier.generations("worker:w1", ANY_TOPIC)
    notifier.wake_all()  # the bus reconnected: notifications may be lost
    assert notifier.generations("worker:w1", ANY_TOPIC) != before


def test_a_turn_given_as_the_wait_times_out_is_answered_not_lost(monkeypatch: pytest.MonkeyPatch) -> None:
    notifier = Notifier()
    real_wait = asyncio.wait

    async def late(fs: Any, timeout: float) -> Any:
        done = await real_wait(fs, timeout=timeout)
        notifier.wake(TOPIC)  # another thread's change, after the timeout but before the waiter unparks
        return done

    monkeypatch.setattr(asyncio, "wait", late)
    ended: dict[str, int] = {}
    answer = asyncio.run(notifier.wait_any(notifier.generations(TOPIC), 0.01, turn_on=TOPIC, ended=ended))
    assert answer == "turn"
    assert ended == {TOPIC: 1}


def test_a_timed_out_wait_says_how_far_its_topics_had_moved() -> None:
    async def scenario() -> tuple[list[Woken], dict[str, int]]:
        notifier = Notifier()
        first = await parked(notifier, 1, turn=True)
        ended: dict[str, int] = {}
        second = asyncio.create_task(notifier.wait_any(notifier.generations(TOPIC), 0.05, turn_on=TOPIC,
                                                       ended=ended))
        while notifier.waiting(TOPIC) < 2:
            await asyncio.sleep(0)
        notifier.wake(TOPIC)  # the first waiter's turn: the second sleeps on until it times out
        answers = [await first[0], await second]
        return answers, ended

    answers, ended = asyncio.run(scenario())
    assert answers == ["turn", ""]
    assert ended == {TOPIC: 1}  # moved while it was parked: handed to the first

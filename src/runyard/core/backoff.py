"""Exponential backoff with full jitter: how every retry loop waits."""

from __future__ import annotations

import random
from collections.abc import Callable


class Backoff:
    """The next wait of a retry loop: grows from ``initial`` to ``maximum``
    (each wait drawn between half and all of the step, so many clients that
    failed together do not come back together); ``reset()`` after a success."""

    def __init__(self, initial: float = 0.2, maximum: float = 5.0, rand: Callable[[], float] = random.random) -> None:
        self.initial = initial
        self.maximum = maximum
        self.rand = rand
        self.attempts = 0

    def next(self) -> float:
        step = min(self.maximum, self.initial * (2 ** self.attempts))
        self.attempts += 1
        return float(step * (0.5 + 0.5 * self.rand()))

    def reset(self) -> None:
        self.attempts = 0

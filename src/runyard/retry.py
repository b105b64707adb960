"""How every loop that waits for a peer to come back waits: one policy, the
one module that imports tenacity.

A wait grows from ``INITIAL`` to ``MAXIMUM`` with full jitter (many clients
that failed together do not come back together). A loop given a stop event
sleeps on it, so setting it ends the wait at once and the loop at its next
failure; a loop given a deadline gives up once it has passed. Either way the
last failure is raised, as the caller would have seen it without retries.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from typing import TypeVar

from tenacity import (
    RetryCallState,
    Retrying,
    retry_if_exception_type,
    stop_after_delay,
    stop_any,
    stop_never,
    stop_when_event_set,
    wait_random_exponential,
)
from tenacity.stop import stop_base

INITIAL = 0.2
MAXIMUM = 5.0

Sleep = Callable[[float], None]
T = TypeVar("T")
_testing = False


def set_testing(testing: bool) -> None:
    """Tests: every wait is zero (the peer that failed answers at once)."""
    global _testing
    _testing = testing


def attempts(
    on: type[BaseException] | tuple[type[BaseException], ...],
    *,
    what: str = "",
    stop: threading.Event | None = None,
    deadline: float | None = None,
    sleep: Sleep | None = None,
    log: logging.Logger | None = None,
    initial: float = INITIAL,
    maximum: float = MAXIMUM,
) -> Retrying:
    """Attempts of a call that fails with ``on`` while its peer is away:
    ``for attempt in attempts(...): with attempt: call()``."""
    stops: list[stop_base] = []
    if stop is not None:
        stops.append(stop_when_event_set(stop))
    if deadline is not None:
        stops.append(stop_after_delay(deadline))
    def pause(seconds: float) -> None:
        seconds = 0.0 if _testing else seconds
        if sleep is not None:
            sleep(seconds)
        elif stop is not None:
            stop.wait(seconds)
        else:
            time.sleep(seconds)

    def before_sleep(state: RetryCallState) -> None:
        if log is not None and state.outcome is not None:
            log.warning("%s failed, retrying: %s", what or "a call", state.outcome.exception())

    return Retrying(
        retry=retry_if_exception_type(on),
        stop=stop_any(*stops) if stops else stop_never,
        wait=wait_random_exponential(multiplier=initial, max=maximum),
        sleep=pause,
        before_sleep=before_sleep,
        reraise=True,
    )


def call(fn: Callable[[], T], on: type[BaseException] | tuple[type[BaseException], ...], **kw: object) -> T:
    """``fn()``, tried again (as :func:`attempts` says) while it fails with ``on``."""
    result: T = attempts(on, **kw)(fn)  # type: ignore[arg-type]
    return result


def delay(attempt: int, initial: float = INITIAL, maximum: float = MAXIMUM) -> float:
    """The wait before attempt ``attempt + 1`` of a loop that counts its own
    attempts (a worker the server keeps losing joins again ever more slowly)."""
    state = RetryCallState(Retrying(), None, (), {})
    state.attempt_number = attempt + 1
    return 0.0 if _testing else float(wait_random_exponential(multiplier=initial, max=maximum)(state))

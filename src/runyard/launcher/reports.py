"""A run's reports of its phases to the server: one at a time, in order, and
as few as the run allows.

A phase goes to the server in one of three ways:

- *rides*: nothing runs in it (a shell stack without an init command); it
  goes with whatever report comes next, however late;
- *held*: something runs in it, but nothing the server must know of first
  (preparing the workspace; the phases of a run that changes nothing). It
  goes with the next report if that comes within the hold, and on its own
  when the hold ends: a run whose phases pass within the hold costs one
  request where it cost three, and a slow phase still shows on time;
- *reported*: before a command that may change something runs, the server
  knows (a run that started is never started again behind the user's back),
  with everything held or riding before it.

A held report that the server refuses ends the run as any refused report
does: the next report raises the refusal (and ``on_failure`` stops what runs).
"""

from __future__ import annotations

import contextlib
import functools
import threading
from collections.abc import Callable, Iterator

from runyard.core.states import RunState

Send = Callable[[RunState, tuple[RunState, ...]], None]  # (state, the phases passed on the way)


class PhaseReports:
    def __init__(self, send: Send, hold: float, on_failure: Callable[[BaseException], None]) -> None:
        self._send = send
        self._hold = hold
        self._on_failure = on_failure
        self._waiting: list[RunState] = []  # entered, not reported yet
        self._lock = threading.Lock()  # held while a report is sent: one at a time, in order
        self._timer: threading.Timer | None = None
        self._term = 0  # which timer may still send: one started before the last report may not
        self._failure: BaseException | None = None

    def ride(self, state: RunState) -> None:
        """Nothing runs in ``state``: it goes with the next report."""
        with self._lock:
            self._waiting.append(state)

    def hold(self, state: RunState) -> None:
        """``state`` goes with the next report if it comes within the hold,
        else on its own when the hold ends (at once with no hold)."""
        if self._hold <= 0:
            self.report(state)
            return
        with self._lock:
            self._waiting.append(state)
            if self._timer is None:
                self._timer = threading.Timer(self._hold, functools.partial(self._due, self._term))
                self._timer.daemon = True
                self._timer.start()

    def report(self, state: RunState) -> None:
        """Report ``state`` now, with the phases entered before it."""
        with self.next() as passed:
            self._send(state, passed)

    @contextlib.contextmanager
    def next(self) -> Iterator[tuple[RunState, ...]]:
        """For a report sent now (inside the block, nothing else is sent): the
        phases entered since the last one, in order. Raises a held report's
        refusal instead."""
        with self._lock:
            self._stop_timer()
            if self._failure is not None:
                failure, self._failure = self._failure, None
                raise failure
            passed, self._waiting = tuple(self._waiting), []
            yield passed

    def close(self) -> None:
        """The run is over: nothing held is sent any more."""
        with self._lock:
            self._stop_timer()

    def _stop_timer(self) -> None:
        self._term += 1
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def _due(self, term: int) -> None:
        with self._lock:
            if term != self._term or not self._waiting:
                return  # a report took them along meanwhile
            self._timer = None
            *passed, state = self._waiting
            self._waiting = []
            try:
                self._send(state, tuple(passed))
            except BaseException as exc:  # noqa: BLE001 - raised by the run's next report
                self._failure = exc
                self._on_failure(exc)

"""Ships a run's log lines to the server, in order, exactly once.

Lines get sequence numbers here, on the worker, and travel in blocks (the
lines read at one time, joined by newlines). A batch of blocks is resent
until the server acknowledges it; the server ignores sequence numbers it
already has, so a retry after a lost answer never duplicates a line.
"""

from __future__ import annotations

import functools
import json
import logging
import sys
import threading
import time
from collections.abc import Callable, Iterator

from runyard import retry
from runyard.client import WorkerApi
from runyard.core.errors import Unavailable
from runyard.core.limits import MAX_LOG_BATCH_CHARS, MAX_LOG_BATCH_LINES, MAX_LOG_LINE
from runyard.core.models import LogBlock

log = logging.getLogger("runyard.launcher")

BATCH = MAX_LOG_BATCH_LINES
# Lines written within this long of the first one waiting travel in one
# request (unless they fill it first): a command printing line by line costs
# a request per linger, not per line, and a short run's lines go with its end.
LINGER = 0.2


class LogShipper:
    def __init__(
        self,
        client: WorkerApi,
        run_id: str,
        stack_id: str,
        lease: int,
        on_stop_requested: Callable[[], None],
        stdout_json: bool = False,
        clock: Callable[[], float] = time.time,
        start_seq: int = 0,
        sleep: Callable[[float], None] = time.sleep,
        linger: float = LINGER,
        leaving: threading.Event | None = None,
    ) -> None:
        self.leaving = leaving or threading.Event()  # set: give up on a server that is away
        self.client = client
        self.linger = linger
        self.run_id = run_id
        self.stack_id = stack_id
        self.lease = lease
        self.on_stop_requested = on_stop_requested
        self.stdout_json = stdout_json
        self.clock = clock
        self.sleep = sleep
        self._pending: list[LogBlock] = []
        self._seq = start_seq  # a resumed run (apply after confirm) numbers on
        self._cond = threading.Condition()
        self._closed = False
        self._hold_last = False  # closing: leave the last batch to the caller
        self._failure: BaseException | None = None
        self._thread = threading.Thread(target=self._loop, name=f"logs-{run_id}", daemon=True)
        self._thread.start()

    def write(self, msg: str) -> None:
        """Queue one (already masked) line; a very long one goes as several."""
        self.write_lines([msg])

    def write_lines(self, msgs: list[str]) -> None:
        """Queue (already masked) lines, in order, as blocks read at this time."""
        pieces = "\n".join(msgs).split("\n")  # a line is never sent with a newline in it
        if max(map(len, pieces)) > MAX_LOG_LINE:
            pieces = [msg[i:i + MAX_LOG_LINE] for msg in pieces for i in range(0, len(msg) or 1, MAX_LOG_LINE)]
        now = self.clock()
        with self._cond:
            for part in _parts(pieces):
                self._pending.append(LogBlock(self._seq + 1, now, "\n".join(part)))
                self._seq += len(part)
            self._cond.notify()
        if self.stdout_json:
            sys.stdout.write("".join(json.dumps({"run_ulid": self.run_id, "stack_id": self.stack_id, "ts": now,
                                                 "msg": msg}) + "\n" for msg in pieces))
            sys.stdout.flush()

    def close(self, timeout: float | None = None, hold_last: bool = False) -> list[LogBlock]:
        """Send everything queued, then stop. Raises what stopped the shipping
        (a stale lease, the worker removed) so the caller stops reporting.
        With ``hold_last``, the last batch (the lines that fit one request)
        is not sent but returned, for the caller to send with the run's end."""
        with self._cond:
            self._closed = True
            self._hold_last = hold_last
            self._cond.notify()
        self._thread.join(timeout)
        if self._failure is not None:
            raise self._failure
        if not hold_last or self._thread.is_alive():
            return []
        with self._cond:
            last, self._pending = self._pending, []
        return last

    @property
    def failure(self) -> BaseException | None:
        return self._failure

    def _batch(self) -> list[LogBlock]:
        """The oldest pending blocks that fit one request (at least one)."""
        lines = chars = 0
        for count, block in enumerate(self._pending):
            lines += block.line_count
            chars += len(block.text)
            if count and (lines > BATCH or chars > MAX_LOG_BATCH_CHARS):
                return self._pending[:count]
        return self._pending[:]

    def _fits_one(self) -> bool:
        return len(self._batch()) == len(self._pending)

    def _loop(self) -> None:
        while True:
            with self._cond:
                while not self._pending and not self._closed:
                    self._cond.wait()
                lingered = time.monotonic() + self.linger
                while not self._closed and self._fits_one() and (left := lingered - time.monotonic()) > 0:
                    self._cond.wait(left)
                if self._closed and (not self._pending or (self._hold_last and self._fits_one())):
                    return
                batch = self._batch()
            try:
                ack = retry.call(functools.partial(self.client.send_logs, self.run_id, self.lease, batch), Unavailable,
                                 stop=self.leaving, sleep=self.sleep, log=log,
                                 what=f"log upload for run {self.run_id}")
            except Exception as exc:  # noqa: BLE001 - any refusal ends shipping; close() re-raises it
                self._failure = exc
                return
            with self._cond:
                del self._pending[: len(batch)]
            if ack.stop_run:
                self.on_stop_requested()


def _parts(pieces: list[str]) -> Iterator[list[str]]:
    """``pieces`` in runs that each fit one request."""
    if len(pieces) <= BATCH and sum(map(len, pieces)) <= MAX_LOG_BATCH_CHARS:
        yield pieces
        return
    part: list[str] = []
    chars = 0
    for msg in pieces:
        if part and (len(part) >= BATCH or chars + len(msg) > MAX_LOG_BATCH_CHARS):
            yield part
            part, chars = [], 0
        part.append(msg)
        chars += len(msg)
    if part:
        yield part

"""The launcher loop: register, poll for work, run it, heartbeat throughout."""

from __future__ import annotations

import logging
import os
import platform
import queue
import threading
from collections.abc import Mapping

from runyard import __version__
from runyard.client import Client
from runyard.config import LauncherSettings
from runyard.core.errors import InvalidInput, RunyardError, Unauthorized, Unavailable, WorkerGone
from runyard.crypto import PoolToken, load_cert, load_private_key_b64, same_public_key, sign_challenge
from runyard.launcher.executors import Executor
from runyard.launcher.runner import RunAbandoned, RunExecution
from runyard.wire import AssignmentOut, PollOut

log = logging.getLogger("runyard.launcher")
BACKOFF_MAX = 5.0


class LauncherExit(Exception):
    """The launcher stops for good; ``reason`` says why."""

    def __init__(self, reason: str, message: str = "") -> None:
        super().__init__(message or reason)
        self.reason = reason


class Launcher:
    """One worker slot. ``run()`` blocks until ``stop()`` or a reason to exit."""

    def __init__(
        self,
        settings: LauncherSettings,
        executor: Executor,
        env: Mapping[str, str] | None = None,
    ) -> None:
        self.settings = settings
        self.executor = executor
        self.env = dict(os.environ if env is None else env)
        if not settings.token.get_secret_value():
            raise InvalidInput("no pool token: set RUNYARD_TOKEN (printed by `runyard pool create`)")
        if not settings.pool_private_key.get_secret_value():
            raise InvalidInput("no pool private key: set RUNYARD_POOL_PRIVATE_KEY to `base64 -w0 pool.key`")
        self.token = PoolToken.decode(settings.token.get_secret_value())
        self.key = load_private_key_b64(settings.pool_private_key.get_secret_value())
        if not same_public_key(load_cert(self.token.certificate_pem), self.key):
            raise InvalidInput(
                "RUNYARD_POOL_PRIVATE_KEY does not match the pool token: use the key whose CSR made this pool"
            )
        self.mask_values = [self.env[name] for name in settings.mask_envs if self.env.get(name)]
        self.client = Client(self.token.endpoints, timeout=30)
        self.worker_id = ""
        self._stopping = threading.Event()
        self._current: RunExecution | None = None
        self._exit_reason = ""

    # life cycle -----------------------------------------------------------------

    def stop(self, reason: str = "interrupted") -> None:
        """Take no more work; the current run is stopped too."""
        self._exit_reason = self._exit_reason or reason
        self._stopping.set()
        if self._current is not None:
            self._current.request_stop(reason)

    def _sleep(self, seconds: float) -> None:
        self._stopping.wait(seconds)

    def register(self) -> None:
        """Prove we hold the pool's key; retry while the server is unreachable."""
        backoff = 0.2
        while not self._stopping.is_set():
            try:
                challenge = self.client.challenge(self.token.pool_id)
                reply = self.client.register(
                    {
                        "pool_id": self.token.pool_id,
                        "certificate": self.token.certificate_pem,
                        "challenge": challenge,
                        "signature": sign_challenge(self.key, challenge),
                        "metadata": self.settings.metadata(self.env),
                        "version": f"{__version__} ({platform.system().lower()})",
                    }
                )
            except Unavailable as exc:
                log.warning("server unavailable, retrying registration: %s", exc)
                self._sleep(backoff)
                backoff = min(backoff * 2, BACKOFF_MAX)
                continue
            except Unauthorized as exc:
                raise LauncherExit("error", f"registration refused: {exc}") from exc
            self.client.credential = reply.token
            self.worker_id = reply.worker_id
            log.info("registered as worker %s in pool %s", reply.worker_id, self.token.pool_id)
            return

    def run(self) -> str:
        """Work until told to stop; returns the reason the launcher exits."""
        self.register()
        beat = threading.Thread(target=self._heartbeats, name="heartbeat", daemon=True)
        beat.start()
        backoff = 0.2
        try:
            while not self._stopping.is_set():
                try:
                    poll = self._poll()
                    if poll is None:
                        break
                except Unavailable as exc:
                    log.warning("server unavailable, retrying: %s", exc)
                    self._sleep(backoff)
                    backoff = min(backoff * 2, BACKOFF_MAX)
                    continue
                except WorkerGone:
                    log.warning("the server removed this worker; registering again")
                    self.register()
                    continue
                except Unauthorized as exc:
                    raise LauncherExit("error", str(exc)) from exc
                backoff = 0.2
                if poll.exit_reason:
                    self.stop(poll.exit_reason)
                    break
                if poll.assignment is None:
                    continue
                self._execute(poll.assignment)
                if self.settings.disconnect_after_job:
                    self.stop("job-finished")
        finally:
            self._stopping.set()
            self._leave()
        return self._exit_reason or "interrupted"

    def _poll(self) -> PollOut | None:
        """One long poll, given up at once when the launcher is told to stop.

        The request runs in its own thread so a stop does not wait for the
        server's answer. A run the server assigned meanwhile is requeued when
        this worker deregisters: it was never started.
        """
        box: queue.Queue[PollOut | BaseException] = queue.Queue(maxsize=1)

        def call() -> None:
            try:
                box.put(self.client.poll(self.settings.long_poll))
            except BaseException as exc:  # noqa: BLE001 - handed to the waiting thread
                box.put(exc)

        threading.Thread(target=call, name="poll", daemon=True).start()
        while not self._stopping.is_set():
            try:
                result = box.get(timeout=0.1)
            except queue.Empty:
                continue
            if isinstance(result, BaseException):
                raise result
            return result
        return None

    def _execute(self, assignment: AssignmentOut) -> None:
        execution = RunExecution(
            self.client,
            self.executor,
            assignment,
            self.settings.work_dir,
            self.mask_values,
            stdout_json=self.settings.run_logs_on_standard_output_enabled,
            debug=self.settings.debug,
        )
        self._current = execution
        log.info("run %s of stack %s started", assignment.run.id, assignment.stack.name)
        try:
            state = execution.execute()
            log.info("run %s ended %s", assignment.run.id, state.value)
        except RunAbandoned:
            pass
        finally:
            self._current = None

    def _heartbeats(self) -> None:
        while not self._stopping.wait(self.settings.heartbeat_interval):
            try:
                reply = self.client.heartbeat()
            except (Unavailable, WorkerGone):
                continue
            except RunyardError as exc:
                log.warning("heartbeat refused: %s", exc)
                continue
            current = self._current
            if reply.stop_run and current is not None:
                current.request_stop("stopped by user")
            if reply.exit_reason:
                self._exit_reason = self._exit_reason or reply.exit_reason

    def _leave(self) -> None:
        if not self.worker_id:
            return
        try:
            self.client.deregister(self._exit_reason or "launcher exited")
        except RunyardError as exc:
            log.info("could not deregister: %s", exc)

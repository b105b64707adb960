"""The launcher loop: register, poll for work, run it, heartbeat throughout."""

from __future__ import annotations

import logging
import os
import platform
import shutil
import ssl
import subprocess
import threading
import time
from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from concurrent.futures import TimeoutError as FuturesTimeout
from pathlib import Path

from pydantic import SecretStr

from runyard import __version__, retry
from runyard.client import Client, WorkerApi
from runyard.config import LauncherSettings
from runyard.core.errors import InvalidInput, NotFound, RunyardError, Unauthorized, Unavailable, WorkerGone
from runyard.core.models import POOL_RESET, SCALED_IN, Assignment, ExitReason, may_register_again
from runyard.crypto import PoolToken, load_cert, load_private_key_b64, same_public_key, sign_challenge
from runyard.launcher.executors import Executor
from runyard.launcher.logship import LINGER
from runyard.launcher.metrics import LauncherMetrics
from runyard.launcher.policy import InitializationPolicy
from runyard.launcher.runner import RunAbandoned, RunContext, RunExecution
from runyard.launcher.spot import MARGIN as SPOT_MARGIN
from runyard.launcher.spot import Notice, SpotWatcher
from runyard.launcher.workspace import SourceCache
from runyard.masking import check_maskable
from runyard.wire import PollOut, RegisterIn, RegisterOut

log = logging.getLogger("runyard.launcher")
HOOK_TIMEOUT = 300.0
# A worker the server lost track of joins again, but ever more slowly while it
# keeps being lost; after this long registered, it starts from the beginning.
REJOIN_INITIAL, REJOIN_MAX, REJOIN_RESET_AFTER = 1.0, 60.0, 60.0


class LauncherExit(Exception):
    """The launcher stops for good; ``reason`` says why."""

    def __init__(self, reason: str, message: str = "") -> None:
        super().__init__(message or reason)
        self.reason = reason


def check_ca_certificates(extra: Path) -> str:
    """The PEM text of RUNYARD_CA_CERTIFICATES, or why it cannot be used."""
    try:
        extra_pem = extra.read_text()
    except OSError as exc:
        raise InvalidInput(f"cannot read RUNYARD_CA_CERTIFICATES {extra}: {exc.strerror}") from exc
    if "BEGIN CERTIFICATE" not in extra_pem:
        raise InvalidInput(f"RUNYARD_CA_CERTIFICATES {extra} holds no PEM certificate")
    return extra_pem


def with_pool_token(settings: LauncherSettings) -> LauncherSettings:
    """The settings with the pool token read from SSM, where it is kept there
    (RUNYARD_TOKEN_SSM_PARAMETER): done before the launcher is made."""
    if settings.token.get_secret_value() or not settings.token_ssm_parameter:
        return settings
    from runyard.aws import read_secure_parameter

    token = read_secure_parameter(settings.token_ssm_parameter, settings.aws_region or None)
    return settings.model_copy(update={"token": SecretStr(token)})


def ca_bundle(extra: Path, work_dir: Path) -> Path:
    """The system's root CAs and ``extra`` in one PEM file, for runs: tools
    that take one bundle (SSL_CERT_FILE, REQUESTS_CA_BUNDLE) trust both."""
    extra_pem = check_ca_certificates(extra)
    system = ssl.get_default_verify_paths().cafile or "/etc/ssl/certs/ca-certificates.crt"
    system_pem = Path(system).read_text() if Path(system).is_file() else ""
    work_dir.mkdir(parents=True, exist_ok=True)
    bundle = work_dir / "ca-bundle.pem"
    bundle.write_text(system_pem.rstrip("\n") + "\n" + extra_pem)
    bundle.chmod(0o644)
    return bundle


def run_shutdown_hook(hook: Path | None, env: Mapping[str, str], reason: str, worker_id: str = "") -> None:
    """Run the shutdown hook (if any) with the exit reason; never raises."""
    if hook is None:
        return
    hook_env = {**env, "RUNYARD_SHUTDOWN_REASON": reason, "RUNYARD_WORKER_ID": worker_id}
    try:
        proc = subprocess.run([str(hook)], env=hook_env, timeout=HOOK_TIMEOUT, check=False)
        if proc.returncode != 0:
            log.warning("shutdown hook %s exited with %d", hook, proc.returncode)
    except (OSError, subprocess.TimeoutExpired) as exc:
        log.warning("shutdown hook %s failed: %s", hook, exc)


def make_executor(settings: LauncherSettings) -> Executor:
    """The executor the settings ask for; ``auto`` is Docker when an engine answers."""
    if settings.executor == "process":
        from runyard.launcher.executors.process import ProcessExecutor

        return ProcessExecutor()
    from runyard.launcher.executors import ExecutorError
    from runyard.launcher.executors.docker import DockerExecutor, engine_available

    if settings.executor == "auto" and not engine_available():
        from runyard.launcher.executors.process import ProcessExecutor

        log.warning("no Docker engine answers: runs execute as local processes (executor: process)")
        return ProcessExecutor()
    try:
        return DockerExecutor(settings.work_dir, settings.worker_network, settings.worker_runtime,
                              settings.docker_pull, settings.docker_config_dir)
    except ExecutorError as exc:
        raise InvalidInput(str(exc)) from exc


class Launcher:
    """One worker slot. ``run()`` blocks until there is a reason to exit."""

    def __init__(
        self,
        settings: LauncherSettings,
        executor: Executor,
        env: Mapping[str, str] | None = None,
        clock: Callable[[], float] = time.monotonic,
        client: WorkerApi | None = None,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.settings = settings
        self.executor = executor
        self.env = dict(os.environ if env is None else env)
        self.clock = clock
        self.sleep = sleep  # between retries of a run's calls to the server
        token = settings.token.get_secret_value()
        if not token:
            raise InvalidInput("no pool token: set RUNYARD_TOKEN (printed by `runyard pool create`) "
                               "or RUNYARD_TOKEN_SSM_PARAMETER")
        if not settings.pool_private_key.get_secret_value():
            raise InvalidInput("no pool private key: set RUNYARD_POOL_PRIVATE_KEY to `base64 -w0 pool.key`")
        self.token = PoolToken.decode(token)
        self.key = load_private_key_b64(settings.pool_private_key.get_secret_value())
        if not same_public_key(load_cert(self.token.certificate_pem), self.key):
            raise InvalidInput(
                "RUNYARD_POOL_PRIVATE_KEY does not match the pool token: use the key whose CSR made this pool"
            )
        settings.metadata(self.env)  # refused now, with the variable's name, not at registration
        for name in settings.mask_envs:
            if self.env.get(name):
                check_maskable(name, self.env[name])
        self.policy = (
            InitializationPolicy(settings.launcher_run_initialization_policy)
            if settings.launcher_run_initialization_policy else None
        )
        if settings.shutdown_hook_path and not os.access(settings.shutdown_hook_path, os.X_OK):
            raise InvalidInput(f"shutdown hook {settings.shutdown_hook_path} is not an executable file")
        self.client: WorkerApi = client or Client(settings.endpoints or self.token.endpoints, timeout=30,
                                                  extra_ca=settings.ca_certificates)
        self.ca_bundle: Path | None = None  # written by run(): the system's root CAs and the extra ones
        if settings.ca_certificates:
            check_ca_certificates(settings.ca_certificates)
        self.worker_id = ""
        self._gone = False  # the server removed this worker for good
        self._spot: SpotWatcher | None = None
        self.spot_interval = 5.0  # how often the metadata service is asked
        self._stopping = threading.Event()  # take no new work
        self._leaving = threading.Event()  # the current run's grace is over: give up on a server that is away
        self._done = threading.Event()  # the loop has ended: heartbeats end too
        self._current: RunExecution | None = None
        # The server counts a held poll as a heartbeat: while one is held,
        # no heartbeat is sent.
        self._polling = threading.Event()
        self._exit_reason = ""
        self._interrupts = 0
        self._grace_timer: threading.Timer | None = None
        self._grace = settings.interruption_grace_period
        self._idle_since = clock()
        self._registered_at = 0.0
        self._rejoins = 0  # times the server lost track of this worker in a row
        self.watchdog_tick = 0.2  # how often a run's timeouts are looked at
        self.log_linger = LINGER  # how long a batch of a run's log lines waits for more
        self.sources = SourceCache()  # uploaded snapshots fetched once, for every run of their stacks
        self.registrations = 0
        self.metrics = LauncherMetrics()
        # One thread for the held polls: the loop can give a poll up (the
        # launcher stops, its idle time ends) without waiting for its answer.
        self._poller: ThreadPoolExecutor | None = None

    def _start(self) -> None:
        """What run() sets going before it joins: the CA bundle runs trust,
        the metrics server. A failure here is a bad setting (exit 2)."""
        if self.settings.ca_certificates:
            self.ca_bundle = ca_bundle(self.settings.ca_certificates, self.settings.work_dir)
        if self.settings.metrics_port:
            try:
                self.metrics.serve(self.settings.metrics_port)
            except OSError as exc:
                raise InvalidInput(f"RUNYARD_METRICS_PORT {self.settings.metrics_port}: cannot serve metrics "
                                   f"there ({exc.strerror or exc})") from exc

    # life cycle -----------------------------------------------------------------

    def stop(self, reason: str) -> None:
        """Take no new work; the current run may finish (cycle, idle, job done)."""
        self._exit_reason = self._exit_reason or reason
        self._stopping.set()

    def spot_notice(self, notice: Notice) -> None:
        """A spot interruption notice: as SIGTERM, with the notice's deadline.
        The worker drains itself first, so autoscalers stop counting it."""
        try:
            self.client.drain_self()
        except RunyardError as exc:
            log.warning("could not mark this worker drained: %s", exc)
        left = notice.deadline - time.time() - SPOT_MARGIN
        self.interrupt(grace=max(0.0, min(self.settings.interruption_grace_period, left)))

    def interrupt(self, grace: float | None = None) -> None:
        """SIGTERM: stop taking work at once; the current run gets the grace
        period to finish, then is stopped. A second interrupt stops it now."""
        if grace is not None:
            self._grace = grace
        self._interrupts += 1
        self.stop(ExitReason.INTERRUPTED)
        current = self._current
        if current is None:
            return
        if self._interrupts > 1:
            self._give_up(current)
        elif self._grace_timer is None:
            grace = self._grace
            log.warning("interrupted: the current run has %.0fs to finish", grace)
            self._grace_timer = threading.Timer(grace, self._give_up, [current])
            self._grace_timer.daemon = True
            self._grace_timer.start()

    def _give_up(self, current: RunExecution) -> None:
        """The run is stopped now, and what it still has to tell the server
        is tried once more, not waited for: the launcher is leaving."""
        self._leaving.set()
        current.request_stop("interrupted")

    def _sleep(self, seconds: float) -> None:
        self._stopping.wait(seconds)

    def _register_once(self) -> RegisterOut:
        challenge = self.client.challenge(self.token.pool_id)
        return self.client.register(RegisterIn(
            pool_id=self.token.pool_id,
            certificate=self.token.certificate_pem,
            challenge=challenge,
            signature=sign_challenge(self.key, challenge),
            metadata=self.settings.metadata(self.env),
            version=f"{__version__} ({platform.system().lower()}, {self.executor.name})",
        ))

    def register(self) -> None:
        """Prove we hold the pool's key; retry while the server is unreachable
        (until the launcher is told to stop)."""
        if self._stopping.is_set():
            return
        try:
            reply = retry.call(self._register_once, Unavailable, stop=self._stopping, log=log,
                               what="registration")
        except Unavailable:
            return  # told to stop while the server was away
        except WorkerGone as exc:
            self._removed(exc)
            return
        except (Unauthorized, InvalidInput, NotFound) as exc:
            raise LauncherExit(ExitReason.ERROR, f"registration refused: {exc}") from exc
        self.client.credential = reply.token
        self.worker_id = reply.worker_id
        self.registrations += 1
        self._registered_at = self.clock()
        log.info("registered as worker %s in pool %s (executor %s)", reply.worker_id, self.token.pool_id,
                 self.executor.name)

    def _remove_leftovers(self) -> None:
        """Containers and workspaces a previous life of this launcher left behind."""
        removed = self.executor.remove_leftovers()
        if removed:
            log.warning("removed %d container(s) left by a previous launcher", removed)
        if self.settings.work_dir.is_dir():
            for stale in self.settings.work_dir.glob("run-*"):
                shutil.rmtree(stale, ignore_errors=True)

    def run(self) -> str:
        """Work until there is a reason to stop; returns that reason.
        Construction only wires the launcher; this starts it, stop() and
        interrupt() end it."""
        try:
            self._start()
        except RunyardError:
            self._shutdown_hook(ExitReason.ERROR)
            raise
        try:
            self._remove_leftovers()
            self.register()
            beat = threading.Thread(target=self._heartbeats, name="heartbeat", daemon=True)
            beat.start()
            if self.settings.spot_interruption_watch:
                self._spot = SpotWatcher(self.settings.imds_endpoint, self.spot_notice, self.spot_interval)
                self._spot.start()
            self.metrics.state.state("idle")
            self._loop()
        except LauncherExit as exc:
            self._exit_reason = exc.reason
            self._stopping.set()
            raise
        except RunyardError as exc:
            self._exit_reason = ExitReason.ERROR
            self._stopping.set()
            raise LauncherExit(ExitReason.ERROR, str(exc)) from exc
        finally:
            self.metrics.state.state("stopping")
            if self._spot is not None:
                self._spot.stop()
            self._stopping.set()
            self._done.set()
            if self._grace_timer is not None:
                self._grace_timer.cancel()
            self._leave()
            if self._poller is not None:
                self._poller.shutdown(wait=False, cancel_futures=True)
            self.client.close()
            self._shutdown_hook(self._exit_reason or ExitReason.INTERRUPTED)
        return self._exit_reason or ExitReason.INTERRUPTED

    def _removed(self, exc: WorkerGone) -> None:
        """The server removed this worker for good: leave, saying why."""
        self._gone = True  # nothing left to deregister
        if exc.reason == POOL_RESET:
            raise LauncherExit(ExitReason.ERROR, f"{exc.message}; start the launcher with the new pool token")
        log.warning("%s: exiting", exc.message)
        self.stop(ExitReason.SCALED_IN if exc.reason == SCALED_IN else ExitReason.REMOVED)

    def _loop(self) -> None:
        following: Assignment | None = None  # given with the last run's end: no poll for it
        while not self._stopping.is_set():
            if following is not None:
                following = self._run(following)
                continue
            try:
                poll = retry.call(self._poll, Unavailable, stop=self._stopping, log=log, what="polling for work")
                if poll is None:
                    break
            except Unavailable:
                break  # told to stop while the server was away
            except WorkerGone as exc:
                if not may_register_again(exc.reason):
                    self._removed(exc)
                    break
                wait = retry.delay(self._rejoins, REJOIN_INITIAL, REJOIN_MAX)
                self._rejoins += 1
                log.warning("%s; registering again in %.1fs", exc.message, wait)
                self._sleep(wait)
                self.register()
                continue
            except Unauthorized as exc:
                raise LauncherExit(ExitReason.ERROR, str(exc)) from exc
            if self.clock() - self._registered_at >= REJOIN_RESET_AFTER:
                self._rejoins = 0
            if poll.exit_reason:
                self.stop(ExitReason(poll.exit_reason))
                break
            if poll.assignment is not None:
                following = self._run(poll.assignment.to_domain())  # domain records from here on

    def _run(self, assignment: Assignment) -> Assignment | None:
        """Execute one run; the next one, if the server gave it with this one's end.
        (A run given but not started when the launcher stops goes back to the
        queue as it deregisters: the server requeues a READY run of a leaving worker.)"""
        following = self._execute(assignment)
        self._idle_since = self.clock()
        if self.settings.disconnect_after_job:
            self.stop(ExitReason.JOB_FINISHED)
        return following

    def wants_next(self) -> bool:
        """Whether the run that is ending may be followed by another at once."""
        return not self._stopping.is_set() and not self.settings.disconnect_after_job

    def _idle_expired(self) -> bool:
        limit = self.settings.disconnect_after_idle_timeout
        return bool(limit) and self.clock() - self._idle_since >= limit

    def _poll(self) -> PollOut | None:
        """One long poll, given up at once when the launcher stops or its idle
        time runs out. The request runs in its own thread so neither waits for
        the server's answer; a run the server assigned meanwhile is requeued
        when this worker deregisters, as it was never started."""
        wait = self.settings.long_poll
        if self.settings.disconnect_after_idle_timeout:
            remaining = self.settings.disconnect_after_idle_timeout - (self.clock() - self._idle_since)
            wait = max(0.0, min(wait, remaining))

        def call() -> PollOut:
            self._polling.set()
            try:
                return self.client.poll(wait)
            finally:
                self._polling.clear()

        if self._poller is None:
            self._poller = ThreadPoolExecutor(max_workers=1, thread_name_prefix="poll")
        held = self._poller.submit(call)
        while not self._stopping.is_set():
            try:
                result = held.result(timeout=0.1)
            except FuturesTimeout:
                continue
            if result.assignment is None and self._idle_expired():
                self.stop(ExitReason.IDLE)
                return None
            return result
        return None

    def _execute(self, assignment: Assignment) -> Assignment | None:
        ctx = RunContext(
            client=self.client,
            executor=self.executor,
            settings=self.settings,
            env=self.env,
            key=self.key,
            worker={"id": self.worker_id, "pool_id": self.token.pool_id,
                    "metadata": self.settings.metadata(self.env), "executor": self.executor.name},
            policy=self.policy,
            ca_bundle=self.ca_bundle,
            clock=self.clock,
            sleep=self.sleep,
            tick=self.watchdog_tick,
            linger=self.log_linger,
            sources=self.sources,
            wants_next=self.wants_next,
            leaving=self._leaving,
        )
        execution = RunExecution(ctx, assignment)
        self._current = execution
        if self._stopping.is_set() and self._exit_reason == ExitReason.INTERRUPTED:
            self.interrupt()  # a run assigned as SIGTERM arrived gets the same grace
        log.info("run %s of stack %s started", assignment.run.id, assignment.stack.name)
        self.metrics.state.state("busy")
        try:
            state = execution.execute()
            log.info("run %s ended %s", assignment.run.id, state.value)
            self.metrics.runs.labels(state.value).inc()
        except RunAbandoned:
            self.metrics.runs.labels("ABANDONED").inc()
        finally:
            self._current = None
            self.metrics.state.state("idle")
        return execution.next

    def heartbeat_due(self) -> bool:
        """False while an idle worker holds a poll (the server counts it as a
        heartbeat; a busy one always beats: the answer may stop its run)."""
        return not (self._polling.is_set() and self._current is None)

    def _heartbeats(self) -> None:
        # Heartbeats go on while a run finishes after a stop (cycle, SIGTERM).
        while not self._done.wait(self.settings.heartbeat_interval):
            if not self.heartbeat_due():
                continue
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
                self.stop(ExitReason(reply.exit_reason))

    def _leave(self) -> None:
        if not self.worker_id or self._gone:
            return
        try:
            self.client.deregister(self._exit_reason or "launcher exited")
        except RunyardError as exc:
            log.info("could not deregister: %s", exc)

    def _shutdown_hook(self, reason: str) -> None:
        run_shutdown_hook(self.settings.shutdown_hook_path, self.env, reason, self.worker_id)

"""Runs as local processes: for hosts without a container engine."""

from __future__ import annotations

import codecs
import contextlib
import ctypes
import errno
import functools
import os
import selectors
import shlex
import shutil
import signal
import subprocess
import threading

from runyard.launcher.executors import ExecutorError, Output, RunSpec, StepStopped, ca_env

DEFAULT_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
KILL_GRACE = 5.0

# Each command runs under a small supervisor shell that leads its own process
# group. When the launcher dies (even by SIGKILL) the kernel sends the
# supervisor SIGTERM (PR_SET_PDEATHSIG, set by setpriv or a preexec_fn), and
# it kills the whole group: the command's children and grandchildren do not
# outlive the launcher.
SUPERVISOR = 'trap "kill -KILL 0" TERM HUP; /bin/sh -c "$1" & wait $!'


def _die_with_parent() -> None:
    with contextlib.suppress(OSError):
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)


@functools.cache
def _setpriv() -> tuple[str, ...]:
    """``setpriv --pdeathsig TERM --`` (util-linux), where it works: it sets
    the supervisor's parent-death signal without Python code in the child,
    which lets the step start with vfork instead of a fork of the whole
    launcher (benchmarks/docker_overhead.py starts steps). Else ()
    and the signal is set by a preexec_fn, which forces a fork."""
    path = shutil.which("setpriv")
    if path is None:
        return ()
    argv = (path, "--pdeathsig", "TERM", "--")
    try:
        works = subprocess.run([*argv, "true"], capture_output=True, timeout=10).returncode == 0
    except (OSError, subprocess.SubprocessError):
        works = False
    return argv if works else ()


class ProcessExecutor:
    """Commands are ``sh -c`` in their own session, with a clean environment."""

    name = "process"

    def open(self, spec: RunSpec) -> ProcessSession:
        return ProcessSession(spec)

    def remove_leftovers(self) -> int:
        return 0  # process groups die with their launcher

    def reach(self, url: str) -> str:
        return url


class ProcessSession:
    def __init__(self, spec: RunSpec) -> None:
        self.spec = spec
        self.env = {"PATH": DEFAULT_PATH, "HOME": str(spec.workspace), **spec.env}
        if spec.ca_bundle is not None:
            self.env.update(ca_env(str(spec.ca_bundle)))

    def describe(self, command: str, workdir: str) -> str:
        return f"(cd {shlex.quote(str(self.spec.workspace / workdir))} && /bin/sh -c {shlex.quote(command)})"

    def close(self) -> None:
        pass

    def run(self, command: str, workdir: str, output: Output, stop: threading.Event) -> int:
        try:
            setpriv = _setpriv()
            proc = subprocess.Popen(
                [*setpriv, "/bin/sh", "-c", SUPERVISOR, "runyard-step", command],
                cwd=self.spec.workspace / workdir,
                env=self.env,
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                start_new_session=True,
                preexec_fn=None if setpriv else _die_with_parent,
            )
        except OSError as exc:
            if exc.errno == errno.E2BIG:
                raise ExecutorError("the command and the run's variables are larger than this host "
                                    "lets a process start with (Argument list too long)") from exc
            raise ExecutorError(f"cannot start /bin/sh in {self.spec.workspace / workdir}: {exc.strerror}") from exc
        assert proc.stdout is not None
        decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
        stream = proc.stdout.fileno()
        with selectors.DefaultSelector() as sel:
            sel.register(stream, selectors.EVENT_READ)
            while True:
                if stop.is_set():
                    self._kill(proc)
                    raise StepStopped()
                if not sel.select(timeout=0.1):
                    continue
                chunk = os.read(stream, 65536)
                if not chunk:
                    break
                output(decoder.decode(chunk))
        tail = decoder.decode(b"", final=True)
        if tail:
            output(tail)
        proc.stdout.close()
        return proc.wait()

    @staticmethod
    def _kill(proc: subprocess.Popen[bytes]) -> None:
        """TERM the whole process group, then KILL what is left."""
        for sig, grace in ((signal.SIGTERM, KILL_GRACE), (signal.SIGKILL, None)):
            try:
                os.killpg(proc.pid, sig)
            except ProcessLookupError:
                break
            try:
                proc.wait(grace)
                break
            except subprocess.TimeoutExpired:
                continue
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)  # stragglers that left the leader behind
        if proc.stdout:
            proc.stdout.close()
        proc.wait()

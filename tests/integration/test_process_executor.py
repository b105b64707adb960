"""The process executor on this host: a step's processes do not outlive a
launcher killed with SIGKILL, whichever way the parent-death signal is set."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from runyard.launcher.executors import process
from tests.conftest import missing
from tests.harness import wait_for

LAUNCHER = textwrap.dedent("""
    import sys, threading
    from pathlib import Path
    from runyard.launcher.executors import RunSpec, process
    if sys.argv[2] == "preexec_fn":
        process._setpriv = lambda: ()
    ws = Path(sys.argv[1])
    session = process.ProcessExecutor().open(RunSpec("r1", "s1", ws, "", {}, False, ()))
    step = threading.Thread(target=session.run, args=(f"echo $$ > {ws}/pid; exec sleep 600", ".",
                                                      lambda _: None, threading.Event()))
    step.start()
    step.join()
""")


def alive(pid: int) -> bool:
    """Running, not a zombie (this host's PID 1 may not reap orphans)."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except FileNotFoundError:
        return False


@pytest.mark.parametrize("how", ["setpriv", "preexec_fn"])
def test_a_steps_processes_die_with_a_launcher_killed_with_9(tmp_path: Path, how: str) -> None:
    if how == "setpriv" and not process._setpriv():
        missing("no setpriv with --pdeathsig (util-linux) on this host")
    launcher = subprocess.Popen([sys.executable, "-c", LAUNCHER, str(tmp_path), how])
    try:
        pid = int(wait_for(lambda: (tmp_path / "pid").is_file() and (tmp_path / "pid").read_text().strip(), 30,
                           "the step to start"))
        assert alive(pid)
        launcher.send_signal(signal.SIGKILL)
        launcher.wait(10)
        wait_for(lambda: not alive(pid), 10, "the step's process to die with its launcher")
    finally:
        launcher.kill()
        launcher.wait()
        if (tmp_path / "pid").is_file():
            with contextlib.suppress(ProcessLookupError, ValueError):
                os.kill(int((tmp_path / "pid").read_text()), signal.SIGKILL)

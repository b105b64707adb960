"""Where worker instances come from. AWS (runyard.aws.AutoScalingGroup),
launcher processes on this host (LocalProcesses); Kubernetes would be a third
class with the same four methods."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Protocol

from runyard.core.scaling import GroupState, Instance

TERMINATED = frozenset({"Terminating", "Terminating:Wait", "Terminating:Proceed", "Terminated", "Detaching",
                        "Detached"})


class Provider(Protocol):
    name: str

    def describe(self) -> GroupState:
        """Desired capacity (which counts booting instances) and the instances."""
        ...

    def set_desired(self, desired: int) -> None: ...

    def terminate(self, instance_id: str) -> None:
        """End one instance and lower the desired capacity by exactly one."""
        ...


class LocalProcesses:
    """Instances are `runyard launcher` processes on this machine, each with
    RUNYARD_METADATA_instance_id set. A launcher that exits by itself (idle
    timeout) leaves the group with a decrement, as the AWS shutdown hook does."""

    name = "local"

    def __init__(self, launcher_env: Mapping[str, str], work_root: Path, min_size: int, max_size: int,
                 log_dir: Path | None = None) -> None:
        self.env = dict(launcher_env)
        self.work_root = work_root
        self.min_size, self.max_size = min_size, max_size
        self.log_dir = log_dir or work_root
        self.desired = 0
        self._procs: dict[str, tuple[subprocess.Popen[bytes], float]] = {}
        self._seq = 0
        self._lock = threading.Lock()

    def _reap(self) -> None:
        for iid, (proc, _) in list(self._procs.items()):
            if proc.poll() is not None:
                del self._procs[iid]
                self.desired = max(0, self.desired - 1)

    def _launch(self) -> None:
        self._seq += 1
        iid = f"local-{os.getpid()}-{self._seq}"
        env = {**self.env, "RUNYARD_METADATA_instance_id": iid, "RUNYARD_WORK_DIR": str(self.work_root / iid)}
        self.log_dir.mkdir(parents=True, exist_ok=True)
        with open(self.log_dir / f"{iid}.log", "ab") as log:
            proc = subprocess.Popen([sys.executable, "-m", "runyard", "launcher"], env=env, stdout=log,
                                    stderr=subprocess.STDOUT)
        self._procs[iid] = (proc, time.time())

    def describe(self) -> GroupState:
        with self._lock:
            self._reap()
            while len(self._procs) < self.desired:
                self._launch()
            instances = tuple(Instance(iid, "InService", at) for iid, (_, at) in self._procs.items())
            return GroupState(self.desired, self.min_size, self.max_size, instances)

    def set_desired(self, desired: int) -> None:
        with self._lock:
            self.desired = max(self.min_size, min(self.max_size, desired))
            self._reap()
            while len(self._procs) < self.desired:
                self._launch()

    def terminate(self, instance_id: str) -> None:
        with self._lock:
            entry = self._procs.pop(instance_id, None)
            self.desired = max(0, self.desired - 1)
        if entry is not None:
            proc = entry[0]
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()

    def stop_all(self) -> None:
        for iid in list(self._procs):
            self.terminate(iid)

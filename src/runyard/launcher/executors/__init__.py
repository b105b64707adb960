"""Executors run one step of a run somewhere isolated and stream its output."""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol


@dataclass(frozen=True)
class Step:
    """One command of a run, in the run's workspace."""

    command: str
    workspace: Path  # the run's workspace on this host
    workdir: str  # relative to the workspace: the stack's project root
    env: dict[str, str] = field(default_factory=dict)
    image: str = ""  # for container executors


class StepStopped(Exception):
    """The step was killed because its run was asked to stop."""


Output = Callable[[str], None]


class Executor(Protocol):
    """Runs steps. ``run`` returns the exit code, or raises :class:`StepStopped`
    when ``stop`` is set while it runs (after killing everything it started)."""

    name: str

    def run(self, step: Step, output: Output, stop: threading.Event) -> int: ...

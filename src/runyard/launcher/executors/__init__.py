"""Executors isolate runs. Each run opens one session (one container, for
Docker); the run's phases and hooks execute inside it, one command at a time;
closing the session removes everything the run left behind."""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

from runyard.core import mounts
from runyard.core.errors import InvalidInput, RunyardError


@dataclass(frozen=True)
class RunSpec:
    """What an executor needs to isolate one run."""

    run_id: str
    stack_id: str
    workspace: Path  # on this host
    image: str  # for container executors
    env: dict[str, str] = field(default_factory=dict)
    writes: bool = False  # tracked runs and tasks; read-only runs get other mounts and variables
    mounts: tuple[str, ...] = ()  # "/host:/container[:ro]"
    ca_bundle: Path | None = None  # root CAs the run trusts (RUNYARD_CA_CERTIFICATES and the system's)
    user: str = ""  # uid[:gid] a container runs as; empty: the image's user


CA_VARIABLES = ("SSL_CERT_FILE", "REQUESTS_CA_BUNDLE", "CURL_CA_BUNDLE", "AWS_CA_BUNDLE", "GIT_SSL_CAINFO")


def ca_env(path: str) -> dict[str, str]:
    """Variables that point common tools (OpenSSL, Python, curl, AWS, git) at a CA bundle."""
    return {**dict.fromkeys(CA_VARIABLES, path), "RUNYARD_CA_CERTIFICATES": path}


class StepStopped(Exception):
    """The command was killed because its run was asked to stop."""


class ExecutorError(RunyardError):
    """The run cannot be isolated as asked (missing image, bad mount); it fails with this message."""

    code = "executor"


Output = Callable[[str], None]


class Session(Protocol):
    """One run's isolated environment."""

    def run(self, command: str, workdir: str, output: Output, stop: threading.Event) -> int:
        """Run ``command`` in ``workdir`` (relative to the workspace); stream its
        output; return its exit code, or raise :class:`StepStopped` once ``stop``
        is set (after killing what it started)."""
        ...

    def describe(self, command: str, workdir: str) -> str:
        """The exact command line that :meth:`run` executes (for debug logs)."""
        ...

    def close(self) -> None:
        """Kill and remove whatever the run left running."""
        ...


class Executor(Protocol):
    name: str

    def open(self, spec: RunSpec) -> Session: ...

    def reach(self, url: str) -> str:
        """The URL by which a run reaches ``url`` of this host (the server's
        state backend): containers cannot use the host's loopback address."""
        ...

    def remove_leftovers(self) -> int:
        """Remove what a previous life of this launcher left behind; returns how many."""
        ...


def parse_mount(entry: str) -> tuple[str, str, bool]:
    """``/host:/container[:ro|:rw]`` -> (host, container, read_only)."""
    try:
        return mounts.parse_mount(entry)
    except InvalidInput as exc:
        raise ExecutorError(exc.message) from exc

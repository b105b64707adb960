"""Domain records. Frozen; conversion to rows and JSON happens at the edges."""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, NamedTuple

from runyard.core.states import RunKind, RunState

# Why a worker left its pool (stored with it; a launcher is told on its next request).
WORKER_LOST = "worker lost"  # silent too long: its launcher may register again
SCALED_IN = "scaled in"  # its instance is being terminated: it must not come back
POOL_RESET = "the pool was reset"  # its certificate is revoked
# Workers report their cloud instance as RUNYARD_METADATA_instance_id.
INSTANCE_KEY = "instance_id"


def may_register_again(gone_reason: str) -> bool:
    """Whether a launcher whose worker was removed for ``gone_reason`` may join
    again. Only a worker the server merely lost track of may: one scaled in,
    reset or removed by a person would take runs it cannot finish."""
    return gone_reason == WORKER_LOST


class WorkerStatus(enum.StrEnum):
    """What an operator sees of a worker."""

    IDLE = "IDLE"
    BUSY = "BUSY"
    DRAINED = "DRAINED"


class ExitReason(enum.StrEnum):
    """Why a launcher exits (its shutdown hook's RUNYARD_SHUTDOWN_REASON)."""

    JOB_FINISHED = "job-finished"
    IDLE = "idle"
    CYCLED = "cycled"
    INTERRUPTED = "interrupted"
    SCALED_IN = "scaled-in"
    REMOVED = "removed"
    ERROR = "error"


class Tool(enum.StrEnum):
    """What a stack's runs execute."""

    SHELL = "shell"
    TERRAFORM = "terraform"
    OPENTOFU = "opentofu"
    ANSIBLE = "ansible"


@dataclass(frozen=True)
class Pool:
    id: str
    name: str
    description: str
    labels: tuple[str, ...]
    certificate_pem: str
    certificate_serial: str
    drift_detection_limit: int | None  # None: drift runs disabled
    created_at: datetime


@dataclass(frozen=True)
class Worker:
    id: str
    pool_id: str
    metadata: dict[str, str]
    version: str
    drained: bool
    current_run_id: str | None
    certificate_serial: str
    created_at: datetime
    last_seen_at: datetime
    exit_requested: bool = False

    @property
    def status(self) -> WorkerStatus:
        # A drained worker still finishes its run, but it takes no new work:
        # operators see DRAINED so they know it will not come back on its own.
        if self.drained:
            return WorkerStatus.DRAINED
        return WorkerStatus.BUSY if self.current_run_id else WorkerStatus.IDLE


@dataclass(frozen=True)
class EnvVar:
    """A stack variable. A secret one's ``value`` is sealed to the pool's key
    on the server (base64); only the pool's workers can open it."""

    name: str
    value: str
    secret: bool = False


class SourceKind(enum.StrEnum):
    GIT = "git"
    UPLOAD = "upload"


@dataclass(frozen=True)
class Source:
    """Where a stack's code comes from: a git repository, or an uploaded snapshot
    of a local directory (``upload_id`` names the blob)."""

    kind: SourceKind
    url: str = ""
    branch: str = ""
    upload_id: str = ""
    origin: str = ""  # the directory an upload was made from, for display


@dataclass(frozen=True)
class Stack:
    id: str
    name: str
    pool_id: str
    source: Source
    project_root: str
    tool: Tool
    runner_image: str
    commands: dict[str, str]  # phase -> command (init, plan, apply)
    env: tuple[EnvVar, ...]
    labels: tuple[str, ...]
    autodeploy: bool
    created_at: datetime
    hooks: dict[str, tuple[str, ...]] = field(default_factory=dict)  # before_init, after_plan, ...
    drift_schedule: str = ""  # cron; empty: no drift detection


@dataclass(frozen=True)
class Transition:
    state: RunState
    at: datetime
    note: str = ""


@dataclass(frozen=True)
class Run:
    id: str
    stack_id: str
    pool_id: str
    kind: RunKind
    state: RunState
    command: str  # for TASK runs
    worker_id: str | None
    lease: int  # fencing token; bumped on every assignment
    stop_requested: bool
    reason: str  # why it ended, when it did not simply finish
    created_at: datetime
    updated_at: datetime
    transitions: tuple[Transition, ...] = field(default=())
    changes: dict[str, int] | None = None  # the plan's add / change / destroy counts
    has_workspace: bool = False  # an encrypted workspace waits for the apply
    log_seq: int = 0  # the last log line stored


class LogLine(NamedTuple):
    """One line of a run's log (a named tuple: runs print millions of them)."""

    seq: int
    ts: float  # seconds since the epoch, on the worker
    msg: str


class LogBlock(NamedTuple):
    """Lines of a run's log read at one time, numbered on from ``seq``: the
    unit a worker sends and the server stores (a line at a time would cost a
    Python object per line at every step)."""

    seq: int  # the first line's number
    ts: float  # when the lines were read, seconds since the epoch, on the worker
    text: str  # the lines, joined by newlines

    @property
    def line_count(self) -> int:
        return self.text.count("\n") + 1

    @property
    def last(self) -> int:
        return self.seq + self.line_count - 1


@dataclass(frozen=True)
class ApiKey:
    """A person's or a tool's key (only its hash is stored)."""

    id: str
    name: str
    admin: bool


@dataclass(frozen=True)
class StateVersion:
    """One stored Terraform state of a stack; its body is a blob."""

    stack_id: str
    version: int
    serial: int
    lineage: str
    run_id: str | None
    digest: str  # SHA-256 of the body: also names its blob
    created_at: float


@dataclass(frozen=True)
class StateLock:
    lock_id: str
    info: dict[str, Any]  # Terraform's lock document, returned as is
    created_at: float


@dataclass(frozen=True)
class Output:
    """A stack output after its last apply; a sensitive one carries no value,
    only (when the launcher uploads it) its value sealed to the pool's key."""

    name: str
    value: Any = None
    sensitive: bool = False
    sealed: str | None = None


@dataclass(frozen=True)
class DriftSchedule:
    stack_id: str
    pool_id: str
    schedule: str
    checked_at: float  # the end of the last window looked at


@dataclass(frozen=True)
class PoolStats:
    """What operators look at first: workers by status, queued and running runs."""

    workers: dict[WorkerStatus, int]
    queue_length: int
    running: int


@dataclass(frozen=True)
class FleetMember:
    worker: Worker
    idle_since: float  # when it last finished a run (or registered)


@dataclass(frozen=True)
class Demand:
    """A pool's demand and fleet, as an autoscaler reads it; ``version``
    moves whenever any of it may have changed."""

    version: int
    queued: int
    running: int
    fleet: tuple[FleetMember, ...]


@dataclass(frozen=True)
class LogPage:
    lines: tuple[LogLine, ...]
    state: RunState
    done: bool  # the run ended and every line it will ever have was read
    reason: str = ""  # why the run ended, when it did not simply finish


class RunEnd(NamedTuple):
    """The report that ends a worker's part in a run (its last state, why,
    and the plan's change counts), sent with the run's last log lines."""

    state: RunState
    note: str = ""
    changes: dict[str, int] | None = None
    via: tuple[RunState, ...] = ()  # phases passed on the way, not reported on their own


@dataclass(frozen=True)
class Assignment:
    """A run handed to a worker, with the lease it must quote in every report
    and a token that lets it (and only it) use the stack's state while it runs."""

    run: Run
    stack: Stack
    lease: int
    run_token: str = ""
    log_seq: int = 0  # the last log line stored: a resumed run numbers on from it


@dataclass(frozen=True)
class PollAnswer:
    """What a worker's poll for work comes back with: a run, a reason to
    exit, or (neither) nothing yet."""

    assignment: Assignment | None = None
    exit_reason: str = ""


@dataclass(frozen=True)
class HeartbeatAnswer:
    stop_run: bool  # the worker's current run was asked to stop
    exit_reason: str = ""  # non-empty: the worker should exit (its pool was cycled)


@dataclass(frozen=True)
class Lease:
    """Who holds a named lease, until when, and its fencing token (it grows
    by one every time the lease changes hands)."""

    name: str
    holder: str
    token: int
    expires_at: float
    address: str = ""  # where the holder answers (for clients sent elsewhere)
    site: str = ""  # the holder's site: its servers serve, every other site's stand by

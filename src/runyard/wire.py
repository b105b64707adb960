"""API schemas shared by the server and its clients (CLI, launcher)."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field, StringConstraints, TypeAdapter, model_validator

from runyard.core import limits as lim
from runyard.core.models import (
    Assignment,
    EnvVar,
    LogBlock,
    Output,
    Run,
    RunEnd,
    Source,
    SourceKind,
    Stack,
    Tool,
    WorkerStatus,
)
from runyard.core.states import RunKind, RunState

API = "/api/v1"


# One adapter per domain record, built once: building one costs milliseconds.
_SOURCE: TypeAdapter[Source] = TypeAdapter(Source)
_STACK: TypeAdapter[Stack] = TypeAdapter(Stack)
_RUN: TypeAdapter[Run] = TypeAdapter(Run)

# Request fields, bounded (see core/limits.py); answers are not constrained.
Name = Annotated[str, StringConstraints(max_length=lim.MAX_NAME)]
Text = Annotated[str, StringConstraints(max_length=lim.MAX_TEXT)]
Pem = Annotated[str, StringConstraints(max_length=lim.MAX_PEM)]
Finite = Annotated[float, Field(allow_inf_nan=False)]  # a number a request sends: never NaN or infinite
Description = Annotated[str, StringConstraints(max_length=lim.MAX_DESCRIPTION)]
Command = Annotated[str, StringConstraints(max_length=lim.MAX_COMMAND)]
Label = Annotated[str, StringConstraints(max_length=lim.MAX_LABEL)]
Labels = Annotated[list[Label], Field(max_length=lim.MAX_LABELS)]


class Out(BaseModel):
    """An answer: read straight from the domain record it shows."""

    model_config = ConfigDict(from_attributes=True)


# pools -------------------------------------------------------------------


class PoolCreate(BaseModel):
    name: Name
    csr: Pem = Field(description="PEM certificate signing request for the pool's RSA key")
    description: Description = ""
    labels: Labels = []
    drift_detection_limit: int | None = Field(None, ge=0)


class PoolOut(Out):
    id: str
    name: str
    description: str
    labels: list[str]
    drift_detection_limit: int | None
    created_at: datetime


class PoolSummary(PoolOut):
    """A pool with its workers counted by status and its queue length."""

    workers: dict[WorkerStatus, int] = Field(default_factory=dict, description="IDLE / BUSY / DRAINED -> count")
    queue_length: int = Field(0, description="runs waiting for a worker")
    running: int = Field(0, description="runs on a worker now")


class PoolUpdate(BaseModel):
    description: Description | None = None
    labels: Labels | None = None
    drift_detection_limit: int | None = Field(None, ge=0, description="0 disables drift detection")


class PoolReset(BaseModel):
    csr: Pem = Field(description="PEM CSR of the pool's new key")


class TokenOut(Out):
    token: str = Field(description="base64 JSON: endpoints, pool id and certificate")


class CycleOut(Out):
    workers: int = Field(description="how many workers were told to exit")


class PoolCreated(Out):
    pool: PoolOut
    token: str = Field(description="base64 JSON: endpoints, pool id and certificate")


class WorkerOut(Out):
    id: str
    pool_id: str
    status: WorkerStatus
    metadata: dict[str, str]
    version: str
    current_run_id: str | None
    created_at: datetime
    last_seen_at: datetime


class FleetWorker(WorkerOut):
    idle_since: float = Field(description="epoch seconds since the worker has had no run")


class DemandOut(Out):
    """What the autoscaler sizes a pool from."""

    version: int = Field(description="changes whenever the pool's demand or fleet may have changed")
    queued: int = Field(description="runs waiting that a worker could take now")
    running: int
    workers: list[FleetWorker]


# stacks ------------------------------------------------------------------


class SourceIO(Out):
    kind: SourceKind = Field(description="'git' or 'upload'")
    url: str = ""
    branch: str = ""
    upload_id: str = ""
    origin: str = ""

    def to_domain(self) -> Source:
        return _SOURCE.validate_python(self.model_dump())


class EnvVarIO(Out):
    name: str
    value: str = Field(description="for secret variables, empty in every answer")
    secret: bool = False


class StackCreate(BaseModel):
    name: Name
    pool: Name = Field(description="pool name or id")
    source: SourceIO
    tool: Tool = Tool.SHELL
    project_root: Text = ""
    runner_image: Text = ""
    commands: dict[Name, Command] = Field(default_factory=dict, description="phase (init, plan, apply) -> command")
    env: Annotated[list[EnvVarIO], Field(max_length=lim.MAX_VARIABLES)] = []
    labels: Labels = []
    autodeploy: bool = True
    hooks: dict[Name, Annotated[list[Command], Field(max_length=lim.MAX_HOOKS_PER_PHASE)]] = Field(
        default_factory=dict, description="before_init, after_plan, ... -> commands")
    drift_schedule: Text = Field("", description="cron schedule of drift-detection runs")

    @model_validator(mode="after")
    def _bounded(self) -> StackCreate:
        for field in ("url", "branch", "upload_id", "origin"):
            if len(getattr(self.source, field)) > lim.MAX_TEXT:
                raise ValueError(f"source.{field} is longer than {lim.human(lim.MAX_TEXT)}")
        total = 0
        for var in self.env:
            if len(var.name) > lim.MAX_NAME:
                raise ValueError(f"variable name {var.name[:40]!r}... is longer than {lim.MAX_NAME} characters")
            if len(var.value) > lim.MAX_VARIABLE_VALUE:
                raise ValueError(f"variable {var.name} is longer than {lim.human(lim.MAX_VARIABLE_VALUE)}")
            total += len(var.name) + len(var.value)
        if total > lim.MAX_ENVIRONMENT:
            raise ValueError(f"the variables together are longer than {lim.human(lim.MAX_ENVIRONMENT)}")
        return self

    def env_domain(self) -> tuple[EnvVar, ...]:
        return tuple(EnvVar(e.name, e.value, e.secret) for e in self.env)


class StackOut(Out):
    id: str
    name: str
    pool_id: str
    source: SourceIO
    project_root: str
    tool: Tool
    runner_image: str
    commands: dict[str, str]
    env: list[EnvVarIO]
    labels: list[str]
    autodeploy: bool
    created_at: datetime
    hooks: dict[str, list[str]] = {}
    drift_schedule: str = ""

    @classmethod
    def public(cls, stack: Stack) -> StackOut:
        """The stack as people see it: secret values left out."""
        out = cls.model_validate(stack)
        out.env = [e if not e.secret else e.model_copy(update={"value": ""}) for e in out.env]
        return out

    def to_domain(self) -> Stack:
        return _STACK.validate_python(self.model_dump())


class UploadOut(Out):
    upload_id: str


# runs --------------------------------------------------------------------


class RunTrigger(BaseModel):
    kind: RunKind = RunKind.TRACKED
    command: Command = ""


class TransitionOut(Out):
    state: RunState
    at: datetime
    note: str


class RunOut(Out):
    id: str
    stack_id: str
    pool_id: str
    kind: RunKind
    state: RunState
    command: str
    worker_id: str | None
    reason: str
    stop_requested: bool
    created_at: datetime
    updated_at: datetime
    transitions: list[TransitionOut]
    changes: dict[str, int] | None = Field(None, description="the plan's add / change / destroy counts")
    has_workspace: bool = Field(False, description="a sealed workspace waits for the apply")
    waiting_for: str = Field("", description="why a queued run has not started")

    def to_domain(self, lease: int) -> Run:
        return _RUN.validate_python({**self.model_dump(exclude={"waiting_for"}), "lease": lease})


class LogLineIO(Out):
    seq: int = Field(ge=1)
    ts: Finite
    msg: Annotated[str, StringConstraints(max_length=lim.MAX_LOG_LINE)]


class LogBlockIO(BaseModel):
    seq: int = Field(ge=1, le=lim.MAX_LOG_SEQ, description="the number of the block's first line")
    ts: Finite
    text: Annotated[str, StringConstraints(max_length=lim.MAX_LOG_BATCH_CHARS + lim.MAX_LOG_BATCH_LINES)] = Field(
        description="the lines, joined by newlines")


class LogsOut(Out):
    lines: list[LogLineIO]
    state: RunState
    done: bool = Field(description="the run has ended and every line was sent")


# workers -------------------------------------------------------------------


class ChallengeIn(BaseModel):
    pool_id: Name


class ChallengeOut(Out):
    challenge: str


class RegisterIn(BaseModel):
    pool_id: Name
    certificate: Pem
    challenge: Text
    signature: Text = Field(description="base64 RSA-PSS SHA-256 signature of the challenge")
    metadata: Annotated[
        dict[Annotated[str, StringConstraints(max_length=lim.MAX_METADATA_KEY)],
             Annotated[str, StringConstraints(max_length=lim.MAX_METADATA_VALUE)]],
        Field(max_length=lim.MAX_METADATA_ENTRIES),
    ] = {}
    version: Text = ""


class RegisterOut(Out):
    worker_id: str
    token: str = Field(description="bearer token for this worker's later requests")


class HeartbeatOut(Out):
    stop_run: bool
    exit_reason: str


class AssignmentOut(Out):
    run: RunOut
    stack: StackOut = Field(description="secret values sealed to the pool's key")
    lease: int
    run_token: str = Field("", description="the run's credential for its stack's state backend")
    log_seq: int = Field(0, description="the last log line stored: a resumed run numbers on from it")

    def to_domain(self) -> Assignment:
        """What the launcher works with: domain records, made at its edge."""
        return Assignment(self.run.to_domain(self.lease), self.stack.to_domain(), self.lease, self.run_token,
                          self.log_seq)


class PollOut(Out):
    assignment: AssignmentOut | None = None
    exit_reason: str = ""


class EndIO(BaseModel):
    """A report without its lease (the batch it ends carries that)."""

    state: RunState
    note: Text = ""
    changes: dict[str, int] | None = None
    via: Annotated[list[RunState], Field(max_length=4, description=(
        "phases the run passed through on the way to state, with nothing run in them: each is recorded, "
        "in order, with the report"))] = []

    def to_domain(self) -> RunEnd:
        return RunEnd(self.state, self.note, self.changes, tuple(self.via))


class ReportIn(EndIO):
    lease: int


class LogsIn(BaseModel):
    lease: int
    blocks: Annotated[list[LogBlockIO], Field(max_length=lim.MAX_LOG_BATCH_LINES)] = []
    lines: Annotated[list[LogLineIO], Field(max_length=lim.MAX_LOG_BATCH_LINES,
                                            description="a line at a time (launchers that send no blocks)")] = []
    end: EndIO | None = Field(None, description="the run's last report, made once these lines are stored (in "
                                                "the same transaction): a run's last batch and its end in one request")
    take_next: bool = Field(False, description="with end: the worker wants its next run, and the answer carries it "
                                               "as a poll's would (none waiting: the worker polls)")

    @model_validator(mode="after")
    def _bounded(self) -> LogsIn:
        count = sum(block.line_count for block in self.to_domain())
        if count > lim.MAX_LOG_BATCH_LINES:
            raise ValueError(f"a batch holds at most {lim.MAX_LOG_BATCH_LINES} log lines, this one {count}")
        return self

    def to_domain(self) -> list[LogBlock]:
        """The blocks, and each single line as a block of its own."""
        out = [LogBlock(b.seq, b.ts, b.text) for b in self.blocks]
        out += [LogBlock(ln.seq, ln.ts, ln.msg.replace("\n", " ")) for ln in self.lines]
        return out


class LogsAck(Out):
    stop_run: bool
    assignment: AssignmentOut | None = Field(None, description="asked with take_next: the worker's next run")


class OutputIO(Out):
    name: Name
    value: Any = Field(None, description="the value; null for sensitive outputs")
    sensitive: bool = False
    sealed: str | None = Field(None, description="sensitive outputs: sealed to the pool's key (base64)")

    def to_domain(self) -> Output:
        return Output(self.name, self.value, self.sensitive, self.sealed)


class OutputsIn(BaseModel):
    lease: int
    outputs: list[OutputIO]


class StateVersionOut(Out):
    version: int
    serial: int
    lineage: str
    run_id: str | None
    created_at: datetime


# the cluster ---------------------------------------------------------------


class LeaseOut(Out):
    name: str
    holder: str
    site: str = Field(description="the holder's site: its servers serve, every other site's stand by")
    token: int = Field(description="the fencing token: grows by one at every change of holder")
    expires_at: datetime
    address: str = Field(description="where the holder answers")


class ClusterOut(Out):
    server: str = Field(description="this server's identity")
    site: str = Field(description="this server's site (region)")
    role: str = Field(description="primary (leads), active (serves) or standby (answers health checks only)")
    address: str = Field(description="where this server answers")
    leading: bool = Field(description="this server holds the scheduler lease and runs the background loops")
    lease: LeaseOut | None = Field(description="the scheduler lease, whoever holds it")

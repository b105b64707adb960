"""Table definitions. Timestamps are epoch seconds (float) on every dialect."""

from __future__ import annotations

from sqlalchemy import (
    JSON,
    Boolean,
    Column,
    Float,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    text,
)

metadata = MetaData()

settings = Table(
    "settings",
    metadata,
    Column("key", String(64), primary_key=True),
    Column("value", Text, nullable=False),
)

# A named lease (the scheduler's: which server runs the background loops).
# ``token`` grows by one at every change of holder: the fencing token.
leases = Table(
    "leases",
    metadata,
    Column("name", String(64), primary_key=True),
    Column("holder", String(200), nullable=False),
    Column("token", Integer, nullable=False),
    Column("expires_at", Float, nullable=False),
    Column("address", String(500), nullable=False, server_default=""),
    Column("site", String(100), nullable=False, server_default=""),  # the holder's site (region)
)

api_keys = Table(
    "api_keys",
    metadata,
    Column("id", String(26), primary_key=True),
    Column("name", String(200), nullable=False),
    Column("key_hash", String(64), nullable=False, unique=True),
    Column("admin", Boolean, nullable=False, default=False),
    Column("created_at", Float, nullable=False),
)

# UI sessions signed out before their cookie expired: a copied cookie of
# one is refused on every server until it would have expired anyway.
revoked_sessions = Table(
    "revoked_sessions",
    metadata,
    Column("id", String(64), primary_key=True),
    Column("expires_at", Float, nullable=False, index=True),
)

pools = Table(
    "pools",
    metadata,
    Column("id", String(26), primary_key=True),
    Column("name", String(200), nullable=False, unique=True),
    Column("description", Text, nullable=False, default=""),
    Column("labels", JSON, nullable=False),
    Column("certificate_pem", Text, nullable=False),
    Column("certificate_serial", String(64), nullable=False),
    Column("drift_detection_limit", Integer, nullable=True),
    Column("created_at", Float, nullable=False),
)

workers = Table(
    "workers",
    metadata,
    Column("id", String(26), primary_key=True),
    Column("pool_id", String(26), ForeignKey("pools.id"), nullable=False),
    Column("metadata", JSON, nullable=False),
    Column("version", String(64), nullable=False),
    Column("drained", Boolean, nullable=False, default=False),
    Column("current_run_id", String(26), nullable=True),
    Column("certificate_serial", String(64), nullable=False),
    Column("token_hash", String(64), nullable=False, unique=True),
    Column("registration_nonce", String(512), nullable=False, unique=True),
    Column("exit_requested", Boolean, nullable=False, default=False),
    Column("created_at", Float, nullable=False),
    Column("last_seen_at", Float, nullable=False),
    Column("gone_at", Float, nullable=True),
    Column("gone_reason", String(200), nullable=False, default=""),
)
Index("ix_workers_pool_alive", workers.c.pool_id, workers.c.gone_at)

stacks = Table(
    "stacks",
    metadata,
    Column("id", String(26), primary_key=True),
    Column("name", String(200), nullable=False, unique=True),
    Column("pool_id", String(26), ForeignKey("pools.id"), nullable=False),
    Column("source", JSON, nullable=False),
    Column("project_root", String(500), nullable=False, default=""),
    Column("tool", String(32), nullable=False),
    Column("runner_image", String(300), nullable=False, default=""),
    Column("commands", JSON, nullable=False),
    Column("env", JSON, nullable=False),
    Column("labels", JSON, nullable=False),
    Column("autodeploy", Boolean, nullable=False, default=True),
    Column("created_at", Float, nullable=False),
    Column("hooks", JSON, nullable=True),  # phase -> [command, ...]
    Column("drift_schedule", String(100), nullable=False, server_default=""),
    Column("drift_checked_at", Float, nullable=True),
)

runs = Table(
    "runs",
    metadata,
    Column("id", String(26), primary_key=True),
    Column("stack_id", String(26), ForeignKey("stacks.id"), nullable=False),
    Column("pool_id", String(26), ForeignKey("pools.id"), nullable=False),
    Column("kind", String(32), nullable=False),
    Column("state", String(32), nullable=False),
    Column("command", Text, nullable=False, default=""),
    Column("worker_id", String(26), nullable=True),
    Column("lease", Integer, nullable=False, default=0),
    Column("stop_requested", Boolean, nullable=False, default=False),
    Column("reason", Text, nullable=False, default=""),
    Column("log_sealed", Boolean, nullable=False, default=False),
    Column("created_at", Float, nullable=False),
    Column("updated_at", Float, nullable=False),
    Column("run_token_hash", String(64), nullable=True),  # state access for the run's worker
    Column("changes", JSON, nullable=True),  # {"add": n, "change": n, "destroy": n}
    Column("has_workspace", Boolean, nullable=False, server_default="0"),
    Column("log_seq", Integer, nullable=False, server_default="0"),  # the last log line stored
    Column("log_index", JSON, nullable=True),  # first line of each sealed log blob
    Column("trigger_key", String(128), nullable=True),  # the Idempotency-Key it was triggered with
)
Index("ix_runs_pool_state", runs.c.pool_id, runs.c.state)
Index("ux_runs_trigger_key", runs.c.trigger_key, unique=True)
# A pool's queue in id order: a claim reads its first page without sorting
# every waiting run (queries must name the states as these literals).
WAITING = "state IN ('QUEUED', 'CONFIRMED')"
Index("ix_runs_waiting", runs.c.pool_id, runs.c.id, sqlite_where=text(WAITING), postgresql_where=text(WAITING))
Index("ix_runs_stack", runs.c.stack_id, runs.c.created_at)

run_transitions = Table(
    "run_transitions",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("run_id", String(26), ForeignKey("runs.id"), nullable=False, index=True),
    Column("state", String(32), nullable=False),
    Column("at", Float, nullable=False),
    Column("note", Text, nullable=False, default=""),
)

# A live run's log: a row per block of lines a worker sent (the lines joined
# by newlines, read at one time), until the run ends and the log is sealed
# into the object store.
log_chunks = Table(
    "log_chunks",
    metadata,
    Column("run_id", String(26), primary_key=True),
    Column("first_seq", Integer, primary_key=True, autoincrement=False),
    Column("last_seq", Integer, nullable=False),
    Column("ts", Float, nullable=False),
    Column("body", Text, nullable=False),
)

state_versions = Table(
    "state_versions",
    metadata,
    Column("stack_id", String(26), ForeignKey("stacks.id"), primary_key=True),
    Column("version", Integer, primary_key=True, autoincrement=False),
    Column("serial", Integer, nullable=False),
    Column("lineage", String(64), nullable=False),
    Column("run_id", String(26), nullable=True),
    Column("digest", String(64), nullable=False),
    Column("created_at", Float, nullable=False),
)

state_locks = Table(
    "state_locks",
    metadata,
    Column("stack_id", String(26), ForeignKey("stacks.id"), primary_key=True),
    Column("lock_id", String(200), nullable=False),
    Column("info", JSON, nullable=False),  # the lock document terraform sent
    Column("created_at", Float, nullable=False),
)

stack_outputs = Table(
    "stack_outputs",
    metadata,
    Column("stack_id", String(26), ForeignKey("stacks.id"), primary_key=True),
    Column("name", String(200), primary_key=True),
    Column("value", JSON, nullable=True),  # null for sensitive outputs
    Column("sealed", Text, nullable=True),  # sensitive: sealed to the pool's key
    Column("sensitive", Boolean, nullable=False),
    Column("run_id", String(26), nullable=False),
    Column("updated_at", Float, nullable=False),
)

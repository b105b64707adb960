"""Every size limit of runyard in one place (docs/limits.md lists them).

Anything a person or the network sends has a bound: past it, the server
answers 413 (a body) or 422 (a field) with the limit in the message, and
nothing is stored.
"""

from __future__ import annotations

KIB = 1024
MIB = 1024 * KIB

# Request bodies, by what they carry.
MAX_JSON_BODY = 1 * MIB  # every JSON request not listed below
MAX_LOG_BODY = 8 * MIB  # one batch of log lines from a worker
MAX_SOURCE_UPLOAD = 200 * MIB  # a stack's source snapshot (gzip tar)
MAX_WORKSPACE = 512 * MIB  # a sealed workspace carried from plan to apply
MAX_STATE = 256 * MIB  # one Terraform state version

# Archives, once inflated (the tar stream, headers included), and their
# members: checked as the archive streams in, at upload and again at unpack.
GIB = 1024 * MIB
MAX_SOURCE_INFLATED = 1 * GIB
MAX_SOURCE_MEMBERS = 50_000
MAX_WORKSPACE_INFLATED = 4 * GIB  # providers unpacked: ~450 MB each
MAX_WORKSPACE_MEMBERS = 200_000

# HTTP requests: the request line and headers together, and how long they
# may take to arrive (a client that trickles them is cut off).
MAX_REQUEST_HEAD = 64 * KIB
REQUEST_HEAD_TIMEOUT = 10.0

# Fields. A command and each variable must fit in one argument of exec
# (Linux refuses a single string over 128 KiB: "Argument list too long").
MAX_COMMAND = 64 * KIB
MAX_VARIABLE_VALUE = 64 * KIB
MAX_VARIABLES = 200
MAX_ENVIRONMENT = 512 * KIB  # all of a stack's variables together
MAX_HOOKS_PER_PHASE = 20
MAX_DESCRIPTION = 16 * KIB
MAX_LABELS = 50
MAX_LABEL = 100
MAX_NAME = 100
MAX_TEXT = 2 * KIB  # URLs, paths, images, branches, notes, schedules
MAX_PEM = 16 * KIB  # a CSR or certificate
MAX_METADATA_ENTRIES = 50
MAX_METADATA_KEY = 64
MAX_METADATA_VALUE = 256
MAX_TRIGGER_KEY = 128  # an Idempotency-Key: letters, digits and . _ : + = / -
TRIGGER_KEY_PATTERN = rf"^[A-Za-z0-9._:+=/-]{{1,{MAX_TRIGGER_KEY}}}$"

# Logs: a longer line is split into pieces of this size on the worker.
MAX_LOG_LINE = 16 * KIB
MAX_LOG_BATCH_LINES = 5000
MAX_LOG_BATCH_CHARS = 1 * MIB
SEQ_COLUMN_MAX = 2**31 - 1  # line numbers are 32-bit on PostgreSQL
MAX_LOG_SEQ = SEQ_COLUMN_MAX - MAX_LOG_BATCH_LINES  # a batch's first line: room for the whole batch after it

# Secrets: a longer one cannot be masked with a bounded hold-back buffer.
MAX_SECRET_LENGTH = 64 * KIB

# What a web page says after an action.
MAX_FLASH = 200


def human(size: int) -> str:
    """``1048576`` -> ``1 MiB``."""
    for unit, factor in (("GiB", GIB), ("MiB", MIB), ("KiB", KIB)):
        if size >= factor and size % factor == 0:
            return f"{size // factor} {unit}"
    return f"{size} bytes"

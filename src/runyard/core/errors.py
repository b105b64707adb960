"""The one error hierarchy. Each boundary raises a subclass; one handler per
process (HTTP status in the server, exit code in the CLI) maps them."""

from __future__ import annotations


class RunyardError(Exception):
    """Root of every error runyard raises on purpose.

    ``http_status`` is what the API answers; ``exit_code`` what the CLI exits
    with. The message must tell a person what to do next.
    """

    http_status = 500
    exit_code = 1
    code = "internal"

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class InvalidInput(RunyardError):
    """The request itself is wrong (bad name, malformed CSR, unknown option)."""

    http_status = 422
    exit_code = 2
    code = "invalid"


class TooLarge(InvalidInput):
    """The request is over one of its limits (docs/limits.md); nothing was stored."""

    http_status = 413
    code = "too_large"


class NotFound(RunyardError):
    """The named thing does not exist."""

    http_status = 404
    exit_code = 3
    code = "not_found"


class Conflict(RunyardError):
    """The request collides with the current state: an illegal run transition,
    a stale lease, a lock held by someone else."""

    http_status = 409
    exit_code = 4
    code = "conflict"


class AlreadyExists(Conflict):
    """A thing with that name exists already."""

    code = "exists"


class Locked(Conflict):
    """The state is locked by someone else; ``document`` is the holder's lock."""

    http_status = 423
    code = "locked"

    def __init__(self, message: str, document: dict[str, object]) -> None:
        super().__init__(message)
        self.document = document


class StaleLease(Conflict):
    """A worker reported on a run it no longer holds."""

    code = "stale_lease"


class Unauthorized(RunyardError):
    """No credentials, or credentials that are not (or no longer) valid."""

    http_status = 401
    exit_code = 5
    code = "unauthorized"


class WorkerGone(RunyardError):
    """The worker's registration was removed (lost, cycled away, pool reset)."""

    http_status = 410
    exit_code = 5
    code = "worker_gone"

    def __init__(self, message: str, reason: str = "") -> None:
        super().__init__(message)
        self.reason = reason  # the stored reason it was removed for


class Unavailable(RunyardError):
    """A dependency (the server, the database, Docker) cannot be reached."""

    http_status = 503
    exit_code = 6
    code = "unavailable"


class StorageFull(Unavailable):
    """The server's database has no room left (its disk is full): nothing
    was stored; what was stored before is kept and still read."""

    code = "storage_full"

    def __init__(self, message: str, retry_after: int = 30) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class DatabaseUnavailable(Unavailable):
    """The database cannot be reached or is restarting: ask again shortly."""

    code = "database_unavailable"

    def __init__(self, message: str, retry_after: int = 2) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class Standby(Unavailable):
    """This server is a standby: the primary (``primary``, "" while none
    holds the lease) serves; a client tries again there, or after ``retry_after``."""

    code = "standby"

    def __init__(self, primary: str = "", retry_after: int = 1) -> None:
        where = f" at {primary}" if primary else ""
        super().__init__(f"this runyard server is a standby; the primary serves{where}")
        self.primary = primary
        self.retry_after = retry_after

"""API keys for people and tools; bearer tokens for workers."""

from __future__ import annotations

import os
import time
from typing import Generic, TypeVar

from anyio import to_thread

from runyard.core.errors import NotFound, Unauthorized, WorkerGone
from runyard.core.ids import new_ulid
from runyard.core.models import Worker, may_register_again
from runyard.crypto import hash_secret, new_secret
from runyard.server.notifier import ANY_TOPIC, Notifier, fleet_topic, worker_topic
from runyard.server.services import Context

# What a worker's token (or an API key) stands for is remembered for up to
# TOKEN_TTL: the heartbeats and polls of a thousand workers then cost the
# database nothing. Drains, removals, claims and pool cycles (on any server,
# through LISTEN/NOTIFY; a lost notification moves every topic) end a
# worker's remembered answer at once: they move the worker's topics. What a
# worker asks for (its run, its reports) is always read from the database.
TOKEN_TTL = 30.0
TOKEN_CACHE_MAX = 50_000

T = TypeVar("T")

API_KEY_HINT = (
    "send an API key as 'Authorization: Bearer KEY' (CLI: --api-key or RUNYARD_API_KEY); "
    "the server printed the admin key at first start and wrote it to DATA_DIR/admin-api-key"
)


class Remembered(Generic[T]):
    """Answers kept for TOKEN_TTL, each until a topic it names moves (any
    topic moves when notifications may have been lost: ANY_TOPIC)."""

    def __init__(self, notifier: Notifier) -> None:
        self.notifier = notifier
        self._kept: dict[str, tuple[T, float, dict[str, int]]] = {}

    def recall(self, key: str) -> T | None:
        hit = self._kept.get(key)
        if hit is None or time.monotonic() >= hit[1] or self.notifier.generations(*hit[2]) != hit[2]:
            return None
        return hit[0]

    def keep(self, key: str, value: T, *topics: str) -> None:
        if len(self._kept) >= TOKEN_CACHE_MAX:
            self._kept.clear()
        self._kept[key] = (value, time.monotonic() + TOKEN_TTL, self.notifier.generations(*topics, ANY_TOPIC))


class AuthService:
    def __init__(self, ctx: Context) -> None:
        self.ctx = ctx
        self._session_key: bytes | None = None
        self._workers: Remembered[Worker] = Remembered(ctx.notifier)
        self._users: Remembered[str] = Remembered(ctx.notifier)

    def bootstrap_admin_key(self, given: str | None) -> str | None:
        """Make sure an admin key exists. Returns a newly made key (to show
        once), or None when ``given`` was used or keys exist already."""
        now = self.ctx.clock()
        with self.ctx.tx() as repo:
            if given:
                if repo.api_key_by_hash(hash_secret(given)) is None:
                    repo.add_api_key(new_ulid(), "admin (RUNYARD_ADMIN_API_KEY)", hash_secret(given), True, now)
                return None
            if repo.count_api_keys():
                return None
            key = new_secret("ryk_")
            repo.add_api_key(new_ulid(), "admin (generated)", hash_secret(key), True, now)
            return key

    def session_secret(self) -> bytes:
        """The key UI session cookies are signed with, shared by every server."""
        if self._session_key is None:
            self._session_key = bytes.fromhex(self.ctx.secret_setting("session_secret", lambda: os.urandom(32).hex()))
        return self._session_key

    def is_api_key(self, key: str) -> bool:
        if not key:
            return False
        with self.ctx.read() as repo:
            return repo.api_key_by_hash(hash_secret(key)) is not None

    def session_valid(self, key_hash: str, session_id: str) -> bool:
        """Whether a UI session's key still exists and the session was not signed out."""
        with self.ctx.read() as repo:
            return repo.api_key_by_hash(key_hash) is not None and not repo.session_revoked(session_id)

    def revoke_session(self, session_id: str, expires_at: float) -> None:
        """Sign a UI session out on every server, until it would have expired."""
        with self.ctx.tx() as repo:
            repo.revoke_session(session_id, expires_at)

    def forget_revoked_sessions(self) -> int:
        with self.ctx.tx() as repo:
            return repo.forget_revoked_sessions(self.ctx.clock())

    def check_api_key(self, key: str | None) -> str:
        """The key's name, or :class:`Unauthorized`."""
        if not key:
            raise Unauthorized(f"no API key: {API_KEY_HINT}")
        with self.ctx.read() as repo:
            row = repo.api_key_by_hash(hash_secret(key))
        if row is None:
            raise Unauthorized(f"that API key is not valid: {API_KEY_HINT}")
        return str(row.name)

    def check_state_access(self, credential: str | None, stack_ref: str) -> str | None:
        """Who may use a stack's state: an API key (returns None) or the token
        of a run of this stack that a worker holds right now (returns its id).
        Credentials are checked before the stack is looked for: without them,
        a stack that exists and one that does not get the same answer."""
        if not credential:
            raise Unauthorized(f"no credentials for the state backend: {API_KEY_HINT}")
        with self.ctx.read() as repo:
            if repo.api_key_by_hash(hash_secret(credential)) is not None:
                if repo.stack(stack_ref) is None:
                    raise NotFound(f"no stack {stack_ref!r}: `runyard stack list` shows the stacks")
                return None
            run = repo.run_by_token(hash_secret(credential))
            stack = repo.stack(stack_ref) if run is not None else None
        if run is None or stack is None or run.stack_id != stack.id or not run.state.on_worker:
            raise Unauthorized("these credentials do not give access to this stack's state")
        return run.id

    async def user(self, key: str | None) -> str:
        """:meth:`check_api_key`, answered from memory for up to TOKEN_TTL
        seconds (keys are never changed, only made)."""
        key_hash = hash_secret(key) if key else ""
        name = self._users.recall(key_hash)
        if name is None:
            name = await to_thread.run_sync(self.check_api_key, key)
            self._users.keep(key_hash, name)
        return name

    async def worker(self, token: str | None) -> Worker:
        """:meth:`check_worker_token`, answered from memory for up to
        TOKEN_TTL seconds unless the worker was drained, removed or
        cycled since (the worker's stored run and leases are always read
        from the database by what the worker asks for)."""
        token_hash = hash_secret(token) if token else ""
        worker = self._workers.recall(token_hash)
        if worker is None:
            worker = await self.ctx.short_call(self.check_worker_token, token)
            self._workers.keep(token_hash, worker, worker_topic(worker.id), fleet_topic(worker.pool_id))
        return worker

    def check_worker_token(self, token: str | None) -> Worker:
        """The live worker behind a bearer token."""
        if not token:
            raise Unauthorized("worker requests need the token given at registration")
        with self.ctx.read() as repo:
            worker, why = repo.worker_by_token(hash_secret(token))
            if worker is None:
                if why is None:
                    raise Unauthorized("unknown worker token: register again")
                hint = "register again" if may_register_again(why) else "it must not join again"
                raise WorkerGone(f"this worker was removed ({why}): {hint}", reason=why)
            pool = repo.pool(worker.pool_id)
        if pool is None or pool.certificate_serial != worker.certificate_serial:
            raise Unauthorized(
                "the pool was reset: its old token and key are no longer accepted; "
                "start the launcher with the new pool token"
            )
        return worker

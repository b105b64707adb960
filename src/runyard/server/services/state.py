"""Terraform state: every version kept, one lock holder, no clobbering."""

from __future__ import annotations

import hashlib
import json
from typing import Any

from runyard.core.errors import Conflict, InvalidInput, Locked, NotFound
from runyard.core.models import StateVersion
from runyard.server.services import Context


def state_key(stack_id: str, digest: str) -> str:
    """Where a state body lives: named by its content, so it can be written
    before the row that points to it exists (no blob I/O in a transaction)."""
    return f"states/{stack_id}/{digest}.tfstate"


def _legacy_key(stack_id: str, version: int) -> str:
    return f"states/{stack_id}/{version:08d}.tfstate"  # stored by earlier code: named by version


class StateService:
    def __init__(self, ctx: Context) -> None:
        self.ctx = ctx

    def _stack_id(self, ref: str) -> str:
        with self.ctx.read() as repo:
            stack = repo.stack(ref)
        if stack is None:
            raise NotFound(f"no stack {ref!r}")
        return stack.id

    def _body(self, version: StateVersion) -> bytes:
        try:
            return self.ctx.blobs.get(state_key(version.stack_id, version.digest))
        except NotFound:
            return self.ctx.blobs.get(_legacy_key(version.stack_id, version.version))

    def current(self, ref: str) -> bytes | None:
        stack_id = self._stack_id(ref)
        with self.ctx.read() as repo:
            latest = repo.latest_state(stack_id)
        return None if latest is None else self._body(latest)

    def versions(self, ref: str) -> list[StateVersion]:
        stack_id = self._stack_id(ref)
        with self.ctx.read() as repo:
            return repo.state_versions(stack_id)

    def pull(self, ref: str, version: int | None = None) -> bytes:
        stack_id = self._stack_id(ref)
        with self.ctx.read() as repo:
            stored = repo.state_versions(stack_id)
        if not stored:
            raise NotFound(f"stack {ref!r} has no state yet")
        chosen = stored[-1] if version is None else next((v for v in stored if v.version == version), None)
        if chosen is None:
            raise NotFound(f"stack {ref!r} has no state version {version}")
        return self._body(chosen)

    def push(self, ref: str, body: bytes, lock_id: str | None, run_id: str | None, force: bool = False) -> int:
        """Store a new version; returns its number. Refuses a write that would
        lose history: another lineage, an older serial, or the same serial with
        other content (unless ``force``), or one made without the lock."""
        try:
            doc = json.loads(body)
            serial, lineage = int(doc["serial"]), str(doc["lineage"])
        except (ValueError, KeyError, TypeError) as exc:
            raise InvalidInput("the body is not a Terraform state (JSON with serial and lineage)") from exc
        digest = hashlib.sha256(body).hexdigest()
        stack_id = self._stack_id(ref)
        now = self.ctx.clock()
        # The body first, then (checked against the lock and history) the row
        # that points to it. A refused write leaves an unreferenced blob, named
        # by its content; a retry of the same write reuses it.
        self.ctx.blobs.put(state_key(stack_id, digest), body)
        with self.ctx.tx() as repo:
            lock = repo.state_lock(stack_id)
            if lock is not None and lock.lock_id != (lock_id or "") and not force:
                raise Locked(f"the state of {ref} is locked by {lock.lock_id}", dict(lock.info))
            latest = repo.latest_state(stack_id)
            if latest is not None and not force:
                if latest.lineage != lineage:
                    raise Conflict(
                        f"this state's lineage {lineage} differs from the stored {latest.lineage}: "
                        "it belongs to other infrastructure (push with force to replace it)"
                    )
                if serial < latest.serial:
                    raise Conflict(f"serial {serial} is older than the stored {latest.serial}")
                if serial == latest.serial:
                    if latest.digest == digest:
                        return latest.version  # the same write again
                    raise Conflict(f"serial {serial} is stored already with other content")
            version = 1 if latest is None else latest.version + 1
            repo.add_state_version(stack_id, version, serial, lineage, run_id, digest, now)
        return version

    def lock_info(self, ref: str) -> dict[str, Any] | None:
        stack_id = self._stack_id(ref)
        with self.ctx.read() as repo:
            lock = repo.state_lock(stack_id)
        return None if lock is None else dict(lock.info)

    def lock(self, ref: str, info: dict[str, Any]) -> None:
        lock_id = str(info.get("ID", ""))
        if not lock_id:
            raise InvalidInput("a lock request needs the lock document with its ID")
        stack_id = self._stack_id(ref)
        with self.ctx.tx() as repo:
            if repo.take_state_lock(stack_id, lock_id, info, self.ctx.clock()):
                return
            held = repo.state_lock(stack_id)
        if held is not None and held.lock_id == lock_id:
            return
        document = dict(held.info) if held is not None else {}
        raise Locked(f"the state of {ref} is locked by {document.get('Who', '?')} ({document.get('ID', '?')})",
                     document)

    def unlock(self, ref: str, lock_id: str, force: bool = False) -> None:
        stack_id = self._stack_id(ref)
        with self.ctx.tx() as repo:
            held = repo.state_lock(stack_id)
            if held is None:
                return
            if held.lock_id != lock_id and not force:
                raise Locked(f"the state of {ref} is locked by {held.lock_id}, not {lock_id}", dict(held.info))
            repo.drop_state_lock(stack_id)

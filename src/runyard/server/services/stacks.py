"""Stacks and the source snapshots uploaded for them."""

from __future__ import annotations

import datetime as dt
import os
import subprocess
from collections.abc import Callable

from runyard import archive
from runyard.core import gitsource
from runyard.core.errors import AlreadyExists, InvalidInput, NotFound, TooLarge
from runyard.core.ids import new_ulid, ulid_time
from runyard.core.limits import MAX_SOURCE_UPLOAD, human
from runyard.core.models import EnvVar, Source, SourceKind, Stack, Tool, Worker
from runyard.cron import Cron
from runyard.crypto import public_key_of, seal_text, secret_context
from runyard.masking import check_maskable
from runyard.server.services import Context
from runyard.server.services.pools import check_name

PHASES = ("init", "plan", "apply")
HOOKS = tuple(f"{when}_{phase}" for phase in ("init", "plan", "apply", "perform") for when in ("before", "after"))


GitProbe = Callable[[str, str, bool], None]


def probe_git(url: str, branch: str, allow_local: bool) -> None:
    """Fail with :class:`InvalidInput` unless the repository (and branch) can
    be read. The URL and branch were checked (:func:`gitsource.check`)."""
    cmd = gitsource.ls_remote_argv(url, branch)
    env = {**os.environ, "GIT_TERMINAL_PROMPT": "0", "GIT_ALLOW_PROTOCOL": gitsource.allowed_protocols(allow_local)}
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=30, env=env, check=False)
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise InvalidInput(f"cannot read git repository {url}: {exc}") from exc
    if proc.returncode == 2:
        raise InvalidInput(f"git repository {url} has no branch {branch!r}")
    if proc.returncode != 0:
        lines = [ln.strip() for ln in proc.stderr.splitlines() if ln.strip()]
        detail = " / ".join(lines)[:1000] if lines else "no answer"
        raise InvalidInput(f"cannot read git repository {url}: {detail}")


SOURCES = "sources/"
# An upload no stack names is removed after this long: time enough for the
# `stack create` that follows its upload.
UPLOAD_GRACE = 3600.0


def source_key(upload_id: str) -> str:
    return f"{SOURCES}{upload_id}.tar.gz"


class StackService:
    def __init__(self, ctx: Context, git_probe: GitProbe = probe_git, allow_local_git: bool = False) -> None:
        self.ctx = ctx
        self.git_probe = git_probe
        self.allow_local_git = allow_local_git  # file:// and paths (RUNYARD_ALLOW_LOCAL_GIT_SOURCES)

    def upload_source(self, data: bytes) -> str:
        if len(data) > MAX_SOURCE_UPLOAD:
            raise TooLarge(f"a source upload may be at most {human(MAX_SOURCE_UPLOAD)}")
        archive.check(data, archive.SOURCE)
        upload_id = new_ulid(self.ctx.clock())
        self.ctx.blobs.put(source_key(upload_id), data)
        return upload_id

    def source_archive(self, upload_id: str) -> bytes:
        return self.ctx.blobs.get(source_key(upload_id))

    def create(
        self,
        name: str,
        pool_ref: str,
        source: Source,
        tool: Tool,
        project_root: str = "",
        runner_image: str = "",
        commands: dict[str, str] | None = None,
        env: tuple[EnvVar, ...] = (),
        labels: tuple[str, ...] = (),
        autodeploy: bool = True,
        hooks: dict[str, tuple[str, ...]] | None = None,
        drift_schedule: str = "",
    ) -> Stack:
        check_name("stack", name)
        commands = {k: v for k, v in (commands or {}).items() if v}
        unknown = set(commands) - set(PHASES)
        if unknown:
            raise InvalidInput(f"unknown phase(s) {sorted(unknown)}: phases are {', '.join(PHASES)}")
        if tool == Tool.SHELL and not commands and not hooks:
            raise InvalidInput("a shell stack needs at least one of --init, --plan, --apply")
        if project_root.startswith("/") or ".." in project_root.split("/"):
            raise InvalidInput("--project-root must be a relative path inside the source")
        names = [v.name for v in env]
        if len(set(names)) != len(names):
            raise InvalidInput("a variable is given twice")
        for var in env:
            if not var.name.isidentifier():
                raise InvalidInput(f"{var.name!r} is not a valid environment variable name")
            if var.secret:
                check_maskable(var.name, var.value)
        hooks = {k: tuple(c for c in v if c) for k, v in (hooks or {}).items() if v}
        bad_hooks = set(hooks) - set(HOOKS)
        if bad_hooks:
            raise InvalidInput(f"unknown hook(s) {sorted(bad_hooks)}: hooks are {', '.join(HOOKS)}")
        if drift_schedule:
            Cron.parse(drift_schedule)
        self._check_source(source)
        stack_id = new_ulid(self.ctx.clock())
        with self.ctx.tx() as repo:
            pool = repo.pool(pool_ref)
            if pool is None:
                raise NotFound(f"no pool {pool_ref!r}: `runyard pool list` shows the pools")
            if repo.stack(name) is not None:
                raise AlreadyExists(f"a stack named {name!r} exists already")
            # Secrets are sealed to the pool's key: stored encrypted, opened only by its workers.
            public = public_key_of(pool.certificate_pem)
            env = tuple(
                EnvVar(v.name, seal_text(public, v.value, secret_context(stack_id, v.name)), True) if v.secret else v
                for v in env
            )
            stack = Stack(
                id=stack_id,
                name=name,
                pool_id=pool.id,
                source=source,
                project_root=project_root.strip("/"),
                tool=tool,
                runner_image=runner_image,
                commands=commands,
                env=env,
                labels=labels,
                autodeploy=autodeploy,
                created_at=dt.datetime.fromtimestamp(self.ctx.clock(), dt.UTC),
                hooks=hooks,
                drift_schedule=drift_schedule,
            )
            repo.add_stack(stack)
        return stack

    def _check_source(self, source: Source) -> None:
        if source.kind == SourceKind.UPLOAD:
            if not source.upload_id or not self.ctx.blobs.exists(source_key(source.upload_id)):
                raise InvalidInput(f"no uploaded source {source.upload_id!r}: upload the directory first")
        elif source.kind == SourceKind.GIT:
            gitsource.check(source.url, source.branch, self.allow_local_git)
            self.git_probe(source.url, source.branch, self.allow_local_git)
        else:
            raise InvalidInput(f"unknown source kind {source.kind!r}: use 'git' or 'upload'")

    def sweep_uploads(self, grace: float = UPLOAD_GRACE) -> list[str]:
        """Remove source uploads older than ``grace`` that no stack names (left
        by a `stack create` that failed or never came); returns their ids."""
        now = self.ctx.clock()
        candidates = []
        for key in self.ctx.blobs.keys(SOURCES):
            upload_id = key[len(SOURCES):].removesuffix(".tar.gz")
            try:
                made = ulid_time(upload_id)
            except ValueError:
                continue  # not ours
            if now - made > grace:
                candidates.append(upload_id)
        if not candidates:
            return []
        with self.ctx.tx() as repo:
            used = {s.source.upload_id for s in repo.stacks() if s.source.upload_id}
        removed = [u for u in candidates if u not in used]
        for upload_id in removed:
            self.ctx.blobs.delete(source_key(upload_id))
        return removed

    def get(self, ref: str) -> Stack:
        with self.ctx.read() as repo:
            stack = repo.stack(ref)
        if stack is None:
            raise NotFound(f"no stack {ref!r}: `runyard stack list` shows the stacks")
        return stack

    def list(self, pool_id: str | None = None) -> list[Stack]:
        with self.ctx.read() as repo:
            return repo.stacks(pool_id)

    def source_for_worker(self, worker: Worker, upload_id: str) -> bytes:
        """A source snapshot, for a worker of a pool one of whose stacks uses it."""
        with self.ctx.read() as repo:
            allowed = any(s.source.upload_id == upload_id for s in repo.stacks(worker.pool_id))
        if not allowed:
            raise NotFound(f"no source {upload_id} for this worker's pool")
        return self.source_archive(upload_id)

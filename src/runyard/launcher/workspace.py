"""A fresh workspace per run: the stack's source, unpacked or cloned."""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
import threading
from collections import OrderedDict
from collections.abc import Callable
from pathlib import Path

from runyard import archive
from runyard.core import gitsource
from runyard.core.errors import InvalidInput, RunyardError
from runyard.core.limits import MIB
from runyard.core.models import SourceKind, Stack


class WorkspaceError(RunyardError):
    """The source could not be put in place; the run fails with this message."""

    code = "workspace"


class SourceCache:
    """Uploaded source snapshots this launcher fetched. An upload never
    changes, so each is fetched from the server once: the newest ones are
    kept, up to ``budget`` bytes in all."""

    def __init__(self, budget: int = 64 * MIB) -> None:
        self.budget = budget
        self._kept: OrderedDict[str, bytes] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, upload_id: str, fetch: Callable[[], bytes]) -> bytes:
        """The snapshot, from memory or ``fetch``-ed (and kept)."""
        with self._lock:
            if upload_id in self._kept:
                self._kept.move_to_end(upload_id)
                return self._kept[upload_id]
        data = fetch()
        with self._lock:
            self._kept[upload_id] = data
            while sum(map(len, self._kept.values())) > self.budget and len(self._kept) > 1:
                self._kept.popitem(last=False)
        return data


def create(base: Path, run_id: str) -> Path:
    base.mkdir(parents=True, exist_ok=True)
    path = Path(tempfile.mkdtemp(prefix=f"run-{run_id}-", dir=base))
    path.chmod(0o755)
    return path


def fetch_source(stack: Stack, dest: Path, upload: Callable[[str], bytes], allow_local_git: bool = False) -> None:
    """Put the stack's source into ``dest`` (an uploaded snapshot comes from
    ``upload``; a git source on this host's disk only if ``allow_local_git``)."""
    source = stack.source
    if source.kind == SourceKind.UPLOAD:
        try:
            archive.unpack(upload(source.upload_id), dest, "data")
        except InvalidInput as exc:
            raise WorkspaceError(f"the source snapshot {source.upload_id}: {exc.message}") from exc
    elif source.kind == SourceKind.GIT:
        try:
            gitsource.check(source.url, source.branch, allow_local_git)
        except InvalidInput as exc:
            raise WorkspaceError(f"the stack's git source is refused on this host: {exc.message}") from exc
        proc = subprocess.run(
            gitsource.clone_argv(source.url, source.branch, str(dest / "src")),
            capture_output=True,
            text=True,
            timeout=600,
            env={**os.environ, "GIT_TERMINAL_PROMPT": "0",
                 "GIT_ALLOW_PROTOCOL": gitsource.allowed_protocols(allow_local_git)},
            check=False,
        )
        if proc.returncode != 0:
            raise WorkspaceError(f"git clone of {source.url} failed: {proc.stderr.strip()}")
        # The clone goes into a subfolder first so `dest` itself stays ours.
        for item in (dest / "src").iterdir():
            shutil.move(str(item), dest / item.name)
        (dest / "src").rmdir()
        shutil.rmtree(dest / ".git", ignore_errors=True)
    else:
        raise WorkspaceError(f"unknown source kind {source.kind!r}")
    root = dest / stack.project_root
    if not root.is_dir():
        raise WorkspaceError(f"project root {stack.project_root!r} is not a directory in the source")


def remove(path: Path) -> None:
    shutil.rmtree(path, ignore_errors=True)


def pack_tree(path: Path) -> bytes:
    """Everything in ``path`` (a run's workspace) as a gzip tar."""
    return archive.pack(path)


def unpack_tree(data: bytes, dest: Path) -> None:
    # "tar" keeps the plan's file modes: provider binaries stay executable.
    archive.unpack(data, dest, "tar", archive.WORKSPACE)

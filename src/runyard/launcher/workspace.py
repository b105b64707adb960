"""A fresh workspace per run: the stack's source, unpacked or cloned."""

from __future__ import annotations

import io
import os
import shutil
import subprocess
import tarfile
import tempfile
from pathlib import Path

from runyard.client import Client
from runyard.wire import StackOut


class WorkspaceError(Exception):
    """The source could not be put in place; the run fails with this message."""


def create(base: Path, run_id: str) -> Path:
    base.mkdir(parents=True, exist_ok=True)
    path = Path(tempfile.mkdtemp(prefix=f"run-{run_id}-", dir=base))
    path.chmod(0o755)
    return path


def fetch_source(client: Client, stack: StackOut, dest: Path) -> None:
    """Put the stack's source into ``dest``."""
    source = stack.source
    if source.kind == "upload":
        data = client.source_archive(source.upload_id)
        with tarfile.open(fileobj=io.BytesIO(data), mode="r:gz") as tar:
            tar.extractall(dest, filter="data")
    elif source.kind == "git":
        cmd = ["git", "clone", "--quiet", "--depth", "1"]
        if source.branch:
            cmd += ["--branch", source.branch]
        cmd += [source.url, str(dest / "src")]
        proc = subprocess.run(
            cmd,
            capture_output=True,
            text=True,
            timeout=600,
            env={**os.environ, "GIT_TERMINAL_PROMPT": "0"},
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
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tar:
        for item in sorted(path.iterdir()):
            tar.add(item, arcname=item.name)
    return buf.getvalue()


def unpack_tree(data: bytes, dest: Path) -> None:
    with tarfile.open(fileobj=io.BytesIO(data), mode="r:gz") as tar:
        tar.extractall(dest, filter="tar")  # keeps the plan's file modes (provider binaries stay executable)

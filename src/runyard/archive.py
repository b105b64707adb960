"""Gzip tars of a directory: source snapshots (CLI -> server -> worker) and the
workspace a plan leaves for its apply. The one packer and unpacker."""

from __future__ import annotations

import io
import tarfile
from collections.abc import Collection
from pathlib import Path
from typing import Literal

from runyard.core.errors import InvalidInput

# What a source snapshot leaves out: version control and tool caches.
SOURCE_SKIPPED = frozenset({".git", ".terraform"})


def pack(directory: Path, skip: Collection[str] = ()) -> bytes:
    """A gzip tar of ``directory``'s contents, without entries named in ``skip``."""
    if not directory.is_dir():
        raise InvalidInput(f"source directory {directory} does not exist")

    def keep(info: tarfile.TarInfo) -> tarfile.TarInfo | None:
        return None if Path(info.name).name in skip else info

    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tar:
        for item in sorted(directory.iterdir()):
            tar.add(item, arcname=item.name, filter=keep)
    return buf.getvalue()


def pack_directory(directory: Path) -> bytes:
    """A source snapshot of ``directory``."""
    return pack(directory, SOURCE_SKIPPED)


def unpack(data: bytes, dest: Path, modes: Literal["data", "tar"] = "data") -> None:
    """Extract a gzip tar into ``dest``; nothing may land outside it. ``tar``
    keeps file modes (a plan's provider binaries stay executable); ``data``
    drops the unsafe ones, for sources from people."""
    try:
        with tarfile.open(fileobj=io.BytesIO(data), mode="r:gz") as tar:
            if hasattr(tarfile, "data_filter"):
                tar.extractall(dest, filter=modes)
            else:  # Python before 3.11.4 (Debian bookworm's 3.11.2) has no extraction filters
                tar.extractall(dest, members=_checked(tar, modes))
    except (tarfile.TarError, EOFError, OSError) as exc:
        raise InvalidInput(f"cannot unpack the archive: {exc}") from exc


def _checked(tar: tarfile.TarFile, modes: str) -> list[tarfile.TarInfo]:
    """What the ``data``/``tar`` filters refuse, refused by hand: members or
    links that leave ``dest``, devices; ``data`` also drops set-id bits."""
    members = []
    for member in tar.getmembers():
        for path in (member.name, member.linkname if member.issym() or member.islnk() else ""):
            if path.startswith("/") or ".." in Path(path).parts:
                raise InvalidInput(f"archive member {member.name!r} points outside the directory")
        if member.isdev():
            raise InvalidInput(f"archive member {member.name!r} is a device")
        if modes == "data":
            member.mode &= 0o755
        members.append(member)
    return members

"""Gzip tars of a directory: source snapshots (CLI -> server -> worker) and the
workspace a plan leaves for its apply. The one packer and unpacker.

An archive is checked before anything of it is kept or written: it streams
through once, and past its bounds (inflated size, members) or at a member
that is not a file, a directory or a link inside it, it is refused. A
gzip bomb therefore costs at most its bound in CPU, never a disk."""

from __future__ import annotations

import gzip
import io
import tarfile
import zlib
from collections.abc import Collection
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from runyard.core import limits
from runyard.core.errors import InvalidInput, TooLarge
from runyard.core.limits import human

# What a source snapshot leaves out: version control and tool caches.
SOURCE_SKIPPED = frozenset({".git", ".terraform"})


@dataclass(frozen=True)
class Bounds:
    """How large an archive may grow once inflated, and how many members it may hold."""

    what: str
    inflated: int
    members: int


SOURCE = Bounds("a source archive", limits.MAX_SOURCE_INFLATED, limits.MAX_SOURCE_MEMBERS)
WORKSPACE = Bounds("a workspace archive", limits.MAX_WORKSPACE_INFLATED, limits.MAX_WORKSPACE_MEMBERS)


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


class _Inflated(io.RawIOBase):
    """The inflated stream of a gzip file, refused once it passes ``bound`` bytes."""

    def __init__(self, data: bytes, bounds: Bounds) -> None:
        self._gz = gzip.GzipFile(fileobj=io.BytesIO(data), mode="rb")
        self._bounds = bounds
        self.seen = 0

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: memoryview) -> int:  # type: ignore[override]
        n = self._gz.readinto(buffer)
        self.seen += n
        if self.seen > self._bounds.inflated:
            raise TooLarge(f"{self._bounds.what} may inflate to at most {human(self._bounds.inflated)}: "
                           "this one is larger and was refused")
        return n


def _refuse_member(member: tarfile.TarInfo) -> str:
    """Why ``member`` may not be unpacked (empty: it may)."""
    for path in (member.name, member.linkname if member.issym() or member.islnk() else ""):
        if path.startswith("/") or ".." in Path(path).parts:
            return f"member {member.name!r} points outside the directory"
    if member.isdev():
        return f"member {member.name!r} is a device file or a FIFO"
    if not (member.isreg() or member.isdir() or member.issym() or member.islnk()):
        return f"member {member.name!r} is neither a file, a directory nor a link"
    return ""


def check(data: bytes, bounds: Bounds = SOURCE) -> None:
    """Refuse anything but a gzip tar within ``bounds`` whose members are
    files, directories and links that stay inside it. Streams: nothing of
    the archive is kept, and it stops at the first bound it passes."""
    stream = _Inflated(data, bounds)
    declared = members = 0
    try:
        with tarfile.open(fileobj=stream, mode="r|") as tar:
            for member in tar:
                members += 1
                if members > bounds.members:
                    raise TooLarge(f"{bounds.what} may hold at most {bounds.members:,} members: "
                                   "this one holds more and was refused")
                declared += member.size
                if declared > bounds.inflated:
                    raise TooLarge(f"{bounds.what} may inflate to at most {human(bounds.inflated)}: "
                                   "this one is larger and was refused")
                why = _refuse_member(member)
                if why:
                    raise InvalidInput(f"{bounds.what}: {why}")
    except (tarfile.TarError, EOFError, OSError, zlib.error) as exc:
        raise InvalidInput(f"{bounds.what} is not a gzip tar: {exc}") from exc


def unpack(data: bytes, dest: Path, modes: Literal["data", "tar"] = "data", bounds: Bounds = SOURCE) -> None:
    """Extract a gzip tar into ``dest`` once :func:`check` passed it; nothing
    may land outside ``dest``. ``tar`` keeps file modes (a plan's provider
    binaries stay executable); ``data`` drops the unsafe ones, for sources
    from people."""
    check(data, bounds)
    try:
        with tarfile.open(fileobj=io.BytesIO(data), mode="r:gz") as tar:
            if hasattr(tarfile, "data_filter"):
                tar.extractall(dest, filter=modes)
            else:  # Python before 3.11.4 (Debian bookworm's 3.11.2) has no extraction filters
                tar.extractall(dest, members=_checked(tar, modes))
    except (tarfile.TarError, EOFError, OSError) as exc:
        raise InvalidInput(f"cannot unpack the archive: {exc}") from exc


def _checked(tar: tarfile.TarFile, modes: str) -> list[tarfile.TarInfo]:
    """What the ``data``/``tar`` filters refuse, refused by hand (``check``
    refused the rest); ``data`` also drops set-id bits."""
    members = []
    for member in tar.getmembers():
        if modes == "data":
            member.mode &= 0o755
        members.append(member)
    return members

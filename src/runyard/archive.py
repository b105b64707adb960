"""Source snapshots: a local directory packed as a gzip tar for upload."""

from __future__ import annotations

import io
import tarfile
from pathlib import Path

from runyard.core.errors import InvalidInput

SKIPPED = frozenset({".git", ".terraform"})


def pack_directory(directory: Path) -> bytes:
    """A gzip tar of ``directory``'s contents, without VCS and tool caches."""
    if not directory.is_dir():
        raise InvalidInput(f"source directory {directory} does not exist")

    def keep(info: tarfile.TarInfo) -> tarfile.TarInfo | None:
        return None if Path(info.name).name in SKIPPED else info

    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tar:
        for item in sorted(directory.iterdir()):
            tar.add(item, arcname=item.name, filter=keep)
    return buf.getvalue()

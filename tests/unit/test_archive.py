"""Archives (source snapshots, workspaces) unpack safely on every Python we support."""

from __future__ import annotations

import io
import tarfile
from pathlib import Path

import pytest

from runyard import archive
from runyard.core.errors import InvalidInput


def test_archives_unpack_safely_without_extraction_filters(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Debian bookworm's Python 3.11.2 predates tarfile's filters: the
    fallback refuses the same escapes."""
    monkeypatch.delattr(tarfile, "data_filter")
    src = tmp_path / "src"
    src.mkdir()
    (src / "ok.txt").write_text("fine\n")
    archive.unpack(archive.pack(src), tmp_path / "out")
    assert (tmp_path / "out" / "ok.txt").read_text() == "fine\n"
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tar:
        evil = tarfile.TarInfo("../escaped.txt")
        evil.size = 1
        tar.addfile(evil, io.BytesIO(b"x"))
    with pytest.raises(InvalidInput, match="outside"):
        archive.unpack(buf.getvalue(), tmp_path / "out2")
    assert not (tmp_path / "escaped.txt").exists()

"""Archives (source snapshots, workspaces) unpack safely on every Python we support."""

from __future__ import annotations

import gzip
import io
import tarfile
from pathlib import Path

import pytest

from runyard import archive
from runyard.core import limits
from runyard.core.errors import InvalidInput, TooLarge

from .conftest import World


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


def _tar(*members: tuple[tarfile.TarInfo, bytes | None]) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz", compresslevel=1) as tar:
        for info, data in members:
            tar.addfile(info, io.BytesIO(data) if data is not None else None)
    return buf.getvalue()


def _file(name: str, size: int) -> tuple[tarfile.TarInfo, bytes]:
    info = tarfile.TarInfo(name)
    info.size = size
    return info, b"\0" * size


SMALL = archive.Bounds("a test archive", inflated=64 * 1024, members=10)


def test_an_archive_inflating_past_its_bound_is_refused_before_it_is_unpacked(tmp_path: Path) -> None:
    bomb = _tar(_file("zeros", 10 * 64 * 1024))
    assert len(bomb) < 4096  # a small upload
    with pytest.raises(TooLarge, match="inflate to at most 64 KiB"):
        archive.check(bomb, SMALL)
    with pytest.raises(TooLarge):
        archive.unpack(bomb, tmp_path / "out", bounds=SMALL)
    assert not (tmp_path / "out").exists()


def test_a_member_whose_header_claims_more_than_the_bound_is_refused_from_its_header() -> None:
    """The declared size is counted before any of the member's data is inflated."""
    info = tarfile.TarInfo("huge")
    info.size = 10 * 1024**3
    header = info.tobuf(format=tarfile.GNU_FORMAT)
    with pytest.raises(TooLarge):
        archive.check(gzip.compress(header), archive.SOURCE)


def test_an_archive_with_too_many_members_is_refused(tmp_path: Path) -> None:
    many = _tar(*(_file(f"f{i}", 0) for i in range(11)))
    with pytest.raises(TooLarge, match="at most 10 members"):
        archive.unpack(many, tmp_path / "out", bounds=SMALL)
    archive.unpack(_tar(*(_file(f"f{i}", 0) for i in range(10))), tmp_path / "ok", bounds=SMALL)
    assert len(list((tmp_path / "ok").iterdir())) == 10


@pytest.mark.parametrize("kind", [tarfile.FIFOTYPE, tarfile.CHRTYPE, tarfile.BLKTYPE])
def test_device_files_and_fifos_are_refused(kind: bytes) -> None:
    info = tarfile.TarInfo("dev")
    info.type = kind
    with pytest.raises(InvalidInput, match="device file or a FIFO"):
        archive.check(_tar(_file("ok", 1), (info, None)))


def test_the_default_bounds_are_the_documented_limits() -> None:
    assert archive.SOURCE.inflated == limits.MAX_SOURCE_INFLATED == 1024**3
    assert archive.SOURCE.members == limits.MAX_SOURCE_MEMBERS
    assert archive.WORKSPACE.inflated == limits.MAX_WORKSPACE_INFLATED


def test_a_source_upload_that_inflates_too_far_or_holds_a_fifo_stores_nothing(world: World) -> None:
    info = tarfile.TarInfo("pipe")
    info.type = tarfile.FIFOTYPE
    header = tarfile.TarInfo("huge")
    header.size = limits.MAX_SOURCE_INFLATED + 1
    for data in (_tar(_file("ok", 1), (info, None)), gzip.compress(header.tobuf(format=tarfile.GNU_FORMAT))):
        with pytest.raises(InvalidInput):
            world.svc.stacks.upload_source(data)
    assert list(world.blobs.keys("sources/")) == []

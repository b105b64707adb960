"""Object storage for logs, source snapshots and other blobs."""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Protocol

from runyard.core.errors import InvalidInput, NotFound, RunyardError


class BlobStore(Protocol):
    """Where large, write-once objects live. Keys are ``/``-separated paths."""

    def put(self, key: str, data: bytes) -> None: ...

    def get(self, key: str) -> bytes: ...

    def exists(self, key: str) -> bool: ...

    def delete(self, key: str) -> None: ...

    def keys(self, prefix: str) -> Iterator[str]:
        """Every key under ``prefix`` (a folder, ending in ``/``), in no set order."""
        ...


class LocalBlobStore:
    """Blobs as files under one directory; each write is atomic and fsynced."""

    def __init__(self, root: Path) -> None:
        self.root = root
        root.mkdir(parents=True, exist_ok=True)

    def _path(self, key: str) -> Path:
        parts = key.split("/")
        if not key or any(p in ("", ".", "..") for p in parts):
            raise InvalidInput(f"bad blob key {key!r}")
        return self.root.joinpath(*parts)

    def put(self, key: str, data: bytes) -> None:
        path = self._path(key)
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".tmp-")
        try:
            with os.fdopen(fd, "wb") as fh:
                fh.write(data)
                fh.flush()
                os.fsync(fh.fileno())
            os.replace(tmp, path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise

    def get(self, key: str) -> bytes:
        try:
            return self._path(key).read_bytes()
        except FileNotFoundError as exc:
            raise NotFound(f"no blob {key}") from exc

    def exists(self, key: str) -> bool:
        return self._path(key).is_file()

    def delete(self, key: str) -> None:
        self._path(key).unlink(missing_ok=True)

    def keys(self, prefix: str) -> Iterator[str]:
        folder = self.root.joinpath(*[p for p in prefix.split("/") if p])
        if not folder.is_dir():
            return
        for path in folder.rglob("*"):
            if path.is_file() and not path.name.startswith(".tmp-"):
                yield path.relative_to(self.root).as_posix()


class FallbackBlobStore:
    """This site's store, reading from the other site's while an object has not
    been replicated yet (S3 replication lags). Writes go to this site's only."""

    def __init__(self, own: BlobStore, peer: BlobStore) -> None:
        self.own = own
        self.peer = peer

    def put(self, key: str, data: bytes) -> None:
        self.own.put(key, data)

    def get(self, key: str) -> bytes:
        try:
            return self.own.get(key)
        except NotFound:
            try:
                return self.peer.get(key)
            except RunyardError as exc:  # the peer is gone or does not have it either
                raise NotFound(f"no blob {key} here or in the peer's store ({exc.message})") from exc

    def exists(self, key: str) -> bool:
        if self.own.exists(key):
            return True
        try:
            return self.peer.exists(key)
        except RunyardError:
            return False

    def delete(self, key: str) -> None:
        self.own.delete(key)

    def keys(self, prefix: str) -> Iterator[str]:
        return self.own.keys(prefix)

"""Which object store a server uses, from one URL: ``file:///var/lib/runyard/blobs``
(a local directory, the embedded default) or ``s3://BUCKET/PREFIX`` (endpoint,
region and credentials the boto3 way; ``?endpoint_url=`` and ``?region=`` for
S3-compatible stores)."""

from __future__ import annotations

from pathlib import Path
from urllib.parse import parse_qs, urlsplit

from runyard.core.errors import InvalidInput
from runyard.server.blobs import BlobStore, LocalBlobStore


def open_blob_store(url: str, default_dir: Path, check: bool = True) -> BlobStore:
    """The store ``url`` names; empty: a local directory ``default_dir``."""
    if not url:
        return LocalBlobStore(default_dir)
    parts = urlsplit(url)
    if parts.scheme == "file":
        if not parts.path:
            raise InvalidInput(f"blob URL {url!r} names no directory: use file:///ABSOLUTE/PATH")
        return LocalBlobStore(Path(parts.path))
    if parts.scheme == "s3":
        if not parts.netloc:
            raise InvalidInput(f"blob URL {url!r} names no bucket: use s3://BUCKET/PREFIX")
        query = {k: v[-1] for k, v in parse_qs(parts.query).items()}
        unknown = set(query) - {"endpoint_url", "region"}
        if unknown:
            raise InvalidInput(f"blob URL {url!r}: unknown option(s) {sorted(unknown)}; use endpoint_url, region")
        from runyard.aws import S3BlobStore

        store = S3BlobStore(parts.netloc, parts.path, query.get("region"), query.get("endpoint_url"))
        if check:  # a peer's store may be down when this server starts: that is what it is for
            store.check()
        return store
    raise InvalidInput(f"blob URL {url!r}: use file:///PATH or s3://BUCKET/PREFIX")

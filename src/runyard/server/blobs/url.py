"""Which object store a server uses, from one URL: ``file:///var/lib/runyard/blobs``
(a local directory, the embedded default) or ``s3://BUCKET/PREFIX`` (endpoint,
region and credentials the boto3 way; ``?endpoint_url=`` and ``?region=`` for
S3-compatible stores)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

from runyard.core.errors import InvalidInput
from runyard.server.blobs import BlobStore, LocalBlobStore


@dataclass(frozen=True)
class S3Location:
    bucket: str
    prefix: str
    endpoint_url: str | None = None
    region: str | None = None


def parse_s3_url(url: str) -> S3Location:
    """``s3://BUCKET/PREFIX[?endpoint_url=...&region=...]``, checked."""
    parts = urlsplit(url)
    if parts.scheme != "s3" or not parts.netloc:
        raise InvalidInput(f"{url!r} is not an S3 URL: use s3://BUCKET/PREFIX")
    query = {k: v[-1] for k, v in parse_qs(parts.query).items()}
    unknown = set(query) - {"endpoint_url", "region"}
    if unknown:
        raise InvalidInput(f"S3 URL {url!r}: unknown option(s) {sorted(unknown)}; use endpoint_url, region")
    return S3Location(parts.netloc, parts.path.strip("/"), query.get("endpoint_url"), query.get("region"))


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
        from runyard.aws import S3BlobStore

        where = parse_s3_url(url)
        store = S3BlobStore(where.bucket, where.prefix, where.region, where.endpoint_url)
        if check:  # a peer's store may be down when this server starts: that is what it is for
            store.check()
        return store
    raise InvalidInput(f"blob URL {url!r}: use file:///PATH or s3://BUCKET/PREFIX")

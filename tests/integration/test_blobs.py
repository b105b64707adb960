"""Both object stores keep the same contract: the local directory, and S3
through boto3 against moto's server (the same code talks to AWS)."""

from __future__ import annotations

from pathlib import Path

import pytest

from runyard.core.errors import InvalidInput, NotFound
from runyard.server.blobs import BlobStore
from runyard.server.blobs.url import open_blob_store


@pytest.fixture(params=["file", "s3"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> BlobStore:
    if request.param == "file":
        return open_blob_store(f"file://{tmp_path / 'blobs'}", tmp_path / "unused")
    bucket = request.getfixturevalue("bucket")
    endpoint = request.getfixturevalue("aws_env")
    return open_blob_store(f"s3://{bucket}/runyard/prod?endpoint_url={endpoint}", tmp_path / "unused")


def test_put_get_exists_delete(store: BlobStore) -> None:
    store.put("logs/01A.jsonl", b"line\n")
    assert store.exists("logs/01A.jsonl") and store.get("logs/01A.jsonl") == b"line\n"
    store.put("logs/01A.jsonl", b"replaced\n")
    assert store.get("logs/01A.jsonl") == b"replaced\n"
    store.delete("logs/01A.jsonl")
    store.delete("logs/01A.jsonl")  # deleting what is gone is fine
    assert not store.exists("logs/01A.jsonl")
    with pytest.raises(NotFound):
        store.get("logs/01A.jsonl")


def test_keys_lists_one_folder_whole(store: BlobStore) -> None:
    for key in ("sources/a.tar.gz", "sources/b.tar.gz", "states/s1/x.tfstate", "sourcesX/c"):
        store.put(key, b"x")
    assert sorted(store.keys("sources/")) == ["sources/a.tar.gz", "sources/b.tar.gz"]
    assert list(store.keys("nothing/")) == []


@pytest.mark.parametrize("bad", ["", "../etc/passwd", "a/../b", "/abs"])
def test_keys_that_leave_the_store_are_refused(store: BlobStore, bad: str) -> None:
    with pytest.raises(InvalidInput):
        store.put(bad, b"x")


def test_a_large_blob_round_trips(store: BlobStore) -> None:
    data = bytes(range(256)) * 40_000  # 10 MB
    store.put("workspaces/big.sealed", data)
    assert store.get("workspaces/big.sealed") == data


def test_blob_urls_are_checked(tmp_path: Path, aws_env: str) -> None:
    for bad in ("ftp://x/y", "s3:///prefix", "file://", f"s3://b/p?endpoint={aws_env}"):
        with pytest.raises(InvalidInput):
            open_blob_store(bad, tmp_path)
    with pytest.raises(Exception, match="no-such-bucket"):
        open_blob_store(f"s3://no-such-bucket/p?endpoint_url={aws_env}", tmp_path)

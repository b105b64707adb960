"""The object store's replication to the standby's bucket (on moto, which
stores the configuration but copies nothing), the backfill of what it has
not copied, and reading through to the peer's bucket."""

from __future__ import annotations

import json
import subprocess
import sys

import boto3
import pytest

from runyard.aws import S3BlobStore
from runyard.core.errors import NotFound
from runyard.server.blobs import FallbackBlobStore
from tests.conftest import free_port


def buckets(endpoint: str) -> tuple[str, str]:
    s3 = boto3.client("s3", endpoint_url=endpoint)
    names = f"primary-{free_port()}", f"standby-{free_port()}"
    for name in names:
        s3.create_bucket(Bucket=name)
    return names


def dr(endpoint: str, *args: str) -> subprocess.CompletedProcess[str]:
    import os

    env = {**os.environ, "AWS_ENDPOINT_URL": endpoint}
    return subprocess.run([sys.executable, "-m", "runyard", "dr", *args], capture_output=True, text=True,
                          timeout=120, env=env)


def test_replication_apply_writes_versioning_role_and_rule_and_is_idempotent(aws_env: str) -> None:
    source, destination = buckets(aws_env)
    for _ in range(2):
        done = dr(aws_env, "replication", "apply", "--source", f"s3://{source}?endpoint_url={aws_env}",
                  "--destination", f"s3://{destination}")
        assert done.returncode == 0, done.stderr
    s3 = boto3.client("s3", endpoint_url=aws_env)
    for bucket in (source, destination):
        assert s3.get_bucket_versioning(Bucket=bucket)["Status"] == "Enabled"
    config = s3.get_bucket_replication(Bucket=source)["ReplicationConfiguration"]
    assert config["Role"].endswith(":role/runyard-replication")
    (rule,) = config["Rules"]
    assert rule["Status"] == "Enabled" and rule["Destination"]["Bucket"] == f"arn:aws:s3:::{destination}"
    trust = boto3.client("iam", endpoint_url=aws_env).get_role(RoleName="runyard-replication")["Role"]
    assert "s3.amazonaws.com" in json.dumps(trust["AssumeRolePolicyDocument"])


def test_backfill_copies_what_replication_did_not_and_resumes(aws_env: str) -> None:
    source, destination = buckets(aws_env)
    primary = S3BlobStore(source, "prod", endpoint_url=aws_env)
    replica = S3BlobStore(destination, "prod", endpoint_url=aws_env)
    for i in range(12):
        primary.put(f"logs/{i:02d}.jsonl", f"log {i}\n".encode())
    replica.put("logs/00.jsonl", b"log 0\n")  # already replicated
    src, dst = f"s3://{source}/prod?endpoint_url={aws_env}", f"s3://{destination}/prod?endpoint_url={aws_env}"
    lag = dr(aws_env, "status", "--endpoint", "http://127.0.0.1:9", "--bucket", src, "--replica", dst)
    assert "replica lag: 11 object(s)" in lag.stdout, lag.stdout + lag.stderr
    done = dr(aws_env, "backfill", "--source", src, "--destination", dst)
    assert done.returncode == 0, done.stderr
    assert "copied 11 object(s)" in done.stdout and "11/11" in done.stderr  # the progress bar
    assert sorted(replica.keys("")) == sorted(primary.keys(""))
    assert replica.get("logs/07.jsonl") == b"log 7\n"
    again = dr(aws_env, "backfill", "--source", src, "--destination", dst)
    assert "nothing to copy" in again.stdout


def test_a_server_reads_through_to_the_peers_bucket_while_an_object_is_not_replicated(aws_env: str) -> None:
    source, destination = buckets(aws_env)
    peer = S3BlobStore(source, "prod", endpoint_url=aws_env)
    own = S3BlobStore(destination, "prod", endpoint_url=aws_env)
    store = FallbackBlobStore(own, peer)
    peer.put("states/s1/abc.tfstate", b"{}")
    assert store.exists("states/s1/abc.tfstate") and store.get("states/s1/abc.tfstate") == b"{}"
    store.put("logs/new.jsonl", b"x")
    assert own.exists("logs/new.jsonl") and not peer.exists("logs/new.jsonl")  # writes stay here
    with pytest.raises(NotFound):
        store.get("nowhere")
    gone = FallbackBlobStore(own, S3BlobStore(source, "prod", endpoint_url="http://127.0.0.1:9"))
    with pytest.raises(NotFound):  # the peer does not answer: it is simply not there
        gone.get("states/s1/abc.tfstate")

"""AWS through boto3: Auto Scaling groups, EC2 launch times, SSM parameters,
S3 object storage.

The only module that imports boto3. It uses the standard credential chain
and ``AWS_ENDPOINT_URL`` (or ``endpoint_url``) like any AWS tool, so the same
code talks to real AWS and to an emulator. AWS errors become RunyardErrors.
"""

from __future__ import annotations

import base64
import datetime as dt
import json
from collections.abc import Iterator
from typing import Any

import boto3
from botocore.exceptions import BotoCoreError, ClientError

from runyard.core.errors import InvalidInput, NotFound, Unavailable
from runyard.core.scaling import GroupState, Instance


def _session(region: str | None, endpoint_url: str | None) -> tuple[Any, dict[str, Any]]:
    kwargs: dict[str, Any] = {}
    if endpoint_url:
        kwargs["endpoint_url"] = endpoint_url
    return boto3.session.Session(region_name=region), kwargs


def _translate(exc: Exception, what: str) -> Exception:
    if isinstance(exc, ClientError):
        code = exc.response.get("Error", {}).get("Code", "")
        message = exc.response.get("Error", {}).get("Message", str(exc))
        if code in ("ParameterNotFound", "ResourceNotFound", "ValidationError") and "not found" in message.lower():
            return NotFound(f"{what}: {message}")
        if code in ("ValidationError", "InvalidParameterValue", "ParameterNotFound"):
            return InvalidInput(f"{what}: {message}")
        return Unavailable(f"{what}: {code} {message}")
    return Unavailable(f"{what}: {exc}")


class AutoScalingGroup:
    """A worker fleet that is an EC2 Auto Scaling group."""

    name = "aws"

    def __init__(self, group: str, region: str | None = None, endpoint_url: str | None = None) -> None:
        session, kwargs = _session(region, endpoint_url)
        self.group = group
        self.asg = session.client("autoscaling", **kwargs)
        self.ec2 = session.client("ec2", **kwargs)

    def describe(self) -> GroupState:
        try:
            groups = self.asg.describe_auto_scaling_groups(AutoScalingGroupNames=[self.group])["AutoScalingGroups"]
            if not groups:
                raise NotFound(f"no Auto Scaling group {self.group!r}")
            g = groups[0]
            ids = [i["InstanceId"] for i in g.get("Instances", [])]
            launched: dict[str, float] = {}
            if ids:
                for res in self.ec2.describe_instances(InstanceIds=ids)["Reservations"]:
                    for inst in res["Instances"]:
                        at = inst.get("LaunchTime")
                        launched[inst["InstanceId"]] = at.timestamp() if isinstance(at, dt.datetime) else 0.0
        except (ClientError, BotoCoreError) as exc:
            raise _translate(exc, f"describing group {self.group}") from exc
        instances = tuple(
            Instance(i["InstanceId"], i.get("LifecycleState", ""), launched.get(i["InstanceId"], 0.0))
            for i in g.get("Instances", [])
        )
        return GroupState(int(g["DesiredCapacity"]), int(g["MinSize"]), int(g["MaxSize"]), instances)

    def set_desired(self, desired: int) -> None:
        try:
            self.asg.set_desired_capacity(AutoScalingGroupName=self.group, DesiredCapacity=desired,
                                          HonorCooldown=False)
        except (ClientError, BotoCoreError) as exc:
            raise _translate(exc, f"setting the desired capacity of {self.group}") from exc

    def terminate(self, instance_id: str) -> None:
        """End one instance and lower the desired capacity by one, in one call."""
        terminate_instance(instance_id, self.asg)


def terminate_instance(instance_id: str, client: Any | None = None, region: str | None = None,
                       endpoint_url: str | None = None) -> None:
    if client is None:
        session, kwargs = _session(region, endpoint_url)
        client = session.client("autoscaling", **kwargs)
    try:
        client.terminate_instance_in_auto_scaling_group(InstanceId=instance_id, ShouldDecrementDesiredCapacity=True)
    except (ClientError, BotoCoreError) as exc:
        raise _translate(exc, f"terminating instance {instance_id}") from exc


def read_secure_parameter(name: str, region: str | None = None, endpoint_url: str | None = None) -> str:
    """An SSM parameter's value, decrypted (SecureString)."""
    session, kwargs = _session(region, endpoint_url)
    try:
        return str(session.client("ssm", **kwargs).get_parameter(Name=name, WithDecryption=True)["Parameter"]["Value"])
    except (ClientError, BotoCoreError) as exc:
        raise _translate(exc, f"reading SSM parameter {name}") from exc


def _missing(exc: ClientError) -> bool:
    """S3's "no such object" (get_object says NoSuchKey, head_object 404)."""
    return exc.response.get("Error", {}).get("Code") in ("NoSuchKey", "404", "NotFound")


class S3BlobStore:
    """The object store in an S3 bucket (or an S3-compatible store), under a
    prefix. Keys are the store's keys; a missing object is :class:`NotFound`."""

    def __init__(self, bucket: str, prefix: str = "", region: str | None = None,
                 endpoint_url: str | None = None) -> None:
        session, kwargs = _session(region, endpoint_url)
        self.bucket = bucket
        self.prefix = prefix.strip("/") + "/" if prefix.strip("/") else ""
        self.s3 = session.client("s3", **kwargs)

    def _key(self, key: str) -> str:
        if not key or key.startswith("/") or ".." in key.split("/"):
            raise InvalidInput(f"bad blob key {key!r}")
        return self.prefix + key

    def put(self, key: str, data: bytes) -> None:
        try:
            self.s3.put_object(Bucket=self.bucket, Key=self._key(key), Body=data)
        except (ClientError, BotoCoreError) as exc:
            raise _translate(exc, f"writing s3://{self.bucket}/{self._key(key)}") from exc

    def get(self, key: str) -> bytes:
        try:
            body = self.s3.get_object(Bucket=self.bucket, Key=self._key(key))["Body"]
            return bytes(body.read())
        except ClientError as exc:
            if _missing(exc):
                raise NotFound(f"no blob {key} in s3://{self.bucket}/{self.prefix}") from exc
            raise _translate(exc, f"reading s3://{self.bucket}/{self._key(key)}") from exc
        except BotoCoreError as exc:
            raise _translate(exc, f"reading s3://{self.bucket}/{self._key(key)}") from exc

    def exists(self, key: str) -> bool:
        try:
            self.s3.head_object(Bucket=self.bucket, Key=self._key(key))
            return True
        except ClientError as exc:
            if _missing(exc):
                return False
            raise _translate(exc, f"looking for s3://{self.bucket}/{self._key(key)}") from exc
        except BotoCoreError as exc:
            raise _translate(exc, f"looking for s3://{self.bucket}/{self._key(key)}") from exc

    def delete(self, key: str) -> None:
        try:
            self.s3.delete_object(Bucket=self.bucket, Key=self._key(key))
        except (ClientError, BotoCoreError) as exc:
            raise _translate(exc, f"deleting s3://{self.bucket}/{self._key(key)}") from exc

    def keys(self, prefix: str) -> Iterator[str]:
        pages = self.s3.get_paginator("list_objects_v2").paginate(Bucket=self.bucket, Prefix=self.prefix + prefix)
        try:
            for page in pages:
                for item in page.get("Contents", []):
                    yield str(item["Key"])[len(self.prefix):]
        except (ClientError, BotoCoreError) as exc:
            raise _translate(exc, f"listing s3://{self.bucket}/{self.prefix}{prefix}") from exc

    def check(self) -> None:
        """Fail now, with a clear message, if the bucket cannot be reached."""
        try:
            self.s3.head_bucket(Bucket=self.bucket)
        except (ClientError, BotoCoreError) as exc:
            raise _translate(exc, f"the object store bucket {self.bucket}") from exc


def kms_data_key(key_id: str, stored: str | None, region: str | None = None,
                 endpoint_url: str | None = None) -> tuple[bytes, str]:
    """The key that encrypts the server's secrets, kept by AWS KMS: made with
    ``key_id`` the first time (returned with its KMS-encrypted form, to
    store), opened by KMS every start after (``stored``)."""
    session, kwargs = _session(region, endpoint_url)
    kms = session.client("kms", **kwargs)
    try:
        if stored:
            plain = kms.decrypt(CiphertextBlob=base64.b64decode(stored), KeyId=key_id)["Plaintext"]
            return bytes(plain), stored
        made = kms.generate_data_key(KeyId=key_id, KeySpec="AES_256")
        return bytes(made["Plaintext"]), base64.b64encode(made["CiphertextBlob"]).decode()
    except (ClientError, BotoCoreError) as exc:
        raise _translate(exc, f"the KMS key {key_id}") from exc


REPLICATION_TRUST = {
    "Version": "2012-10-17",
    "Statement": [{"Effect": "Allow", "Principal": {"Service": "s3.amazonaws.com"}, "Action": "sts:AssumeRole"}],
}


def apply_replication(source: str, destination: str, role_name: str, region: str | None = None,
                      endpoint_url: str | None = None) -> str:
    """Replicate every new object of bucket ``source`` into ``destination``:
    versioning on both (S3 requires it), a role S3 assumes to copy, and the
    rule. Idempotent: applying it again changes nothing. Returns the role ARN."""
    session, kwargs = _session(region, endpoint_url)
    s3, iam = session.client("s3", **kwargs), session.client("iam", **kwargs)
    policy = {"Version": "2012-10-17", "Statement": [
        {"Effect": "Allow", "Action": ["s3:GetReplicationConfiguration", "s3:ListBucket"],
         "Resource": [f"arn:aws:s3:::{source}"]},
        {"Effect": "Allow", "Action": ["s3:GetObjectVersionForReplication", "s3:GetObjectVersionAcl",
                                       "s3:GetObjectVersionTagging"], "Resource": [f"arn:aws:s3:::{source}/*"]},
        {"Effect": "Allow", "Action": ["s3:ReplicateObject", "s3:ReplicateDelete", "s3:ReplicateTags"],
         "Resource": [f"arn:aws:s3:::{destination}/*"]},
    ]}
    try:
        for bucket in (source, destination):
            s3.put_bucket_versioning(Bucket=bucket, VersioningConfiguration={"Status": "Enabled"})
        try:
            arn = iam.get_role(RoleName=role_name)["Role"]["Arn"]
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") != "NoSuchEntity":
                raise
            arn = iam.create_role(RoleName=role_name, AssumeRolePolicyDocument=json.dumps(REPLICATION_TRUST),
                                  Description="runyard: S3 copies objects to the standby's bucket")["Role"]["Arn"]
        iam.put_role_policy(RoleName=role_name, PolicyName="runyard-replication", PolicyDocument=json.dumps(policy))
        s3.put_bucket_replication(Bucket=source, ReplicationConfiguration={"Role": arn, "Rules": [{
            "ID": "runyard-to-standby", "Priority": 1, "Status": "Enabled", "Filter": {"Prefix": ""},
            "DeleteMarkerReplication": {"Status": "Enabled"},
            "Destination": {"Bucket": f"arn:aws:s3:::{destination}"},
        }]})
    except (ClientError, BotoCoreError) as exc:
        raise _translate(exc, f"replication from {source} to {destination}") from exc
    return str(arn)


def missing_objects(source: S3BlobStore, destination: S3BlobStore) -> list[str]:
    """Keys the source has and the destination lacks (what replication has not copied)."""
    have = set(destination.keys(""))
    return sorted(k for k in source.keys("") if k not in have)


def read_secret(store: str, name: str, region: str | None = None, endpoint_url: str | None = None) -> str:
    """A value from SSM Parameter Store (decrypted) or Secrets Manager."""
    if store == "ssm":
        return read_secure_parameter(name, region, endpoint_url)
    if store != "secretsmanager":
        raise InvalidInput(f"unknown credentials store {store!r}: use ssm or secretsmanager")
    session, kwargs = _session(region, endpoint_url)
    try:
        return str(session.client("secretsmanager", **kwargs).get_secret_value(SecretId=name)["SecretString"])
    except (ClientError, BotoCoreError) as exc:
        raise _translate(exc, f"reading secret {name}") from exc

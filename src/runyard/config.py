"""Settings, one class per process. Precedence: flag > RUNYARD_* variable >
YAML file > default. Each resolved value remembers where it came from."""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any, Literal, TypeVar

import yaml
from pydantic import AfterValidator, BaseModel, BeforeValidator, ConfigDict, Field, SecretStr, ValidationError

from runyard.core import limits
from runyard.core.durations import parse_duration
from runyard.core.errors import InvalidInput
from runyard.core.mounts import parse_mount


def _duration(value: Any) -> float:
    try:
        return parse_duration(value)
    except InvalidInput as exc:
        raise ValueError(exc.message) from exc  # pydantic reports it with the field's name


Duration = Annotated[float, BeforeValidator(_duration)]
PREFIX = "RUNYARD_"

S = TypeVar("S", bound="Settings")


def _csv(value: Any) -> Any:
    if isinstance(value, str):
        return [v.strip() for v in value.split(",") if v.strip()]
    return value


CsvList = Annotated[list[str], BeforeValidator(_csv)]
Port = Annotated[int, Field(ge=0, le=65535)]


def _mounts(value: list[str]) -> list[str]:
    for entry in value:
        try:
            parse_mount(entry)
        except InvalidInput as exc:
            raise ValueError(exc.message) from exc
    return value


def _user(value: str) -> str:
    uid, colon, gid = value.partition(":")
    if value and not (uid.isdigit() and (gid.isdigit() or not colon)):
        raise ValueError(f"{value!r} is not uid or uid:gid (numbers: a name may not exist in the run's image)")
    return value


def _endpoints(value: list[str]) -> list[str]:
    for url in value:
        if not url.startswith(("http://", "https://")) or len(url) > limits.MAX_TEXT:
            raise ValueError(f"{url[:100]!r} is not an http:// or https:// URL")
    return value


Mounts = Annotated[CsvList, AfterValidator(_mounts)]
Endpoints = Annotated[CsvList, AfterValidator(_endpoints)]


class Settings(BaseModel):
    """Base of every process's settings: strict keys, provenance per field."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    @classmethod
    def resolve(
        cls: type[S],
        flags: Mapping[str, Any] | None = None,
        env: Mapping[str, str] | None = None,
        config_file: Path | None = None,
    ) -> tuple[S, dict[str, str]]:
        """Build settings from the layers; returns them and each field's origin."""
        env = os.environ if env is None else env
        layers: list[tuple[str, dict[str, Any]]] = []
        if config_file is not None:
            layers.append((f"file {config_file}", cls._from_file(config_file)))
        layers.append(("environment", cls._from_env(env)))
        layers.append(("flag", {k: v for k, v in (flags or {}).items() if v is not None}))
        values: dict[str, Any] = {}
        origin = {name: "default" for name in cls.model_fields}
        for label, layer in layers:
            for key, value in layer.items():
                values[key] = value
                origin[key] = f"{label} ({PREFIX}{key.upper()})" if label == "environment" else label
        try:
            return cls(**values), origin
        except ValidationError as exc:
            problems = "; ".join(
                f"{PREFIX}{str(err['loc'][0]).upper()} is required" if err["type"] == "missing" else
                f"{'.'.join(str(p) for p in err['loc'])} ({origin.get(str(err['loc'][0]), '?')}): "
                f"{err['msg'].removeprefix('Value error, ')}"
                for err in exc.errors()
            )
            raise InvalidInput(f"bad settings: {problems}") from exc

    @classmethod
    def _from_env(cls, env: Mapping[str, str]) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for name in cls.model_fields:
            key = PREFIX + name.upper()
            if key in env and env[key] != "":
                out[name] = env[key]
        return out

    @classmethod
    def _from_file(cls, path: Path) -> dict[str, Any]:
        try:
            doc = yaml.safe_load(path.read_text()) or {}
        except OSError as exc:
            raise InvalidInput(f"cannot read config file {path}: {exc.strerror}") from exc
        except yaml.YAMLError as exc:
            raise InvalidInput(f"config file {path} is not valid YAML: {exc}") from exc
        if not isinstance(doc, dict):
            raise InvalidInput(f"config file {path} must be a mapping of setting: value")
        out = {}
        for key, value in doc.items():
            name = str(key).replace("-", "_").lower()
            if name not in cls.model_fields:
                raise InvalidInput(f"config file {path}: unknown setting {key!r}")
            out[name] = value
        return out

    def explain(self, origin: Mapping[str, str]) -> list[tuple[str, str, str]]:
        """(setting, shown value, origin) rows; secrets are masked."""
        rows = []
        for name in type(self).model_fields:
            value = getattr(self, name)
            if isinstance(value, SecretStr):
                shown = "********" if value.get_secret_value() else "(unset)"
            else:
                shown = str(value)
            rows.append((name, shown, origin.get(name, "default")))
        return rows


class ServerSettings(Settings):
    """The control plane's settings (environment ``RUNYARD_*`` or flags)."""

    data_dir: Path = Field(Path("runyard-data"), description="where the SQLite file, blobs and admin key live")
    host: str = Field("127.0.0.1", description="address to listen on")
    port: Port = Field(8765, description="port to listen on")
    database_url: str = Field("", description="SQLAlchemy URL; empty: a SQLite file in the data dir")
    blob_url: str = Field(
        "", description="object store: file:///PATH or s3://BUCKET/PREFIX[?endpoint_url=...]; empty: DATA_DIR/blobs"
    )
    admin_api_key: SecretStr = Field(SecretStr(""), description="bootstrap admin API key")
    secret_key: SecretStr = Field(
        SecretStr(""),
        description="encrypts the server's CA key and signing keys at rest: a passphrase of 16+ characters, or "
                    "kms:KEY_ID (AWS KMS); the same on every server; empty: a key file DATA_DIR/secret-key",
    )
    public_endpoints: CsvList = Field(
        default_factory=list,
        description="endpoints written into pool tokens, in failover order; empty: http://HOST:PORT",
    )
    worker_lost_after: Duration = Field(60.0, description="a worker silent this long is lost")
    reaper_interval: Duration = Field(2.0, description="how often lost workers are looked for")
    long_poll: Duration = Field(25.0, description="how long a worker's poll for work is held open")
    drift_interval: Duration = Field(15.0, description="how often drift-detection schedules are checked")
    standby: bool = Field(
        False, description="start as a standby: answer only health checks, promote when the primary's lease lapses"
    )
    site: str = Field("", description="this server's site (region); empty: standby if --standby, else primary")
    peer_blob_url: str = Field(
        "", description="the other site's object store: read from while an object has not been replicated yet"
    )
    scheduler_lease_ttl: Duration = Field(
        10.0, description="the scheduler lease lasts this long unless renewed; another server takes over after it"
    )
    upload_grace: Duration = Field(3600.0, description="remove a source upload no stack names after this long")
    sweep_interval: Duration = Field(600.0, description="how often unreferenced uploads are looked for")
    metrics_token: SecretStr = Field(
        SecretStr(""), description="bearer token /metrics requires (empty: /metrics is open to anyone)"
    )
    allow_local_git_sources: bool = Field(
        False, description="accept git sources on this server's disk (file:// URLs, paths); off: https, ssh and "
                           "USER@HOST:PATH only"
    )

    def site_name(self) -> str:
        return self.site or ("standby" if self.standby else "primary")

    def db_url(self) -> str:
        return self.database_url or f"sqlite:///{(self.data_dir / 'runyard.db').resolve()}"

    def endpoints(self) -> tuple[str, ...]:
        if self.public_endpoints:
            return tuple(self.public_endpoints)
        host = "127.0.0.1" if self.host in ("0.0.0.0", "::") else self.host
        return (f"http://{host}:{self.port}",)


RUNNER_IMAGE = "runyard/runner:latest"


class LauncherSettings(Settings):
    """The launcher's settings: flags > ``RUNYARD_*`` variables > ``--config`` YAML > defaults."""

    token: SecretStr = Field(SecretStr(""), description="pool token printed by `runyard pool create`")
    token_ssm_parameter: str = Field("", description="read the pool token from this SSM SecureString parameter")
    aws_region: str = Field("", description="region of the SSM parameter (default: the AWS SDK's)")
    endpoints: Endpoints = Field(
        default_factory=list, description="server endpoints in failover order (empty: the ones in the pool token)"
    )
    pool_private_key: SecretStr = Field(
        SecretStr(""), description="the pool's private key file, base64-encoded on one line"
    )
    work_dir: Path = Field(
        Path("/tmp/runyard-launcher"), description="where run workspaces are made (and removed)"
    )
    executor: Literal["auto", "docker", "process"] = Field(
        "auto", description="run isolation: docker, process, or auto (docker when an engine answers)"
    )
    default_runner_image: str = Field(RUNNER_IMAGE, description="image for stacks that name none")
    default_ansible_runner_image: str = Field(RUNNER_IMAGE, description="image for ansible stacks that name none")
    docker_pull: Literal["never", "missing"] = Field(
        "never", description="pull a runner image missing on this host (never: fail the run at once)"
    )
    docker_config_dir: Path | None = Field(None, description="Docker client config dir (registry credentials)")
    worker_network: str = Field("bridge", description="Docker network of run containers")
    worker_runtime: str = Field("", description="Docker runtime of run containers (empty: the engine's default)")
    worker_extra_mounts: Mounts = Field(default_factory=list, description="/host:/container mounts for every run")
    worker_ro_extra_mounts: Mounts = Field(
        default_factory=list, description="mounts for read-only runs (proposed, drift detection)"
    )
    worker_wo_extra_mounts: Mounts = Field(default_factory=list, description="mounts for write runs (tracked, task)")
    whitelist_envs: CsvList = Field(
        default_factory=list,
        description="launcher variables passed to runs; ro_NAME only to read-only runs, wo_NAME only to write runs",
    )
    mask_envs: CsvList = Field(
        default_factory=list, description="launcher variables passed to runs whose values never appear in logs"
    )
    sensitive_output_upload_enabled: bool = Field(
        False, description="upload sensitive outputs (encrypted) for stack dependencies"
    )
    run_logs_on_standard_output_enabled: bool = Field(
        False, description="also write each run log line to stdout as JSON"
    )
    launcher_run_initialization_policy: Path | None = Field(
        None, description="Rego file checked before each run; a deny fails the run"
    )
    launcher_logs_timeout: Duration = Field(420.0, description="kill a run that printed nothing this long (0: off)")
    launcher_run_timeout: Duration = Field(4200.0, description="kill a run that runs this long (0: off)")
    debug: bool = Field(False, description="print the exact commands run into the run log")
    heartbeat_interval: Duration = Field(5.0, description="how often a launcher busy with a run tells the server it "
                                         "is alive (an idle one holds a poll, which says it)")
    long_poll: Duration = Field(25.0, description="how long one poll for work is held open")
    report_hold: Duration = Field(
        0.25, description="a phase the server need not know of before its commands run (preparing; a run that "
                          "changes nothing) is reported with the next report if that comes this soon (0: each "
                          "phase at once)"
    )
    metrics_port: Port = Field(0, description="serve Prometheus metrics on this port of 127.0.0.1 (0: off)")
    disconnect_after_job: bool = Field(False, description="exit after one run")
    disconnect_after_idle_timeout: Duration = Field(0.0, description="exit after this long without work (0: never)")
    shutdown_hook_path: Path | None = Field(
        None, description="executable run at exit with RUNYARD_SHUTDOWN_REASON set"
    )
    spot_interruption_watch: bool = Field(
        False, description="on EC2: watch the metadata service for a spot interruption notice, act as on SIGTERM"
    )
    imds_endpoint: str = Field("http://169.254.169.254", description="the EC2 instance metadata service")
    ca_certificates: Path | None = Field(
        None, description="PEM file of extra root CAs: trusted by the launcher's HTTPS and by runs"
    )
    worker_user: Annotated[str, AfterValidator(_user)] = Field(
        "", description="uid[:gid] run containers run as (empty: the image's user)")
    allow_local_git_sources: bool = Field(
        False, description="clone git sources from this host's disk (file:// URLs, paths); off: https, ssh and "
                           "USER@HOST:PATH only"
    )
    interruption_grace_period: Duration = Field(
        120.0, description="on SIGTERM, how long the current run may take to finish before it is stopped"
    )

    def metadata(self, env: Mapping[str, str]) -> dict[str, str]:
        """Worker tags from ``RUNYARD_METADATA_<key>`` variables, within the
        limits the server takes (refused here, at start, with the variable's name)."""
        prefix = PREFIX + "METADATA_"
        tags = {k[len(prefix) :]: v for k, v in env.items() if k.startswith(prefix) and len(k) > len(prefix)}
        if len(tags) > limits.MAX_METADATA_ENTRIES:
            raise InvalidInput(f"bad settings: {len(tags)} RUNYARD_METADATA_* variables; at most "
                               f"{limits.MAX_METADATA_ENTRIES} are taken")
        for key, value in tags.items():
            shown = f"{prefix}{key[:40]}" + ("..." if len(key) > 40 else "")
            if len(key) > limits.MAX_METADATA_KEY:
                raise InvalidInput(f"bad settings: {shown}: a metadata key may be at most "
                                   f"{limits.MAX_METADATA_KEY} characters")
            if len(value) > limits.MAX_METADATA_VALUE:
                raise InvalidInput(f"bad settings: {shown}: a metadata value may be at most "
                                   f"{limits.MAX_METADATA_VALUE} characters")
        return tags

    def passed_env(self, env: Mapping[str, str], writes: bool) -> dict[str, str]:
        """Launcher variables a run gets, by ``whitelist_envs`` and ``mask_envs``."""
        out = {}
        for entry in [*self.whitelist_envs, *self.mask_envs]:
            name = entry
            if entry.startswith("ro_"):
                if writes:
                    continue
                name = entry[3:]
            elif entry.startswith("wo_"):
                if not writes:
                    continue
                name = entry[3:]
            if name in env:
                out[name] = env[name]
        return out

    def mounts(self, writes: bool) -> list[str]:
        return [*self.worker_extra_mounts, *(self.worker_wo_extra_mounts if writes else self.worker_ro_extra_mounts)]


class PoolScaling(BaseModel):
    """How one pool is scaled."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    pool: str = Field(description="pool name or id")
    provider: Literal["aws", "local"] = Field("aws", description="where instances come from")
    asg_name: str = Field("", description="aws: the Auto Scaling group of this pool's workers")
    region: str = Field("", description="aws: the group's region (default: the AWS SDK's)")
    aws_endpoint_url: str = Field("", description="aws: an API endpoint other than AWS's own (an emulator)")
    min: int = Field(0, ge=0, description="never fewer instances")
    max: int = Field(1, ge=1, description="never more instances")
    scale_in_cooldown: Duration = Field(60.0, description="after a change, wait this long before scaling in")
    idle_before_scale_in: Duration = Field(30.0, description="retire only workers idle this long")
    boot_grace: Duration = Field(300.0, description="terminate an instance whose worker has not registered by then")
    launcher_idle_timeout: Duration = Field(
        0.0, description="local: launchers exit after this long without work (0: never)")


class AutoscalerSettings(Settings):
    """The autoscaler: one or several pools (several: the `pools` list of a YAML file)."""

    endpoint: str = Field("http://127.0.0.1:8765", description="the runyard server")
    api_key: SecretStr = Field(SecretStr(""), description="an API key of the server")
    metrics_port: Port = Field(0, description="serve Prometheus metrics on this port of 127.0.0.1 (0: off)")
    demand_wait: Duration = Field(5.0, description="longest wait between two looks at a pool")
    work_dir: Path = Field(Path("/tmp/runyard-autoscaler"), description="local: where launcher processes work")
    pools: list[PoolScaling] = Field(default_factory=list, description="the pools to scale")

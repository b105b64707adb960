"""Settings, one class per process. Precedence: flag > RUNYARD_* variable >
YAML file > default. Each resolved value remembers where it came from."""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any, TypeVar

import yaml
from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, SecretStr, ValidationError

from runyard.core.durations import parse_duration
from runyard.core.errors import InvalidInput

Duration = Annotated[float, BeforeValidator(parse_duration)]
PREFIX = "RUNYARD_"

S = TypeVar("S", bound="Settings")


def _csv(value: Any) -> Any:
    if isinstance(value, str):
        return [v.strip() for v in value.split(",") if v.strip()]
    return value


CsvList = Annotated[list[str], BeforeValidator(_csv)]


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
                f"{'.'.join(str(p) for p in err['loc'])} ({origin.get(str(err['loc'][0]), '?')}): {err['msg']}"
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
    port: int = Field(8765, description="port to listen on")
    database_url: str = Field("", description="SQLAlchemy URL; empty: a SQLite file in the data dir")
    admin_api_key: SecretStr = Field(SecretStr(""), description="bootstrap admin API key")
    public_endpoints: CsvList = Field(
        default_factory=list,
        description="endpoints written into pool tokens, in failover order; empty: http://HOST:PORT",
    )
    worker_lost_after: Duration = Field(60.0, description="a worker silent this long is lost")
    reaper_interval: Duration = Field(2.0, description="how often lost workers are looked for")
    long_poll: Duration = Field(25.0, description="how long a worker's poll for work is held open")

    def db_url(self) -> str:
        return self.database_url or f"sqlite:///{(self.data_dir / 'runyard.db').resolve()}"

    def endpoints(self) -> tuple[str, ...]:
        if self.public_endpoints:
            return tuple(self.public_endpoints)
        host = "127.0.0.1" if self.host in ("0.0.0.0", "::") else self.host
        return (f"http://{host}:{self.port}",)


class LauncherSettings(Settings):
    """The launcher's settings: flags > ``RUNYARD_*`` variables > ``--config`` YAML > defaults."""

    token: SecretStr = Field(SecretStr(""), description="pool token printed by `runyard pool create`")
    pool_private_key: SecretStr = Field(
        SecretStr(""), description="the pool's private key file, base64-encoded on one line"
    )
    work_dir: Path = Field(
        Path("/tmp/runyard-launcher"), description="where run workspaces are made (and removed)"
    )
    executor: str = Field("process", description="how runs are isolated: process")
    heartbeat_interval: Duration = Field(5.0, description="how often the launcher tells the server it is alive")
    long_poll: Duration = Field(25.0, description="how long one poll for work is held open")
    mask_envs: CsvList = Field(
        default_factory=list, description="launcher variables whose values never appear in logs"
    )
    run_logs_on_standard_output_enabled: bool = Field(
        False, description="also write each run log line to stdout as JSON"
    )
    debug: bool = Field(False, description="print the exact commands run into the run log")
    disconnect_after_job: bool = Field(False, description="exit after one run")

    def metadata(self, env: Mapping[str, str]) -> dict[str, str]:
        """Worker tags from ``RUNYARD_METADATA_<key>`` variables."""
        prefix = PREFIX + "METADATA_"
        return {k[len(prefix) :]: v for k, v in env.items() if k.startswith(prefix) and len(k) > len(prefix)}

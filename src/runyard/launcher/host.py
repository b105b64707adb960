"""Setting up a worker host (what the AWS template's user data runs):
read the pool's credentials, make the launcher's user, write its settings
and its systemd unit, and start it. Every path is under ``root`` so tests
set a host up in a directory."""

from __future__ import annotations

import os
import pwd
import shutil
import subprocess
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Literal

from pydantic import Field

from runyard.config import Settings

UNIT = "runyard-launcher.service"


class HostSettings(Settings):
    """What the user data passes, through RUNYARD_* variables (read as every
    process's settings are: ``RUNYARD_AS_ROOT=yes`` is as good as ``true``)."""

    pool: str = Field("", description="the pool's name")
    store: Literal["ssm", "secretsmanager"] = Field("ssm", description="where the pool's token and key are kept")
    token_name: str = Field(min_length=1, description="the pool token's parameter or secret")
    key_name: str = Field(min_length=1, description="the pool private key's parameter or secret")
    instance_id: str = Field(min_length=1, description="this instance's id")
    server_endpoints: str = Field("", description="server endpoints for the launcher (empty: the token's)")
    as_root: bool = Field(False, description="run the launcher as root instead of a user of its own")
    power_off: bool = Field(True, description="power the instance off when the launcher exits")
    custom_user_data: str = Field("", description="a Secrets Manager secret holding a script run first")
    ca_parameter: str = Field("", description="an SSM parameter holding extra root CAs")
    proxies: tuple[tuple[str, str], ...] = Field((), description="HTTP_PROXY, HTTPS_PROXY, NO_PROXY as given")
    region: str = Field("", description="AWS_REGION")

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> HostSettings:
        proxies = tuple((k, v) for k, v in env.items() if k.upper() in ("HTTP_PROXY", "HTTPS_PROXY", "NO_PROXY") and v)
        settings, _ = cls.resolve({"proxies": proxies, "region": env.get("AWS_REGION", "")},
                                  env={k: v for k, v in env.items() if k not in ("RUNYARD_PROXIES", "RUNYARD_REGION")})
        return settings


Fetch = Callable[[str, str], str]  # (store, name) -> value


def fetch_secret(region: str) -> Fetch:
    def fetch(store: str, name: str) -> str:
        from runyard.aws import read_secret

        return read_secret(store, name, region or None)

    return fetch


def launcher_env(host: HostSettings, fetch: Fetch, root: Path) -> dict[str, str]:
    env = {
        "RUNYARD_TOKEN": fetch(host.store, host.token_name).strip(),
        "RUNYARD_POOL_PRIVATE_KEY": fetch(host.store, host.key_name).strip(),
        "RUNYARD_METADATA_instance_id": host.instance_id,
        "RUNYARD_SPOT_INTERRUPTION_WATCH": "true",
        "RUNYARD_WORK_DIR": "/var/lib/runyard/work",
        "RUNYARD_SHUTDOWN_HOOK_PATH": "/usr/local/bin/runyard-shutdown-hook",
        "RUNYARD_DISCONNECT_AFTER_IDLE_TIMEOUT": "10m",
        **dict(host.proxies),
    }
    if host.server_endpoints:
        env["RUNYARD_ENDPOINTS"] = host.server_endpoints
    if host.ca_parameter:
        ca = root / "etc/runyard/ca-certificates.pem"
        ca.parent.mkdir(parents=True, exist_ok=True)
        ca.write_text(fetch("ssm", host.ca_parameter))
        env["RUNYARD_CA_CERTIFICATES"] = "/etc/runyard/ca-certificates.pem"
    return env


def unit_text(user: str, power_off: bool, launcher: str = "/opt/runyard/bin/runyard") -> str:
    after_exit = "ExecStopPost=/usr/bin/systemctl poweroff --no-block\n" if power_off else ""
    return (
        "[Unit]\nDescription=runyard launcher\nWants=network-online.target docker.service\n"
        "After=network-online.target docker.service\n\n"
        f"[Service]\nUser={user}\nEnvironmentFile=/etc/runyard/launcher.env\n"
        f"ExecStart={launcher} launcher\n{after_exit}"
        "Restart=no\nKillSignal=SIGTERM\nTimeoutStopSec=150\n\n[Install]\nWantedBy=multi-user.target\n"
    )


def setup(host: HostSettings, fetch: Fetch, root: Path = Path("/"),
          run: Callable[[list[str]], object] | None = None) -> Path:
    """Set the host up; returns the env file. ``run`` runs system commands
    (useradd, systemctl); tests pass one that records them."""
    run = run or (lambda cmd: subprocess.run(cmd, check=True, timeout=600))
    if host.custom_user_data:
        script = root / "var/lib/runyard/custom-user-data.sh"
        script.parent.mkdir(parents=True, exist_ok=True)
        script.write_text(fetch("secretsmanager", host.custom_user_data))
        script.chmod(0o700)
        run(["/bin/bash", str(script)])
    user = "root" if host.as_root else "runyard"
    if not host.as_root and not _user_exists(user, root):
        run(["useradd", "--system", "--create-home", "--home-dir", "/var/lib/runyard", "--shell", "/usr/sbin/nologin",
             user])
        if _group_exists("docker", root):  # Docker's socket: the launcher's runs go into containers
            run(["usermod", "-aG", "docker", user])
    env = launcher_env(host, fetch, root)
    env_file = root / "etc/runyard/launcher.env"
    env_file.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(env_file, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as fh:
        fh.writelines(f"{k}={_quote(v)}\n" for k, v in sorted(env.items()))
    if not host.as_root and root == Path("/"):
        shutil.chown(env_file, user, user)
    hook = root / "usr/local/bin/runyard-shutdown-hook"
    hook.parent.mkdir(parents=True, exist_ok=True)
    hook.write_text("#!/bin/sh\n[ \"${RUNYARD_SHUTDOWN_REASON:-}\" = idle ] || exit 0\n"
                    "exec /opt/runyard/bin/runyard autoscaler terminate-self\n")
    hook.chmod(0o755)
    unit = root / "etc/systemd/system" / UNIT
    unit.parent.mkdir(parents=True, exist_ok=True)
    unit.write_text(unit_text(user, host.power_off))
    if root == Path("/") and not Path("/run/systemd/system").is_dir():
        return env_file  # no systemd here (a container): the caller starts the launcher itself
    run(["systemctl", "daemon-reload"])
    run(["systemctl", "enable", "--now", UNIT])
    return env_file


def exec_launcher(env_file: Path, user: str, launcher: str = "/opt/runyard/bin/runyard") -> None:
    """Without systemd: become the launcher, as ``user``, with its settings."""
    env = {**os.environ}
    for line in env_file.read_text().splitlines():
        key, _, value = line.partition("=")
        env[key] = value[1:-1].replace('\\"', '"').replace("\\n", "\n").replace("\\\\", "\\")
    command = [launcher, "launcher"] if user == "root" else ["runuser", "-u", user, "--", launcher, "launcher"]
    os.execvpe(command[0], command, env)


def _group_exists(name: str, root: Path) -> bool:
    group = root / "etc/group"
    return group.is_file() and any(line.startswith(f"{name}:") for line in group.read_text().splitlines())


def _user_exists(name: str, root: Path) -> bool:
    if root == Path("/"):
        try:
            pwd.getpwnam(name)
            return True
        except KeyError:
            return False
    passwd = root / "etc/passwd"
    return passwd.is_file() and any(line.startswith(f"{name}:") for line in passwd.read_text().splitlines())


def _quote(value: str) -> str:
    """A value for systemd's EnvironmentFile: double-quoted, escapes doubled."""
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n") + '"'

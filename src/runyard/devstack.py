"""A runyard on this machine, as real processes: a server, launchers, pools
and stacks. One harness for `runyard demo`, the test suite and the
benchmarks, so each starts things the same way."""

from __future__ import annotations

import base64
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any, Self, TypeVar

from runyard.archive import pack_directory
from runyard.client import Client
from runyard.core.errors import RunyardError, Unavailable
from runyard.core.models import SourceKind, Tool, WorkerStatus
from runyard.crypto import generate_key, key_to_pem, make_csr, new_secret
from runyard.wire import EnvVarIO, SourceIO, StackCreate, WorkerOut

T = TypeVar("T")
RUNYARD = [sys.executable, "-m", "runyard"]
PG_BIN = Path(os.environ.get("RUNYARD_TEST_PG_BIN", "/usr/lib/postgresql/15/bin"))


class DevStackError(RunyardError):
    """A process of the dev stack did not come up."""

    code = "devstack"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_for(check: Callable[[], T], timeout: float = 30, what: str = "condition", interval: float = 0.05) -> T:
    """Poll ``check`` until it returns something truthy (for conditions that
    have no event to wait on, such as a process appearing)."""
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            raise DevStackError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(interval)


def cannot_drop_packets() -> str:
    """Why :func:`packets_dropped` cannot work here, or "" when it can."""
    if shutil.which("iptables") is None or os.geteuid() != 0:
        return "dropping packets needs iptables (docker.io brings it) and root"
    return ""


@contextmanager
def packets_dropped(port: int) -> Iterator[None]:
    """Every TCP packet to and from ``port`` on this host dropped, for the
    block (iptables; root): a server there is as gone as a lost machine,
    refusing nothing and acknowledging nothing."""
    reason = cannot_drop_packets()
    if reason:
        raise DevStackError(reason)
    rules = [["INPUT", "-p", "tcp", "--dport", str(port), "-j", "DROP"],
             ["OUTPUT", "-p", "tcp", "--sport", str(port), "-j", "DROP"]]
    added: list[list[str]] = []
    try:
        for rule in rules:
            done = subprocess.run(["iptables", "-w", "-I", *rule], capture_output=True, text=True, timeout=30)
            if done.returncode != 0:
                raise DevStackError(f"iptables cannot add a rule here: {done.stderr.strip()}")
            added.append(rule)
        yield
    finally:
        for rule in added:
            subprocess.run(["iptables", "-w", "-D", *rule], check=True, capture_output=True, timeout=30)


def clean_env(**extra: str) -> dict[str, str]:
    """This process's environment without RUNYARD_* settings, plus ``extra``."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("RUNYARD_")}
    env.update(extra)
    return env


def stop_process(proc: subprocess.Popen[bytes] | None, sig: int = signal.SIGTERM, timeout: float = 20) -> None:
    """Signal a process and wait for it; kill it if it does not end in time."""
    if proc and proc.poll() is None:
        proc.send_signal(sig)
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


@dataclass
class ServerProcess:
    """`runyard server` in a child process, logging to DATA_DIR/../server-PORT.log."""

    data_dir: Path
    port: int
    admin_key: str = field(default_factory=lambda: new_secret("ryk_"))
    extra_env: dict[str, str] = field(default_factory=dict)
    database_url: str = ""
    host: str = "127.0.0.1"  # 0.0.0.0 when containers on a bridge network must reach it
    proc: subprocess.Popen[bytes] | None = None
    log: IO[bytes] | None = None

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def log_path(self) -> Path:
        return self.data_dir.parent / f"server-{self.port}.log"

    def start(self, timeout: float = 60) -> Self:
        env = clean_env(**{"RUNYARD_ADMIN_API_KEY": self.admin_key, **self.extra_env})
        cmd = [*RUNYARD, "server", "--data-dir", str(self.data_dir), "--port", str(self.port), "--host", self.host]
        if self.database_url:
            cmd += ["--database-url", self.database_url]
        self.data_dir.parent.mkdir(parents=True, exist_ok=True)
        self.log = open(self.log_path, "ab")  # noqa: SIM115 - closed in stop()
        self.proc = subprocess.Popen(cmd, env=env, stdout=self.log, stderr=subprocess.STDOUT)
        with self.client() as client:

            def up() -> bool:
                assert self.proc is not None
                if self.proc.poll() is not None:
                    raise DevStackError(f"the server exited with {self.proc.returncode}: {self.read_log()[-2000:]}")
                try:
                    client.request("GET", "/healthz", timeout=1)
                    return True
                except Unavailable:
                    return False

            wait_for(up, timeout, "the server to answer")
        return self

    def read_log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def client(self) -> Client:
        return Client([self.endpoint], self.admin_key)

    def role(self) -> str:
        """What /healthz says this server is (primary, active, standby), or "down"."""
        with self.client() as client:
            try:
                return str(client.request("GET", "/healthz", timeout=2).json()["role"])
            except Unavailable:
                return "down"

    def stop(self, sig: int = signal.SIGTERM) -> None:
        stop_process(self.proc, sig)
        if self.log is not None:
            self.log.close()


@dataclass
class PoolCreds:
    name: str
    pool_id: str
    token: str
    key_b64: str


def make_pool(client: Client, name: str, bits: int = 2048, drift_detection_limit: int | None = None,
              description: str = "", labels: Sequence[str] = ()) -> PoolCreds:
    """A pool with a fresh key; returns what its launchers need."""
    key = generate_key(bits)
    created = client.create_pool(name, make_csr(key).decode(), description, labels,
                                 drift_detection_limit=drift_detection_limit)
    return PoolCreds(name, created.pool.id, created.token, base64.b64encode(key_to_pem(key)).decode())


def make_shell_stack(client: Client, name: str, pool: str, source: Path, commands: dict[str, str],
                     env: Sequence[EnvVarIO] = (), **kw: Any) -> None:
    """A shell stack from a local directory (uploaded as its snapshot)."""
    upload = client.upload_source(pack_directory(source))
    client.create_stack(StackCreate(
        name=name, pool=pool, source=SourceIO(kind=SourceKind.UPLOAD, upload_id=upload, origin=str(source)),
        tool=Tool.SHELL, commands=commands, env=list(env), **kw))


@dataclass
class LauncherProcess:
    """`runyard launcher` in a child process, for one pool."""

    creds: PoolCreds
    work_dir: Path
    extra_env: dict[str, str] = field(default_factory=dict)
    args: Sequence[str] = ()
    proc: subprocess.Popen[bytes] | None = None
    log: IO[bytes] | None = None
    quiet: bool = False  # discard its output instead of writing a log file

    @property
    def log_path(self) -> Path:
        return self.work_dir.parent / f"launcher-{id(self)}.log"

    def start(self) -> Self:
        env = clean_env(**{
            "RUNYARD_TOKEN": self.creds.token,
            "RUNYARD_POOL_PRIVATE_KEY": self.creds.key_b64,
            "RUNYARD_WORK_DIR": str(self.work_dir),
            "RUNYARD_HEARTBEAT_INTERVAL": "0.5s",
            **self.extra_env,
        })
        if self.quiet:
            out: IO[bytes] | int = subprocess.DEVNULL
        else:
            self.work_dir.parent.mkdir(parents=True, exist_ok=True)
            self.log = open(self.log_path, "ab")  # noqa: SIM115 - closed in stop()
            out = self.log
        self.proc = subprocess.Popen([*RUNYARD, "launcher", *self.args], env=env, stdout=out,
                                     stderr=subprocess.STDOUT)
        return self

    def read_log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def wait(self, timeout: float = 30) -> int:
        assert self.proc is not None
        return self.proc.wait(timeout)

    def stop(self, sig: int = signal.SIGTERM) -> None:
        stop_process(self.proc, sig)
        if self.log is not None:
            self.log.close()


def idle_workers(client: Client, pool: str) -> list[WorkerOut]:
    return [w for w in client.workers(pool) if w.status == WorkerStatus.IDLE]


def wait_for_launchers(client: Client, pool: str, count: int, known: set[str],
                       procs: Sequence[LauncherProcess] = (), timeout: float = 60) -> None:
    """Until ``count`` new idle workers joined ``pool`` (failing fast if a launcher died)."""

    def joined() -> bool:
        for launcher in procs:
            if launcher.proc is not None and launcher.proc.poll() is not None:
                raise DevStackError(f"a launcher exited with code {launcher.proc.returncode} at start-up")
        return len({w.id for w in idle_workers(client, pool)} - known) >= count

    wait_for(joined, timeout, f"{count} launcher(s) to register")


class PostgresCluster:
    """A throw-away PostgreSQL cluster under /tmp (run as the postgres user
    when this is root, as PostgreSQL refuses root)."""

    def __init__(self) -> None:
        self.dir = Path(f"/tmp/runyard-test-pg-{uuid.uuid4().hex[:8]}")
        self.port = free_port()
        self._template = ""

    def _as_postgres(self, *cmd: str) -> None:
        prefix = ["runuser", "-u", "postgres", "--"] if os.geteuid() == 0 else []
        subprocess.run([*prefix, *cmd], check=True, capture_output=True, timeout=120)

    def start(self) -> None:
        self.dir.mkdir()
        if os.geteuid() == 0:
            shutil.chown(self.dir, "postgres", "postgres")
        data = str(self.dir / "data")
        self._as_postgres(str(PG_BIN / "initdb"), "-D", data, "-U", "postgres", "--auth=trust", "-E", "UTF8")
        self._as_postgres(
            str(PG_BIN / "pg_ctl"), "-D", data, "-l", str(self.dir / "log"), "-w", "-t", "60",
            "-o", f"-p {self.port} -k {self.dir} -c listen_addresses=127.0.0.1 -c fsync=off", "start",
        )

    def stop(self) -> None:
        try:
            self._as_postgres(str(PG_BIN / "pg_ctl"), "-D", str(self.dir / "data"), "-m", "immediate", "stop")
        finally:
            shutil.rmtree(self.dir, ignore_errors=True)

    def url(self, db: str = "postgres") -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/{db}"

    def new_database(self, migrated: bool = True) -> str:
        """A fresh database: a copy of the migrated template (fast), or empty."""
        import psycopg

        if migrated and not self._template:
            self._template = self.new_database(migrated=False).rsplit("/", 1)[1]
            migrate(self.url(self._template))
        name = "t_" + uuid.uuid4().hex[:12]
        template = f" TEMPLATE {self._template}" if migrated else ""
        with psycopg.connect(self.url(), autocommit=True) as conn:
            conn.execute(f"CREATE DATABASE {name}{template}")
        return self.url(name)


def migrate(url: str) -> None:
    from runyard.server.db.dialects import make_engine
    from runyard.server.db.migrate import upgrade

    engine = make_engine(url)
    try:
        upgrade(engine)
    finally:
        engine.dispose()  # a template database must have no connections

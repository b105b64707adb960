"""Runs in a fresh Docker container each; the only module importing docker.

The container's first process only reads its standard input, which the
launcher holds open through an attached socket (``stdin_once``). If the
launcher dies, even by SIGKILL, the socket closes, that process sees EOF and
exits, and the kernel ends every process of the container with it. A
restarted launcher also removes containers labelled with its work dir.
"""

from __future__ import annotations

import codecs
import contextlib
import os
import queue
import shlex
import threading
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import docker
import docker.auth
import docker.errors
from docker.types import Mount

from runyard.launcher.executors import ExecutorError, Output, RunSpec, StepStopped, ca_env, parse_mount

WORKSPACE = "/workspace"
CA_BUNDLE = "/etc/ssl/runyard/ca-bundle.pem"  # where a run finds its root CAs
KEEPALIVE = ["sh", "-c", "while read -r _; do :; done"]
LABEL = "dev.runyard.work-dir"
HOST_ALIAS = "host.docker.internal"  # the host, seen from a container on a bridge network


def engine_available() -> bool:
    """Whether a Docker engine answers here."""
    try:
        client = docker.from_env(timeout=5)
        try:
            return bool(client.ping())
        finally:
            client.close()
    except docker.errors.DockerException:
        return False


def image_available(image: str) -> bool:
    """Whether an engine answers here and has ``image``."""
    try:
        client = docker.from_env(timeout=5)
        try:
            client.images.get(image)
            return True
        finally:
            client.close()
    except docker.errors.DockerException:
        return False


class DockerExecutor:
    name = "docker"

    def __init__(
        self,
        work_dir: Path,
        network: str = "bridge",
        runtime: str = "",
        pull: str = "never",
        config_dir: Path | None = None,
    ) -> None:
        try:
            self.client = docker.from_env(timeout=60)
            self.client.ping()
        except docker.errors.DockerException as exc:
            raise ExecutorError(f"cannot reach the Docker engine: {exc}") from exc
        self.scope = str(work_dir.resolve())
        self.network = network
        self.runtime = runtime
        self.pull = pull
        self.config_dir = config_dir

    def reach(self, url: str) -> str:
        parts = urlsplit(url)
        if self.network == "host" or parts.hostname not in ("127.0.0.1", "localhost", "::1"):
            return url
        netloc = HOST_ALIAS + (f":{parts.port}" if parts.port else "")
        return urlunsplit(parts._replace(netloc=netloc))

    def remove_leftovers(self) -> int:
        leftovers = self.client.containers.list(all=True, filters={"label": f"{LABEL}={self.scope}"})
        for container in leftovers:
            with contextlib.suppress(docker.errors.NotFound):
                container.remove(force=True)
        return len(leftovers)

    def _ensure_image(self, image: str) -> None:
        try:
            self.client.images.get(image)
            return
        except docker.errors.ImageNotFound:
            pass
        except docker.errors.APIError as exc:
            raise ExecutorError(f"cannot inspect runner image {image}: {exc.explanation}") from exc
        if self.pull != "missing":
            raise ExecutorError(
                f"runner image {image} is not on this host and pulling is off (RUNYARD_DOCKER_PULL=never): "
                "build it with `runyard runner-image build`, load or pull it, or set the stack's runner image"
            )
        repo, _, tag = image.rpartition(":") if ":" in image.split("/")[-1] else (image, "", "latest")
        auth = None
        if self.config_dir is not None:
            config = docker.auth.load_config(str(self.config_dir / "config.json"))
            auth = docker.auth.resolve_authconfig(config, docker.auth.resolve_repository_name(repo)[0])
        try:
            self.client.api.pull(repo, tag=tag, auth_config=auth)
        except docker.errors.APIError as exc:
            raise ExecutorError(f"runner image {image} is not on this host and pulling it failed: {exc}") from exc

    def open(self, spec: RunSpec) -> DockerSession:
        self._ensure_image(spec.image)
        mounts = [Mount(WORKSPACE, str(spec.workspace), type="bind")]
        environment = dict(spec.env)
        if spec.ca_bundle is not None:
            mounts.append(Mount(CA_BUNDLE, str(spec.ca_bundle), type="bind", read_only=True))
            environment.update(ca_env(CA_BUNDLE))
        if spec.user and os.geteuid() == 0:
            _hand_over(spec.workspace, spec.user)
        for entry in spec.mounts:
            host, target, read_only = parse_mount(entry)
            mounts.append(Mount(target, host, type="bind", read_only=read_only))
        api = self.client.api
        try:
            host_config = api.create_host_config(
                mounts=mounts, network_mode=self.network, runtime=self.runtime or None,
                extra_hosts={HOST_ALIAS: "host-gateway"},
                # PID 1 ends when the launcher's stdin closes, even when the
                # launcher is killed: the engine then removes the container.
                auto_remove=True,
            )
            created = api.create_container(
                spec.image,
                command=KEEPALIVE,
                name=f"runyard-{spec.run_id.lower()}-{os.urandom(3).hex()}",
                labels={LABEL: self.scope, "dev.runyard.run": spec.run_id, "dev.runyard.stack": spec.stack_id},
                environment=environment,
                user=spec.user or None,
                working_dir=WORKSPACE,
                host_config=host_config,
                stdin_open=True,  # with detach=False the SDK sets StdinOnce as well
                detach=False,
            )
            container = self.client.containers.get(created["Id"])
        except docker.errors.APIError as exc:
            raise ExecutorError(f"cannot create the run container: {exc.explanation or exc}") from exc
        try:
            sock = self.client.api.attach_socket(created["Id"], params={"stdin": 1, "stream": 1})
            container.start()
        except docker.errors.APIError as exc:
            with contextlib.suppress(docker.errors.APIError):
                container.remove(force=True)
            raise ExecutorError(f"cannot start the run container: {exc.explanation or exc}") from exc
        return DockerSession(self.client, container, sock, spec)


def _hand_over(workspace: Path, user: str) -> None:
    """Let the run's user write its workspace (the launcher removes it after)."""
    uid_text, _, gid_text = user.partition(":")
    if not uid_text.isdigit() or (gid_text and not gid_text.isdigit()):
        raise ExecutorError(f"RUNYARD_WORKER_USER {user!r} is not uid or uid:gid")
    uid, gid = int(uid_text), int(gid_text or uid_text)
    for path in [workspace, *workspace.rglob("*")]:
        os.chown(path, uid, gid, follow_symlinks=False)


class DockerSession:
    def __init__(self, client: docker.DockerClient, container: Any, sock: Any, spec: RunSpec) -> None:
        self.client = client
        self.container = container
        self.sock = sock
        self.spec = spec

    def describe(self, command: str, workdir: str) -> str:
        where = f"{WORKSPACE}/{workdir}".rstrip("/")
        return f"docker exec -w {where} {self.container.name} sh -c {shlex.quote(command)}  # image {self.spec.image}"

    def run(self, command: str, workdir: str, output: Output, stop: threading.Event) -> int:
        api = self.client.api
        try:
            exec_id = api.exec_create(
                self.container.id, ["sh", "-c", command], workdir=f"{WORKSPACE}/{workdir}".rstrip("/"),
                user=self.spec.user or "",
            )["Id"]
        except docker.errors.APIError as exc:
            raise ExecutorError(f"cannot start the command in the run container: {exc.explanation or exc}") from exc
        chunks: queue.Queue[bytes | None] = queue.Queue()

        def pump() -> None:
            try:
                for chunk in api.exec_start(exec_id, stream=True):
                    chunks.put(chunk)
            except docker.errors.DockerException:
                pass  # the container was killed under us; the exit code tells
            finally:
                chunks.put(None)

        threading.Thread(target=pump, name=f"exec-{self.spec.run_id}", daemon=True).start()
        decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
        while True:
            if stop.is_set():
                with contextlib.suppress(docker.errors.APIError):
                    self.container.kill()
                raise StepStopped()
            try:
                chunk = chunks.get(timeout=0.1)
            except queue.Empty:
                continue
            if chunk is None:
                break
            output(decoder.decode(chunk))
        tail = decoder.decode(b"", final=True)
        if tail:
            output(tail)
        try:
            code = api.exec_inspect(exec_id).get("ExitCode")
        except docker.errors.NotFound:
            code = None  # the container ended (and was removed) with the command
        return 137 if code is None else int(code)

    def close(self) -> None:
        # Files the run wrote as root must not stop this launcher (perhaps not
        # root) from removing the workspace: hand them back first.
        if os.getuid() != 0:
            with contextlib.suppress(docker.errors.APIError):
                self.container.exec_run(["chown", "-R", f"{os.getuid()}:{os.getgid()}", WORKSPACE])
        with contextlib.suppress(OSError):
            self.sock.close()
        with contextlib.suppress(docker.errors.NotFound, docker.errors.APIError):
            self.container.remove(force=True)


RUNNER_DOCKERFILE = """\
FROM scratch
COPY busybox /bin/busybox
RUN ["/bin/busybox", "--install", "-s", "/bin"]
RUN mkdir -p /tmp /usr/local/bin /workspace /root && chmod 1777 /tmp
{terraform}
ENV PATH=/usr/local/bin:/usr/bin:/bin HOME=/root
WORKDIR /workspace
"""


def build_runner_image(tag: str, busybox: Path, terraform: Path | None = None) -> str:
    """Build a runner image with no registry: a static busybox (and optionally
    a static terraform binary) from this host, FROM scratch. Returns its id."""
    import shutil
    import tempfile

    if not busybox.is_file():
        raise ExecutorError(f"no static busybox at {busybox}: install the busybox-static package or pass --busybox")
    if terraform is not None and not terraform.is_file():
        raise ExecutorError(f"no terraform binary at {terraform}")
    with tempfile.TemporaryDirectory(prefix="runyard-image-") as ctx:
        shutil.copy2(busybox, Path(ctx) / "busybox")
        tf_lines = ""
        if terraform is not None:
            shutil.copy2(terraform, Path(ctx) / "terraform")
            tf_lines = "COPY terraform /usr/local/bin/terraform"
        (Path(ctx) / "Dockerfile").write_text(RUNNER_DOCKERFILE.format(terraform=tf_lines))
        try:
            client = docker.from_env(timeout=300)
            image, _ = client.images.build(path=ctx, tag=tag, pull=False, rm=True, forcerm=True)
        except docker.errors.BuildError as exc:
            raise ExecutorError(f"building {tag} failed: {exc.msg}") from exc
        except docker.errors.DockerException as exc:
            raise ExecutorError(f"cannot build {tag}: {exc}") from exc
    return str(image.id)

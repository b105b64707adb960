"""The real git, given what a request may send: it runs no command of the
request's and reads no repository of this host's disk."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from runyard.core.errors import InvalidInput
from runyard.core.models import Source, SourceKind, Stack, Tool
from runyard.launcher import workspace
from runyard.server.services.stacks import probe_git
from runyard.wire import SourceIO, StackCreate

from .conftest import Api

MARKER = Path("/tmp/runyard-git-injection-marker")
PAYLOADS = st.sampled_from([
    f"--upload-pack=touch {MARKER};false", f"-u touch {MARKER}", f"--upload-pack=touch {MARKER}",
    f"--config=core.sshCommand=touch {MARKER}", f"-c core.sshCommand=touch {MARKER}",
    f"--template=/tmp --upload-pack=touch {MARKER}",
])
BRANCHES = st.one_of(st.just(""), st.just("main"), PAYLOADS)


def _repo(path: Path) -> Path:
    path.mkdir()
    for cmd in (["git", "init", "-q", "-b", "main"],
                ["git", "-c", "user.email=a@b", "-c", "user.name=a", "commit", "-q", "--allow-empty", "-m", "x"]):
        subprocess.run(cmd, cwd=path, check=True)
    return path


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(PAYLOADS, BRANCHES)
def test_the_servers_repository_check_runs_no_option_a_request_sends(url: str, branch: str) -> None:
    """Even with the URL checks passed over, ``--`` keeps git from reading a value as an option."""
    MARKER.unlink(missing_ok=True)
    with pytest.raises(InvalidInput):
        probe_git(url, branch, allow_local=True)
    assert not MARKER.exists()


@settings(max_examples=20, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(PAYLOADS, BRANCHES)
def test_the_launchers_clone_runs_no_option_a_request_sends(tmp_path: Path, url: str, branch: str) -> None:
    MARKER.unlink(missing_ok=True)
    stack = _stack(url, branch)
    dest = workspace.create(tmp_path, "r1")
    with pytest.raises(workspace.WorkspaceError):
        workspace.fetch_source(stack, dest, lambda _: b"", allow_local_git=True)
    assert not MARKER.exists()


def _stack(url: str, branch: str) -> Stack:
    import datetime as dt

    return Stack(id="s", name="s", pool_id="p", source=Source(SourceKind.GIT, url=url, branch=branch),
                 project_root="", tool=Tool.SHELL, runner_image="", commands={}, env=(), labels=(),
                 autodeploy=False, created_at=dt.datetime.now(dt.UTC))


def test_a_launcher_clones_a_repository_on_its_disk_only_when_allowed(tmp_path: Path) -> None:
    repo = _repo(tmp_path / "repo")
    (repo / "main.tf").write_text("")
    subprocess.run(["git", "-c", "user.email=a@b", "-c", "user.name=a", "commit", "-qam", "y"], cwd=repo,
                   check=False)
    stack = _stack(f"file://{repo}", "main")
    with pytest.raises(workspace.WorkspaceError, match="local repository"):
        workspace.fetch_source(stack, workspace.create(tmp_path, "r1"), lambda _: b"")
    dest = workspace.create(tmp_path, "r2")
    workspace.fetch_source(stack, dest, lambda _: b"", allow_local_git=True)
    assert not (dest / ".git").exists()


def test_the_api_refuses_local_and_option_like_git_sources_and_tells_no_path_from_another(api: Api,
                                                                                           tmp_path: Path) -> None:
    """A refused local URL says the same whether or not a repository is there."""
    api.pool()
    repo = _repo(tmp_path / "repo")
    answers = []
    for url in (f"file://{repo}", f"file://{tmp_path}/missing", str(repo), f"--upload-pack=touch {MARKER}"):
        with pytest.raises(InvalidInput) as refused:
            api.client.create_stack(StackCreate(name="g", pool="p1", commands={"plan": "true"},
                                                source=SourceIO(kind="git", url=url, branch="main")))
        answers.append(refused.value.message.replace(url, "URL"))
    assert answers[0] == answers[1] == answers[2]
    assert "RUNYARD_ALLOW_LOCAL_GIT_SOURCES" in answers[0]
    assert api.client.stacks() == []

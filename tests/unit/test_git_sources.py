"""Git sources: no value of a request reaches git as an option, a transport
that runs a command, or a path on the host's disk (unless allowed)."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from runyard.core import gitsource
from runyard.core.errors import InvalidInput
from runyard.core.models import Source, SourceKind, Tool

from .conftest import World

REST = st.text(st.characters(codec="utf-8", exclude_characters="\x00"), max_size=40)
OPTION_LIKE = st.builds(lambda dashes, rest: dashes + rest, st.sampled_from(["-", "--"]), REST)
PATH_LIKE = st.one_of(
    st.builds(lambda p: "/" + p, REST),
    st.builds(lambda p: "./" + p, REST),
    st.builds(lambda p: "../" + p, REST),
    st.builds(lambda p: "file://" + p, REST),
    st.builds(lambda p: "FILE://" + p, REST),
    st.builds(lambda p: "ext::" + p, REST),
    st.builds(lambda p: "ssh://-" + p, REST),
    st.builds(lambda p: "ssh://-oProxyCommand=" + p + "@host/r", REST),
    st.builds(lambda p: "-oProxyCommand=" + p + "@host:r", REST),
)
REMOTE = st.sampled_from(["https://git.example.com/team/infra.git", "ssh://git@git.example.com/team/infra.git",
                          "git@git.example.com:team/infra.git", "ssh://git.example.com:2222/infra"])


@given(OPTION_LIKE)
def test_option_like_urls_and_branches_are_refused(value: str) -> None:
    with pytest.raises(InvalidInput):
        gitsource.check_url(value, allow_local=True)
    with pytest.raises(InvalidInput):
        gitsource.check_branch(value)


@given(PATH_LIKE)
def test_local_paths_and_command_transports_are_refused_by_default(value: str) -> None:
    with pytest.raises(InvalidInput):
        gitsource.check_url(value, allow_local=False)


@given(st.one_of(OPTION_LIKE, PATH_LIKE, REMOTE, REST), st.one_of(OPTION_LIKE, REST))
def test_every_request_value_reaches_git_after_the_end_of_its_options(url: str, branch: str) -> None:
    """Whatever the checks let through, git reads the URL as a repository and
    the branch as a branch: never as an option of its own."""
    for argv in (gitsource.ls_remote_argv(url, branch), gitsource.clone_argv(url, branch, "/work/run/src")):
        options = argv[:argv.index("--")]
        assert url not in options
        assert all(a in ("git", "ls-remote", "clone", "--exit-code", "--quiet", "--depth", "1")
                   or a == f"--branch={branch}" for a in options), options


@given(REMOTE, st.sampled_from(["main", "release/1.2", "feature-x", ""]))
def test_remote_urls_and_ordinary_branches_are_taken(url: str, branch: str) -> None:
    gitsource.check(url, branch, allow_local=False)


def test_local_repositories_are_taken_when_the_operator_allows_them() -> None:
    gitsource.check("file:///srv/repos/infra", "main", allow_local=True)
    gitsource.check("/srv/repos/infra", "", allow_local=True)
    with pytest.raises(InvalidInput, match="RUNYARD_ALLOW_LOCAL_GIT_SOURCES"):
        gitsource.check("/srv/repos/infra", "", allow_local=False)


@pytest.mark.parametrize("url", ["--upload-pack=touch {marker};false", "-u touch {marker}",
                                 "ext::sh -c touch% {marker}", "file://{tmp}"])
def test_a_stack_with_a_dangerous_git_url_runs_nothing_and_is_not_stored(world: World, tmp_path, url: str) -> None:
    marker = tmp_path / "ran"
    world.pool()
    source = Source(SourceKind.GIT, url=url.format(marker=marker, tmp=tmp_path), branch="main")
    with pytest.raises(InvalidInput):
        world.svc.stacks.create("g", "p1", source, Tool.SHELL, commands={"plan": "true"})
    assert not marker.exists()
    assert world.svc.stacks.list() == []

"""What a git source may be, and the git command lines built from one.

A stack's git URL and branch come from a request, and both end up on a git
command line (the server's ``ls-remote``, the launcher's ``clone``). A value
git could read as an option (``--upload-pack=CMD``) or a transport that
runs a command (``ext::``) would run it on our host, and a local path would
let a run read a repository on the host's own disk. So:

- a URL is ``https://``, ``ssh://`` or ``user@host:path`` (scp form), and a
  local one (``file://``, a path) only where the operator allows it;
- no value may start with ``-``, hold whitespace or a control character;
- every value from a request goes after ``--`` (or glued to its option, as
  ``--branch=NAME``), and git is told which transports it may use.
"""

from __future__ import annotations

import re
import urllib.parse

from runyard.core.errors import InvalidInput

REMOTE_SCHEMES = ("https", "ssh")
LOCAL_HINT = "local repositories are refused unless the operator allows them (RUNYARD_ALLOW_LOCAL_GIT_SOURCES)"
# user@host:path; the host part has no "/" (else git reads a local path).
_SCP = re.compile(r"^(?P<user>[A-Za-z0-9._~+-]+)@(?P<host>[A-Za-z0-9.\[\]:_-]+?):(?P<path>[^/].*|/.+)$")
_HOST = re.compile(r"^[A-Za-z0-9](?:[A-Za-z0-9._-]*[A-Za-z0-9])?$|^\[[0-9A-Fa-f:.]+\]$")
# git check-ref-format, the parts a request can break.
_BAD_REF = re.compile(r"\.\.|@\{|[\x00-\x20\x7f~^:?*\[\\]|^/|/$|//|\.lock$|^\.|/\.|\.$|^@$")


def _plain(what: str, value: str) -> None:
    if value.startswith("-"):
        raise InvalidInput(f"{what} {value!r} starts with '-': git would read it as an option")
    if any(ch.isspace() or ord(ch) < 32 or ord(ch) == 127 for ch in value):
        raise InvalidInput(f"{what} {value!r} holds whitespace or a control character")


def kind_of(url: str) -> str:
    """``remote`` (https, ssh, scp form), ``local`` (file://, a path) or ``refused``."""
    if "://" in url:
        scheme = url.split("://", 1)[0].lower()
        if scheme in REMOTE_SCHEMES:
            try:
                parts = urllib.parse.urlsplit(url)
                host, user = parts.hostname or "", parts.username or ""
            except ValueError:  # a malformed authority ("[" without "]", a bad port)
                return "refused"
            fine = host and _HOST.match(host) and not user.startswith("-") and parts.path not in ("", "/")
            return "remote" if fine else "refused"
        return "local" if scheme == "file" else "refused"
    if "::" in url:
        return "refused"  # git's transport::address form (ext:: runs a command)
    scp = _SCP.match(url)
    if scp and _HOST.match(scp.group("host")):
        return "remote"
    return "local"


def check_url(url: str, allow_local: bool) -> None:
    """Refuse a git URL git could misread or that we do not serve."""
    if not url:
        raise InvalidInput("a git source needs a URL")
    _plain("the git URL", url)
    kind = kind_of(url)
    if kind == "refused":
        raise InvalidInput(
            f"git URL {url!r} is not one runyard takes: use https://HOST/PATH, ssh://[USER@]HOST/PATH "
            "or USER@HOST:PATH")
    if kind == "local" and not allow_local:
        raise InvalidInput(f"git URL {url!r} is a local repository: {LOCAL_HINT}")


def check_branch(branch: str) -> None:
    """Refuse a branch name git would not take as one (or would read as an option)."""
    if not branch:
        return
    _plain("the branch", branch)
    if _BAD_REF.search(branch):
        raise InvalidInput(f"{branch!r} is not a valid git branch name")


def check(url: str, branch: str, allow_local: bool) -> None:
    check_url(url, allow_local)
    check_branch(branch)


def allowed_protocols(allow_local: bool) -> str:
    """``GIT_ALLOW_PROTOCOL``: the transports git may use, for redirects and submodules too."""
    return "https:ssh" + (":file" if allow_local else "")


def ls_remote_argv(url: str, branch: str) -> list[str]:
    """The server's check that a repository (and branch) can be read."""
    return ["git", "ls-remote", "--exit-code", "--", url, *([f"refs/heads/{branch}"] if branch else [])]


def clone_argv(url: str, branch: str, dest: str) -> list[str]:
    """The launcher's shallow clone into ``dest`` (a path of ours)."""
    return ["git", "clone", "--quiet", "--depth", "1", *([f"--branch={branch}"] if branch else []),
            "--", url, dest]

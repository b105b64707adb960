"""The architecture on paper holds in the code: layering, thin routes, short
modules. Cheap checks over the source, so a change that breaks one fails here."""

from __future__ import annotations

import ast
import functools
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[2] / "src" / "runyard"
MODULES = sorted(p for p in PACKAGE.rglob("*.py") if "migrations" not in p.parts)


@functools.cache
def imports_of(path: Path) -> frozenset[str]:
    tree = ast.parse(path.read_text())
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module:
            found.add(node.module)
    return frozenset(found)


def package_of(path: Path) -> str:
    return ".".join(path.relative_to(PACKAGE.parent).with_suffix("").parts)


def test_every_module_stays_under_500_lines() -> None:
    long = {str(p.relative_to(PACKAGE)): n for p in MODULES if (n := len(p.read_text().splitlines())) > 500}
    assert long == {}


def test_core_imports_nothing_of_runyard_but_core() -> None:
    for path in (PACKAGE / "core").glob("*.py"):
        outside = {m for m in imports_of(path) if m.startswith("runyard") and not m.startswith("runyard.core")}
        assert not outside, f"{path.name} imports {outside}"


@pytest.mark.parametrize(("a", "b"), [("server", "launcher"), ("launcher", "server"), ("server", "autoscaler"),
                                      ("autoscaler", "server"), ("launcher", "autoscaler"), ("server", "cli"),
                                      ("launcher", "cli"), ("autoscaler", "cli")])
def test_process_packages_do_not_import_each_other(a: str, b: str) -> None:
    for path in (PACKAGE / a).rglob("*.py"):
        found = {m for m in imports_of(path) if m == f"runyard.{b}" or m.startswith(f"runyard.{b}.")}
        assert not found, f"{package_of(path)} imports {found}"


@pytest.mark.parametrize("folder", ["server/api", "server/web"])
def test_routes_hold_no_transaction_and_no_repository(folder: str) -> None:
    for path in (PACKAGE / folder).rglob("*.py"):
        text = path.read_text()
        assert ".tx()" not in text, f"{path.name} opens a transaction"
        assert "runyard.server.db" not in imports_of(path), f"{path.name} imports the database layer"


@pytest.mark.parametrize(("library", "adapter"), [
    ("boto3", "aws.py"), ("httpx", "transport.py"), ("docker", "launcher/executors/docker.py"),
    ("regopy", "launcher/policy.py"), ("regex", "masking.py"), ("orjson", "jsonfast.py"), ("prometheus_client", None),
])
def test_each_third_party_boundary_has_its_one_adapter(library: str, adapter: str | None) -> None:
    users = {str(p.relative_to(PACKAGE)) for p in MODULES
             if any(m == library or m.startswith(library + ".") for m in imports_of(p))}
    if adapter is not None:
        assert users == {adapter}
    else:
        assert all("metrics" in u for u in users), users


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
def tree_of(path: Path) -> ast.Module:
    return ast.parse(path.read_text())


@functools.cache
def imports_of(path: Path) -> frozenset[str]:
    tree = tree_of(path)
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
    ("regopy", "launcher/policy.py"), ("regex", "masking.py"), ("cronsim", "cron.py"),
    ("tenacity", "retry.py"), ("orjson", "jsonfast.py"), ("prometheus_client", None),
])
def test_each_third_party_boundary_has_its_one_adapter(library: str, adapter: str | None) -> None:
    users = {str(p.relative_to(PACKAGE)) for p in MODULES
             if any(m == library or m.startswith(library + ".") for m in imports_of(p))}
    if adapter is not None:
        assert users == {adapter}
    else:
        assert all("metrics" in u for u in users), users



def _calls_in(nodes: list[ast.stmt]) -> set[str]:
    names = set()
    for node in nodes:
        for sub in ast.walk(node):
            if isinstance(sub, ast.Call):
                func = sub.func
                names.add(func.attr if isinstance(func, ast.Attribute) else getattr(func, "id", ""))
    return names


def test_no_module_writes_its_own_retry_loop() -> None:
    """A loop whose failure handler sleeps and goes round again is a retry
    loop: those use runyard.retry (one policy, a stop honoured)."""
    found = []
    for path in MODULES:
        if path.name == "retry.py":
            continue
        for loop in ast.walk(tree_of(path)):
            if not isinstance(loop, ast.While):
                continue
            for node in ast.walk(loop):
                if isinstance(node, ast.Try):
                    for handler in node.handlers:
                        calls = _calls_in(handler.body)
                        if calls & {"sleep", "_sleep", "wait", "next"} and "delay" not in calls:  # retry.delay
                            found.append(f"{path.relative_to(PACKAGE)}:{handler.lineno}")
    assert found == []


def test_the_error_shape_is_built_in_one_place() -> None:
    """Answers below FastAPI (body limits, the standby gate, the HTTP
    protocol) encode their error with server/errors.py, not by hand."""
    built = [str(p.relative_to(PACKAGE)) for p in MODULES
             if p.name != "errors.py" and ('{"error":' in p.read_text() or "{'error':" in p.read_text())]
    assert built == []


def test_each_limit_is_defined_once() -> None:
    """Sizes live in core/limits.py: no module defines a MAX_* of its own."""
    own = [f"{p.relative_to(PACKAGE)}:{node.lineno}" for p in MODULES if p.name != "limits.py"
           for node in tree_of(p).body
           if isinstance(node, ast.Assign) and any(isinstance(t, ast.Name) and t.id.startswith("MAX_")
                                                   for t in node.targets)]
    assert own == []


def test_comments_say_why_and_leave_figures_to_the_benchmarks() -> None:
    """A measured figure in a comment goes stale; benchmarks/ prints them."""
    import re

    figure = re.compile(r"\bmeasured\b|\d[\d.]*\s*(?:ms|us|s|runs/s|MB/s)?\s*->\s*\d", re.IGNORECASE)
    found = [f"{p.relative_to(PACKAGE)}:{n}" for p in MODULES
             for n, line in enumerate(p.read_text().splitlines(), 1) if figure.search(line)]
    assert found == []


def test_the_worker_lane_declares_no_route_of_its_own() -> None:
    """The lane hands requests to the route functions of api/workers.py and
    reads parameters through their declarations (deps.Wait): it parses no
    body and builds no schema itself, so a check added to a route applies
    on both paths (tests/integration/test_worker_lane.py compares them)."""
    source = (PACKAGE / "server" / "api" / "lane.py").read_text()
    imported = imports_of(PACKAGE / "server" / "api" / "lane.py")
    assert "parse_body" not in source and "model_validate" not in source and "float(" not in source
    assert "runyard.wire" not in imported or "ReportIn" not in source

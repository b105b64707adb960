"""The run initialization policy is checked whole when the launcher starts."""

from __future__ import annotations

from pathlib import Path

import pytest

from runyard.core.errors import InvalidInput
from runyard.launcher.policy import InitializationPolicy

GOOD = """package runyard.initialization
import rego.v1

# a comment naming notafunction(x) is fine
is_frozen(stack) if { stack.labels[_] == "frozen" }

deny contains msg if {
  is_frozen(input.stack)
  msg := sprintf("stack %s is frozen (%s)", [input.stack.name, "not_called(here)"])
}
"""


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "init.rego"
    path.write_text(text)
    return path


def test_a_valid_policy_loads_and_denies_by_its_rules(tmp_path: Path) -> None:
    policy = InitializationPolicy(write(tmp_path, GOOD))
    denied = policy.evaluate({"stack": {"name": "cold", "labels": ["frozen"]}})
    assert denied == ["stack cold is frozen (not_called(here))"]
    assert policy.evaluate({"stack": {"name": "warm", "labels": []}}) == []


@pytest.mark.parametrize("body", [
    'deny contains msg if { input.run.kind == "TRACKED"; nosuchfn(input.run.id); msg := "x" }',
    'deny contains msg if { x := strings.nosuch(input.stack.name); msg := x }',
])
def test_a_policy_calling_an_undefined_function_stops_the_launcher_at_start(tmp_path: Path, body: str) -> None:
    path = write(tmp_path, f"package runyard\nimport rego.v1\n\n{body}\n")
    with pytest.raises(InvalidInput, match=rf"{path}:4: the policy calls .*neither a Rego built-in"):
        InitializationPolicy(path)


def test_a_policy_that_does_not_parse_names_file_and_line(tmp_path: Path) -> None:
    path = write(tmp_path, "package runyard\n\ndeny contains msg if {\n  input.x ==== 1\n}\n")
    with pytest.raises(InvalidInput, match=rf"^{path}:4: "):
        InitializationPolicy(path)

"""The run initialization policy: a Rego file the launcher checks before
every run. Any message in its ``deny`` set fails the run before anything
executes. Evaluated with regopy (a real Rego engine); the only module that
imports it."""

from __future__ import annotations

import contextlib
import json
import os
import re
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from runyard.core.errors import InvalidInput

_ERROR = re.compile(r"\(error \d+:[^|]*\|(\d+)\|\d+\s+\(errormsg \d+:([^)]*)\)")
_ERRORMSG = re.compile(r"\(errormsg \d+:([^)\n]*)\)")
_PACKAGE = re.compile(r"^\s*package\s+([\w.]+)", re.MULTILINE)
_STRING_OR_COMMENT = re.compile(r'"(?:[^"\\\n]|\\.)*"|`[^`]*`|#[^\n]*')
_CALL = re.compile(r"(?<![\w.])([A-Za-z_]\w*(?:\.[A-Za-z_]\w*)*)\s*\(")
_FUNCTION_HEAD = re.compile(r"^([A-Za-z_]\w*)\s*\([^)]*\)\s*(?::=|=|\{|if\b)", re.MULTILINE)
_KEYWORDS = frozenset({"not", "some", "every", "with", "if", "in", "contains", "else", "default", "as"})
# A document shaped like the one each run is checked with, so rules that only
# fire for a real run are evaluated (and fail here, not on every run) at start.
_SAMPLE_INPUT: dict[str, Any] = {
    "run": {"id": "01SAMPLE", "kind": "TRACKED", "state": "QUEUED", "command": "", "stack_id": "01STACK"},
    "stack": {"id": "01STACK", "name": "sample", "tool": "terraform", "labels": ["sample"],
              "project_root": "", "runner_image": "", "env": [{"name": "NAME", "secret": False}]},
    "worker": {"id": "01WORKER", "pool_id": "01POOL", "metadata": {"zone": "sample"}, "executor": "process"},
}


@contextlib.contextmanager
def _engine_output_dropped() -> Iterator[None]:
    """File descriptors 1 and 2 go to /dev/null for the block (the engine
    writes there from C++, past Python's sys.stdout). Used at start only,
    before the launcher has threads of its own that could log meanwhile."""
    sys.stdout.flush()
    sys.stderr.flush()
    saved = [os.dup(fd) for fd in (1, 2)]
    try:
        with open(os.devnull, "wb") as null:
            for fd in (1, 2):
                os.dup2(null.fileno(), fd)
        yield
    finally:
        for fd, kept in zip((1, 2), saved, strict=True):
            os.dup2(kept, fd)
            os.close(kept)


class InitializationPolicy:
    def __init__(self, path: Path) -> None:
        self.path = path
        try:
            self.source = path.read_text()
        except OSError as exc:
            raise InvalidInput(f"cannot read the run initialization policy {path}: {exc.strerror}") from exc
        match = _PACKAGE.search(self.source)
        if match is None:
            raise InvalidInput(f"{path}:1: the policy has no `package` declaration")
        self.query = f"data.{match.group(1)}.deny"
        # A policy that does not compile, or calls a function that does not
        # exist, stops the launcher now instead of failing every run later.
        # The engine prints what it found to the process's own output: that
        # goes nowhere, the one line made of it says where.
        self._check_functions()
        with _engine_output_dropped():
            self.evaluate({})
            self.evaluate(_SAMPLE_INPUT)

    def _check_functions(self) -> None:
        code = _STRING_OR_COMMENT.sub(lambda m: " " * len(m.group(0)), self.source)
        defined = set(_FUNCTION_HEAD.findall(code))
        from regopy import Interpreter  # type: ignore[import-untyped]  # regopy ships no type hints

        checker = Interpreter()
        for match in _CALL.finditer(code):
            name = match.group(1)
            if name in _KEYWORDS or name in defined or name.startswith(("data.", "input.")):
                continue
            if not checker.is_builtin(name):
                raise InvalidInput(
                    f"{self.path}:{self._line_of(match.start())}: the policy calls {name}(), "
                    "which is neither a Rego built-in nor a function the policy defines"
                )

    def _line_of(self, offset: int) -> int:
        return self.source.count("\n", 0, offset) + 1

    def evaluate(self, data: dict[str, Any]) -> list[str]:
        """The deny messages for ``data`` (run, stack, worker); empty: allowed."""
        # Imported here, not at start: a launcher without a policy never loads
        # the Rego engine (nor needs its shared library's system dependencies).
        from regopy import Interpreter

        rego = Interpreter()
        try:
            rego.add_module(self.path.name, self.source)
            rego.set_input(data)
            result = rego.query(self.query)
        except json.JSONDecodeError as exc:  # regopy answers an evaluation error as non-JSON text
            raise InvalidInput(self._describe(exc.doc)) from exc
        except Exception as exc:
            raise InvalidInput(self._describe(str(exc))) from exc
        doc = json.loads(str(result)) if str(result).strip() else {}
        messages: list[str] = []
        for expression in doc.get("expressions", []) if isinstance(doc, dict) else []:
            value = expression if not isinstance(expression, list) else (expression[0] if expression else [])
            if isinstance(value, list):
                messages += [str(v) for v in value]
            elif isinstance(value, str):
                messages.append(value)
        return sorted(set(messages))

    def _describe(self, raw: str) -> str:
        found = _ERROR.findall(raw)
        if not found:
            message = _ERRORMSG.search(raw)
            detail = message.group(1).strip() if message else raw.strip().splitlines()[0] if raw.strip() else "?"
            return f"{self.path}: the run initialization policy failed: {detail}"
        offset, message = found[0]
        return f"{self.path}:{self._line_of(int(offset))}: {message.strip()}"

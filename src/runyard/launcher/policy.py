"""The run initialization policy: a Rego file the launcher checks before
every run. Any message in its ``deny`` set fails the run before anything
executes. Evaluated with regopy (a real Rego engine); the only module that
imports it."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

from regopy import Interpreter  # type: ignore[import-untyped]  # regopy ships no type hints

from runyard.core.errors import InvalidInput

_ERROR = re.compile(r"\(error \d+:[^|]*\|(\d+)\|\d+\s+\(errormsg \d+:([^)]*)\)")
_PACKAGE = re.compile(r"^\s*package\s+([\w.]+)", re.MULTILINE)


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
        self.evaluate({})  # a policy that does not compile stops the launcher now

    def _line_of(self, offset: int) -> int:
        return self.source.count("\n", 0, offset) + 1

    def evaluate(self, data: dict[str, Any]) -> list[str]:
        """The deny messages for ``data`` (run, stack, worker); empty: allowed."""
        rego = Interpreter()
        try:
            rego.add_module(self.path.name, self.source)
            rego.set_input(data)
            result = rego.query(self.query)
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
            return f"{self.path}: the run initialization policy does not compile: {raw.strip()}"
        offset, message = found[0]
        return f"{self.path}:{self._line_of(int(offset))}: {message.strip()}"

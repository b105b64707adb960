"""Which phases a run goes through, and what each executes, per tool."""

from __future__ import annotations

from dataclasses import dataclass

from runyard.core.states import RunKind, RunState
from runyard.wire import RunOut, StackOut


@dataclass(frozen=True)
class Phase:
    state: RunState  # reported when the phase begins
    name: str  # init, plan, apply, task
    command: str  # empty: nothing to execute in this phase


def shell_phases(run: RunOut, stack: StackOut) -> list[Phase]:
    """A shell stack runs its own commands: init, plan, then apply for writes."""
    if run.kind == RunKind.TASK:
        return [Phase(RunState.PERFORMING, "task", run.command)]
    phases = [
        Phase(RunState.INITIALIZING, "init", stack.commands.get("init", "")),
        Phase(RunState.PLANNING, "plan", stack.commands.get("plan", "")),
    ]
    if run.kind == RunKind.TRACKED:
        phases.append(Phase(RunState.APPLYING, "apply", stack.commands.get("apply", "")))
    return phases

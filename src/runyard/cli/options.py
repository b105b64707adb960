"""Command-line flags made from settings models: one flag per field, with its
description, so a setting documented once is a flag, a variable and a YAML
key alike."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

import click
from pydantic import BaseModel, SecretStr

F = TypeVar("F", bound=Callable[..., Any])


def settings_options(cls: type[BaseModel], skip: tuple[str, ...] = (), env: bool = True) -> Callable[[F], F]:
    """One flag per field of ``cls`` (default None: unset flags do not
    override lower layers). ``env``: name the field's RUNYARD_* variable."""

    def decorate(fn: F) -> F:
        for name, info in reversed(list(cls.model_fields.items())):
            if name in skip:
                continue
            flag = "--" + name.replace("_", "-")
            hint = f" [env RUNYARD_{name.upper()}]" if env else ""
            default = None if info.is_required() else info.get_default(call_default_factory=True)
            if default not in (None, "", []) and not isinstance(default, SecretStr):
                hint += f" [default: {default}]"
            if info.annotation is bool:
                fn = click.option(f"{flag}/--no-{flag[2:]}", name, default=None,
                                  help=f"{info.description}{hint}")(fn)
            else:
                fn = click.option(flag, name, default=None, help=f"{info.description}{hint}")(fn)
        return fn

    return decorate

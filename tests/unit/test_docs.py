"""The docs list every setting the code has."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import BaseModel

from runyard.config import LauncherSettings, ServerSettings

DOCS = Path(__file__).resolve().parents[2] / "docs"


@pytest.mark.parametrize(("settings", "page"), [(ServerSettings, "server.md"), (LauncherSettings, "launcher.md")])
def test_every_setting_is_documented(settings: type[BaseModel], page: str) -> None:
    text = (DOCS / page).read_text()
    missing = [name for name in settings.model_fields if f"RUNYARD_{name.upper()}" not in text]
    assert missing == [], f"{page} does not document {missing}"

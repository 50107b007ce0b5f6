"""Every setting and every command is documented in the README."""

from __future__ import annotations

import re

from retention.settings import Settings
from tests.airflow_env import ROOT

README = (ROOT / "README.md").read_text()


def test_every_setting_is_in_the_readme() -> None:
    documented = set(re.findall(r"`(RETENTION_[A-Z0-9_]+)`", README))
    expected = {f"RETENTION_{name.upper()}" for name in Settings.model_fields}
    assert expected - documented == set()


def test_every_command_is_in_the_readme() -> None:
    from retention.cli import _parser

    sub = next(a for a in _parser()._actions if a.dest == "command")
    for name in sub.choices:
        assert f"retention {name}" in README, name

"""The command line as a whole: every command documents an example; `mmpt env` reports the setup."""

from __future__ import annotations

import json

import pytest
import typer
from typer.testing import CliRunner

from mmpt.cli.app import app

WIDE = {"COLUMNS": "200"}


def _commands() -> list[list[str]]:
    group = typer.main.get_command(app)
    paths = []
    for name, command in group.commands.items():
        if hasattr(command, "commands"):
            paths += [[name, sub] for sub in command.commands]
        else:
            paths.append([name])
    return paths


@pytest.mark.parametrize("path", _commands(), ids=lambda p: " ".join(p))
def test_every_command_help_has_an_example(path):
    result = CliRunner().invoke(app, [*path, "--help"], env=WIDE)
    assert result.exit_code == 0, result.output
    assert "Example" in result.output and f"mmpt {' '.join(path)}" in result.output


def test_env_reports_versions_cache_and_backbones(tmp_path):
    result = CliRunner().invoke(app, ["env", "--json"], env={**WIDE, "MMPT_CACHE": str(tmp_path)})
    report = json.loads(result.output)
    assert report["cache_dir"] == str(tmp_path) and report["cache_dir_from"] == "MMPT_CACHE"
    assert "multimae-tiny-synth" in report["registered_backbones"] and report["torch"]

"""`mmpt recipes ls/show/cp/validate` through typer's CliRunner."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from mmpt.cli.app import app
from mmpt.config import RECIPES_DIR, config_hash, list_recipes, load_config, recipe_names

runner = CliRunner(env={"COLUMNS": "200"})  # rich must not wrap names and keys


def test_ls_lists_every_recipe_with_task_tuner_and_description() -> None:
    result = runner.invoke(app, ["recipes", "ls"])
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    for recipe in list_recipes():
        row = next(line for line in lines if f" {recipe.name} " in line)
        assert f" {recipe.task} " in row and f" {recipe.tuner} " in row
        assert recipe.description.split(":")[0] in row


def test_ls_json_is_one_document_naming_every_recipe() -> None:
    result = runner.invoke(app, ["recipes", "ls", "--json"])
    rows = json.loads(result.output)
    assert [row["name"] for row in rows] == recipe_names()
    lora = next(row for row in rows if row["name"] == "nyuv2/semseg/lora")
    assert (lora["task"], lora["tuner"]) == ("semseg", "lora") and lora["command"].startswith("mmpt tune ")


def test_show_prints_the_recipe_verbatim_when_piped() -> None:
    result = runner.invoke(app, ["recipes", "show", "nyuv2/depth/deep_prompt"])
    assert result.exit_code == 0
    assert result.output == (RECIPES_DIR / "nyuv2/depth/deep_prompt.yaml").read_text()


def test_cp_copies_points_the_command_at_the_copy_and_refuses_to_overwrite(tmp_path: Path) -> None:
    dest = tmp_path / "mine" / "depth.yaml"
    result = runner.invoke(app, ["recipes", "cp", "nyuv2/depth/lora", str(dest)])
    assert result.exit_code == 0, result.output
    original = (RECIPES_DIR / "nyuv2/depth/lora.yaml").read_text()
    copied = dest.read_text()
    assert copied.splitlines()[0] == f"# mmpt tune {dest} data.root=/path/to/nyuv2"
    assert copied.splitlines()[1:] == original.splitlines()[1:]
    assert load_config(dest) == load_config("nyuv2/depth/lora")

    dest.write_text("edited\n")
    again = runner.invoke(app, ["recipes", "cp", "nyuv2/depth/lora", str(dest)])
    assert again.exit_code == 2 and "already exists" in again.output and "--force" in again.output
    assert dest.read_text() == "edited\n"
    forced = runner.invoke(app, ["recipes", "cp", "nyuv2/depth/lora", str(dest), "--force"])
    assert forced.exit_code == 0 and dest.read_text() == copied

    into_dir = runner.invoke(app, ["recipes", "cp", "quick/semseg_deep_prompt", str(tmp_path)])
    assert into_dir.exit_code == 0 and (tmp_path / "semseg_deep_prompt.yaml").is_file()


def test_validate_prints_ok_and_the_config_hash() -> None:
    overrides = ["tuner.rank=16", "train.lr=5e-4", "~train.grad_clip"]
    result = runner.invoke(app, ["recipes", "validate", "nyuv2/depth/lora", *overrides])
    assert result.exit_code == 0, result.output
    expected = config_hash(load_config("nyuv2/depth/lora", overrides))
    assert f"OK nyuv2/depth/lora  config_hash {expected}" in result.output


def test_validate_print_config_shows_the_resolved_yaml() -> None:
    result = runner.invoke(app, ["recipes", "validate", "quick/depth_deep_prompt", "--print-config", "train.steps=3"])
    assert result.exit_code == 0, result.output
    assert "steps: 3" in result.output and "num_tokens: 4" in result.output


def test_validate_reports_every_problem_with_exit_code_2() -> None:
    result = runner.invoke(
        app, ["recipes", "validate", "nyuv2/depth/lora", "tuner.rnk=16", "train.lr=abc", "data.image_size=0"]
    )
    assert result.exit_code == 2
    output = " ".join(result.output.split())  # the panel may still fold long lines
    assert "3 problems in" in output
    assert "unknown key 'tuner.rnk'. Did you mean 'rank'?" in output
    assert "train.lr='abc' has the wrong type (str); expected float." in output
    assert "data.image_size=0 is invalid" in output
    assert "Traceback" not in result.output


def test_validate_unknown_recipe_suggests_the_closest_name() -> None:
    result = runner.invoke(app, ["recipes", "validate", "nyuv2/depth/deep_promt"])
    assert result.exit_code == 2
    assert "Did you mean 'nyuv2/depth/deep_prompt'?" in " ".join(result.output.split())


@pytest.mark.parametrize("command", ["ls", "show", "cp", "validate"])
def test_every_command_help_has_an_example(command: str) -> None:
    result = runner.invoke(app, ["recipes", command, "--help"])
    assert result.exit_code == 0 and "Example" in result.output and f"mmpt recipes {command}" in result.output

"""`mmpt bench`: reading bench recipes, running rows over seeds resumably, the aggregated results and report."""

from __future__ import annotations

import json
import statistics
from pathlib import Path

import pytest
from PIL import Image
from typer.testing import CliRunner

import mmpt.train.loop
from mmpt.bench.runner import run_bench
from mmpt.bench.spec import load_bench
from mmpt.cli.app import app
from mmpt.errors import ConfigError, DatasetLayoutError
from mmpt.testing import make_tiny_checkpoint

WIDE = {"COLUMNS": "200"}


def _recipe(tmp: Path, ckpt: Path, data: Path, **changes) -> Path:
    text = f"""
title: tiny bench
seeds: [0, 1]
synthetic: {{train: 8, test: 4, size: 64, seed: 3}}
base:
  backbone: {{source: {ckpt}}}
  data: {{root: {data}, image_size: 64, batch_size: 4, eval_batch_size: 4, num_workers: 0, augment: false}}
  head: {{name: linear}}
  train: {{steps: 4, lr: 1.0e-2, warmup_steps: 1, eval_every: 2, checkpoint_every: 2, log_every: 1,
          artifact_dtype: float32}}
tasks:
  depth: {{task: {{name: depth}}}}
tuners:
  linear_probe: {{tuner: {{name: linear_probe}}, reference: linear_probe}}
  deep_prompt: {{tuner: {{name: deep_prompt, num_tokens: 2}}}}
  full: {{tuner: {{name: full}}, train: {{lr: 1.0e-3}}, reference: full}}
latency: {{batch_size: 1, rounds: 2}}
"""
    for old, new in changes.items():
        text = text.replace(old, new)
    path = tmp / "bench.yaml"
    path.write_text(text)
    return path


@pytest.fixture(scope="module")
def tiny(tmp_path_factory) -> tuple[Path, Path]:
    root = tmp_path_factory.mktemp("bench")
    ckpt = make_tiny_checkpoint(root / "tiny.safetensors", fmt="safetensors", dim=32, depth=2, num_heads=4)
    return root, ckpt


@pytest.fixture(scope="module")
def finished(tiny) -> tuple[Path, Path, list[dict]]:
    root, ckpt = tiny
    recipe = _recipe(root, ckpt, root / "synth")
    out = root / "out"
    rows = run_bench(load_bench([recipe], out / "runs"), out, progress=False)
    return recipe, out, rows


def test_rows_cross_tasks_and_tuners_with_one_config_per_seed(tmp_path) -> None:
    recipe = _recipe(tmp_path, tmp_path / "ckpt.pth", tmp_path / "data", **{"depth: {task: {name: depth}}": (
        "depth: {task: {name: depth}}\n  semseg: {task: {name: semseg}}")})  # fmt: skip
    spec = load_bench([recipe], tmp_path / "runs")
    assert [r.name for r in spec.rows] == [
        f"{t}/{u}" for t in ("depth", "semseg") for u in ("linear_probe", "deep_prompt", "full")
    ]
    full = spec.rows[2]
    assert full.reference == "full" and sorted(full.configs) == [0, 1]
    assert full.configs[1].train.seed == 1 and full.configs[1].train.lr == 1e-3  # the tuner entry wins over base
    assert full.configs[1].output_dir == str(tmp_path / "runs" / "depth" / "full" / "seed1")
    assert spec.rows[4].configs[0].task.name == "semseg" and spec.rows[4].configs[0].tuner["num_tokens"] == 2
    assert spec.synthetic == {"train": 8, "test": 4, "size": 64, "seed": 3}
    assert spec.data_root == str(tmp_path / "data")


def test_every_recipe_problem_is_reported_at_once(tmp_path) -> None:
    recipe = _recipe(
        tmp_path,
        tmp_path / "c.pth",
        tmp_path / "d",
        **{"seeds: [0, 1]": "seeds: [0, 0]\ncolour: red", "num_tokens: 2": "num_tokens: 2, depthh: 3",
           "reference: full": "reference: best"},
    )  # fmt: skip
    with pytest.raises(ConfigError) as info:
        load_bench([recipe], tmp_path / "runs")
    message = info.value.message
    assert "colour" in message and "seeds" in message and "'best'" in message
    assert "depth/deep_prompt" in message and "depthh" in message
    with pytest.raises(ConfigError, match="more than one recipe"):
        load_bench([recipe.with_name("bench.yaml"), _recipe(tmp_path, tmp_path / "c.pth", tmp_path / "d")], "runs")


def test_results_aggregate_the_seeds_and_measure_every_row(finished) -> None:
    _, out, rows = finished
    lines = [json.loads(line) for line in (out / "results.jsonl").read_text().splitlines()]
    assert lines == rows and [r["name"] for r in rows] == ["depth/linear_probe", "depth/deep_prompt", "depth/full"]
    for row in rows:
        seeds = [
            json.loads((out / "runs" / "depth" / row["tuner_entry"] / f"seed{s}" / "results.json").read_text())
            for s in (0, 1)
        ]
        for metric in ("delta1", "rmse"):
            values = [r["metrics"]["best"][metric] for r in seeds]
            assert row["metrics"][metric]["values"] == values
            assert row["metrics"][metric]["mean"] == pytest.approx(statistics.fmean(values))
            assert row["metrics"][metric]["std"] == pytest.approx(statistics.stdev(values))
        assert "step" not in row["metrics"]
        assert row["params"] == {k: seeds[0]["train_info"]["trainable_params"][k] for k in ("tuner", "head", "total")}
        assert row["artifact_bytes"] == Path(seeds[0]["train_info"]["artifact"]).stat().st_size
        assert row["latency_ms"] > 0 and row["backbone_latency_ms"] > 0 and row["overhead"] > -1
        assert row["train_img_s"] > 0 and row["wall_time_s"] > 0 and row["peak_memory_bytes"] > 0
        assert row["primary_metric"] == "delta1" and row["higher_is_better"] is True
    assert [r["reference"] for r in rows] == ["linear_probe", None, "full"]
    assert rows[1]["params"]["tuner"] == 2 * 2 * 32  # deep prompts: layers x tokens x dim
    assert rows[0]["params"]["tuner"] == 0 and rows[2]["params"]["tuner"] > rows[1]["params"]["tuner"]
    assert rows[1]["metrics"]["rmse"]["std"] > 0  # two seeds really ran differently
    with Image.open(out / "pareto.png") as image:
        assert image.size[0] > 100
    assert "depth" in (out / "results.md").read_text()


def test_a_rerun_skips_finished_rows_and_resumes_a_seed_in_flight(finished, monkeypatch) -> None:
    recipe, out, rows = finished
    calls = []
    real_fit = mmpt.train.loop.fit

    def spy(cfg, **kwargs):
        calls.append((cfg.output_dir, cfg.train.resume))
        return real_fit(cfg, **kwargs)

    monkeypatch.setattr(mmpt.train.loop, "fit", spy)
    spec = load_bench([recipe], out / "runs")
    assert run_bench(spec, out, progress=False) == rows and calls == []  # nothing re-ran

    seed1 = out / "runs" / "depth" / "deep_prompt" / "seed1"
    (out / "rows" / "depth__deep_prompt.json").unlink()
    for name in ("results.json", "bench.json"):
        (seed1 / name).unlink()  # as if interrupted after its last checkpoint
    again = run_bench(spec, out, progress=False)
    assert calls == [(str(seed1), True)]
    assert again[1]["metrics"]["rmse"]["values"] == rows[1]["metrics"]["rmse"]["values"]


def test_a_changed_config_in_a_used_folder_is_refused(finished) -> None:
    recipe, out, _ = finished
    changed = recipe.with_name("changed.yaml")
    changed.write_text(recipe.read_text().replace("lr: 1.0e-2", "lr: 2.0e-2"))
    with pytest.raises(ConfigError, match="another config"):
        run_bench(load_bench([changed], out / "runs"), out, progress=False)


def test_a_synthetic_set_made_otherwise_is_refused(tiny, tmp_path) -> None:
    root, ckpt = tiny
    recipe = _recipe(tmp_path, ckpt, root / "synth", **{"seed: 3": "seed: 4"})  # same folder, other seed
    with pytest.raises(DatasetLayoutError, match=r"synthetic\.json"):
        run_bench(load_bench([recipe], tmp_path / "runs"), tmp_path / "out", progress=False)


def test_cli_dry_run_lists_the_rows_and_recipes_validate_accepts_bench_recipes(finished, tmp_path) -> None:
    recipe, _, _ = finished
    result = CliRunner().invoke(app, ["bench", str(recipe), "--out", str(tmp_path), "--dry-run"], env=WIDE)
    assert result.exit_code == 0, result.output
    assert "depth/full: seeds 0, 1  (reference: full)" in result.output and "3 rows" in result.output
    assert not (tmp_path / "results.jsonl").exists()
    shipped = CliRunner().invoke(app, ["recipes", "validate", "bench/quick_synth"], env=WIDE)
    assert shipped.exit_code == 0 and "10 rows" in shipped.output, shipped.output

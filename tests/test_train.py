"""The training loop end to end on a synthetic set and a tiny checkpoint: learning, artifacts, eval, predict,
resume, failures, frozen weights, DDP metrics."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file
from typer.testing import CliRunner

from mmpt.backbone import load_backbone
from mmpt.cli.app import app
from mmpt.config.load import load_config
from mmpt.data.synthetic import write_synthetic_nyuv2
from mmpt.errors import ConfigError, TrainingError
from mmpt.testing import make_tiny_checkpoint
from mmpt.train.inference import evaluate_artifact
from mmpt.train.loop import fit

WIDE = {"COLUMNS": "200"}


@pytest.fixture(scope="module")
def assets(tmp_path_factory):
    root = tmp_path_factory.mktemp("assets")
    data = write_synthetic_nyuv2(root / "synth", train=12, test=6, size=64, seed=0, progress=False)
    ckpt = make_tiny_checkpoint(root / "tiny.safetensors", fmt="safetensors", dim=32, depth=2, num_heads=4)
    return Path(data), ckpt


def _overrides(assets, out: Path, **extra) -> list[str]:
    data, ckpt = assets
    base = {
        "backbone": str(ckpt),
        "data.root": str(data),
        "output_dir": str(out),
        "data.augment": "false",
        "train.steps": 12,
        "train.eval_every": 6,
        "train.checkpoint_every": 6,
        "train.log_every": 1,
        "train.artifact_dtype": "float32",
    }
    base.update(extra)
    return [f"{k}={v}" for k, v in base.items()]


def _lines(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_tune_learns_writes_the_run_and_eval_reproduces_its_metrics(assets, tmp_path):
    out = tmp_path / "run"
    result = CliRunner().invoke(
        app, ["tune", "quick/depth_deep_prompt", *_overrides(assets, out), "--no-progress"], env=WIDE
    )
    assert result.exit_code == 0, result.output
    for name in ("config.yaml", "metrics.jsonl", "summary.csv", "results.json", "depth_deep_prompt.safetensors"):
        assert (out / name).exists(), name
    evals = [r for r in _lines(out / "metrics.jsonl") if "eval_loss" in r]
    assert [r["step"] for r in evals] == [6, 12]
    assert evals[-1]["eval_loss"] < evals[0]["eval_loss"]  # it learns
    train = [r["loss"] for r in _lines(out / "metrics.jsonl") if "loss" in r]
    assert sum(train[-4:]) < sum(train[:4])
    results = json.loads((out / "results.json").read_text())
    assert results["train_info"]["trainable_params"]["tuner"] == 2 * 4 * 32  # layers × tokens × dim
    assert sorted(p.name for p in (out / "viz").iterdir()) == ["step_0000006.png", "step_0000012.png"]

    recorded = results["metrics"]["best"]
    metrics = evaluate_artifact(out / "depth_deep_prompt.safetensors", assets[0], backbone=assets[1])
    for key in ("delta1", "abs_rel", "rmse", "rmse_log"):
        assert metrics[key] == pytest.approx(recorded[key], abs=1e-5), key

    cli = CliRunner().invoke(
        app,
        [
            "eval",
            str(out / "depth_deep_prompt.safetensors"),
            "--data",
            str(assets[0]),
            "--backbone",
            str(assets[1]),
            "--json",
        ],
        env=WIDE,
    )
    assert cli.exit_code == 0, cli.output
    assert json.loads(cli.output)["delta1"] == pytest.approx(recorded["delta1"], abs=1e-5)


def test_predict_writes_pictures(assets, tmp_path):
    out = tmp_path / "run"
    fit(load_config("quick/semseg_deep_prompt", _overrides(assets, out, **{"train.steps": 2})), progress=False)
    image = next((assets[0] / "test" / "rgb" / "data").iterdir())
    result = CliRunner().invoke(
        app,
        [
            "predict",
            str(out / "semseg_deep_prompt.safetensors"),
            str(image),
            "--out",
            str(tmp_path / "pred"),
            "--backbone",
            str(assets[1]),
        ],
        env=WIDE,
    )
    assert result.exit_code == 0, result.output
    names = sorted(p.name for p in (tmp_path / "pred").iterdir())
    assert names == sorted([f"{image.stem}_semseg.png", f"{image.stem}_overlay.png", "grid.png"])


def test_resume_reproduces_the_uninterrupted_run(assets, tmp_path):
    straight = fit(load_config("quick/depth_deep_prompt", _overrides(assets, tmp_path / "a")), progress=False)
    overrides = _overrides(assets, tmp_path / "b", **{"data.augment": "true", "train.checkpoint_every": 100})
    augmented = fit(load_config("quick/depth_deep_prompt", overrides), progress=False)
    assert fit(
        load_config("quick/depth_deep_prompt", _overrides(assets, tmp_path / "c", **{"data.augment": "true"})),
        progress=False,
        stop_at=5,
    ) == {"stopped_at": 5}
    resumed = fit(
        load_config(
            "quick/depth_deep_prompt",
            [*_overrides(assets, tmp_path / "c", **{"data.augment": "true"}), "train.resume=true"],
        ),
        progress=False,
    )
    a = load_file(str(tmp_path / "b" / "depth_deep_prompt.safetensors"))
    b = load_file(str(tmp_path / "c" / "depth_deep_prompt.safetensors"))
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    strip = lambda rows: [{k: v for k, v in r.items() if k != "img_per_s"} for r in rows]  # noqa: E731
    assert strip(_lines(tmp_path / "b" / "metrics.jsonl")) == strip(_lines(tmp_path / "c" / "metrics.jsonl"))
    assert resumed["metrics"]["best"] == augmented["metrics"]["best"]
    assert straight["metrics"]["best"] != augmented["metrics"]["best"]  # augmentation really was on


def test_resume_without_a_checkpoint_is_a_clear_error(assets, tmp_path):
    with pytest.raises(TrainingError, match="holds no checkpoint"):
        fit(
            load_config("quick/depth_deep_prompt", [*_overrides(assets, tmp_path), "train.resume=true"]), progress=False
        )


def test_a_non_finite_loss_stops_and_names_the_last_good_checkpoint(assets, tmp_path, monkeypatch):
    from mmpt.tasks.depth import DepthTask

    original = DepthTask.loss

    def poisoned(self, name=None):
        fn, calls = original(self, name), []

        def loss(output, batch):  # the 8th training step's loss is NaN (evaluation calls are not counted)
            calls.extend([1] if torch.is_grad_enabled() else [])
            value = fn(output, batch)
            return value * float("nan") if len(calls) == 8 and torch.is_grad_enabled() else value

        return loss

    monkeypatch.setattr(DepthTask, "loss", poisoned)
    with pytest.raises(TrainingError, match=r"Non-finite loss \(nan\) at step 8.*step_0000006"):
        fit(load_config("quick/depth_deep_prompt", _overrides(assets, tmp_path)), progress=False)
    assert (tmp_path / "checkpoints" / "step_0000006").is_dir()
    assert not (tmp_path / "checkpoints" / "step_0000012").exists()


@pytest.mark.parametrize("tuner", ["deep_prompt", "lora", "linear_probe", "prompt_pool"])
def test_training_leaves_the_backbone_bit_identical(assets, tmp_path, tuner, monkeypatch):
    from mmpt.train import build

    seen = {}
    real = build.build_run

    def spy(cfg, **kwargs):
        run = real(cfg, **kwargs)
        seen["run"], seen["before"] = run, run.backbone.fingerprint
        return run

    monkeypatch.setattr(build, "build_run", spy)
    fit(
        load_config(
            "quick/depth_deep_prompt", _overrides(assets, tmp_path, **{"tuner": f"{{name: {tuner}}}", "train.steps": 3})
        ),
        progress=False,
    )
    run = seen["run"]
    if tuner == "lora":
        run.tuner.unmerge() if getattr(run.tuner, "merged", False) else None
    assert run.backbone.fingerprint == seen["before"]
    assert all(t.grad is None for t in run.backbone.base_state_dict().values())
    fresh = load_backbone(assets[1], domains=["rgb"], image_size=64)
    assert fresh.fingerprint == seen["before"]


def _eval_in_process(artifact: str, data: str, backbone: str, out: str) -> None:
    from accelerate import PartialState
    from accelerate.state import AcceleratorState

    AcceleratorState._reset_state(reset_partial_state=True)  # forked from a parent that already ran single-process
    metrics = evaluate_artifact(artifact, data, backbone=backbone, batch_size=2)
    Path(out, f"rank{PartialState().process_index}.json").write_text(json.dumps(metrics))


def test_two_process_ddp_evaluation_equals_one_process(assets, tmp_path):
    from accelerate import debug_launcher

    out = tmp_path / "run"
    fit(load_config("quick/semseg_deep_prompt", _overrides(assets, out, **{"train.steps": 2})), progress=False)
    artifact = str(out / "semseg_deep_prompt.safetensors")
    single = evaluate_artifact(artifact, assets[0], backbone=assets[1], batch_size=4)
    debug_launcher(_eval_in_process, args=(artifact, str(assets[0]), str(assets[1]), str(tmp_path)), num_processes=2)
    for rank in (0, 1):
        both = json.loads((tmp_path / f"rank{rank}.json").read_text())
        for key in ("miou", "pixel_accuracy", "mean_accuracy"):
            assert both[key] == pytest.approx(single[key], abs=1e-6), (rank, key)


def test_cached_linear_probe_runs_the_backbone_once_per_image_and_learns_the_same(assets, tmp_path, monkeypatch):
    from mmpt.tuners.linear_probe import LinearProbe

    calls = []
    real = LinearProbe.extract
    monkeypatch.setattr(
        LinearProbe,
        "extract",
        lambda self, inputs: calls.append(len(next(iter(inputs.values())))) or real(self, inputs),
    )
    common = {"tuner": "{name: linear_probe}", "train.steps": 9, "train.eval_every": 9, "data.batch_size": 4}
    cached = fit(
        load_config(
            "quick/depth_deep_prompt",
            _overrides(assets, tmp_path / "cached", **common, **{"train.cache_features": "true"}),
        ),
        progress=False,
    )
    assert sum(calls) == 12  # 9 steps × 4 samples = 3 passes over 12 training images; each image extracted once
    plain = fit(
        load_config("quick/depth_deep_prompt", _overrides(assets, tmp_path / "plain", **common)), progress=False
    )
    for key in ("delta1", "abs_rel", "rmse"):  # fp16 cache storage: close, not bit-equal
        assert cached["metrics"]["best"][key] == pytest.approx(plain["metrics"]["best"][key], rel=2e-2, abs=2e-3)


def test_cache_features_refuses_augmentation(assets, tmp_path):
    cfg = load_config(
        "quick/depth_deep_prompt",
        _overrides(
            assets,
            tmp_path,
            **{"tuner": "{name: linear_probe}", "train.cache_features": "true", "data.augment": "true"},
        ),
    )
    with pytest.raises(ConfigError, match=r"data\.augment=false"):
        fit(cfg, progress=False)


def test_sgd_with_accumulation_also_learns(assets, tmp_path):
    overrides = _overrides(assets, tmp_path, **{"train.optimizer": "sgd", "train.lr": 0.05, "train.grad_accum": 2})
    fit(load_config("quick/depth_deep_prompt", overrides), progress=False)
    evals = [r["eval_loss"] for r in _lines(tmp_path / "metrics.jsonl") if "eval_loss" in r]
    assert len(evals) == 2 and evals[1] < evals[0]


def test_the_dpt_head_follows_the_backbone_depth(assets, tmp_path):
    results = fit(
        load_config(
            "quick/depth_deep_prompt",
            _overrides(assets, tmp_path, **{"head": "dpt", "train.steps": 2, "train.eval_every": 2}),
        ),
        progress=False,
    )
    assert results["train_info"]["trainable_params"]["head"] > 0
    from mmpt.artifacts import read_metadata

    assert read_metadata(tmp_path / "depth_deep_prompt.safetensors")["head_config"]["depth"] == 2

"""`mmpt demo` end to end on a tiny backbone (the shipped one is exercised by the benchmark and the README)."""

from __future__ import annotations

from typer.testing import CliRunner

from mmpt.cli.app import app
from mmpt.demo import run_demo
from mmpt.testing import make_tiny_checkpoint


def test_demo_tunes_both_tuners_and_writes_artifacts_and_pictures(tmp_path):
    ckpt = make_tiny_checkpoint(tmp_path / "tiny.safetensors", fmt="safetensors", dim=32, depth=2, num_heads=2)
    rows = run_demo(
        tmp_path / "demo", backbone=str(ckpt), train=8, test=4, image_size=64, steps=3, batch_size=4, progress=False
    )
    assert [r.tuner for r in rows] == ["deep_prompt", "linear_probe"]
    for row in rows:
        assert row.artifact.exists() and row.artifact_bytes == row.artifact.stat().st_size
        assert row.picture.exists() and 0.0 <= row.metrics["delta1"] <= 1.0
    assert rows[0].trainable["tuner"] == 2 * 8 * 32 and rows[1].trainable["tuner"] == 0


def test_demo_cli_prints_the_comparison_and_next_steps(tmp_path, monkeypatch):
    import mmpt.demo

    ckpt = make_tiny_checkpoint(tmp_path / "tiny.safetensors", fmt="safetensors", dim=32, depth=2, num_heads=2)
    real = mmpt.demo.run_demo
    monkeypatch.setattr(
        mmpt.demo,
        "run_demo",
        lambda out, **kw: real(out, **{**kw, "train": 8, "test": 4, "image_size": 64, "batch_size": 4}),
    )
    result = CliRunner().invoke(
        app,
        ["demo", "--out", str(tmp_path / "demo"), "--backbone", str(ckpt), "--steps", "2", "--no-progress"],
        env={"COLUMNS": "200"},
    )
    assert result.exit_code == 0, result.output
    for text in ("deep_prompt", "linear_probe", "δ1", "Next steps", "mmpt tune nyuv2/depth/deep_prompt"):
        assert text in result.output

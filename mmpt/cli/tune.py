"""`mmpt tune`, `mmpt eval`, `mmpt predict`: train a tuner from a recipe, then use its artifact."""

from __future__ import annotations

import json
from pathlib import Path

import typer


def tune(
    recipe: str = typer.Argument(..., help="recipe file or shipped recipe name (see `mmpt recipes ls`)"),
    overrides: list[str] = typer.Argument(None, help="key=value overrides, e.g. train.lr=1e-3 data.root=DIR"),
    no_progress: bool = typer.Option(False, "--no-progress", help="no progress bar (logs only)"),
) -> None:
    """Train a tuner + head on a task; writes config.yaml, metrics, checkpoints and the best artifact.

    Examples:

        mmpt tune recipes/nyuv2/depth/deep_prompt.yaml data.root=data/nyuv2

        mmpt tune nyuv2/semseg/lora backbone=multimae-b train.steps=2000 output_dir=runs/seg_lora

        accelerate launch -m mmpt tune nyuv2/depth/lora train.mixed_precision=bf16
    """
    from mmpt.config.load import load_config
    from mmpt.train.loop import fit

    cfg = load_config(recipe, overrides or [])
    results = fit(cfg, progress=not no_progress)
    info = results["train_info"]
    typer.echo(
        f"best {results['metrics']['best_step'] and 'step ' + str(results['metrics']['best_step'])}: "
        + ", ".join(f"{k}={v:.4f}" for k, v in (results["metrics"]["best"] or {}).items() if isinstance(v, float))
    )
    typer.echo(f"artifact: {info['artifact']} ({info['artifact_bytes']:,} bytes); run: {cfg.output_dir}")


def eval_(
    artifact: Path = typer.Argument(..., help="artifact (.safetensors) written by `mmpt tune`"),
    data: Path = typer.Option(..., "--data", help="dataset root in the official NYUv2 layout"),
    split: str = typer.Option("test", "--split", help="train or test"),
    backbone: str = typer.Option(None, "--backbone", help="backbone checkpoint (default: the artifact's)"),
    num_heads: int = typer.Option(None, "--num-heads", help="backbone attention heads if not dim // 64"),
    batch_size: int = typer.Option(8, "--batch-size"),
    as_json: bool = typer.Option(False, "--json", help="print metrics as JSON"),
) -> None:
    """Evaluate an artifact on a whole split (official evaluation resizing; metrics over all valid pixels).

    Example:

        mmpt eval runs/depth_deep_prompt/depth_deep_prompt.safetensors --data data/nyuv2 --json
    """
    from mmpt.train.inference import evaluate_artifact

    metrics = evaluate_artifact(
        artifact, data, split=split, backbone=backbone, num_heads=num_heads, batch_size=batch_size
    )
    if as_json:
        typer.echo(json.dumps(metrics, indent=2))
        return
    from rich.console import Console
    from rich.table import Table

    table = Table(title=f"{artifact.name} on {data} ({split})")
    table.add_column("metric")
    table.add_column("value", justify="right")
    for key, value in metrics.items():
        if isinstance(value, float):
            table.add_row(key, f"{value:.4f}")
    Console().print(table)


def predict(
    artifact: Path = typer.Argument(..., help="artifact (.safetensors) written by `mmpt tune`"),
    images: list[Path] = typer.Argument(..., help="RGB images (PNG/JPEG)"),
    out: Path = typer.Option(..., "--out", help="output folder for the pictures"),
    depth: list[Path] = typer.Option(None, "--depth", help="depth PNG per image, for rgb+depth artifacts"),
    backbone: str = typer.Option(None, "--backbone", help="backbone checkpoint (default: the artifact's)"),
    num_heads: int = typer.Option(None, "--num-heads", help="backbone attention heads if not dim // 64"),
) -> None:
    """Predict depth (colourised, fixed 0-10 m, plus the official uint16 PNG) or segmentation (colours and
    overlay) for each image, and a side-by-side grid.

    Example:

        mmpt predict runs/depth_lora/depth_lora.safetensors photo1.png photo2.jpg --out predictions/
    """
    from mmpt.train.inference import load_tuned, predict_images

    if depth and len(depth) != len(images):
        raise typer.BadParameter(f"got {len(depth)} --depth files for {len(images)} images; give one per image")
    tuned = load_tuned(artifact, backbone=backbone, num_heads=num_heads)
    for path in predict_images(tuned, list(images), out, depths=list(depth) if depth else None):
        typer.echo(path)

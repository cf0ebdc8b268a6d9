"""`mmpt demo`: the offline tour."""

from __future__ import annotations

from pathlib import Path

import typer


def demo(
    out: Path = typer.Option(Path("mmpt-demo"), "--out", help="folder for data, runs, artifacts and pictures"),
    backbone: str = typer.Option("multimae-tiny-synth", "--backbone", help="backbone to tune (name or file)"),
    num_heads: int = typer.Option(None, "--num-heads", help="backbone heads if not stored in the checkpoint"),
    steps: int = typer.Option(300, "--steps", help="optimizer steps per tuner"),
    no_progress: bool = typer.Option(False, "--no-progress", help="no progress bars"),
) -> None:
    """Tune deep prompts and a linear probe for depth on synthetic scenes, offline, in a few minutes.

    Example:

        mmpt demo --out mmpt-demo
    """
    from rich.console import Console
    from rich.panel import Panel
    from rich.table import Table

    from mmpt.demo import run_demo

    console = Console()
    rows = run_demo(out, backbone=backbone, num_heads=num_heads, steps=steps, progress=not no_progress)
    head = rows[0].trainable["head"]
    table = Table(title=f"Depth, synthetic scenes, {backbone}, {steps} steps, linear head ({head:,} params)")
    for column in ("tuner", "δ1 ↑", "abs_rel ↓", "rmse m ↓", "tuner params", "artifact", "time"):
        table.add_column(column, justify="left" if column == "tuner" else "right")
    for r in rows:
        table.add_row(
            r.tuner,
            f"{r.metrics['delta1']:.3f}",
            f"{r.metrics['abs_rel']:.3f}",
            f"{r.metrics['rmse']:.3f}",
            f"{r.trainable['tuner']:,}",
            f"{r.artifact_bytes / 1024:.0f} KiB",
            f"{r.train_time_s:.0f} s",
        )
    console.print(table)
    for r in rows:
        console.print(f"{r.tuner}: artifact {r.artifact}, pictures {r.picture}")
    console.print(
        Panel(
            "Real weights:  mmpt inspect multimae-b   (downloads the official MultiMAE ViT-B once)\n"
            "Real data:     mmpt data prepare-nyuv2 --download --out data/nyuv2\n"
            "Tune:          mmpt tune nyuv2/depth/deep_prompt data.root=data/nyuv2\n"
            f"Evaluate:      mmpt eval {rows[0].artifact} --data {out / 'synthetic'}\n"
            f"Predict:       mmpt predict {rows[0].artifact} photo.jpg --out predictions/\n"
            "Compare all:   mmpt bench bench/quick_synth --out runs/bench/quick_synth\n"
            "Share:         mmpt zoo add ARTIFACT --name NAME   (then mmpt zoo push NAME --repo you/NAME)\n"
            "All recipes:   mmpt recipes ls",
            title="Next steps",
            expand=False,
        )
    )

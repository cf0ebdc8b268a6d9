"""`mmpt bench`: compare tuners from bench recipes (glue only; the work is in `mmpt.bench`)."""

from __future__ import annotations

from pathlib import Path

import typer


def bench(
    recipes: list[str] = typer.Argument(..., help="bench recipe files or shipped names, e.g. bench/quick_synth"),
    out: Path = typer.Option(..., "--out", help="folder for runs, results.jsonl, results.md and pareto.png"),
    dry_run: bool = typer.Option(False, "--dry-run", help="validate the recipes and list the rows; run nothing"),
    threads: int = typer.Option(None, "--threads", help="torch CPU threads (default: torch's choice)"),
    no_progress: bool = typer.Option(False, "--no-progress", help="no progress bars"),
) -> None:
    """Run every task x tuner row of bench recipes over their seeds; write the comparison table and Pareto plot.

    Rows already finished in --out are skipped, a seed run in flight resumes from its checkpoint: run the same
    command again after an interruption. results.jsonl holds one row per line (metrics mean ± std over seeds,
    trainable parameters tuner/head, artifact bytes, train img/s, peak memory, inference latency and overhead
    over the frozen backbone, wall time).

    Examples:

        mmpt bench bench/quick_synth --out runs/bench/quick_synth

        mmpt bench bench/nyuv2_vitb --out runs/bench/nyuv2_vitb --dry-run
    """
    import torch
    from rich.console import Console

    from mmpt.bench.report import print_tables
    from mmpt.bench.runner import run_bench
    from mmpt.bench.spec import load_bench

    console = Console()
    spec = load_bench(recipes, out / "runs")
    if dry_run:
        for row in spec.rows:
            seeds = ", ".join(str(s) for s in row.configs)
            ref = f"  (reference: {row.reference})" if row.reference else ""
            console.print(f"{row.name}: seeds {seeds}{ref}", highlight=False)
        console.print(f"[green]OK[/green] {len(spec.rows)} rows", highlight=False)
        return
    if threads:
        torch.set_num_threads(threads)
    rows = run_bench(spec, out, progress=not no_progress, console=console)
    print_tables(rows, console=console)
    console.print(f"results: {out / 'results.jsonl'}, {out / 'results.md'}, {out / 'pareto.png'}", highlight=False)

"""`mmpt data ...`: prepare, synthesise and check NYUv2-format datasets."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import typer

if TYPE_CHECKING:
    from mmpt.data.check import CheckReport

app = typer.Typer(
    help="Prepare, synthesise and check NYUv2 datasets in the official MultiMAE layout.", no_args_is_help=True
)


@app.command("prepare-nyuv2")
def prepare_nyuv2(
    out: Path = typer.Option(..., "--out", help="dataset root to write (train/ and test/ go inside)"),
    labeled_mat: Path | None = typer.Option(None, "--labeled-mat", help="nyu_depth_v2_labeled.mat (2.8 GB)"),
    splits: Path | None = typer.Option(None, "--splits", help="splits.mat (trainNdxs/testNdxs)"),
    class_map: Path | None = typer.Option(None, "--class-map", help="classMapping40.mat (mapClass)"),
    download: bool = typer.Option(
        False, "--download", help="fetch the raw files not given above into the mmpt cache (resumable)"
    ),
) -> None:
    """Write the official NYUv2 layout from the raw .mat files, pixel-identical to MultiMAE's tools/prepare_nyuv2.py.

    Resumable: samples whose three PNGs exist are skipped.

    Example:  mmpt data prepare-nyuv2 --download --out data/NYUv2
    """
    from rich.console import Console

    from mmpt.data.prepare import prepare_nyuv2 as prepare
    from mmpt.data.prepare import resolve_raw_files

    paths = resolve_raw_files(labeled_mat=labeled_mat, splits=splits, class_map=class_map, download=download)
    result = prepare(paths["labeled_mat"], paths["splits"], paths["class_map"], out)
    counts = ", ".join(
        f"{split} {result.written[split]} written / {result.skipped[split]} kept" for split in result.written
    )
    Console().print(f"NYUv2 ready in {out} ({counts}). Next: mmpt data check {out}", highlight=False)


@app.command("synth")
def synth(
    out: Path = typer.Option(..., "--out", help="dataset root to write"),
    train: int = typer.Option(64, "--train", help="number of train samples"),
    test: int = typer.Option(16, "--test", help="number of test samples"),
    size: int = typer.Option(256, "--size", help="side of the square images in pixels (a multiple of 16)"),
    seed: int = typer.Option(0, "--seed", help="random seed (same seed, same files)"),
) -> None:
    """Write synthetic NYUv2-format scenes (rgb, depth, semseg) in the official layout.

    Example:  mmpt data synth --out data/synthetic --train 64 --test 16 --size 256 --seed 0
    """
    from rich.console import Console

    from mmpt.data.synthetic import write_synthetic_nyuv2

    root = write_synthetic_nyuv2(out, train=train, test=test, size=size, seed=seed, progress=True)
    Console().print(f"Synthetic NYUv2 ({train} train, {test} test) in {root}. Next: mmpt data check {root}")


@app.command("check")
def check(
    root: Path = typer.Argument(..., help="dataset root holding train/ and test/"),
    domains: str = typer.Option("rgb,depth,semseg", "--domains", help="comma-separated domains every sample needs"),
) -> None:
    """Validate a dataset against the official NYUv2 layout and summarise it; exit code 1 on any problem.

    Example:  mmpt data check data/NYUv2 --domains rgb,depth
    """
    from mmpt.data.check import check_layout

    wanted = tuple(d.strip() for d in domains.split(",") if d.strip())
    report = check_layout(root, domains=wanted, progress=True)
    _print_report(report)
    if not report.ok:
        raise typer.Exit(1)


def _print_report(report: CheckReport) -> None:
    from rich.console import Console
    from rich.markup import escape
    from rich.table import Table

    from mmpt.data.layout import NYU40_CLASSES

    console = Console()
    console.print(f"[bold]{escape(str(report.root))}[/bold]")
    if report.splits:
        table = Table("split", "samples", *report.domains, "size W×H", "depth range (m)", "valid depth")
        for split, s in report.splits.items():
            sizes = ", ".join(f"{w}×{h}" + (f" ({n})" if len(s.sizes) > 1 else "") for (w, h), n in s.sizes.items())
            depth = f"{s.depth_min_m:.3f} – {s.depth_max_m:.3f}" if s.depth_min_m is not None else "–"
            valid = f"{s.depth_valid / s.depth_pixels:.1%}" if s.depth_pixels else "–"
            files = [str(s.files.get(d, 0)) for d in report.domains]
            table.add_row(split, str(s.samples), *files, sizes or "–", depth, valid)
        console.print(table)
        if "semseg" in report.domains and any(s.class_pixels.any() for s in report.splits.values()):
            classes = Table("id", "class", *(f"{split} pixels" for split in report.splits), title="NYU-40 classes")
            for k in range(len(NYU40_CLASSES) + 1):
                shares = [s.class_pixels[k] / max(s.class_pixels.sum(), 1) for s in report.splits.values()]
                if any(shares):
                    name = NYU40_CLASSES[k - 1] if k else "unlabeled"
                    classes.add_row(str(k), name, *(f"{share:.2%}" for share in shares))
            console.print(classes)
    if report.ok:
        console.print("[green]✓ the layout is valid[/green]")
        return
    console.print(f"[red]✗ {len(report.problems)} problem(s):[/red]")
    for problem in report.problems:
        console.print(f"  [bold]{escape(problem.path)}[/bold]: {escape(problem.message)}", soft_wrap=True)
        console.print(f"    fix: {escape(problem.fix)}", soft_wrap=True, style="dim")

"""`mmpt inspect PATH`: what a checkpoint (or a tuned-task artifact) holds."""

from __future__ import annotations

import json
from pathlib import Path

import typer


def inspect(
    path: str = typer.Argument(..., help="checkpoint (.pth/.safetensors, URL or registry name) or artifact"),
    num_heads: int = typer.Option(None, "--num-heads", help="attention heads (not stored in official checkpoints)"),
    as_json: bool = typer.Option(False, "--json", help="print machine-readable JSON instead of tables"),
) -> None:
    """Show format, domains, architecture, parameter count, skipped keys, sha256 and fingerprint.

    Examples:

        python -m mmpt.testing tiny.pth && mmpt inspect tiny.pth --num-heads 4

        mmpt inspect multimae-b --json
    """
    from mmpt.backbone.load import describe_backbone, load_backbone

    info = describe_backbone(load_backbone(path, num_heads=num_heads))
    if as_json:
        typer.echo(json.dumps(info, indent=2))
    else:
        print_checkpoint(info)


def print_checkpoint(info: dict) -> None:
    """Rich tables for `describe_backbone`'s summary."""
    from rich.console import Console
    from rich.table import Table

    console = Console()
    table = Table(title=f"{Path(info['source']).name}  ({info['format']} format)", show_header=False)
    table.add_column(style="bold", no_wrap=True)
    table.add_column(overflow="fold")

    def domain_text(name: str, d: dict) -> str:
        return f"{name} (semseg, {d['num_classes']} classes)" if "num_classes" in d else f"{name} ({d['channels']} ch)"

    grid, native = ("x".join(map(str, info[k])) for k in ("pos_grid", "native_image_size"))
    rows = [
        ("name", info["name"]),
        ("domains", ", ".join(domain_text(n, d) for n, d in info["domains"].items())),
        ("dim / depth / heads", f"{info['dim']} / {info['depth']} / {info['num_heads']}"),
        ("heads from", info["num_heads_from"]),
        ("patch size", str(info["patch_size"])),
        ("position grid", f"{grid}  (native {native} px)"),
        ("global tokens", str(info["num_global_tokens"])),
        ("parameters", f"{info['parameters']:,}"),
        ("loaded tensors", str(info["loaded_tensors"])),
        *[("skipped", f"{n} {reason}") for reason, n in info["skipped"].items()],
        ("file sha256", info["sha256"]),
        ("fingerprint", info["fingerprint"]),
    ]
    for key, value in rows:
        table.add_row(key, value)
    console.print(table)

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
    from mmpt.artifacts import describe_artifact, is_artifact

    if is_artifact(path):
        artifact = describe_artifact(path)
        if as_json:
            typer.echo(json.dumps(artifact, indent=2))
        else:
            print_artifact(artifact)
        return
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


def _bytes(n: int) -> str:
    if n >= 1024**2:
        return f"{n:,} B ({n / 1024**2:.2f} MiB)"
    return f"{n:,} B ({n / 1024:.1f} KiB)" if n >= 1024 else f"{n:,} B"


def print_artifact(info: dict, max_rows: int = 50) -> None:
    """Rich tables for `describe_artifact`'s summary: metadata, tensors, sizes."""
    from rich.console import Console
    from rich.table import Table

    console = Console()
    meta = info["metadata"]
    head = meta["head_config"]
    table = Table(
        title=f"{Path(info['path']).name}  (mmpt artifact v{meta['mmpt_artifact_version']})", show_header=False
    )
    table.add_column(style="bold", no_wrap=True)
    table.add_column(overflow="fold")
    rows = [
        ("task", meta["task"]),
        ("tuner", f"{meta['tuner']}  {json.dumps(meta['tuner_config'])}"),
        (
            "head",
            "none" if head is None else f"{head['name']}  {json.dumps({k: v for k, v in head.items() if k != 'name'})}",
        ),
        ("backbone", meta["backbone"]),
        ("backbone sha256", meta["backbone_sha256"] or "unknown"),
        ("backbone fingerprint", meta["backbone_fingerprint"]),
        ("domains / image size", f"{', '.join(meta['domains'])} / {'x'.join(map(str, meta['image_size']))}"),
        ("metrics", json.dumps(meta["metrics"]) if meta["metrics"] else "none"),
        ("created", f"{meta['created_at']} with mmpt {meta['mmpt_version']}"),
    ]
    for key, value in rows:
        table.add_row(key, value)
    console.print(table)

    tensors = Table(title="tensors")
    for column in ("name", "shape", "dtype", "parameters", "bytes"):
        tensors.add_column(column, justify="right" if column in ("parameters", "bytes") else "left")
    for row in info["tensors"][:max_rows]:
        shape = "x".join(map(str, row["shape"])) or "scalar"
        tensors.add_row(row["name"], shape, row["dtype"], f"{row['parameters']:,}", f"{row['bytes']:,}")
    if len(info["tensors"]) > max_rows:
        tensors.add_row(f"... {len(info['tensors']) - max_rows} more (--json lists all)", "", "", "", "")
    console.print(tensors)

    sizes = Table(title="sizes")
    for column in ("part", "tensors", "parameters", "bytes"):
        sizes.add_column(column, justify="left" if column == "part" else "right")
    for part, size in info["sizes"].items():
        sizes.add_row(part, str(size["tensors"]), f"{size['parameters']:,}", _bytes(size["bytes"]))
    sizes.add_row("header", "", "", _bytes(info["header_bytes"]))
    sizes.add_row("file", str(len(info["tensors"])), "", _bytes(info["file_bytes"]))
    console.print(sizes)

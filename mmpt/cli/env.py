"""`mmpt env`: versions, devices and cache folders, for bug reports and set-up checks."""

from __future__ import annotations

import json

import typer


def environment_report() -> dict[str, object]:
    """What `mmpt env` shows: package versions, devices, threads and where mmpt caches files."""
    import os

    import torch

    from mmpt.backbone import BACKBONES
    from mmpt.download import cache_dir
    from mmpt.train.tracking import environment

    devices = [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())]
    cached = (
        sorted(p.name for p in (cache_dir() / "checkpoints").glob("*"))
        if (cache_dir() / "checkpoints").is_dir()
        else []
    )
    return {
        **environment(),
        "cuda_devices": devices or ["none"],
        "torch_threads": torch.get_num_threads(),
        "bf16_on_cpu": "slow without AMX/AVX512-BF16: keep train.mixed_precision=no on CPU",
        "cache_dir": str(cache_dir()),
        "cache_dir_from": "MMPT_CACHE" if os.environ.get("MMPT_CACHE") else "torch hub dir",
        "cached_checkpoints": cached,
        "registered_backbones": BACKBONES.names(),
    }


def env(as_json: bool = typer.Option(False, "--json", help="print JSON")) -> None:
    """Show versions, devices, threads, cache folders and registered backbones.

    Example:

        mmpt env --json
    """
    report = environment_report()
    if as_json:
        typer.echo(json.dumps(report, indent=2))
        return
    from rich.console import Console
    from rich.table import Table

    table = Table(title="mmpt environment", show_header=False)
    table.add_column(style="bold", no_wrap=True)
    table.add_column(overflow="fold")
    for key, value in report.items():
        table.add_row(key, ", ".join(map(str, value)) if isinstance(value, list) else str(value))
    Console().print(table)

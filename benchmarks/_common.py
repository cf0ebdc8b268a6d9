"""Shared helpers for benchmark scripts: machine description and robust timing."""

from __future__ import annotations

import platform
import statistics
import subprocess
from collections.abc import Callable

import torch

from mmpt.bench.measure import interleaved_seconds


def machine_description() -> dict[str, str]:
    """CPU model, threads, library versions: what a reader needs to compare numbers."""
    try:
        lscpu = subprocess.run(["lscpu"], capture_output=True, text=True, check=False).stdout
        cpu = next((ln.split(":", 1)[1].strip() for ln in lscpu.splitlines() if ln.startswith("Model name")), "?")
    except OSError:
        cpu = platform.processor() or "?"
    import timm

    return {
        "cpu": cpu,
        "torch_threads": str(torch.get_num_threads()),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "timm": timm.__version__,
        "cuda": torch.cuda.get_device_name(0) if torch.cuda.is_available() else "none",
    }


def interleaved(configs: dict[str, Callable[[], object]], rounds: int, warmup: int = 1) -> dict[str, list[float]]:
    """Times every config once per round, round after round, so machine noise hits all of them alike."""
    return interleaved_seconds(configs, rounds, warmup=warmup)


def median_ratio(a: list[float], b: list[float]) -> float:
    """Median of per-round ratios a/b (robust to rounds where the machine was busy)."""
    return statistics.median(x / y for x, y in zip(a, b, strict=True))

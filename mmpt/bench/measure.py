"""What a bench row measures besides the metrics: peak memory around training, inference latency and overhead."""

from __future__ import annotations

import platform
import statistics
import time
from collections.abc import Callable
from pathlib import Path

import torch

_CLEAR_REFS = Path("/proc/self/clear_refs")
_STATUS = Path("/proc/self/status")


def machine() -> dict[str, str]:
    """What the numbers ran on: CPU model and threads, GPU, library versions."""
    from mmpt.train.tracking import environment

    info = Path("/proc/cpuinfo")
    lines = info.read_text().splitlines() if info.is_file() else []
    cpu = next(
        (ln.split(":", 1)[1].strip() for ln in lines if ln.startswith("model name")), platform.processor() or "?"
    )
    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "none"
    return {"cpu": cpu, "cpu_threads": str(torch.get_num_threads()), "gpu": gpu, **environment()}


def reset_peak_memory() -> str | None:
    """Starts a peak-memory window; returns its kind ("cuda_max_allocated", "cpu_peak_rss") or None if unavailable.

    On CPU this resets the process's peak resident set (Linux: writing 5 to /proc/self/clear_refs), so the
    window's peak includes the Python process itself (about 0.5 GB with torch loaded).
    """
    if torch.cuda.is_available():
        torch.cuda.reset_peak_memory_stats()
        return "cuda_max_allocated"
    try:
        _CLEAR_REFS.write_text("5")
    except OSError:
        return None
    return "cpu_peak_rss"


def peak_memory(kind: str | None) -> int | None:
    """Peak bytes since `reset_peak_memory()` returned `kind`."""
    if kind == "cuda_max_allocated":
        return int(torch.cuda.max_memory_allocated())
    if kind == "cpu_peak_rss":
        for line in _STATUS.read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024  # kB
    return None


def interleaved_seconds(calls: dict[str, Callable[[], object]], rounds: int, warmup: int = 2) -> dict[str, list]:
    """Wall times of each call, one of each per round, round after round, so machine noise hits all alike."""
    sync = torch.cuda.synchronize if torch.cuda.is_available() else (lambda: None)
    for fn in calls.values():
        for _ in range(warmup):
            fn()
    times: dict[str, list[float]] = {name: [] for name in calls}
    for _ in range(rounds):
        for name, fn in calls.items():
            sync()
            start = time.perf_counter()
            fn()
            sync()
            times[name].append(time.perf_counter() - start)
    return times


def inference_latency(artifact: Path, *, backbone: str, num_heads: int | None, batch_size: int, rounds: int) -> dict:
    """Latency of the tuned task (backbone → tuner → head) and the tuner's overhead over the frozen backbone.

    All run on the same random input of the artifact's domains and size, interleaved round by round; `overhead`
    is the median per-round ratio of the tuned backbone (tuner applied, without the head) to the bare frozen
    backbone, minus 1: what the tuner costs at inference.

    Returns:
        `latency_ms` (end to end), `backbone_latency_ms` (frozen backbone), `overhead` (ratio - 1), `batch_size`.
    """
    from mmpt.backbone import load_backbone
    from mmpt.train.inference import load_tuned

    device = "cuda" if torch.cuda.is_available() else "cpu"
    tuned = load_tuned(artifact, backbone=backbone, num_heads=num_heads, device=device)
    meta = tuned.metadata
    frozen = load_backbone(
        backbone, domains=meta["domains"], image_size=tuple(meta["image_size"]), num_heads=num_heads
    ).to(device)
    frozen.eval()
    inputs = _random_inputs(frozen, meta["domains"], tuple(meta["image_size"]), batch_size, device)
    model = tuned.model
    with torch.inference_mode():
        # The head's output can evict the backbone from the CPU caches: time it apart from the overhead pair.
        times = interleaved_seconds(
            {"tuned": lambda: model.tuner(inputs, layers=model.head.layers), "frozen": lambda: frozen(inputs)}, rounds
        )
        times |= interleaved_seconds({"end_to_end": lambda: model(inputs)}, rounds)
    ratios = [t / f for t, f in zip(times["tuned"], times["frozen"], strict=True)]
    return {
        "latency_ms": round(statistics.median(times["end_to_end"]) * 1e3, 3),
        "backbone_latency_ms": round(statistics.median(times["frozen"]) * 1e3, 3),
        "overhead": round(statistics.median(ratios) - 1, 4),
        "batch_size": batch_size,
    }


def _random_inputs(backbone, domains: list[str], size: tuple[int, int], batch: int, device: str) -> dict:
    generator = torch.Generator().manual_seed(0)
    inputs = {}
    for domain in domains:
        spec = backbone.config.domains[domain]
        if spec.kind == "semseg":
            shape = (batch, size[0] // 4, size[1] // 4)
            inputs[domain] = torch.randint(0, spec.num_classes, shape, generator=generator).to(device)
        else:
            inputs[domain] = torch.randn(batch, spec.channels, *size, generator=generator).to(device)
    return inputs

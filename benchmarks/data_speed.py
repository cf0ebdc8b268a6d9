"""NYUv2 loader throughput (samples/s) with the training transforms, for DataLoader num_workers 0 and 2.

    python benchmarks/data_speed.py [--samples 48] [--size 256] [--epochs 3]

Decodes rgb + depth + semseg PNGs, applies `train_transform(size)` (random rescale 0.5–2×, crop, flip,
colour jitter) and normalises. Data: a synthetic set from `mmpt.data.synthetic` at 480×480 (or, without
it, random 480×640 content written with `layout.write_sample`), plus the real 640×480 subset in
../shared when present. Writes benchmarks/results/data_speed.{md,json}.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import DataLoader

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # `python benchmarks/data_speed.py` from anywhere

from benchmarks._common import machine_description
from mmpt.data.layout import write_sample
from mmpt.data.nyuv2 import NYUv2
from mmpt.data.transforms import train_transform

RESULTS = Path(__file__).parent / "results"
REAL = Path(__file__).resolve().parents[2] / "shared" / "data" / "nyuv2_real_subset" / "NYUv2"


def write_dataset(root: Path, samples: int) -> str:
    """Writes `samples` train samples into `root`; returns a description of the content."""
    try:
        from mmpt.data.synthetic import write_synthetic_nyuv2
    except ImportError:
        rng = np.random.default_rng(0)
        for index in range(samples):
            write_sample(
                root,
                "train",
                index,
                rgb=rng.integers(0, 256, (480, 640, 3), dtype=np.uint8),
                depth_m=rng.uniform(0.5, 9.5, (480, 640)).astype(np.float32),
                labels40=rng.integers(0, 41, (480, 640)),
            )
        return "random content 480×640 (layout.write_sample)"
    write_synthetic_nyuv2(root, train=samples, test=0, size=480, seed=0, progress=False)
    return "synthetic scenes 480×480 (mmpt.data.synthetic)"


def samples_per_second(dataset: NYUv2, *, workers: int, batch: int, epochs: int) -> float:
    """Steady-state throughput: one warm-up epoch (worker start-up, file cache), then `epochs` timed epochs."""
    torch.manual_seed(0)
    loader = DataLoader(dataset, batch_size=batch, shuffle=True, num_workers=workers, persistent_workers=workers > 0)
    for _ in loader:
        pass
    start = time.perf_counter()
    for _ in range(epochs):
        for _ in loader:
            pass
    return epochs * len(dataset) / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--samples", type=int, default=48, help="synthetic samples to write")
    parser.add_argument("--size", type=int, default=256, help="training crop size")
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--epochs", type=int, default=3, help="timed epochs per configuration")
    args = parser.parse_args()
    command = (
        f"python benchmarks/data_speed.py --samples {args.samples} --size {args.size} "
        f"--batch {args.batch} --epochs {args.epochs}"
    )
    print(command)
    rows = []
    default_threads = torch.get_num_threads()
    load_before = os.getloadavg()[0]
    with tempfile.TemporaryDirectory() as tmp:
        sets = {write_dataset(Path(tmp), args.samples): NYUv2(tmp, "train", transform=train_transform(args.size))}
        if REAL.is_dir():
            sets["real NYUv2 subset 640×480 (test split, 8 frames)"] = NYUv2(
                REAL, "test", transform=train_transform(args.size)
            )
        for name, dataset in sets.items():
            epochs = args.epochs * max(1, args.samples // len(dataset))  # time about the same number of samples
            for workers, threads in ((0, default_threads), (0, 1), (2, default_threads)):
                torch.set_num_threads(threads)  # workers always run 1 torch thread; this is the main process
                rate = samples_per_second(dataset, workers=workers, batch=args.batch, epochs=epochs)
                rows.append(
                    {"data": name, "num_workers": workers, "torch_threads": threads, "samples_per_s": round(rate, 1)}
                )
                print(f"{name}: num_workers={workers}, main-process torch threads={threads}: {rate:.1f} samples/s")
            torch.set_num_threads(default_threads)
    machine = machine_description()
    machine["cpu_cores"] = str(len(os.sched_getaffinity(0)))
    machine["load_average_1min"] = f"{load_before:.1f} before, {os.getloadavg()[0]:.1f} after"
    lines = [
        "# NYUv2 loader speed",
        "",
        f"Command: `{command}`",
        "",
        f"`NYUv2(domains=rgb,depth,semseg, transform=train_transform({args.size}))` → DataLoader(batch {args.batch},"
        " shuffle); steady state after one warm-up epoch. Samples/s = decoded, augmented, normalised samples.",
        "",
        "| data | num_workers | main-process torch threads | samples/s |",
        "|---|---|---|---|",
        *[f"| {r['data']} | {r['num_workers']} | {r['torch_threads']} | {r['samples_per_s']:.1f} |" for r in rows],
        "",
        "Machine: " + ", ".join(f"{k} {v}" for k, v in machine.items()),
        "",
    ]
    if max(load_before, os.getloadavg()[0]) > len(os.sched_getaffinity(0)):
        lines[-1:-1] = [
            "",
            "Note: the machine was busy (1-min load average above its core count), so the figures are noisy.",
            "A main process running several torch threads suffers most: its OpenMP threads stall whenever a core",
            "is taken by other work (on a shared 2-vCPU machine even small ops such as the hue jitter went from",
            "9 ms to 1 s with 2 threads). DataLoader workers always run one torch thread each.",
        ]
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "data_speed.md").write_text("\n".join(lines))
    payload = {"command": command, "machine": machine, "rows": rows}
    (RESULTS / "data_speed.json").write_text(json.dumps(payload, indent=1) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()

"""Is data loading the bottleneck? Loader vs training throughput of the default depth recipe, on CPU.

    python -m benchmarks.loader_vs_train [--steps 3] [--batches 20]

Uses `nyuv2/depth/deep_prompt` as shipped (ViT-B, 256 px, 50 prompts, batch 32, its num_workers), with the
backbone replaced by the same architecture with random weights (compute does not depend on the values) and
the data root by the real NYUv2 frames in ../shared (480x640, rgb + depth). Both are measured alone: the
loader's samples/s (augmentation, decoding, collation) and the training step's images/s. Target: ≥ 3x.
Writes benchmarks/results/loader_vs_train.{md,json}.
"""

from __future__ import annotations

import argparse
import itertools
import json
import tempfile
import time
from pathlib import Path

import torch
from accelerate import Accelerator

from benchmarks._common import machine_description
from mmpt.backbone import MultiViT, MultiViTConfig, save_safetensors
from mmpt.config.load import load_config
from mmpt.train import build
from mmpt.train.optim import build_optimizer, param_groups

RESULTS = Path(__file__).parent / "results"
REAL = Path(__file__).resolve().parents[2] / "shared" / "data" / "nyuv2_real_subset" / "NYUv2"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=3, help="timed training steps (after one warm-up)")
    parser.add_argument("--batches", type=int, default=20, help="timed loader batches (after one warm-up)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        backbone = save_safetensors(
            MultiViT(MultiViTConfig(domains={"rgb": MultiViTConfig().domains["rgb"]})),
            Path(tmp) / "vit-b-random.safetensors",
        )
        cfg = load_config("nyuv2/depth/deep_prompt", [f"backbone={backbone}", f"data.root={REAL}"])
        accelerator = Accelerator(cpu=True)
        run = build.build_run(cfg)
        loader = iter(build.train_loader(cfg, run, accelerator, start=0))
        next(loader)  # warm-up: workers start
        start = time.perf_counter()
        batches = list(itertools.islice(loader, args.batches))
        loader_rate = args.batches * cfg.data.batch_size / (time.perf_counter() - start)

        params = list(run.tuner.trainable_parameters()) + list(run.head.named_parameters())
        optimizer = build_optimizer(
            param_groups(params, lr=1e-3, weight_decay=0.0, group="all"), cfg.train, torch.device("cpu")
        )
        run.model.train()
        times = []
        for step in range(args.steps + 1):
            batch = batches[step % len(batches)]
            t0 = time.perf_counter()
            run.loss_fn(run.model(batch), batch).backward()
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
            times.append(time.perf_counter() - t0)
        train_rate = cfg.data.batch_size / (sum(times[1:]) / args.steps)
    ratio = loader_rate / train_rate
    machine = machine_description()
    lines = [
        "# Data loading vs training throughput (default depth recipe, CPU)",
        "",
        f"Command: `python -m benchmarks.loader_vs_train --steps {args.steps} --batches {args.batches}`. Recipe "
        f"`nyuv2/depth/deep_prompt` (ViT-B random weights, {cfg.data.image_size} px, {cfg.tuner['num_tokens']} "
        f"prompts, batch {cfg.data.batch_size}, num_workers {cfg.data.num_workers}, training augmentation) on the "
        "real 480x640 NYUv2 frames in ../shared, each measured alone.",
        "",
        "| loader samples/s | training images/s | loader ÷ training | target |",
        "|---|---|---|---|",
        f"| {loader_rate:.1f} | {train_rate:.2f} | {ratio:.1f}x | ≥ 3x |",
        "",
        "Machine: " + ", ".join(f"{k} {v}" for k, v in machine.items()),
        "",
    ]
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "loader_vs_train.md").write_text("\n".join(lines))
    (RESULTS / "loader_vs_train.json").write_text(
        json.dumps(
            {"machine": machine, "loader_samples_per_s": loader_rate, "train_images_per_s": train_rate, "ratio": ratio},
            indent=1,
        )
    )
    print("\n".join(lines))


if __name__ == "__main__":
    main()

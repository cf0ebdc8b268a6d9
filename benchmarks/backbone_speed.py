"""MultiViT (ViT-B) vs timm `vit_base_patch16_224` at the same token count: forward and forward+backward.

    python -m benchmarks.backbone_speed [--rounds 7] [--threads 1]

Ours must be no slower (median per-round ratio ≤ 1.05). Writes benchmarks/results/backbone_speed.{md,json}.
"""

from __future__ import annotations

import argparse
import json
import statistics
from pathlib import Path

import timm
import torch

from benchmarks._common import interleaved, machine_description, median_ratio
from mmpt.backbone import MultiViT, MultiViTConfig

RESULTS = Path(__file__).parent / "results"


def _step(model, inputs, backward: bool):
    def run():
        if backward:
            model.zero_grad(set_to_none=True)
            model(inputs).mean().backward()
        else:
            with torch.no_grad():
                model(inputs)

    return run


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--batch", type=int, default=2)
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's choice)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    b = args.batch
    ours = MultiViT(MultiViTConfig())  # ViT-B: dim 768, depth 12, 12 heads, rgb+depth+semseg adapters
    sets = {
        # name: (our inputs, timm image size giving the same token count incl. the cls/global token)
        "rgb224 (197 tokens)": ({"rgb": torch.randn(b, 3, 224, 224)}, (224, 224)),
        "rgb+depth256 (513 tokens)": (
            {"rgb": torch.randn(b, 3, 256, 256), "depth": torch.randn(b, 1, 256, 256)},
            (256, 512),
        ),
    }
    rows, raw = [], {}
    for name, (inputs, timm_size) in sets.items():
        theirs = timm.create_model("vit_base_patch16_224", img_size=timm_size, num_classes=0, global_pool="")
        timm_x = torch.randn(b, 3, *timm_size)
        configs = {
            "ours fwd": _step(ours, inputs, False),
            "timm fwd": _step(theirs, timm_x, False),
            "ours fwd+bwd": _step(ours, inputs, True),
            "timm fwd+bwd": _step(theirs, timm_x, True),
        }
        times = interleaved(configs, rounds=args.rounds)
        raw[name] = times
        for kind in ("fwd", "fwd+bwd"):
            a, t = times[f"ours {kind}"], times[f"timm {kind}"]
            rows.append((name, kind, statistics.median(a) * 1e3, statistics.median(t) * 1e3, median_ratio(a, t)))
    machine = machine_description()
    lines = [
        "# Backbone speed: MultiViT vs timm ViT-B at equal token count",
        "",
        f"Command: `python -m benchmarks.backbone_speed --rounds {args.rounds}"
        + (f" --threads {args.threads}" if args.threads else "")
        + f"` (batch {b}, fp32, CPU, SDPA).",
        "Median of per-round ratios over interleaved rounds (1 warm-up). Target: ratio ≤ 1.05.",
        "",
        "| input | pass | ours ms | timm ms | ours ÷ timm |",
        "|---|---|---|---|---|",
        *[f"| {n} | {k} | {a:.0f} | {t:.0f} | {r:.3f} |" for n, k, a, t, r in rows],
        "",
        "Machine: " + ", ".join(f"{k} {v}" for k, v in machine.items()),
        "",
    ]
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "backbone_speed.md").write_text("\n".join(lines))
    (RESULTS / "backbone_speed.json").write_text(json.dumps({"machine": machine, "rows": rows, "raw_s": raw}, indent=1))
    print("\n".join(lines))


if __name__ == "__main__":
    main()

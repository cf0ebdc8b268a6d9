"""Speed of the prompt tuners on a ViT-B MultiViT: steps against the frozen fwd+bwd floor, and pool queries.

    python benchmarks/tuner_speed_prompts.py                  # ~5-8 min on 2 CPU cores
    python benchmarks/tuner_speed_prompts.py --rounds 3       # quicker, noisier
    python benchmarks/tuner_speed_prompts.py --threads 1      # on a busy machine: CPU-time ratios stay clean

ViT-B with random weights (`MultiViT(MultiViTConfig())`), rgb 224 (196 + 1 tokens), batch 2, fp32. A step is
`zero_grad(set_to_none) → forward → CE on Linear(768, 40)(global token) (+ extra_loss) → backward →
AdamW.step`, as in reference/performance.md. Every config runs once per round, in a rotated order
(interleaved), after a FLOP-counting run and a warm-up run (which also measures saved bytes). Ratios are
medians of per-round ratios against the frozen fwd+bwd floor (a trainable 768-vector added to every input
token) for steps and against the frozen forward for inference. GFLOP per step is counted once with the math
SDPA kernel (CPU flash attention has no flop formula); "saved" is the distinct bytes autograd keeps for
backward (parameters excluded).

The query section embeds the real NYUv2 frames of `--images` and measures how well each prompt-pool query
separates them: mean pairwise cosine, and with L2P's uniform(±1) keys (M=10, k=5, 20 key draws) the number
of distinct top-5 sets and the normalised usage entropy. Random weights: treat those numbers as a check of
the mechanism, and re-run them with a real checkpoint (`--checkpoint`).
"""

from __future__ import annotations

import argparse
import datetime
import math
import os
import platform
import statistics
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import timm
import torch
import torch.nn.functional as F
from PIL import Image
from torch import Tensor, nn
from torch.nn.attention import SDPBackend, sdpa_kernel
from torch.utils.flop_counter import FlopCounterMode

import mmpt.tuners
from mmpt import load_backbone
from mmpt.backbone.multivit import MultiViT, MultiViTConfig

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_IMAGES = ROOT.parent / "shared" / "data" / "nyuv2_real_subset" / "NYUv2"
IMAGENET_MEAN, IMAGENET_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)


class Floor(nn.Module):
    """The cheapest thing that needs a backward through every block: one vector added to all input tokens."""

    def __init__(self, backbone: MultiViT) -> None:
        super().__init__()
        self.backbone = backbone
        self.shift = nn.Parameter(torch.zeros(backbone.dim))

    def forward(self, inputs: dict[str, Tensor]) -> list[Tensor]:
        return [self.backbone.forward_blocks(self.backbone.embed(inputs) + self.shift)]


class NaiveDeepPrompt(nn.Module):
    """VPT-deep as the paper's code does it (concat before each block, strip after): the reference cost."""

    def __init__(self, backbone: MultiViT, num_tokens: int) -> None:
        super().__init__()
        self.backbone = backbone
        self.prompts = nn.Parameter(torch.empty(backbone.depth, num_tokens, backbone.dim).uniform_(-0.06, 0.06))
        self._n = 0

    def before_block(self, index: int, x: Tensor) -> Tensor:
        self._n = x.shape[1]
        return torch.cat([x, self.prompts[index].expand(x.shape[0], -1, -1)], dim=1)  # (B, N + P, D)

    def after_block(self, index: int, x: Tensor) -> Tensor:
        return x[:, : self._n]

    def forward(self, inputs: dict[str, Tensor]) -> list[Tensor]:
        return [self.backbone(inputs)]


@dataclass
class Config:
    name: str
    what: str
    kind: str  # "step" or "infer"
    model: nn.Module | None  # tuner-like: model(inputs) -> [tokens]; None = the bare frozen backbone
    hooks: list = field(default_factory=list)  # the backbone's token hooks while this config runs
    times: list[float] = field(default_factory=list)  # wall-clock seconds per visit
    cpu: list[float] = field(default_factory=list)  # process CPU seconds per visit
    gflop: float = math.nan
    saved_mib: float = math.nan
    run: Callable[[], None] | None = None
    forward: Callable[[], Tensor] | None = None


def tuner_params(model: nn.Module | None) -> list[nn.Parameter]:
    if model is None:
        return []
    if hasattr(model, "trainable_parameters"):
        return [p for _, p in model.trainable_parameters()]
    return [p for n, p in model.named_parameters() if not n.startswith("backbone.")]


def build_configs(backbone: MultiViT) -> list[Config]:
    def tuner(name: str, **config) -> nn.Module:
        torch.manual_seed(0)
        t = mmpt.tuners.build(name, **config)
        t.apply(backbone)
        backbone.token_hooks[:] = []  # one backbone for all configs: each run installs its own hooks
        return t

    vpt10, vpt50 = tuner("deep_prompt", num_tokens=10), tuner("deep_prompt", num_tokens=50)
    gated10 = tuner("deep_prompt", num_tokens=10, gated=True)
    with torch.no_grad():
        gated10.gates.fill_(0.5)  # half open: the same work as after training starts
    pool_embed = tuner("prompt_pool", pool_size=10, length=5, top_k=5, query="embed_mean")
    pool_global = tuner("prompt_pool", pool_size=10, length=5, top_k=5, query="frozen_global")
    pool_deep = tuner("prompt_pool", pool_size=10, length=5, top_k=2, insert="deep")
    naive10, floor = NaiveDeepPrompt(backbone, 10), Floor(backbone)
    return [
        Config("infer_frozen", "frozen backbone, no_grad", "infer", None),
        Config("infer_vpt10", "deep_prompt p=10, no_grad", "infer", vpt10, [vpt10]),
        Config(
            "infer_pool_embed", "prompt_pool M10 L5 k5 shallow, embed_mean query", "infer", pool_embed, [pool_embed]
        ),
        Config(
            "infer_pool_global",
            "prompt_pool M10 L5 k5 shallow, frozen_global query",
            "infer",
            pool_global,
            [pool_global],
        ),
        Config("floor", "frozen fwd+bwd floor (768-vector on all tokens)", "step", floor),
        Config("vpt10", "deep_prompt p=10, all 12 blocks (prompt K/V)", "step", vpt10, [vpt10]),
        Config("vpt50", "deep_prompt p=50, all 12 blocks (prompt K/V)", "step", vpt50, [vpt50]),
        Config("vpt10_gated", "deep_prompt p=10, gated (explicit LSE for the gate)", "step", gated10, [gated10]),
        Config("vpt10_naive", "VPT-deep p=10 concat-then-strip (reference)", "step", naive10, [naive10]),
        Config("pool_embed", "prompt_pool M10 L5 k5 shallow, embed_mean query", "step", pool_embed, [pool_embed]),
        Config("pool_global", "prompt_pool M10 L5 k5 shallow, frozen_global query", "step", pool_global, [pool_global]),
        Config("pool_deep_embed", "prompt_pool M10 L5 k2 deep (K/V), embed_mean query", "step", pool_deep, [pool_deep]),
    ]


def make_runner(config: Config, backbone: MultiViT, inputs: dict[str, Tensor], labels: Tensor) -> None:
    def forward() -> Tensor:
        backbone.token_hooks[:] = config.hooks
        return (config.model(inputs)[0] if config.model is not None else backbone(inputs))[:, -1]  # (B, D)

    if config.kind == "infer":

        def run() -> None:
            with torch.no_grad():
                forward()

    else:
        torch.manual_seed(0)
        head = nn.Linear(backbone.dim, 40)
        optimizer = torch.optim.AdamW([*tuner_params(config.model), *head.parameters()], lr=1e-3)

        def run() -> None:
            optimizer.zero_grad(set_to_none=True)
            loss = F.cross_entropy(head(forward()), labels)
            extra = getattr(config.model, "extra_loss", lambda: None)()
            (loss if extra is None else loss + extra).backward()
            optimizer.step()

    config.run, config.forward = run, forward


def saved_bytes(run: Callable[[], None], params: list[Tensor]) -> int:
    """Distinct bytes autograd saves for backward during `run`, excluding parameters (and views of them)."""
    param_storages = {p.untyped_storage().data_ptr() for p in params}
    storages: dict[int, int] = {}

    def pack(t: Tensor) -> Tensor:
        storage = t.untyped_storage()
        if storage.data_ptr() not in param_storages:
            storages[storage.data_ptr()] = storage.nbytes()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        run()
    return sum(storages.values())


def measure(configs: list[Config], rounds: int, params: list[Tensor]) -> None:
    for config in configs:
        # Math SDPA so attention is counted. Inference is counted with grad mode on (same forward FLOPs):
        # FlopCounterMode's module tracker fails on no_grad views of parameters (which keep requires_grad).
        with sdpa_kernel(SDPBackend.MATH), FlopCounterMode(display=False) as counter:
            config.run() if config.kind == "step" else config.forward()
        config.gflop = counter.get_total_flops() / 1e9
        if config.kind == "step":  # also the warm-up run with the default kernels
            config.saved_mib = saved_bytes(config.run, params + tuner_params(config.model)) / 2**20
        else:
            config.run()
    for r in range(rounds):
        start = r % len(configs)
        for config in configs[start:] + configs[:start]:
            t0, c0 = time.perf_counter(), time.process_time()
            config.run()
            config.times.append(time.perf_counter() - t0)
            config.cpu.append(time.process_time() - c0)
        print(
            f"round {r + 1}/{rounds} (wall ms): " + ", ".join(f"{c.name} {1e3 * c.times[-1]:.0f}" for c in configs),
            flush=True,
        )


def ratio(config: Config, reference: Config, clock: str = "wall") -> float:
    """Median of per-round ratios, on wall-clock or process CPU time."""
    ours, theirs = (config.times, reference.times) if clock == "wall" else (config.cpu, reference.cpu)
    return statistics.median(a / b for a, b in zip(ours, theirs, strict=True))


def both(config: Config, reference: Config) -> str:
    return f"{ratio(config, reference):.3f} / {ratio(config, reference, 'cpu'):.3f}"


# ---- query separation on real frames -------------------------------------------------------------
def load_frames(directory: Path, size: int = 224) -> Tensor | None:
    files = sorted(directory.glob("*/rgb/data/*.png"))
    if not files:
        return None
    frames = []
    for file in files:
        image = Image.open(file).convert("RGB")
        scale = size / min(image.size)
        image = image.resize((round(image.width * scale), round(image.height * scale)), Image.BILINEAR)
        left, top = (image.width - size) // 2, (image.height - size) // 2
        array = np.array(image.crop((left, top, left + size, top + size)), dtype=np.float32) / 255
        frames.append(
            (torch.from_numpy(array).permute(2, 0, 1) - torch.tensor(IMAGENET_MEAN)[:, None, None])
            / torch.tensor(IMAGENET_STD)[:, None, None]
        )
    return torch.stack(frames)  # (F, 3, 224, 224)


def separation(queries: Tensor, pool_size: int = 10, top_k: int = 5, draws: int = 20) -> dict[str, float]:
    q = F.normalize(queries, dim=-1)
    cos = q @ q.T
    off = cos[~torch.eye(len(q), dtype=torch.bool)]
    distinct, entropy = [], []
    for seed in range(draws):
        keys = torch.rand(pool_size, q.shape[1], generator=torch.Generator().manual_seed(seed)) * 2 - 1
        index = (q @ F.normalize(keys, dim=-1).T).topk(top_k, dim=1).indices  # (F, k)
        distinct.append(len({tuple(sorted(row.tolist())) for row in index}))
        freq = torch.bincount(index.flatten(), minlength=pool_size).double() / index.numel()
        freq = freq[freq > 0]
        entropy.append(float(-(freq * freq.log()).sum() / math.log(pool_size)))
    return {
        "cos_mean": off.mean().item(),
        "cos_max": off.max().item(),
        "distinct": statistics.mean(distinct),
        "entropy": statistics.mean(entropy),
    }


def query_section(backbone: MultiViT, frames: Tensor) -> list[tuple[str, dict[str, float]]]:
    backbone.token_hooks[:] = []
    rows = []
    with torch.no_grad():
        tokens = backbone.embed({"rgb": frames})
        rows.append(("embed_mean without centering (diagnostic)", separation(tokens[:, :-1].mean(dim=1))))
        for query in ("embed_mean", "frozen_global"):
            pool = mmpt.tuners.build("prompt_pool", query=query)
            pool.apply(backbone)
            backbone.token_hooks[:] = []
            rows.append((query, separation(torch.cat([pool.query({"rgb": f}) for f in frames.split(2)]))))
    return rows


# ---- report --------------------------------------------------------------------------------------
def machine() -> str:
    try:
        lscpu = subprocess.run(["lscpu"], capture_output=True, text=True, check=False).stdout
        model = next((line.split(":", 1)[1].strip() for line in lscpu.splitlines() if "Model name" in line), "?")
    except OSError:
        model = platform.processor() or "?"
    return (
        f"{model}; {os.cpu_count()} logical CPUs, torch threads {torch.get_num_threads()}; "
        f"torch {torch.__version__}, timm {timm.__version__}, Python {platform.python_version()}"
    )


def report(
    configs: list[Config], queries: list, weights: str, rounds: int, seconds: float, loads: tuple, command: str
) -> str:
    by = {c.name: c for c in configs}
    floor, frozen, vpt10 = by["floor"], by["infer_frozen"], by["vpt10"]
    lines = [
        "# Prompt tuners: step and inference cost (ViT-B, rgb 224, batch 2, fp32)",
        "",
        f"Command: `{command}` ({rounds} interleaved rounds, {seconds / 60:.1f} min, {datetime.date.today()}).",
        f"Machine: {machine()}. Load average before / after: {loads[0]} / {loads[1]} (a shared machine: "
        "absolute ms drift with the neighbours' load; the per-round ratios are what to compare).",
        "",
        "| config | what | wall ms median (min-max) | ÷ floor, wall / cpu | ÷ frozen infer, wall / cpu | "
        "GFLOP (÷ floor) | saved MiB | params |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for c in configs:
        ms = [1e3 * t for t in c.times]
        vs_floor = both(c, floor) if c.kind == "step" else "–"
        vs_frozen = both(c, frozen)
        reference = floor if c.kind == "step" else frozen
        gflop = f"{c.gflop:.1f} ({c.gflop / reference.gflop:.3f})"
        saved = f"{c.saved_mib:.0f}" if c.kind == "step" else "–"
        params = sum(p.numel() for p in tuner_params(c.model))
        lines.append(
            f"| {c.name} | {c.what} | {statistics.median(ms):.0f} ({min(ms):.0f}-{max(ms):.0f}) | "
            f"{vs_floor} | {vs_frozen} | {gflop} | {saved} | {params:,} |"
        )
    lines += [
        "",
        "Ratios are medians of per-round ratios, on wall-clock time and on process CPU time. With one thread, CPU "
        "time is the robust one on a loaded machine (a descheduled process does not accrue it); with more threads, "
        "spin-waiting inflates it under load, so read wall time. GFLOP ratios are against the floor for steps "
        "and against the frozen forward for inference.",
        "",
        "## Against the targets (reference/performance.md §7)",
        "",
        "Wall / CPU-time ratios:",
        "",
        f"- deep_prompt p=10 step ÷ floor: **{both(vpt10, floor)}** (target ≤ 1.15; anchor 1.02-1.09).",
        f"- deep_prompt p=50 step ÷ floor: **{both(by['vpt50'], floor)}** (target ≤ 1.05 × the FLOP ratio of naive "
        f"VPT, 1.27; this implementation's own FLOP ratio is {by['vpt50'].gflop / floor.gflop:.3f}).",
        f"- prompt K/V vs naive concat-then-strip, p=10: step {both(vpt10, by['vpt10_naive'])}, "
        f"GFLOP {vpt10.gflop / by['vpt10_naive'].gflop:.3f}.",
        f"- gated p=10 step ÷ ungated p=10: {both(by['vpt10_gated'], vpt10)}.",
        f"- prompt_pool (embed_mean: a free query, like a cached one) step ÷ deep_prompt p=10: "
        f"**{both(by['pool_embed'], vpt10)}** (target ≤ 1.10).",
        f"- prompt_pool frozen_global step ÷ embed_mean step: {both(by['pool_global'], by['pool_embed'])}.",
        f"- prompt_pool inference ÷ frozen: embed_mean **{both(by['infer_pool_embed'], frozen)}** (target ≤ 1.2 "
        f"with a cached/free query), frozen_global **{both(by['infer_pool_global'], frozen)}** (target ≤ 2.3).",
        f"- deep_prompt p=10 inference ÷ frozen: {both(by['infer_vpt10'], frozen)} (anchor 1.07 for naive VPT).",
        "",
        "## Do the pool queries separate samples?",
        "",
    ]
    if not queries:
        lines.append("Skipped: no frames found (pass `--images` pointing at an NYUv2 tree with */rgb/data/*.png).")
    else:
        lines += [
            f"{queries[0][1]['frames']} real NYUv2 frames (rgb, 224 center crop), {weights}. With L2P's "
            "uniform(±1) keys, M=10, k=5, averaged over 20 key draws.",
            "",
            "| query | mean pairwise cos | max cos | distinct top-5 sets | usage entropy |",
            "|---|---|---|---|---|",
        ]
        for name, s in queries:
            lines.append(
                f"| {name} | {s['cos_mean']:.3f} | {s['cos_max']:.3f} | {s['distinct']:.1f} / "
                f"{s['frames']} | {s['entropy']:.3f} |"
            )
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--threads", type=int, default=None, help="torch intra-op threads (default: torch's)")
    parser.add_argument("--images", type=Path, default=DEFAULT_IMAGES)
    parser.add_argument("--checkpoint", default=None, help="a real MultiMAE checkpoint for the query section")
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "tuner_speed_prompts.md")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    started, load_before = time.perf_counter(), os.getloadavg()[0]
    torch.manual_seed(0)
    backbone = MultiViT(MultiViTConfig()).freeze().eval()
    gen = torch.Generator().manual_seed(0)
    inputs = {"rgb": torch.randn(2, 3, 224, 224, generator=gen)}
    labels = torch.randint(0, 40, (2,), generator=gen)
    configs = build_configs(backbone)
    for config in configs:
        make_runner(config, backbone, inputs, labels)
    measure(configs, args.rounds, list(backbone.parameters()))
    queries = []
    frames = load_frames(args.images)
    if frames is not None:
        query_backbone = load_backbone(args.checkpoint, domains=["rgb"]) if args.checkpoint else backbone
        queries = query_section(query_backbone, frames)
        for _, stats in queries:
            stats["frames"] = len(frames)
    command = "python benchmarks/tuner_speed_prompts.py" + (f" --rounds {args.rounds}" if args.rounds != 5 else "")
    command += f" --threads {args.threads}" if args.threads else ""
    loads = (f"{load_before:.1f}", f"{os.getloadavg()[0]:.1f}")
    weights = f"weights of {args.checkpoint}" if args.checkpoint else "random-weight ViT-B"
    text = report(configs, queries, weights, args.rounds, time.perf_counter() - started, loads, command)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(text)
    print(text)


if __name__ == "__main__":
    main()

"""What each registered tuner costs at ViT-B size on CPU: parameters, artifact bytes, step/inference time, memory.

    python -m benchmarks.tuner_cost [--rounds 5] [--infer-rounds 10] [--no-memory]

Every tuner in `mmpt.tuners.names()` with its default config, plus `lora_all` (r8 on qkv/proj/fc1/fc2, the
performance.md anchor), on a random-weight `MultiViT(MultiViTConfig())`, batch 2, 224² rgb, fp32, the default
linear depth head; `deep_prompt_p50` is built for its artifact size only. All configs live in ONE process and
are timed in interleaved rounds after a warm-up; ratios are medians of per-round ratios (to `full`'s step and
to the frozen forward timed in the same round).

- step: zero_grad → tuner forward → head → MSE (+ `extra_loss()`) → backward → fused AdamW on the tuner's
  trainable tensors and the head.
- inference: the tuner's forward (eval, no_grad), without the head; `lora_merged` after `merge()`.
- GFLOP: `FlopCounterMode` on one inference with timm's explicit attention (SDPA has no CPU flop formula).
- memory: peak RSS Δ over 2 steps in a fresh subprocess per config (VmHWM after writing "5" to
  /proc/self/clear_refs, minus VmRSS before the first step; includes grads and AdamW state).
- artifact: `save_artifact(..., dtype=float16)` file bytes with and without the head.

Writes benchmarks/results/tuner_cost.{md,json}.
"""

from __future__ import annotations

import argparse
import copy
import gc
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import peft
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

import mmpt.tuners
from benchmarks._common import machine_description, median_ratio
from mmpt.artifacts import save_artifact
from mmpt.backbone import MultiViT, MultiViTConfig
from mmpt.heads import build_head

RESULTS = Path(__file__).parent / "results"
ROOT = Path(__file__).resolve().parents[1]
BATCH, SIZE, PROBE_STEPS = 2, 224, 2
VARIANTS = {"lora": [("lora_all", {"targets": ["qkv", "proj", "fc1", "fc2"]})]}  # performance.md's LoRA anchor
SIZE_ONLY = {"deep_prompt": [("deep_prompt_p50", {"num_tokens": 50})]}  # built for its artifact size, not timed
MERGED = {"lora": "lora_merged", "lora_all": "lora_all_merged"}
P50_LIMIT = 1_000_000  # bytes: a 50-token deep prompt over 12 blocks, fp16, without the head
MERGED_LIMIT = 1.02  # merged LoRA inference ÷ frozen inference


def train_configs(variants: dict[str, list] = VARIANTS) -> dict[str, tuple[str, dict]]:
    """label → (tuner name, config) for every registered tuner (default config) and its variants."""
    configs = {}
    for name in mmpt.tuners.names():
        configs[name] = (name, {})
        configs.update({label: (name, cfg) for label, cfg in variants.get(name, [])})
    return configs


def base_backbone() -> MultiViT:
    torch.manual_seed(0)
    return MultiViT(MultiViTConfig()).freeze()  # ViT-B, rgb/depth/semseg adapters, random weights


def sharing_copy(base: MultiViT) -> MultiViT:
    """A new module tree over the SAME frozen Parameters (for tuners that never write base weights)."""
    return copy.deepcopy(base, memo={id(p): p for p in base.parameters()})


@dataclass
class Setup:
    tuner: nn.Module
    head: nn.Module
    backbone: MultiViT
    optimizer: torch.optim.Optimizer


def make_setup(name: str, config: dict, backbone: MultiViT) -> Setup:
    tuner = mmpt.tuners.build(name, **config)
    tuner.apply(backbone)
    head = build_head("linear", dim=backbone.dim, patch_size=backbone.patch_size, out_channels=1)
    params = [p for _, p in tuner.trainable_parameters()] + list(head.parameters())
    return Setup(tuner, head, backbone, torch.optim.AdamW(params, lr=1e-4, fused=True))


def inputs() -> tuple[dict[str, torch.Tensor], torch.Tensor]:
    gen = torch.Generator().manual_seed(0)
    return {"rgb": torch.randn(BATCH, 3, SIZE, SIZE, generator=gen)}, torch.randn(BATCH, 1, SIZE, SIZE, generator=gen)


def train_step(s: Setup, x: dict, target: torch.Tensor):
    layout = s.backbone.token_layout(x)

    def run():
        s.optimizer.zero_grad(set_to_none=True)
        loss = F.mse_loss(s.head(s.tuner(x, layers=s.head.layers), layout), target)
        extra = getattr(s.tuner, "extra_loss", lambda: None)()
        (loss if extra is None else loss + extra).backward()
        s.optimizer.step()

    return run


def inference(model: nn.Module, x: dict):
    def run():
        with torch.no_grad():
            model(x)

    return run


def gflop(model: nn.Module, x: dict) -> float:
    """Forward GFLOP with timm's explicit attention (restored afterwards)."""
    fused = [m for m in model.modules() if getattr(m, "fused_attn", False)]
    for m in fused:
        m.fused_attn = False
    try:
        with FlopCounterMode(display=False) as counter:  # not under no_grad: its module tracker needs grad mode
            model(x)
    finally:
        for m in fused:
            m.fused_attn = True
    return counter.get_total_flops() / 1e9


def timed_rounds(fns: dict, rounds: int, warmup: int = 1) -> dict[str, dict[str, list[float]]]:
    """`benchmarks._common.interleaved`'s scheme, recording wall seconds and this process's CPU seconds.

    CPU time is the contention-robust clock on a shared machine (with one thread; with more, OpenMP
    spin-waits count too); wall time is what a user waits.
    """
    for fn in fns.values():
        for _ in range(warmup):
            fn()
    times: dict[str, dict[str, list[float]]] = {"wall": {k: [] for k in fns}, "cpu": {k: [] for k in fns}}
    for _ in range(rounds):
        for label, fn in fns.items():
            wall, cpu = time.perf_counter(), time.process_time()
            fn()
            times["wall"][label].append(time.perf_counter() - wall)
            times["cpu"][label].append(time.process_time() - cpu)
    return times


def summarise(times: dict[str, dict[str, list[float]]], kind: str, refs: dict[str, str]) -> dict[str, dict]:
    """Median ms per clock and medians of per-round ratios to each reference label, per config."""
    out = {}
    for label in times["wall"]:
        row = {}
        for clock, series in times.items():
            row[f"{kind}_ms_{clock}"] = statistics.median(series[label]) * 1e3
            row[f"{kind}_ms_{clock}_range"] = [min(series[label]) * 1e3, max(series[label]) * 1e3]
            for ref, ref_label in refs.items():
                if ref_label in series:
                    row[f"{kind}_x_{ref}_{clock}"] = median_ratio(series[label], series[ref_label])
        out[label] = row
    return out


# ---- memory probe (runs in a fresh subprocess per config) ----------------------------------------
def _status_kib(field: str) -> int:
    line = next(ln for ln in Path("/proc/self/status").read_text().splitlines() if ln.startswith(field))
    return int(line.split()[1])


def probe(label: str) -> dict:
    """Peak RSS during PROBE_STEPS train steps (or frozen forwards) of one config, in this fresh process."""
    base = base_backbone()
    x, target = inputs()
    if label == "frozen":
        run = inference(base, x)
    else:
        name, config = train_configs()[label]
        run = train_step(make_setup(name, config, base), x, target)
    gc.collect()
    before = _status_kib("VmRSS")
    Path("/proc/self/clear_refs").write_text("5")  # resets VmHWM to the current RSS
    for _ in range(PROBE_STEPS):
        run()
    peak = _status_kib("VmHWM")
    return {"rss_before_mib": before / 1024, "peak_mib": peak / 1024, "delta_mib": (peak - before) / 1024}


def memory(labels: list[str]) -> dict[str, dict]:
    out = {}
    for label in labels:
        cmd = [
            sys.executable,
            "-m",
            "benchmarks.tuner_cost",
            "--probe",
            label,
            "--threads",
            str(torch.get_num_threads()),
        ]
        done = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, check=False)
        out[label] = (
            json.loads(done.stdout.strip().splitlines()[-1]) if done.returncode == 0 else {"error": done.stderr}
        )
        print(f"memory {label}: {out[label].get('delta_mib', 'error')}", flush=True)
    return out


# ---- the run -------------------------------------------------------------------------------------
def artifact_bytes(s: Setup, directory: Path, label: str) -> dict[str, int]:
    sizes = {}
    for key, head in (("fp16_no_head", None), ("fp16_with_head", s.head)):
        path = save_artifact(directory / f"{label}-{key}.safetensors", s.tuner, head, s.backbone, task="depth",
                             dtype=torch.float16)  # fmt: skip
        sizes[key] = path.stat().st_size
        path.unlink()
    return sizes


def run(args: argparse.Namespace) -> dict:
    started = time.time()
    load_before = os.getloadavg()
    base = base_backbone()
    x, target = inputs()
    configs = train_configs()
    sized = {k: v for k, v in train_configs(SIZE_ONLY).items() if k not in configs}
    setups = {
        label: make_setup(name, cfg, copy.deepcopy(base) if name == "full" else sharing_copy(base))
        for label, (name, cfg) in {**configs, **sized}.items()
    }
    merged = {}
    for label, merged_label in MERGED.items():
        if label in configs:  # own weights: merging writes into them
            merged[merged_label] = make_setup("lora", configs[label][1], copy.deepcopy(base)).tuner
            merged[merged_label].merge()
    rows: dict[str, dict] = {"frozen": {"tuner": "-", "tuner_params": 0, "head_params": 0}}
    with tempfile.TemporaryDirectory() as tmp:
        for label, s in setups.items():
            rows[label] = {
                "tuner": setups[label].tuner.name,
                "config": setups[label].tuner.config.to_dict(),
                "tuner_params": sum(p.numel() for _, p in s.tuner.trainable_parameters()),
                "head_params": sum(p.numel() for p in s.head.parameters()),
                "artifact_bytes": artifact_bytes(s, Path(tmp), label),
            }
    rows.update({label: {"tuner": "lora", "merged_from": src} for src, label in MERGED.items() if label in merged})
    for label in sized:  # sized only: free them before timing
        del setups[label]

    infer_models = {"frozen": base, **{label: s.tuner.eval() for label, s in setups.items()}, **merged}
    for label, model in infer_models.items():
        rows[label]["infer_gflop"] = gflop(model, x)
    print(f"setup done in {time.time() - started:.0f} s; timing inference", flush=True)
    infer_times = timed_rounds({k: inference(m, x) for k, m in infer_models.items()}, rounds=args.infer_rounds)
    for s in setups.values():
        s.tuner.train()
        s.head.train()
    print("timing train steps", flush=True)
    step_fns = {"frozen_fwd": inference(base, x), **{k: train_step(s, x, target) for k, s in setups.items()}}
    step_times = timed_rounds(step_fns, rounds=args.rounds)
    for label, summary in summarise(infer_times, "infer", {"frozen": "frozen", "full": "full"}).items():
        rows[label].update(summary)
    for label, summary in summarise(step_times, "step", {"full": "full", "frozen_fwd": "frozen_fwd"}).items():
        if label != "frozen_fwd":
            rows[label].update(summary)
    del setups, merged, infer_models
    gc.collect()
    if args.memory:
        print("memory probes", flush=True)
        for label, result in memory(["frozen", *configs]).items():
            rows[label]["memory"] = result
        full_delta = rows.get("full", {}).get("memory", {}).get("delta_mib")
        for row in rows.values():
            delta = row.get("memory", {}).get("delta_mib")
            if delta is not None and full_delta:
                row["memory"]["delta_x_full"] = delta / full_delta
    checks = {}
    if "deep_prompt_p50" in rows:
        size = rows["deep_prompt_p50"]["artifact_bytes"]["fp16_no_head"]
        checks["deep_prompt_p50_artifact_fp16_no_head_bytes"] = {
            "value": size,
            "limit": P50_LIMIT,
            "ok": size <= P50_LIMIT,
        }
    for label in (v for v in MERGED.values() if v in rows):
        for clock in ("wall", "cpu"):
            ratio = rows[label][f"infer_x_frozen_{clock}"]
            checks[f"{label}_infer_x_frozen_{clock}"] = {
                "value": ratio,
                "limit": MERGED_LIMIT,
                "ok": ratio <= MERGED_LIMIT,
            }
        flops_equal = rows[label]["infer_gflop"] == rows["frozen"]["infer_gflop"]
        checks[f"{label}_gflop_equals_frozen"] = {"value": rows[label]["infer_gflop"], "ok": flops_equal}
    machine = {
        **machine_description(),
        "peft": peft.__version__,
        "cpus": str(os.cpu_count()),
        "loadavg_1m_before_after": f"{load_before[0]:.2f} / {os.getloadavg()[0]:.2f}",
    }
    return {
        "command": f"python -m benchmarks.tuner_cost --rounds {args.rounds} --infer-rounds {args.infer_rounds} "
        f"--threads {torch.get_num_threads()}" + ("" if args.memory else " --no-memory"),
        "setting": f"MultiViT(MultiViTConfig()) random weights, batch {BATCH}, rgb {SIZE}x{SIZE} (197 tokens), fp32",
        "machine": machine,
        "rows": rows,
        "checks": checks,
        "raw_s": {"inference": infer_times, "step": step_times},
        "wall_s": time.time() - started,
    }


# ---- report --------------------------------------------------------------------------------------
def _num(value, fmt: str = ",") -> str:
    return "–" if value is None else format(value, fmt)


def markdown(result: dict) -> str:
    rows = result["rows"]
    lines = [
        "# Tuner cost at ViT-B size (CPU)",
        "",
        f"Command: `{result['command']}` ({result['wall_s'] / 60:.1f} min). Setting: {result['setting']}; "
        "default linear depth head (LayerNorm + Linear 768→256, pixel shuffle).",
        "Time cells are `wall / process CPU time`: medians over interleaved rounds after one warm-up (min–max in the "
        "JSON); `×` cells are medians of per-round ratios to `full`'s step and to the frozen forward timed in the "
        "same rounds. On a shared machine CPU time (with 1 thread) is the contention-robust clock. Inference is "
        "the tuner's forward without the head. GFLOP counts one inference with explicit attention (a tuner's own "
        "SDPA calls count 0). Memory Δ: peak RSS over 2 steps minus RSS before them, in a fresh process "
        "(grads and AdamW state included; ±50 MiB allocator noise). Artifact: fp16 `.safetensors` bytes.",
        "",
        "| config | tuner params | head params | artifact bytes no head / with head | step ms | step ×full | "
        "step ×frozen fwd | infer ms | infer ×frozen | infer ×full | infer GFLOP | mem Δ MiB (×full) |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]

    def pair(r: dict, key: str, fmt: str) -> str:  # "wall / cpu"
        wall, cpu = r.get(key.format(clock="wall")), r.get(key.format(clock="cpu"))
        return "–" if wall is None else f"{wall:{fmt}} / {cpu:{fmt}}"

    for label, r in rows.items():
        art = r.get("artifact_bytes")
        mem = r.get("memory", {})
        mem_text = "–" if "delta_mib" not in mem else f"{mem['delta_mib']:.0f} ({_num(mem.get('delta_x_full'), '.2f')})"
        cells = [
            label,
            _num(r.get("tuner_params")),
            _num(r.get("head_params")),
            "–" if art is None else f"{art['fp16_no_head']:,} / {art['fp16_with_head']:,}",
            pair(r, "step_ms_{clock}", ".0f"),
            pair(r, "step_x_full_{clock}", ".3f"),
            pair(r, "step_x_frozen_fwd_{clock}", ".3f"),
            pair(r, "infer_ms_{clock}", ".0f"),
            pair(r, "infer_x_frozen_{clock}", ".3f"),
            pair(r, "infer_x_full_{clock}", ".3f"),
            _num(r.get("infer_gflop"), ".2f"),
            mem_text,
        ]
        lines.append("| " + " | ".join(cells) + " |")
    lines += ["", "## Checks", "", "| check | value | limit | ok |", "|---|---|---|---|"]
    for name, c in result["checks"].items():
        value = c["value"]
        lines.append(f"| {name} | {value:,.4g} | {_num(c.get('limit'), ',')} | {'yes' if c['ok'] else '**no**'} |")
    lines += ["", "Machine: " + ", ".join(f"{k} {v}" for k, v in result["machine"].items()), ""]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5, help="train-step rounds (after one warm-up)")
    parser.add_argument("--infer-rounds", type=int, default=10, help="inference rounds (ratios near 1 need >= 8)")
    parser.add_argument("--no-memory", dest="memory", action="store_false", help="skip the subprocess memory probes")
    parser.add_argument("--threads", type=int, default=torch.get_num_threads(), help="torch threads (default: all)")
    parser.add_argument("--probe", help=argparse.SUPPRESS)  # internal: one memory probe in this fresh process
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    if args.probe:
        print(json.dumps(probe(args.probe)))
        return
    result = run(args)
    RESULTS.mkdir(exist_ok=True)
    text = markdown(result)
    (RESULTS / "tuner_cost.md").write_text(text)
    (RESULTS / "tuner_cost.json").write_text(json.dumps(result, indent=1))
    print(text)


if __name__ == "__main__":
    main()

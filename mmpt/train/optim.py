"""Optimiser and schedule: AdamW (fused where available) or SGD, linear warm-up from 0 then cosine."""

from __future__ import annotations

import math
from collections.abc import Iterable

import torch
from torch import nn

from mmpt.config.schema import TrainConfig


def param_groups(
    named: Iterable[tuple[str, nn.Parameter]], *, lr: float, weight_decay: float, group: str
) -> list[dict]:
    """Splits parameters into decay / no-decay groups: 1-D tensors (norms, biases, gates) and tokens
    (prompts, keys, global tokens) get no weight decay, as in the official optimiser factory."""
    decay, no_decay = [], []
    for name, param in named:
        if not param.requires_grad:
            continue
        tokens = any(key in name for key in ("prompt", "keys", "global_tokens", "pos_emb", "gate"))
        (no_decay if param.ndim <= 1 or tokens else decay).append(param)
    groups = [
        {"params": decay, "weight_decay": weight_decay, "lr": lr, "name": f"{group}/decay"},
        {"params": no_decay, "weight_decay": 0.0, "lr": lr, "name": f"{group}/no_decay"},
    ]
    return [g for g in groups if g["params"]]


def build_optimizer(groups: list[dict], cfg: TrainConfig, device: torch.device) -> torch.optim.Optimizer:
    """AdamW (fused kernel on CPU and CUDA: ~3x faster than the for-loop on CPU) or SGD with momentum."""
    if cfg.optimizer == "sgd":
        return torch.optim.SGD(groups, lr=cfg.lr, momentum=cfg.momentum)
    fused = device.type in ("cpu", "cuda")
    return torch.optim.AdamW(groups, lr=cfg.lr, betas=(0.9, 0.999), eps=1e-8, fused=fused)


def lr_factor(step: int, cfg: TrainConfig) -> float:
    """Multiplier of each group's peak lr at optimizer step `step` (0-based): warm-up from 0, then cosine to
    `min_lr / lr` (per-step, like the official schedule)."""
    if step < cfg.warmup_steps:
        return step / cfg.warmup_steps
    progress = (step - cfg.warmup_steps) / max(1, cfg.steps - cfg.warmup_steps)
    floor = cfg.min_lr / cfg.lr
    return floor + (1 - floor) * 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))


def build_scheduler(optimizer: torch.optim.Optimizer, cfg: TrainConfig) -> torch.optim.lr_scheduler.LambdaLR:
    return torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: lr_factor(step, cfg))

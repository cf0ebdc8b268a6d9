"""Shared pieces of the tuner tests: a tiny backbone read through the real loader, inputs, a naive VPT block."""

from __future__ import annotations

import functools
import tempfile
from pathlib import Path

import torch
from torch import Tensor

from mmpt import load_backbone
from mmpt.backbone.multivit import MultiViT
from mmpt.testing import make_tiny_checkpoint

TINY = {"dim": 32, "depth": 3, "num_heads": 2, "patch_size": 8}
IMAGE = 32  # 4x4 patches per domain
DOMAINS = {"rgb": ("rgb",), "rgbd": ("rgb", "depth")}
_CHANNELS = {"rgb": 3, "depth": 1}


@functools.cache
def _checkpoint() -> Path:
    directory = Path(tempfile.mkdtemp(prefix="mmpt-tuner-tests-"))
    return make_tiny_checkpoint(directory / "tiny.pth", domains=("rgb", "depth"), seed=3, **TINY)


def tiny_backbone() -> MultiViT:
    """A fresh frozen tiny MultiViT (dim 32, depth 3, 2 heads, patch 8), the same weights every call."""
    return load_backbone(_checkpoint(), num_heads=TINY["num_heads"])


def make_inputs(domains: tuple[str, ...] = ("rgb", "depth"), batch: int = 2, seed: int = 0) -> dict[str, Tensor]:
    gen = torch.Generator().manual_seed(seed)
    return {d: torch.randn(batch, _CHANNELS[d], IMAGE, IMAGE, generator=gen) for d in domains}


def naive_prompted_block(block: torch.nn.Module, x: Tensor, prompts: Tensor) -> Tensor:
    """VPT's literal definition: append the prompts, run the whole block, drop the prompts' outputs."""
    if prompts.dim() == 2:
        prompts = prompts.expand(x.shape[0], -1, -1)  # (B, P, D)
    return block(torch.cat([x, prompts], dim=1))[:, : x.shape[1]]  # (B, N, D)

"""The light default dense head: per-token LayerNorm + one Linear, pixel-shuffled to full resolution.

Each patch token predicts its own `s x s` block of outputs (s = `shuffle`, the patch size by default), so
the head is one matmul; with s < patch size the s-per-patch map is upsampled bilinearly the rest of the
way, as the official ConvNeXt adapter does with 4x4 predictions per patch (multimae.md §2).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from mmpt.errors import ConfigError
from mmpt.heads.base import HeadConfig, Layout, domain_tokens, register_head


@dataclass
class LinearHeadConfig(HeadConfig):
    """Shape of the linear head (fixed by the backbone: `dim`, `patch_size`; by the task: `out_channels`)."""

    dim: int = field(default=768, metadata={"help": "token width of the backbone (backbone.dim)"})
    patch_size: int = field(default=16, metadata={"help": "backbone patch size in pixels (backbone.patch_size)"})
    out_channels: int = field(default=1, metadata={"help": "output maps: 1 for depth, 40 for NYUv2 semseg"})
    layers: list[int] = field(
        default_factory=lambda: [-1], metadata={"help": "block outputs to read (negative count from the end)"}
    )
    domains: list[str] = field(
        default_factory=lambda: ["rgb"],
        metadata={"help": "domains whose tokens are read, concatenated on channels (official `main_tasks`)"},
    )
    norm: bool = field(default=True, metadata={"help": "LayerNorm each (layer, domain) token chunk first"})
    shuffle: int | None = field(
        default=None,
        metadata={
            "help": "outputs per patch side from the Linear (divides patch_size); null = patch_size, i.e. "
            "full resolution by pixel shuffle alone. Smaller values shrink the Linear by (patch/shuffle)^2 "
            "and upsample bilinearly (e.g. 4 for 40-class semseg: 0.5M instead of 7.9M parameters at ViT-B)"
        },
    )

    def __post_init__(self) -> None:
        for name in ("dim", "patch_size", "out_channels"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ConfigError(f"linear head {name}={value!r} is invalid; expected an integer >= 1.")
        self.layers, self.domains = list(self.layers), list(self.domains)
        if not self.layers or len(set(self.layers)) != len(self.layers):
            raise ConfigError(f"linear head layers={self.layers!r} is invalid; expected distinct block indices.")
        if not self.domains or len(set(self.domains)) != len(self.domains):
            raise ConfigError(f"linear head domains={self.domains!r} is invalid; expected distinct domain names.")
        if self.shuffle is not None and not (
            1 <= self.shuffle <= self.patch_size and self.patch_size % self.shuffle == 0
        ):
            raise ConfigError(
                f"linear head shuffle={self.shuffle!r} is invalid; expected a divisor of patch_size={self.patch_size} "
                "or null (= patch_size)."
            )


@register_head("linear")
class LinearHead(nn.Module):
    """LayerNorm + Linear per token, then `pixel_shuffle` to (B, out_channels, H, W).

    Args:
        config: see `LinearHeadConfig`.
    """

    config_class = LinearHeadConfig

    def __init__(self, config: LinearHeadConfig) -> None:
        super().__init__()
        self.config = config
        self.layers = list(config.layers)
        self.shuffle = config.shuffle or config.patch_size
        chunks = len(config.layers) * len(config.domains)
        self.norms = nn.ModuleList(
            [nn.LayerNorm(config.dim, eps=1e-6) if config.norm else nn.Identity() for _ in range(chunks)]
        )
        self.proj = nn.Linear(chunks * config.dim, config.out_channels * self.shuffle**2)
        nn.init.trunc_normal_(self.proj.weight, std=0.02)
        nn.init.zeros_(self.proj.bias)

    def forward(self, tokens: list[Tensor], layout: Layout) -> Tensor:
        """Dense prediction from the block outputs in `self.layers` (see `mmpt.heads.base`). (B, C, H, W)"""
        if len(tokens) != len(self.layers):
            raise ConfigError(
                f"The linear head reads {len(self.layers)} block output(s) (layers={self.layers}), got {len(tokens)}.",
                hint="call the tuner with layers=head.layers",
            )
        chunks, grid = [], None
        for x in tokens:
            parts, grid = domain_tokens(x, layout, self.config.domains)  # each (B, h*w, D)
            chunks += parts
        x = torch.cat([norm(c) for norm, c in zip(self.norms, chunks, strict=True)], dim=-1)  # (B, h*w, chunks*D)
        x = self.proj(x)  # (B, h*w, C*s*s)
        h, w = grid
        x = x.transpose(1, 2).reshape(x.shape[0], -1, h, w)  # (B, C*s*s, h, w)
        x = F.pixel_shuffle(x, self.shuffle)  # (B, C, h*s, w*s)
        if self.shuffle != self.config.patch_size:
            size = (h * self.config.patch_size, w * self.config.patch_size)
            x = F.interpolate(x, size=size, mode="bilinear", align_corners=False)
        return x

"""The DPT head (Ranftl et al. 2021, https://arxiv.org/abs/2103.13413) in the configuration of MultiMAE's
NYUv2 depth fine-tuning (reference/multimae.md §2), written from that description.

Four block outputs (default 2, 5, 8, 11 of a 12-block ViT) are reassembled into a feature pyramid at 1/4,
1/8, 1/16 and 1/32 of the input (for patch 16), projected to 256 channels, fused coarse-to-fine by
RefineNet-style blocks, and decoded by a small convolutional head. No batch norm, no output activation.
At ViT-B (dim 768), one output channel: 20,065,921 parameters, as the official adapter.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from mmpt.errors import ConfigError
from mmpt.heads.base import HeadConfig, Layout, domain_tokens, register_head

NUM_HOOKS = 4  # one per pyramid level


def default_hooks(depth: int) -> list[int]:
    """Four evenly spaced block indices ending at the last block: [2, 5, 8, 11] for 12 blocks (official).

    Shallow backbones repeat blocks ([0, 0, 1, 1] for 2 blocks, [0, 1, 1, 2] for 3).
    """
    return [max(round((k + 1) * depth / NUM_HOOKS) - 1, 0) for k in range(NUM_HOOKS)]


@dataclass
class DPTHeadConfig(HeadConfig):
    """Shape of the DPT head (`dim`, `patch_size`, `depth` from the backbone; `out_channels` from the task)."""

    dim: int = field(default=768, metadata={"help": "token width of the backbone (backbone.dim)"})
    patch_size: int = field(default=16, metadata={"help": "backbone patch size in pixels (backbone.patch_size)"})
    out_channels: int = field(default=1, metadata={"help": "output maps: 1 for depth, 40 for NYUv2 semseg"})
    depth: int = field(default=12, metadata={"help": "backbone blocks (backbone.depth); only picks default layers"})
    layers: list[int] | None = field(
        default=None,
        metadata={"help": "the 4 block outputs to read, shallow to deep; null = [2, 5, 8, 11] at depth 12, else evenly "
                  "spaced (resolved when the config is built)"},
    )  # fmt: skip
    domains: list[str] = field(
        default_factory=lambda: ["rgb"],
        metadata={"help": "domains whose tokens are read, concatenated on channels (official `main_tasks`)"},
    )
    layer_dims: list[int] = field(
        default_factory=lambda: [96, 192, 384, 768],
        metadata={"help": "channels of the 4 reassembled maps (1/4, 1/8, 1/16, 1/32 of the input at patch 16)"},
    )
    feature_dim: int = field(default=256, metadata={"help": "channels of the fusion blocks"})

    def __post_init__(self) -> None:
        for name in ("dim", "patch_size", "out_channels", "depth", "feature_dim"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ConfigError(f"dpt head {name}={value!r} is invalid; expected an integer >= 1.")
        if self.feature_dim % 2:
            raise ConfigError(f"dpt head feature_dim={self.feature_dim} is invalid; expected an even number.")
        self.layers = default_hooks(self.depth) if self.layers is None else list(self.layers)
        in_range = all(isinstance(i, int) and -self.depth <= i < self.depth for i in self.layers)
        if len(self.layers) != NUM_HOOKS or not in_range:
            raise ConfigError(
                f"dpt head layers={self.layers!r} is invalid; expected {NUM_HOOKS} block indices in "
                f"[-{self.depth}, {self.depth - 1}] (depth={self.depth}), shallow to deep, or null."
            )
        self.layer_dims, self.domains = list(self.layer_dims), list(self.domains)
        if len(self.layer_dims) != NUM_HOOKS or any(not isinstance(c, int) or c < 1 for c in self.layer_dims):
            raise ConfigError(
                f"dpt head layer_dims={self.layer_dims!r} is invalid; expected {NUM_HOOKS} positive ints."
            )
        if not self.domains or len(set(self.domains)) != len(self.domains):
            raise ConfigError(f"dpt head domains={self.domains!r} is invalid; expected distinct domain names.")


def _conv3x3(in_channels: int, out_channels: int, bias: bool = True) -> nn.Conv2d:
    return nn.Conv2d(in_channels, out_channels, kernel_size=3, padding=1, bias=bias)


def _upsample(x: Tensor, size: tuple[int, int]) -> Tensor:
    # align_corners=True as the official fusion and output stages. Targeting the skip's size instead of a fixed
    # ×2 equals ×2 on even grids and also fits odd ones (the 1/32 level is ceil(h/2)).
    return F.interpolate(x, size=size, mode="bilinear", align_corners=True)


class ResidualConvUnit(nn.Module):
    """Pre-activation residual block: x + conv(relu(conv(relu(x))))."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.conv1 = _conv3x3(channels, channels)
        self.conv2 = _conv3x3(channels, channels)

    def forward(self, x: Tensor) -> Tensor:
        return x + self.conv2(F.relu(self.conv1(F.relu(x))))


class FusionBlock(nn.Module):
    """Adds a refined skip map to the coarser path, refines the sum, upsamples, and mixes channels (1x1).

    Args:
        channels: feature_dim.
        has_skip: False for the coarsest block, which has no skip input: its `skip_unit` still exists (the
            official model builds it, and the parameter count includes it) but is never called, so it is
            frozen (requires_grad=False) to keep DDP from waiting for gradients it never gets.
    """

    def __init__(self, channels: int, has_skip: bool = True) -> None:
        super().__init__()
        self.skip_unit = ResidualConvUnit(channels)
        self.unit = ResidualConvUnit(channels)
        self.out_conv = nn.Conv2d(channels, channels, kernel_size=1)
        self.has_skip = has_skip
        if not has_skip:
            self.skip_unit.requires_grad_(False)

    def forward(self, x: Tensor, skip: Tensor | None, size: tuple[int, int]) -> Tensor:
        if skip is not None:
            x = x + self.skip_unit(skip)
        return self.out_conv(_upsample(self.unit(x), size))


@register_head("dpt")
class DPTHead(nn.Module):
    """DPT decoder over four block outputs → (B, out_channels, H, W) at the input resolution.

    Weights use PyTorch's default initialisation, as the official adapter. Works for any token grid
    (rectangular, odd) and any patch size: the last upsampling goes to (grid_h·patch, grid_w·patch), which is
    the official ×2 at patch 16.

    Args:
        config: see `DPTHeadConfig`.

    Example:
        >>> head = build_head("dpt", dim=backbone.dim, patch_size=backbone.patch_size, depth=backbone.depth)
        >>> out = head(tuner(inputs, layers=head.layers), backbone.token_layout(inputs))  # (B, 1, H, W)
    """

    config_class = DPTHeadConfig

    def __init__(self, config: DPTHeadConfig) -> None:
        super().__init__()
        self.config = config
        self.layers = list(config.layers or ())
        in_dim = config.dim * len(config.domains)
        d1, d2, d3, d4 = config.layer_dims
        # Reassemble: token maps at 1/16 → 1/4, 1/8, 1/16, 1/32 (1x1 projection, then resampling).
        self.reassemble = nn.ModuleList(
            [
                nn.Sequential(nn.Conv2d(in_dim, d1, 1), nn.ConvTranspose2d(d1, d1, kernel_size=4, stride=4)),
                nn.Sequential(nn.Conv2d(in_dim, d2, 1), nn.ConvTranspose2d(d2, d2, kernel_size=2, stride=2)),
                nn.Sequential(nn.Conv2d(in_dim, d3, 1)),
                nn.Sequential(nn.Conv2d(in_dim, d4, 1), nn.Conv2d(d4, d4, kernel_size=3, stride=2, padding=1)),
            ]
        )
        feat = config.feature_dim
        self.project = nn.ModuleList([_conv3x3(c, feat, bias=False) for c in config.layer_dims])
        # fusion[3] is the coarsest (official refinenet4), fed by the 1/32 map alone.
        self.fusion = nn.ModuleList([FusionBlock(feat) for _ in range(NUM_HOOKS - 1)] + [FusionBlock(feat, False)])
        self.output_conv1 = _conv3x3(feat, feat // 2)
        self.output_conv2 = _conv3x3(feat // 2, 32)
        self.output_conv3 = nn.Conv2d(32, config.out_channels, kernel_size=1)

    def forward(self, tokens: list[Tensor], layout: Layout) -> Tensor:
        """Dense prediction from the block outputs in `self.layers` (see `mmpt.heads.base`). (B, C, H, W)"""
        if len(tokens) != NUM_HOOKS:
            raise ConfigError(
                f"The dpt head reads {NUM_HOOKS} block outputs (layers={self.layers}), got {len(tokens)}.",
                hint="call the tuner with layers=head.layers",
            )
        maps = []
        for x, reassemble, project in zip(tokens, self.reassemble, self.project, strict=True):
            parts, (h, w) = domain_tokens(x, layout, self.config.domains)  # global token(s) dropped
            x = torch.cat(parts, dim=-1)  # (B, h*w, D·domains)
            x = x.transpose(1, 2).reshape(x.shape[0], -1, h, w)  # (B, D·domains, h, w), row-major tokens
            maps.append(project(reassemble(x)))  # (B, feat, h·s, w·s), s = 4, 2, 1, 1/2
        sizes = [tuple(m.shape[-2:]) for m in maps]
        path = self.fusion[3](maps[3], None, sizes[2])  # (B, feat, h, w)
        path = self.fusion[2](path, maps[2], sizes[1])  # 2h
        path = self.fusion[1](path, maps[1], sizes[0])  # 4h
        path = self.fusion[0](path, maps[0], (2 * sizes[0][0], 2 * sizes[0][1]))  # 8h
        out = _upsample(self.output_conv1(path), (h * self.config.patch_size, w * self.config.patch_size))
        return self.output_conv3(F.relu(self.output_conv2(out)))  # no activation: the task maps it

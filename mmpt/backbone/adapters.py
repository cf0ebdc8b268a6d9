"""Input adapters: one per domain, turning an image (or a label map) into tokens.

Official parameter names are kept (`proj`, `pos_emb`, `class_emb`) so release checkpoints load as-is.
Facts: `reference/multimae.md` §1.1-1.2.
"""

from __future__ import annotations

import torch.nn.functional as F
from timm.layers import build_sincos2d_pos_embed
from torch import Tensor, nn

from mmpt.errors import ConfigError


def sincos_pos_emb(grid: tuple[int, int], dim: int) -> Tensor:
    """Fixed 2-D sin-cos table (1, D, h, w) with channel blocks [sin(row), cos(row), sin(col), cos(col)].

    Equals the official table for square grids (every released checkpoint). For h != w the official
    builder scrambles the table (multimae.md §1.2); we build the unscrambled one. It only matters for a
    model built non-square without a checkpoint, since checkpoints store the table.
    """
    h, w = grid
    table = build_sincos2d_pos_embed([h, w], dim=dim, interleave_sin_cos=True)  # (h*w, D), row-major
    return table.transpose(0, 1).reshape(1, dim, h, w)


def resize_pos_emb(table: Tensor, grid: tuple[int, int], mode: str) -> Tensor:
    """Resizes a (1, D, h, w) table to `grid`; a no-op when the size already matches."""
    if tuple(table.shape[-2:]) == tuple(grid):
        return table
    return F.interpolate(table, size=grid, mode=mode, align_corners=False)


def _check_divisible(domain: str, size: tuple[int, int], step: int, what: str) -> tuple[int, int]:
    h, w = size
    if h % step or w % step:
        raise ConfigError(
            f"{domain} input of size {h}x{w} is not divisible by the {what} {step}.",
            hint=f"resize or crop the input to a multiple of {step} (e.g. {h // step * step}x{w // step * step})",
        )
    return h // step, w // step


class PatchedInputAdapter(nn.Module):
    """Dense image domain (rgb, depth, ...): non-overlapping patch projection + fixed sin-cos positions.

    Args:
        domain: domain name, used in error messages.
        num_channels: input channels (3 for rgb, 1 for depth).
        patch_size: patch size in input pixels.
        dim: token dimension.
        grid: position-table grid (h, w) in patches, i.e. image_size // patch_size.
    """

    pos_mode = "bicubic"  # official forward-time resize for dense domains

    def __init__(self, domain: str, num_channels: int, patch_size: int, dim: int, grid: tuple[int, int]) -> None:
        super().__init__()
        self.domain, self.num_channels, self.patch_size = domain, num_channels, patch_size
        self.proj = nn.Conv2d(num_channels, dim, kernel_size=patch_size, stride=patch_size)
        self.pos_emb = nn.Parameter(sincos_pos_emb(grid, dim), requires_grad=False)

    def token_grid(self, x: Tensor) -> tuple[int, int]:
        if x.ndim != 4 or x.shape[1] != self.num_channels:
            raise ConfigError(
                f"{self.domain} input has shape {tuple(x.shape)}; expected (B, {self.num_channels}, H, W)."
            )
        return _check_divisible(self.domain, tuple(x.shape[-2:]), self.patch_size, "patch size")

    def forward(self, x: Tensor) -> Tensor:
        grid = self.token_grid(x)
        tokens = self.proj(x).flatten(2).transpose(1, 2)  # (B, h*w, D)
        pos = resize_pos_emb(self.pos_emb, grid, self.pos_mode).flatten(2).transpose(1, 2)  # (1, h*w, D)
        return tokens + pos


class SemSegInputAdapter(nn.Module):
    """Semantic-segmentation input: class ids at 1/4 resolution → class embedding → patch projection.

    Args:
        domain: domain name, used in error messages.
        num_classes: rows of the class embedding (133 COCO classes in the official release).
        patch_size: patch size in full-resolution pixels (the conv works at 1/4: kernel patch_size // 4).
        dim: token dimension.
        grid: position-table grid (h, w) in patches.
        dim_class_emb: class-embedding width (64 in every official model).
    """

    stride_level = 4
    pos_mode = "bilinear"  # the official forward resizes semseg tables bilinearly (dense domains: bicubic)

    def __init__(
        self, domain: str, num_classes: int, patch_size: int, dim: int, grid: tuple[int, int], dim_class_emb: int = 64
    ) -> None:
        super().__init__()
        if patch_size % self.stride_level:
            raise ConfigError(f"semseg needs a patch size divisible by 4; got {patch_size}.")
        self.domain, self.num_classes = domain, num_classes
        self.patch_size = patch_size // self.stride_level
        self.class_emb = nn.Embedding(num_classes, dim_class_emb)
        self.proj = nn.Conv2d(dim_class_emb, dim, kernel_size=self.patch_size, stride=self.patch_size)
        self.pos_emb = nn.Parameter(sincos_pos_emb(grid, dim), requires_grad=False)

    def token_grid(self, x: Tensor) -> tuple[int, int]:
        if x.ndim != 3 or x.is_floating_point():
            raise ConfigError(
                f"{self.domain} input has shape {tuple(x.shape)} and dtype {x.dtype}; expected integer class ids "
                f"(B, H/4, W/4)."
            )
        return _check_divisible(self.domain, tuple(x.shape[-2:]), self.patch_size, "1/4-resolution patch size")

    def forward(self, x: Tensor) -> Tensor:
        grid = self.token_grid(x)
        emb = self.class_emb(x).permute(0, 3, 1, 2)  # (B, C_emb, H/4, W/4)
        tokens = self.proj(emb).flatten(2).transpose(1, 2)  # (B, h*w, D)
        pos = resize_pos_emb(self.pos_emb, grid, self.pos_mode).flatten(2).transpose(1, 2)  # (1, h*w, D)
        return tokens + pos

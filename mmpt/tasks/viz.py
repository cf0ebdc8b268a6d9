"""Pictures of inputs, targets and predictions: colour maps, palettes, overlays and titled grids.

Every function returns (H, W, 3) uint8 numpy arrays, except `comparison_grid` (a PIL image). matplotlib
is imported inside `_colormap_lut` only (its colour tables, never pyplot), so importing this module does
not import it. Conventions: depth always on a FIXED 0–10 m scale so pictures of different runs compare,
invalid / ignored pixels always black.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from functools import lru_cache
from typing import Any

import numpy as np
import torch
from PIL import Image, ImageDraw, ImageFont
from torch import Tensor

from mmpt.data.layout import NUM_CLASSES, semseg_palette
from mmpt.data.transforms import IGNORE_INDEX, IMAGENET_MEAN, IMAGENET_STD
from mmpt.errors import ConfigError

# NYU id 40 ("otherprop") has no entry in the official 40-colour palette (black + 39 hues). The 39 hues are
# evenly spaced, so a 40th hue would sit next to one of them; a neutral light grey is unlike every hue
# (all have saturation 0.65) and unlike black, and suits a catch-all class.
CLASS40_COLOUR = (200, 200, 200)
Array = np.ndarray | Tensor


def _numpy(x: Array) -> np.ndarray:
    """A numpy copy of a tensor or array, without a leading channel of size 1 ((1, H, W) → (H, W))."""
    x = x.detach().cpu().numpy() if isinstance(x, Tensor) else np.asarray(x)
    return x[0] if x.ndim == 3 and x.shape[0] == 1 else x


@lru_cache(maxsize=8)
def _colormap_lut(name: str) -> np.ndarray:
    """(256, 3) uint8 table of matplotlib colormap `name`, from its value at 0 to its value at 1."""
    from matplotlib import colormaps  # lazy: plotting stays out of `import mmpt`

    if name not in colormaps:
        raise ConfigError(f"Unknown matplotlib colormap {name!r}.", hint="use e.g. 'turbo', 'magma_r' or 'viridis'")
    return np.round(colormaps[name](np.linspace(0.0, 1.0, 256))[:, :3] * 255).astype(np.uint8)


def _colorize(values: np.ndarray, valid: np.ndarray, vmin: float, vmax: float, cmap: str) -> np.ndarray:
    scaled = (np.nan_to_num(values.astype(np.float64)) - vmin) / (vmax - vmin)
    rgb = _colormap_lut(cmap)[np.clip(np.round(scaled * 255), 0, 255).astype(np.intp)]
    rgb[~valid] = 0
    return rgb


def colorize_depth(
    depth_m: Array, *, vmin: float = 0.0, vmax: float = 10.0, cmap: str = "turbo", valid: Array | None = None
) -> np.ndarray:
    """Colours a depth map on a fixed scale; invalid pixels black.

    `turbo` by default: both of its ends are coloured, whereas `magma_r` ends in near-black at 10 m, which
    would look like invalid. Values outside [vmin, vmax] take the end colours.

    Args:
        depth_m: (H, W) or (1, H, W) metres.
        vmin: depth at the colormap's start.
        vmax: depth at the colormap's end (10 m covers NYUv2).
        cmap: matplotlib colormap name.
        valid: bool map of pixels to colour; default depth > 0 (0 = invalid in NYUv2). Pass an all-True map
            for predictions.

    Returns:
        (H, W, 3) uint8.
    """
    depth = _numpy(depth_m)
    mask = depth > 0 if valid is None else _numpy(valid).astype(bool)
    return _colorize(depth, mask & np.isfinite(depth), vmin, vmax, cmap)


def colorize_error(
    error_m: Array, valid: Array | None = None, *, vmax: float = 1.0, cmap: str = "viridis"
) -> np.ndarray:
    """Colours an absolute depth error on a fixed 0..vmax metre scale; invalid pixels black.

    `viridis` starts at dark violet, not black, so a zero error stays distinguishable from an invalid pixel.

    Args:
        error_m: (H, W) or (1, H, W) absolute error in metres.
        valid: bool map of pixels that have a ground truth; default all.
        vmax: error at the colormap's end.
        cmap: matplotlib colormap name.
    """
    error = _numpy(error_m)
    mask = np.ones(error.shape, dtype=bool) if valid is None else _numpy(valid).astype(bool)
    return _colorize(error, mask, 0.0, vmax, cmap)


def semseg_colours() -> np.ndarray:
    """(256, 3) uint8 colour table indexed by training label.

    Label c in 0..39 is NYU id c + 1: rows 0..38 are the official palette's colours of ids 1..39, row 39 is
    `CLASS40_COLOUR`, every other row (255 = ignore included) is black.
    """
    table = np.zeros((256, 3), dtype=np.uint8)
    official = np.asarray(semseg_palette(), dtype=np.uint8).reshape(-1, 3)  # row k = NYU id k, k = 0..39
    table[: NUM_CLASSES - 1] = official[1:NUM_CLASSES]
    table[NUM_CLASSES - 1] = CLASS40_COLOUR
    return table


def colorize_semseg(labels: Array) -> np.ndarray:
    """Colours (H, W) training labels 0..39 with `semseg_colours()`; 255 (ignore) and other ids black."""
    ids = _numpy(labels).astype(np.int64)
    ids = np.where((ids >= 0) & (ids < NUM_CLASSES), ids, IGNORE_INDEX)
    return semseg_colours()[ids]


def overlay(rgb_uint8: Array, labels: Array, alpha: float = 0.5) -> np.ndarray:
    """Blends the label colours over an image; ignored pixels (255) keep the image unchanged.

    Args:
        rgb_uint8: (H, W, 3) uint8 image.
        labels: (H, W) training labels 0..39, 255 = ignore.
        alpha: weight of the label colour (0 = image only, 1 = colours only).
    """
    from torchvision.utils import draw_segmentation_masks

    image = torch.from_numpy(np.ascontiguousarray(_numpy(rgb_uint8).astype(np.uint8))).permute(2, 0, 1)
    ids = torch.from_numpy(_numpy(labels).astype(np.int64))
    masks = ids[None] == torch.arange(NUM_CLASSES)[:, None, None]  # (40, H, W), ignore in no mask
    colours = [tuple(int(v) for v in row) for row in semseg_colours()[:NUM_CLASSES]]
    return draw_segmentation_masks(image, masks, alpha=alpha, colors=colours).permute(1, 2, 0).numpy()


def denormalize_rgb(rgb: Tensor) -> np.ndarray:
    """ImageNet-normalised (3, H, W) or (B, 3, H, W) floats back to (H, W, 3) or (B, H, W, 3) uint8."""
    mean = torch.tensor(IMAGENET_MEAN).view(3, 1, 1)
    std = torch.tensor(IMAGENET_STD).view(3, 1, 1)
    pixels = ((rgb.detach().float().cpu() * std + mean) * 255).round().clamp(0, 255).to(torch.uint8)
    return pixels.movedim(-3, -1).numpy()


def input_picture(batch: Mapping[str, Any], index: int) -> np.ndarray:
    """The picture of sample `index`'s input: its rgb, else its depth (metres, fixed scale)."""
    if "rgb" in batch:
        return denormalize_rgb(batch["rgb"][index])
    if "depth" in batch:
        return colorize_depth(batch["depth"][index])
    raise ConfigError(f"Cannot draw the input: the batch holds {sorted(batch)}, neither 'rgb' nor 'depth'.")


def _as_image(cell: Array | Image.Image) -> Image.Image:
    if isinstance(cell, Image.Image):
        return cell.convert("RGB")
    pixels = _numpy(cell)
    if pixels.dtype != np.uint8:
        raise ValueError(f"comparison_grid: cells must be uint8 images, got {pixels.dtype}.")
    return Image.fromarray(pixels).convert("RGB")


def comparison_grid(
    rows: Sequence[Sequence[Array | Image.Image]],
    column_titles: Sequence[str],
    *,
    path: str | os.PathLike | None = None,
    pad: int = 4,
) -> Image.Image:
    """Lays out pictures as a grid (one row per sample) under a band of column titles.

    Column j is as wide as its widest cell and row i as tall as its tallest; cells sit at the top-left of
    their slot. Layout: a white title band of height `title_height(pad)`, then the rows, with `pad` pixels
    around every cell: width = pad + Σ_j (w_j + pad), height = title band + Σ_i (h_i + pad).

    Args:
        rows: cells as (H, W, 3) / (H, W) uint8 arrays or PIL images, all rows as long as `column_titles`.
        column_titles: one title per column, centred over it (shortened with "..." if wider).
        path: where to also save the grid as PNG (parent folders are created).
        pad: gap in pixels between cells and around the edges.

    Returns:
        The grid as an RGB PIL image.
    """
    if not rows:
        raise ValueError("comparison_grid: no rows to draw.")
    if bad := [i for i, row in enumerate(rows) if len(row) != len(column_titles)]:
        raise ValueError(f"comparison_grid: rows {bad} do not have {len(column_titles)} cells (one per title).")
    cells = [[_as_image(cell) for cell in row] for row in rows]
    widths = [max(row[j].width for row in cells) for j in range(len(column_titles))]
    heights = [max(cell.height for cell in row) for row in cells]
    band = title_height(pad)
    grid = Image.new("RGB", (pad + sum(w + pad for w in widths), band + sum(h + pad for h in heights)), "white")
    draw, font = ImageDraw.Draw(grid), _font()
    x = pad
    for j, (title, width) in enumerate(zip(column_titles, widths, strict=True)):
        text = _fit(draw, font, title, width)
        text_width = draw.textlength(text, font=font)
        draw.text((x + (width - text_width) / 2, pad), text, fill="black", font=font)
        y = band
        for i, height in enumerate(heights):
            grid.paste(cells[i][j], (x, y))
            y += height + pad
        x += width + pad
    if path is not None:
        os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
        grid.save(path, format="PNG")
    return grid


def _font() -> ImageFont.ImageFont | ImageFont.FreeTypeFont:
    return ImageFont.load_default()


def title_height(pad: int = 4) -> int:
    """Height in pixels of `comparison_grid`'s title band: the font's line height plus `pad` above and below."""
    return _font().getbbox("Ag")[3] + 2 * pad


def _fit(draw: ImageDraw.ImageDraw, font: Any, text: str, width: int) -> str:
    """`text`, cut and ended with '...' until it fits `width` pixels."""
    if draw.textlength(text, font=font) <= width:
        return text
    while text and draw.textlength(text + "...", font=font) > width:
        text = text[:-1]
    return text + "..." if text else ""

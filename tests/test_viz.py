"""Pictures: fixed depth scale, black invalid pixels, the NYU-40 palette, overlays and titled grids."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from matplotlib import colormaps
from PIL import Image

from mmpt.data.layout import semseg_palette
from mmpt.data.transforms import to_model_inputs
from mmpt.tasks import build_task
from mmpt.tasks.viz import (
    CLASS40_COLOUR,
    colorize_depth,
    colorize_error,
    colorize_semseg,
    comparison_grid,
    denormalize_rgb,
    overlay,
    semseg_colours,
    title_height,
)


def cmap_end(name: str, x: float) -> list[int]:
    return [round(v * 255) for v in colormaps[name](x)[:3]]


def test_depth_scale_is_fixed_from_0_to_10_m_and_invalid_is_black() -> None:
    depth = torch.tensor([[[1e-4, 10.0, 25.0, 0.0, float("nan"), 5.0]]])  # (1, 1, 6)
    rgb = colorize_depth(depth)
    assert rgb.shape == (1, 6, 3) and rgb.dtype == np.uint8
    assert rgb[0, 0].tolist() == cmap_end("turbo", 0.0)
    assert rgb[0, 1].tolist() == cmap_end("turbo", 1.0)
    assert rgb[0, 2].tolist() == cmap_end("turbo", 1.0)  # beyond 10 m: clipped to the end colour
    assert rgb[0, 3].tolist() == [0, 0, 0] and rgb[0, 4].tolist() == [0, 0, 0]
    assert rgb[0, 5].tolist() == [round(v * 255) for v in colormaps["turbo"](128 / 255)[:3]]
    # Predictions: every pixel drawn, a negative value at the start colour.
    pred = colorize_depth(torch.tensor([[-1.0, 0.0]]), valid=torch.ones(1, 2, dtype=torch.bool))
    assert pred[0, 0].tolist() == pred[0, 1].tolist() == cmap_end("turbo", 0.0)
    assert colorize_depth(np.array([[10.0]]), cmap="magma_r")[0, 0].tolist() == cmap_end("magma_r", 1.0)


def test_error_map_keeps_zero_error_distinct_from_invalid() -> None:
    err = colorize_error(torch.tensor([[0.0, 1.0, 0.0]]), torch.tensor([[True, True, False]]))
    assert err[0, 0].tolist() == cmap_end("viridis", 0.0) != [0, 0, 0]
    assert err[0, 1].tolist() == cmap_end("viridis", 1.0)
    assert err[0, 2].tolist() == [0, 0, 0]


def test_semseg_colours_follow_the_official_palette_shifted_by_one() -> None:
    official = np.asarray(semseg_palette()).reshape(-1, 3)
    labels = torch.tensor([[0, 5, 38, 39, 255]])
    rgb = colorize_semseg(labels)
    assert rgb[0, 0].tolist() == official[1].tolist()  # label 0 = NYU id 1 (wall)
    assert rgb[0, 1].tolist() == official[6].tolist()
    assert rgb[0, 2].tolist() == official[39].tolist()
    assert rgb[0, 3].tolist() == list(CLASS40_COLOUR)  # NYU id 40: not in the official palette
    assert rgb[0, 4].tolist() == [0, 0, 0]
    table = semseg_colours()[:40]
    assert len({tuple(c) for c in table}) == 40 and (table.sum(1) > 0).all()  # 40 distinct, none black


def test_overlay_blends_labels_and_leaves_ignored_pixels() -> None:
    image = np.full((2, 2, 3), 100, dtype=np.uint8)
    out = overlay(image, torch.tensor([[0, 255], [39, 255]]), alpha=0.5)
    colour = semseg_colours()[0].astype(np.float64)
    assert out[0, 0].tolist() == np.trunc(100 * 0.5 + colour * 0.5).astype(int).tolist()
    assert out[1, 0].tolist() == np.trunc(100 * 0.5 + np.array(CLASS40_COLOUR) * 0.5).astype(int).tolist()
    assert out[0, 1].tolist() == out[1, 1].tolist() == [100, 100, 100]


def test_denormalize_rgb_inverts_the_dataset_normalisation() -> None:
    pixels = torch.randint(0, 256, (3, 4, 5), dtype=torch.uint8, generator=torch.Generator().manual_seed(0))
    normalised = to_model_inputs({"rgb": pixels})["rgb"]
    assert np.array_equal(denormalize_rgb(normalised), pixels.permute(1, 2, 0).numpy())
    assert denormalize_rgb(normalised[None]).shape == (1, 4, 5, 3)


def test_comparison_grid_layout_and_titles(tmp_path) -> None:
    pad = 4
    red = np.zeros((10, 12, 3), dtype=np.uint8)
    red[..., 0] = 255
    blue = np.zeros((10, 12, 3), dtype=np.uint8)
    blue[..., 2] = 255
    path = tmp_path / "viz" / "grid.png"
    grid = comparison_grid([[red, blue, red], [blue, red, Image.fromarray(blue)]], ["rgb", "gt", "pred"], path=path)
    band = title_height(pad)
    assert grid.size == (pad + 3 * (12 + pad), band + 2 * (10 + pad))
    pixels = np.asarray(grid)
    assert pixels[band, pad].tolist() == [255, 0, 0]  # row 0, column 0
    assert pixels[band + 10 + pad, pad + 12 + pad].tolist() == [255, 0, 0]  # row 1, column 1
    assert pixels[band + 10 + pad, pad + 2 * (12 + pad)].tolist() == [0, 0, 255]  # a PIL cell works too
    for column in range(3):  # each title drew dark pixels inside its column's part of the band
        x0 = pad + column * (12 + pad)
        assert (pixels[:band, x0 : x0 + 12] < 128).all(axis=2).any()
    assert np.array_equal(np.asarray(Image.open(path)), pixels)
    with pytest.raises(ValueError, match="one per title"):
        comparison_grid([[red, blue]], ["a", "b", "c"])


def test_task_visualisations_have_one_row_per_sample() -> None:
    gen = torch.Generator().manual_seed(0)
    rgb = torch.randn(3, 3, 16, 20, generator=gen)
    depth = torch.rand(3, 1, 16, 20, generator=gen) * 5
    batch = {"rgb": rgb, "depth": depth, "mask_valid": depth > 1, "semseg": torch.randint(0, 40, (3, 16, 20))}
    band = title_height()
    grid = build_task("depth").visualise(batch, depth + 0.3, max_samples=2)
    assert grid.size == (4 + 4 * (20 + 4), band + 2 * (16 + 4))
    grid = build_task("semseg").visualise(batch, torch.randn(3, 40, 8, 10, generator=gen), max_samples=5)
    assert grid.size == (4 + 4 * (20 + 4), band + 3 * (16 + 4))

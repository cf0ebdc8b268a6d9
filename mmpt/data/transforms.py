"""Joint NYUv2 transforms on torchvision.transforms.v2 and the one place rgb is normalised.

A sample entering a transform is a dict holding any subset of
- `rgb`: `tv_tensors.Image` uint8 (3, H, W), resampled bilinearly (antialiased);
- `depth`: `Depth` float32 (1, H, W) metres, 0 = invalid;
- `semseg`: `tv_tensors.Mask` uint8 (H, W) NYU-40 ids already shifted to 0..39, 255 = ignore.
Depth and labels are masks to torchvision, so every geometric op resamples them with NEAREST: an invalid
depth of 0 stays 0 (never blended into a neighbour) and labels stay class ids. Padding writes 0 to depth
(invalid), 255 to labels (ignore) and the ImageNet mean to rgb (≈ 0 after normalisation, before colour
jitter). Colour ops touch rgb only. After the transform, `to_model_inputs` normalises rgb and derives
`mask_valid = depth > 0`.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
from torchvision import tv_tensors
from torchvision.transforms import v2

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
IGNORE_INDEX = 255
# Colour jitter of the official NYUv2 depth fine-tuning ('nyu-augs', reference/multimae.md §4.2).
_JITTER = {"brightness": 0.1255, "contrast": 0.4, "saturation": (0.5, 1.5), "hue": 0.2}


class Depth(tv_tensors.Mask):
    """Depth in metres: a Mask to torchvision (nearest resampling), padded with 0 (invalid) not 255."""


# fill is looked up by exact type, so Depth (a Mask subclass) gets its own value.
_FILL: dict[type | str, Any] = {
    tv_tensors.Image: tuple(round(255 * m) for m in IMAGENET_MEAN),
    Depth: 0.0,
    tv_tensors.Mask: IGNORE_INDEX,
}


class OnRgb(torch.nn.Module):
    """Applies a colour transform to `sample["rgb"]` only, and is a no-op for samples without rgb.

    (torchvision's colour transforms raise on a sample holding masks but no image.)
    """

    def __init__(self, transform: v2.Transform) -> None:
        super().__init__()
        self.transform = transform

    def forward(self, sample: dict[str, Any]) -> dict[str, Any]:
        return {**sample, "rgb": self.transform(sample["rgb"])} if "rgb" in sample else sample


def train_transform(
    size: int,
    *,
    scale: tuple[float, float] = (0.5, 2.0),
    hflip: bool = True,
    color_jitter: bool = True,
) -> v2.Compose:
    """Training augmentation: random rescale, random crop, horizontal flip, colour jitter on rgb.

    The shorter side is resized to `size × s`, `s` uniform in `scale`, then a `size × size` crop is taken
    (padded where the image is smaller). `scale=(1.0, 1.0)` with `color_jitter=True` is the official NYUv2
    depth augmentation (SmallestMaxSize → flip → jitter/grey → RandomCrop).

    Args:
        size: output side in pixels.
        scale: range of the shorter side relative to `size`.
        hflip: flip left-right with probability 0.5.
        color_jitter: official colour jitter (p=0.5) and grey conversion (p=0.3), rgb only.

    Returns:
        A transform taking and returning a sample dict (see the module docstring).
    """
    if not 0 < scale[0] <= scale[1]:
        raise ValueError(f"scale must satisfy 0 < low <= high; got {scale}")
    low, high = round(size * scale[0]), round(size * scale[1])
    steps: list[v2.Transform] = [v2.RandomResize(max(low, 1), high + 1)]  # shorter side in [low, high]
    steps.append(v2.RandomCrop(size, pad_if_needed=True, fill=_FILL))
    if hflip:
        steps.append(v2.RandomHorizontalFlip(0.5))
    if color_jitter:
        steps.append(OnRgb(v2.Compose([v2.RandomApply([v2.ColorJitter(**_JITTER)], p=0.5), v2.RandomGrayscale(p=0.3)])))
    return v2.Compose(steps)


def eval_transform(size: int) -> v2.Compose:
    """Official evaluation resizing: shorter side to `size`, then the central `size × size` crop.

    A 480×640 NYUv2 frame becomes 256×341 and then 256×256 for `size=256`.
    """
    return v2.Compose([v2.Resize(size), v2.CenterCrop(size)])


def to_model_inputs(sample: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Turns a (transformed) sample into plain tensors with mmpt's dtype conventions.

    The only place rgb is normalised. Returns `rgb` float32 (3, H, W) ImageNet-normalised; `depth` float32
    (1, H, W) metres with 0 = invalid and `mask_valid` bool (1, H, W) = depth > 0; `semseg` int64 (H, W)
    with 0..39 and 255 = ignore. Keys other than these pass through unchanged.
    """
    out = dict(sample)
    if "rgb" in sample:
        rgb = sample["rgb"].as_subclass(torch.Tensor)
        rgb = rgb.float() / 255 if rgb.dtype == torch.uint8 else rgb.float()
        mean = torch.tensor(IMAGENET_MEAN).view(3, 1, 1)
        std = torch.tensor(IMAGENET_STD).view(3, 1, 1)
        out["rgb"] = (rgb - mean) / std
    if "depth" in sample:
        depth = sample["depth"].as_subclass(torch.Tensor).float()
        out["depth"] = depth
        out["mask_valid"] = depth > 0
    if "semseg" in sample:
        out["semseg"] = sample["semseg"].as_subclass(torch.Tensor).long()
    return out

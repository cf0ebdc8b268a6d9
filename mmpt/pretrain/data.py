"""Pretraining samples from an NYUv2-layout root, with the official pretraining augmentation (multimae.md §4.2).

One RandomResizedCrop (area 0.2-1, aspect 3/4-4/3) shared by every modality, then a horizontal flip; rgb
ImageNet-normalised; depth standardised per sample; semseg as class ids at 1/4 resolution. Differences
from the official pretraining data, on purpose:
- depth is standardised over its *valid* pixels only (10-90 % trimmed mean and variance) and invalid
  pixels are set to 0; the official pretraining depth was dense pseudo-labels, where "all pixels" and
  "valid pixels" coincide. `mask_valid` is kept, so the depth loss ignores sensor holes.
- semseg ids are NYU-40, not the release's 133 COCO classes: ids 0..39 are NYU-40 classes 1..40 (the labels
  `mmpt.data.NYUv2` gives for tuning) and id 40 is "unlabeled" (the dataset's ignore value 255), 41 classes
  in all. Unlabeled pixels are an input like any class but carry no loss.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor
from torch.utils.data import Dataset
from torchvision.transforms import v2

from mmpt.data.nyuv2 import NYUv2
from mmpt.data.transforms import IGNORE_INDEX
from mmpt.pretrain.config import SEMSEG_UNLABELED


def pretrain_transform(size: int, *, scale: tuple[float, float] = (0.2, 1.0), hflip: bool = True) -> v2.Compose:
    """The official pretraining augmentation on a decoded NYUv2 sample (depth and labels resampled nearest).

    Args:
        size: output side in pixels.
        scale: crop area range relative to the image.
        hflip: flip left-right with probability 0.5.
    """
    steps: list[v2.Transform] = [v2.RandomResizedCrop(size, scale=scale, ratio=(3 / 4, 4 / 3), antialias=True)]
    if hflip:
        steps.append(v2.RandomHorizontalFlip(0.5))
    return v2.Compose(steps)


def robust_standardize(depth: Tensor, valid: Tensor, eps: float = 1e-6) -> Tensor:
    """Per-sample depth standardisation with the official robust statistics, over valid pixels only.

    The valid values are sorted; the mean and unbiased variance of the middle 80 % (`[int(0.1n), int(0.9n))`)
    give `(d - mean) / sqrt(var + eps)`. Invalid pixels become 0 (the mean).

    Args:
        depth: (1, H, W) depth in any unit (the result does not depend on it).
        valid: (1, H, W) bool.
    """
    values = depth[valid].sort().values
    n = values.numel()
    trimmed = values[int(0.1 * n) : int(0.9 * n)]
    if trimmed.numel() < 2:  # too few valid pixels for robust statistics: use them all
        trimmed = values
    if trimmed.numel() < 2:
        return torch.zeros_like(depth)
    out = (depth - trimmed.mean()) / (trimmed.var() + eps).sqrt()
    return torch.where(valid, out, torch.zeros_like(out))


class PretrainSamples(Dataset):
    """NYUv2-layout samples as pretraining inputs and targets.

    A sample holds, for the chosen domains: `rgb` float32 (3, S, S) ImageNet-normalised; `depth` float32
    (1, S, S) robust-standardised with `mask_valid` bool (1, S, S); `semseg` int64 (S/4, S/4) ids 0..40
    (40 = unlabeled); plus `index`.

    Args:
        root: NYUv2-layout root.
        split: "train" or "test".
        domains: any of rgb, depth, semseg.
        size: crop side S (a multiple of 4 with semseg).
        scale: RandomResizedCrop area range.
        hflip: random horizontal flip.
        max_samples: use only the first N samples.
    """

    def __init__(
        self,
        root: str | os.PathLike,
        split: str,
        domains: Sequence[str],
        size: int,
        *,
        scale: tuple[float, float] = (0.2, 1.0),
        hflip: bool = True,
        max_samples: int | None = None,
    ) -> None:
        self.nyu = NYUv2(root, split, domains=domains, transform=pretrain_transform(size, scale=scale, hflip=hflip))
        self.length = len(self.nyu) if max_samples is None else min(max_samples, len(self.nyu))

    def __len__(self) -> int:
        return self.length

    def __getitem__(self, index: int) -> dict[str, Any]:
        sample = self.nyu[index]
        out: dict[str, Any] = {"index": index}
        if "rgb" in sample:
            out["rgb"] = sample["rgb"]
        if "depth" in sample:
            out["depth"] = robust_standardize(sample["depth"], sample["mask_valid"])
            out["mask_valid"] = sample["mask_valid"]
        if "semseg" in sample:
            labels = sample["semseg"][2::4, 2::4]  # nearest 1/4 downsampling: the centre pixel of each 4x4 block
            out["semseg"] = torch.where(labels == IGNORE_INDEX, SEMSEG_UNLABELED, labels)
        return out

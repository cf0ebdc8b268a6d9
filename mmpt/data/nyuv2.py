"""NYUv2 in the official MultiMAE layout as a torch Dataset of dict samples."""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset
from torchvision import tv_tensors

from mmpt.data.layout import (
    DOMAINS,
    NUM_CLASSES,
    SPLITS,
    check_domains,
    decode_depth,
    depth_units,
    domain_dir,
    open_png,
    semseg_ids,
)
from mmpt.data.transforms import IGNORE_INDEX, Depth, to_model_inputs
from mmpt.errors import ConfigError, DatasetLayoutError

# NYU-40 id → training label: 0 (unlabeled) → ignore, k → k - 1 (the official `seg_reduce_zero_label`).
_REDUCE_ZERO_LABEL = np.full(256, IGNORE_INDEX, dtype=np.uint8)
_REDUCE_ZERO_LABEL[1 : NUM_CLASSES + 1] = np.arange(NUM_CLASSES)

Transform = Callable[[dict[str, Any]], dict[str, Any]]


class NYUv2(Dataset):
    """NYUv2 read from `root/split/{rgb,depth,semseg}/data/NNNN.png`, samples aligned by file name.

    A sample is a dict with, for the requested domains,
    - `rgb`: float32 (3, H, W), ImageNet-normalised;
    - `depth`: float32 (1, H, W) metres, 0 = invalid, and `mask_valid`: bool (1, H, W) = depth > 0;
    - `semseg`: int64 (H, W), NYU-40 classes as 0..39, 255 = ignore (unlabeled or padding);
    plus `name` (file stem, e.g. "0007" = zero-based index in the labeled set) and `index` (position here).

    Args:
        root: dataset root (holds `train/` and `test/`).
        split: "train" or "test".
        domains: any subset of ("rgb", "depth", "semseg").
        transform: joint transform on the decoded sample (see `mmpt.data.transforms`), applied before
            normalisation; None keeps the full 480×640 frames.

    Raises:
        ConfigError: unknown split or domain.
        DatasetLayoutError: missing folders, or a file present for one domain and missing for another.

    Example:
        >>> ds = NYUv2("data/NYUv2", "test", domains=("rgb", "depth"), transform=eval_transform(256))
    """

    def __init__(
        self,
        root: str | os.PathLike,
        split: str = "train",
        domains: Sequence[str] = DOMAINS,
        transform: Transform | None = None,
    ) -> None:
        if split not in SPLITS:
            raise ConfigError(f"Unknown NYUv2 split {split!r}; expected one of {list(SPLITS)}.")
        domains = (domains,) if isinstance(domains, str) else tuple(domains)
        check_domains(domains)
        self.root = Path(root)
        self.split = split
        self.domains = domains
        self.transform = transform
        self.names = _aligned_names(self.root, split, domains)

    def __len__(self) -> int:
        return len(self.names)

    def __repr__(self) -> str:
        return f"NYUv2(root={str(self.root)!r}, split={self.split!r}, domains={self.domains}, {len(self)} samples)"

    def __getitem__(self, index: int) -> dict[str, Any]:
        name = self.names[index]
        sample = {domain: self._read(domain, name) for domain in self.domains}
        sizes = {domain: tuple(value.shape[-2:]) for domain, value in sample.items()}
        if len(set(sizes.values())) > 1:
            listing = ", ".join(f"{d}/data/{name}.png {h}×{w}" for d, (h, w) in sizes.items())
            raise DatasetLayoutError(
                f"{self.root / self.split}: sample {name} has modalities of different sizes ({listing}); "
                "expected one size for all.",
                hint="run `mmpt data check` on the root, then re-create the sample",
            )
        if self.transform is not None:
            sample = self.transform(sample)
        return {**to_model_inputs(sample), "name": name, "index": index}

    def _read(self, domain: str, name: str) -> torch.Tensor:
        path = domain_dir(self.root, self.split, domain) / f"{name}.png"
        image = open_png(path)
        if domain == "rgb":
            rgb = np.array(image if image.mode == "RGB" else image.convert("RGB"))  # one copy, writable for torch
            return tv_tensors.Image(torch.from_numpy(rgb).permute(2, 0, 1))
        if domain == "depth":
            return Depth(torch.from_numpy(decode_depth(depth_units(image, path)))[None])
        return tv_tensors.Mask(torch.from_numpy(_REDUCE_ZERO_LABEL[semseg_ids(image, path)]))


def _aligned_names(root: Path, split: str, domains: tuple[str, ...]) -> list[str]:
    """Sorted file stems present in every domain; raises on the first file that exists for only some."""
    split_dir = root / split
    if not split_dir.is_dir():
        if (root / "NYUv2" / split).is_dir():
            hint = f"pass root={str(root / 'NYUv2')!r}"
        else:
            hint = f"create it with `mmpt data synth --out {root}` or `mmpt data prepare-nyuv2 ... --out {root}`"
        raise DatasetLayoutError(
            f"{split_dir} does not exist; expected an NYUv2 root holding train/ and test/.", hint=hint
        )
    names = {}
    for domain in domains:
        folder = domain_dir(root, split, domain)
        if not folder.is_dir():
            raise DatasetLayoutError(
                f"{folder} does not exist; expected the {domain} PNGs of the {split} split there.",
                hint=f"leave {domain!r} out of domains, or re-create the split with `mmpt data prepare-nyuv2`",
            )
        names[domain] = {path.stem for path in folder.glob("*.png")}
    every = set().union(*names.values())
    if not every:
        raise DatasetLayoutError(
            f"{split_dir} holds no PNG files under {'/'.join(domains)}/data/.", hint="re-create it"
        )
    for domain in domains:
        if missing := sorted(every - names[domain]):
            others = [d for d in domains if missing[0] in names[d]]
            raise DatasetLayoutError(
                f"{domain_dir(root, split, domain) / missing[0]}.png is missing ({len(missing)} {split} samples have "
                f"{'/'.join(others)} but no {domain}); samples are matched by file name across domains.",
                hint="run `mmpt data check` on the root to list every problem, then re-create the missing files",
            )
    return sorted(every)

"""The official MultiMAE NYUv2 layout: paths and PNG encodings shared by preparation and synthesis.

`<root>/{train,test}/{rgb,depth,semseg}/data/NNNN.png`, NNNN = zero-based index into the labeled set.
rgb: 8-bit RGB. depth: 16-bit grey, `uint16(metres * 2**16/10)` (truncation). semseg: palettized
('P') PNG whose pixel values are NYU-40 class ids (0 = unlabeled, 1..40).
"""

from __future__ import annotations

import colorsys
import os
from pathlib import Path

import numpy as np
from PIL import Image

from mmpt.errors import ConfigError, DatasetLayoutError

SPLITS = ("train", "test")
DOMAINS = ("rgb", "depth", "semseg")
DEPTH_SCALE = 2**16 / 10  # PNG units per metre (1 unit ≈ 0.153 mm)
NUM_CLASSES = 40
# NYU-40 class names (Gupta et al. 2013), index k-1 for id k; id 0 is "unlabeled".
NYU40_CLASSES = (
    "wall", "floor", "cabinet", "bed", "chair", "sofa", "table", "door", "window", "bookshelf",
    "picture", "counter", "blinds", "desk", "shelves", "curtain", "dresser", "pillow", "mirror", "floor mat",
    "clothes", "ceiling", "books", "refrigerator", "television", "paper", "towel", "shower curtain", "box",
    "whiteboard", "person", "night stand", "toilet", "sink", "lamp", "bathtub", "bag", "otherstructure",
    "otherfurniture", "otherprop",
)  # fmt: skip
REPREPARE = "re-create it with `mmpt data prepare-nyuv2` (or `mmpt data synth` for a synthetic set)"
# Pillow reports 16-bit grey PNGs as I;16 (13.x) or I (older versions); values are the same.
_DEPTH_MODES = ("I;16", "I;16B", "I;16L", "I")


def semseg_palette() -> list[int]:
    """The official 40-entry palette as a flat RGB list: black, then 39 HLS hues (l=0.6, s=0.65).

    Class 40 has no entry (as in the official files): readers must use indices, never colours.
    """
    colours = [(0, 0, 0)] + [colorsys.hls_to_rgb(k / 39, 0.6, 0.65) for k in range(39)]
    return [int(c * 255) if isinstance(c, float) else c for rgb in colours for c in rgb]


def sample_path(root: str | os.PathLike, split: str, domain: str, index: int) -> Path:
    """`root/split/domain/data/NNNN.png`."""
    return Path(root) / split / domain / "data" / f"{index:04d}.png"


def encode_depth(depth_m: np.ndarray) -> np.ndarray:
    """Metres → uint16 PNG units, truncating exactly as the official preparation does."""
    return np.uint16(np.asarray(depth_m, dtype=np.float32) * np.float32(DEPTH_SCALE))


def decode_depth(units: np.ndarray) -> np.ndarray:
    """uint16 PNG units → float32 metres (0 stays 0 = invalid)."""
    return np.asarray(units, dtype=np.float32) / np.float32(DEPTH_SCALE)


def write_png(image: Image.Image, path: Path) -> None:
    """Writes a PNG atomically (temp file, then rename) so an interrupted run never leaves half a file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    image.save(tmp, format="PNG")
    os.replace(tmp, path)


def write_sample(
    root: str | os.PathLike,
    split: str,
    index: int,
    *,
    rgb: np.ndarray | None = None,
    depth_m: np.ndarray | None = None,
    labels40: np.ndarray | None = None,
) -> None:
    """Writes the given modalities of one sample in the official encodings.

    Args:
        root: dataset root.
        split: "train" or "test".
        index: zero-based sample index (the file name).
        rgb: (H, W, 3) uint8.
        depth_m: (H, W) float metres, 0 = invalid; must stay below 10 m (uint16 range).
        labels40: (H, W) integer NYU-40 ids, 0 = unlabeled.
    """
    if rgb is not None:
        write_png(Image.fromarray(np.asarray(rgb, dtype=np.uint8), mode="RGB"), sample_path(root, split, "rgb", index))
    if depth_m is not None:
        write_png(Image.fromarray(encode_depth(depth_m)), sample_path(root, split, "depth", index))
    if labels40 is not None:
        image = Image.fromarray(np.asarray(labels40, dtype=np.uint8), mode="P")
        image.putpalette(semseg_palette())
        write_png(image, sample_path(root, split, "semseg", index))


def check_domains(domains: tuple[str, ...]) -> None:
    """Raises ConfigError unless `domains` is a non-empty subset of DOMAINS without repeats."""
    unknown = [d for d in domains if d not in DOMAINS]
    if unknown or not domains or len(set(domains)) != len(domains):
        problem = f"unknown {unknown}" if unknown else "an empty list" if not domains else "repeats"
        raise ConfigError(f"NYUv2 domains {list(domains)}: {problem}; expected a subset of {list(DOMAINS)}.")


def domain_dir(root: str | os.PathLike, split: str, domain: str) -> Path:
    """`root/split/domain/data`, the folder holding one modality's PNGs."""
    return Path(root) / split / domain / "data"


def open_png(path: Path) -> Image.Image:
    """Opens and fully decodes a PNG, turning unreadable files into a DatasetLayoutError."""
    try:
        image = Image.open(path)
        image.load()
    except (OSError, SyntaxError, ValueError) as e:
        raise DatasetLayoutError(
            f"{path}: cannot be read as a PNG ({e}).", hint=f"delete the file and {REPREPARE}"
        ) from e
    return image


def depth_units(image: Image.Image, path: Path) -> np.ndarray:
    """The uint16 PNG units of a depth image (0 = invalid).

    Raises:
        DatasetLayoutError: the PNG is not 16-bit grey (e.g. an 8-bit image, whose values would be
            read as depths below 4 cm).
    """
    if image.mode not in _DEPTH_MODES:
        dtype = "uint8" if image.mode in ("L", "P", "1") else f"mode {image.mode!r}"
        raise DatasetLayoutError(
            f"{path} is {dtype}; expected a 16-bit grey PNG (uint16) scaled by 2**16/10 (official NYUv2 layout).",
            hint=REPREPARE,
        )
    units = np.asarray(image)
    if units.dtype != np.uint16:  # mode "I" is int32 in older Pillow versions
        if units.size and (units.min() < 0 or units.max() > np.iinfo(np.uint16).max):
            raise DatasetLayoutError(
                f"{path} holds values in [{units.min()}, {units.max()}]; expected uint16 PNG units (0..65535).",
                hint=REPREPARE,
            )
        units = units.astype(np.uint16)
    return units


def semseg_ids(image: Image.Image, path: Path) -> np.ndarray:
    """The NYU-40 class ids (uint8, 0 = unlabeled, 1..40) of a semseg image, read from palette indices.

    Raises:
        DatasetLayoutError: the PNG is not palettized/grey, or holds ids above 40.
    """
    if image.mode not in ("P", "L"):
        raise DatasetLayoutError(
            f"{path} is a {image.mode!r} PNG; expected a palettized ('P') PNG whose pixel values are NYU-40 class "
            "ids 0..40 (colours are never read).",
            hint=REPREPARE,
        )
    ids = np.asarray(image)
    if ids.size and (top := int(ids.max())) > NUM_CLASSES:
        count = int((ids > NUM_CLASSES).sum())
        raise DatasetLayoutError(
            f"{path} holds class id {top} ({count} pixels above {NUM_CLASSES}); expected NYU-40 ids 0..{NUM_CLASSES} "
            "(0 = unlabeled). Was it written with another label set (e.g. the 894 raw NYU ids or 13 classes)?",
            hint=f"map the labels through classMapping40.mat: {REPREPARE}",
        )
    return ids

"""Helpers for the data tests: tiny raw NYUv2 `.mat` files and tiny prepared trees.

The raw files mimic the official ones: `nyu_depth_v2_labeled.mat` is HDF5 (MATLAB v7.3, with the 512-byte
user block MATLAB writes) holding `images` uint8 (N, 3, W, H), `depths` float32 (N, W, H) and `labels`
uint16 (N, W, H) — MATLAB's axis order reversed, as h5py shows the real file; `splits.mat` and
`classMapping40.mat` are MAT v5 (scipy.io.savemat).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import h5py
import numpy as np
import scipy.io
from loopback import loopback_server  # noqa: F401  (the data tests import it from here)

from mmpt.data.layout import write_sample

SHARED_NYUV2 = Path(__file__).resolve().parents[2] / "shared" / "data" / "nyuv2_real_subset" / "NYUv2"
NUM_RAW_CLASSES = 894


@dataclass
class RawNYUv2:
    """Tiny raw files plus the arrays they hold, in natural (H, W) orientation."""

    labeled_mat: Path
    splits: Path
    class_map: Path
    rgb: np.ndarray  # (N, H, W, 3) uint8
    depth_m: np.ndarray  # (N, H, W) float32
    depth_units: np.ndarray  # (N, H, W) uint16: what the depth PNGs must hold
    raw_labels: np.ndarray  # (N, H, W) uint16, 0..894
    map_class: np.ndarray  # (894,) NYU-40 ids 1..40
    train: list[int]  # 1-based, as in splits.mat
    test: list[int]


def make_raw_nyuv2(
    folder: Path,
    *,
    n: int = 7,
    height: int = 12,
    width: int = 16,
    train: tuple[int, ...] = (1, 3, 4, 7),
    test: tuple[int, ...] = (2, 5, 6),
    seed: int = 0,
    chunked: bool = False,
) -> RawNYUv2:
    """Writes the three raw files into `folder` with random content and returns them with their arrays.

    Depths are built from known PNG units `u` as float32 `(u + 0.7) / 6553.6`, so truncation must give `u`
    back (rounding would give `u + 1`); invalid pixels are exactly 0.
    """
    rng = np.random.default_rng(seed)
    rgb = rng.integers(0, 256, (n, height, width, 3), dtype=np.uint8)
    units = rng.integers(1, 65536, (n, height, width)).astype(np.uint16)
    units[:, 0, :3] = 0  # a few invalid pixels per image
    units[0, 1, 1] = 65535  # 9.99995 m: the top of the range
    depth_m = ((units.astype(np.float64) + 0.7) / 6553.6).astype(np.float32)
    depth_m[units == 0] = 0.0
    raw_labels = rng.integers(0, NUM_RAW_CLASSES + 1, (n, height, width)).astype(np.uint16)
    raw_labels[:, -1, -2:] = [0, NUM_RAW_CLASSES]  # unlabeled and the last raw class, in every image
    map_class = rng.integers(1, 41, NUM_RAW_CLASSES)
    map_class[:40] = np.arange(1, 41)  # every NYU-40 id occurs in the map

    folder.mkdir(parents=True, exist_ok=True)
    labeled = folder / "nyu_depth_v2_labeled.mat"
    write_labeled_mat(labeled, rgb=rgb, depth_m=depth_m, raw_labels=raw_labels, chunked=chunked)
    splits = folder / "splits.mat"
    column = {
        "trainNdxs": np.array(train, dtype=np.uint16)[:, None],
        "testNdxs": np.array(test, dtype=np.uint16)[:, None],
    }
    scipy.io.savemat(splits, column)
    class_map = folder / "classMapping40.mat"
    scipy.io.savemat(class_map, {"mapClass": map_class.astype(np.float64)[None, :]})  # MATLAB doubles, (1, 894)
    return RawNYUv2(labeled, splits, class_map, rgb, depth_m, units, raw_labels, map_class, list(train), list(test))


def write_labeled_mat(
    path: Path, *, rgb: np.ndarray, depth_m: np.ndarray, raw_labels: np.ndarray, chunked: bool = False
) -> None:
    """Writes a v7.3-style labeled set from natural-orientation arrays (N, H, W[, 3]).

    `chunked` stores gzip-compressed chunks that span two images and half an image width each.
    """
    with h5py.File(path, "w", userblock_size=512) as f:
        arrays = {
            "images": rgb.transpose(0, 3, 2, 1),  # (N, H, W, C) → MATLAB order [N, C, W, H]
            "depths": depth_m.transpose(0, 2, 1),
            "labels": raw_labels.transpose(0, 2, 1),
        }
        for name, array in arrays.items():
            chunks = (2, *array.shape[1:-2], max(array.shape[-2] // 2, 1), array.shape[-1]) if chunked else None
            f.create_dataset(name, data=array, chunks=chunks, compression="gzip" if chunked else None)
        f["accelData"] = np.zeros((4, len(rgb)), dtype=np.float32)  # present in the real file, unused
    with open(path, "r+b") as f:
        f.write(b"MATLAB 7.3 MAT-file, Platform: GLNXA64, Created by: mmpt tests HDF5 schema 1.00 .".ljust(116))


def write_tree(root: Path, samples: dict[str, list[int]], *, height: int = 24, width: int = 32, seed: int = 0) -> None:
    """Writes a valid prepared tree (all three domains) with random content: `{split: [indices]}`."""
    rng = np.random.default_rng(seed)
    for split, indices in samples.items():
        for index in indices:
            depth = rng.uniform(0.5, 9.0, (height, width)).astype(np.float32)
            depth[0, 0] = 0.0
            write_sample(
                root,
                split,
                index,
                rgb=rng.integers(0, 256, (height, width, 3), dtype=np.uint8),
                depth_m=depth,
                labels40=rng.integers(0, 41, (height, width)),
            )

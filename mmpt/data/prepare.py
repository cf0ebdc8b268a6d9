"""NYUv2 preparation: the official raw `.mat` files → the official MultiMAE layout, pixel for pixel.

Written from the facts in `reference/multimae.md` §4.1 (not from the official script). Differences from
the official tool are in how, never in what: images are read from the 2.8 GB HDF5 file one at a time
instead of all at once, every PNG is written atomically, and a second run skips finished samples.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from mmpt.data.layout import NUM_CLASSES, SPLITS, sample_path, write_sample
from mmpt.download import cache_dir, download
from mmpt.errors import ConfigError, DatasetLayoutError, DownloadError

MAX_DEPTH_M = 10.0  # 10 m × 2**16/10 = 65536 overflows uint16
_CHUNK_CACHE_BYTES = 256 << 20  # upper bound on what h5py keeps decompressed (the file is ~6 GB decompressed)


@dataclass(frozen=True)
class RawFile:
    """One of the three public files the preparation reads.

    Attributes:
        key: the name `prepare_nyuv2` and `fetch_raw_files` use for it.
        filename: the file name on the server and in the cache.
        url: where the official MultiMAE instructions point.
        size: the size in bytes, where it is known.
    """

    key: str
    filename: str
    url: str
    size: int | None = None


# The one place the raw-file URLs live (the ones named by the official MultiMAE preparation instructions).
RAW_FILES: tuple[RawFile, ...] = (
    RawFile(
        "labeled_mat",
        "nyu_depth_v2_labeled.mat",
        "http://horatio.cs.nyu.edu/mit/silberman/nyu_depth_v2/nyu_depth_v2_labeled.mat",
        size=2_972_037_809,
    ),
    RawFile("splits", "splits.mat", "http://horatio.cs.nyu.edu/mit/silberman/indoor_seg_sup/splits.mat"),
    RawFile(
        "class_map", "classMapping40.mat", "https://github.com/ankurhanda/nyuv2-meta-data/raw/master/classMapping40.mat"
    ),
)


@dataclass
class PrepareResult:
    """What `prepare_nyuv2` did, per split."""

    out: Path
    written: dict[str, int] = field(default_factory=lambda: dict.fromkeys(SPLITS, 0))
    skipped: dict[str, int] = field(default_factory=lambda: dict.fromkeys(SPLITS, 0))


def raw_cache_dir() -> Path:
    """Where `--download` puts the raw files: `cache_dir()/nyuv2`."""
    return cache_dir() / "nyuv2"


def fetch_raw_files(
    dest_dir: str | os.PathLike | None = None,
    *,
    keys: tuple[str, ...] | None = None,
    progress: bool = True,
    attempts: int = 5,
) -> dict[str, Path]:
    """Downloads the raw NYUv2 files that are not already complete in `dest_dir`.

    A cut-short transfer is resumed with an HTTP Range request, in this call (up to `attempts` times
    while the partial file keeps growing) and in later calls (the `.part` file is kept).

    Args:
        dest_dir: target folder, default `raw_cache_dir()`.
        keys: which of `RAW_FILES` to fetch (by `RawFile.key`), default all.
        progress: show a progress bar per file.
        attempts: transfers per file before giving up.

    Returns:
        `{key: path}` for the requested files.

    Raises:
        DownloadError: a file could not be fetched completely or has the wrong size.
    """
    dest_dir = Path(dest_dir) if dest_dir is not None else raw_cache_dir()
    paths = {}
    for raw in RAW_FILES:
        if keys is not None and raw.key not in keys:
            continue
        dest = dest_dir / raw.filename
        if not (dest.is_file() and (raw.size is None or dest.stat().st_size == raw.size)):
            _download_resuming(raw, dest, progress=progress, attempts=attempts)
        paths[raw.key] = dest
    return paths


def resolve_raw_files(
    labeled_mat: str | os.PathLike | None = None,
    splits: str | os.PathLike | None = None,
    class_map: str | os.PathLike | None = None,
    *,
    download: bool = False,
    progress: bool = True,
) -> dict[str, Path]:
    """The three raw files as paths: the ones given, the others fetched when `download` is set.

    Args:
        labeled_mat: `nyu_depth_v2_labeled.mat`, or None.
        splits: `splits.mat`, or None.
        class_map: `classMapping40.mat`, or None.
        download: fetch the files not given into `raw_cache_dir()` (skipping complete ones).
        progress: show download progress.

    Returns:
        `{key: Path}` for the three `RawFile.key`s.

    Raises:
        ConfigError: a file is not given and `download` is off.
    """
    given = {"labeled_mat": labeled_mat, "splits": splits, "class_map": class_map}
    missing = tuple(raw.key for raw in RAW_FILES if given.get(raw.key) is None)
    if missing and not download:
        options = ", ".join("--" + key.replace("_", "-") for key in missing)
        raise ConfigError(
            f"No path for {options}; preparation reads nyu_depth_v2_labeled.mat, splits.mat and classMapping40.mat.",
            hint=f"pass {options}, or add --download to fetch them into {raw_cache_dir()}",
        )
    paths = {key: Path(path) for key, path in given.items() if path is not None}
    if missing:
        paths |= fetch_raw_files(keys=missing, progress=progress)
    return paths


def _download_resuming(raw: RawFile, dest: Path, *, progress: bool, attempts: int) -> None:
    part = dest.with_name(dest.name + ".part")
    for attempt in range(1, attempts + 1):
        before = part.stat().st_size if part.exists() else 0
        try:
            download(raw.url, dest, size=raw.size, resume=True, progress=progress)
            return
        except DownloadError:  # a size mismatch deletes the .part file, so it never counts as progress
            grew = part.exists() and part.stat().st_size > before
            if attempt == attempts or not grew:
                raise


def read_splits(path: str | os.PathLike) -> dict[str, np.ndarray]:
    """Reads `splits.mat` into zero-based `.mat` indices per split.

    Returns:
        `{"train": ..., "test": ...}`, int64 arrays in file order (795 and 654 in the official file).

    Raises:
        DatasetLayoutError: missing keys, non-integer, non-positive, duplicated or shared indices.
    """
    mat = _loadmat(path, "splits.mat")
    splits = {}
    for split, key in (("train", "trainNdxs"), ("test", "testNdxs")):
        if key not in mat:
            raise DatasetLayoutError(
                f"{path} has no {key!r}; found {sorted(k for k in mat if not k.startswith('__'))}.",
                hint=f"pass the official splits.mat ({_url('splits')})",
            )
        values = np.asarray(mat[key]).ravel()
        if values.size == 0 or not np.issubdtype(values.dtype, np.number) or np.any(values != np.round(values)):
            raise DatasetLayoutError(
                f"{path}: {key} must hold integer 1-based indices; got dtype {values.dtype} with values {values[:5]}.",
                hint=f"pass the official splits.mat ({_url('splits')})",
            )
        ones = values.astype(np.int64)
        if ones.min() < 1 or len(np.unique(ones)) != len(ones):
            raise DatasetLayoutError(
                f"{path}: {key} must hold distinct 1-based indices; got min {ones.min()} and "
                f"{len(ones) - len(np.unique(ones))} duplicates.",
                hint=f"pass the official splits.mat ({_url('splits')})",
            )
        splits[split] = ones - 1
    if shared := sorted(set(splits["train"].tolist()) & set(splits["test"].tolist())):
        raise DatasetLayoutError(
            f"{path}: {len(shared)} indices are in both trainNdxs and testNdxs (first: {shared[0] + 1}).",
            hint=f"pass the official splits.mat ({_url('splits')})",
        )
    return splits


def read_class_map(path: str | os.PathLike) -> np.ndarray:
    """Reads `classMapping40.mat` into a lookup table from raw NYU label ids to NYU-40 ids.

    Returns:
        uint8 array `lut` with `lut[0] = 0` (unlabeled) and `lut[k] = mapClass[k - 1]` (1..40).

    Raises:
        DatasetLayoutError: no `mapClass`, or values outside 1..40.
    """
    mat = _loadmat(path, "classMapping40.mat")
    if "mapClass" not in mat:
        raise DatasetLayoutError(
            f"{path} has no 'mapClass'; found {sorted(k for k in mat if not k.startswith('__'))}.",
            hint=f"pass the official classMapping40.mat ({_url('class_map')})",
        )
    mapping = np.asarray(mat["mapClass"]).ravel()
    if mapping.size == 0 or np.any(mapping != np.round(mapping)) or mapping.min() < 1 or mapping.max() > NUM_CLASSES:
        raise DatasetLayoutError(
            f"{path}: mapClass must hold integer NYU-40 ids 1..{NUM_CLASSES}; got values in "
            f"[{mapping.min()}, {mapping.max()}].",
            hint=f"pass the official classMapping40.mat ({_url('class_map')})",
        )
    return np.concatenate([[0], mapping]).astype(np.uint8)


def prepare_nyuv2(
    labeled_mat: str | os.PathLike,
    splits: str | os.PathLike,
    class_map: str | os.PathLike,
    out: str | os.PathLike,
    *,
    progress: bool = True,
) -> PrepareResult:
    """Writes `out/{train,test}/{rgb,depth,semseg}/data/NNNN.png` from the raw NYUv2 files.

    Pixel-identical to the official preparation: rgb as 8-bit RGB; depth as `uint16(metres × 2**16/10)`
    (truncated, product in float32); semseg as a palettized PNG of NYU-40 ids (0 = unlabeled); NNNN is the
    zero-based `.mat` index. Samples whose three PNGs exist are skipped, so an interrupted run resumes.

    Args:
        labeled_mat: `nyu_depth_v2_labeled.mat` (MATLAB v7.3, read with h5py one image at a time).
        splits: `splits.mat` (`trainNdxs`, `testNdxs`, 1-based).
        class_map: `classMapping40.mat` (`mapClass`, raw id → NYU-40 id).
        out: dataset root to write.
        progress: show a progress bar.

    Raises:
        DatasetLayoutError: a raw file is missing, unreadable or not shaped like the official one.
    """
    split_indices = read_splits(splits)
    lut = read_class_map(class_map)
    result = PrepareResult(out=Path(out))
    jobs = sorted((int(i), split) for split, indices in split_indices.items() for i in indices)  # sequential reads
    with _open_labeled(labeled_mat) as (images, depths, labels):
        if (top := jobs[-1][0]) >= len(images):
            raise DatasetLayoutError(
                f"{splits} refers to image {top + 1}, but {labeled_mat} holds {len(images)} images.",
                hint="pass the splits.mat that belongs to this labeled set",
            )
        for index, split in _progress(jobs, progress):
            if all(sample_path(out, split, d, index).exists() for d in ("rgb", "depth", "semseg")):
                result.skipped[split] += 1
                continue
            rgb = images[index].transpose(2, 1, 0)  # (3, W, H) → (H, W, 3)
            depth = depths[index].T  # (W, H) → (H, W)
            raw_labels = labels[index].T
            _check_depth(depth, labeled_mat, index)
            write_sample(out, split, index, rgb=rgb, depth_m=depth, labels40=_map_labels(raw_labels, lut, index))
            result.written[split] += 1
    return result


@contextmanager
def _open_labeled(path: str | os.PathLike) -> Iterator[tuple]:
    """Opens `nyu_depth_v2_labeled.mat` and yields its images, depths and labels datasets (not read yet)."""
    import h5py

    path = Path(path)
    hint = f"download it again ({_url('labeled_mat')}) or pass --download"
    if not path.is_file():
        raise DatasetLayoutError(f"{path} does not exist.", hint=hint)
    try:
        # A bigger chunk cache than h5py's 1 MiB: should the file's compressed chunks span several images,
        # each chunk is then decompressed once over the sorted, sequential reads instead of once per image.
        file = h5py.File(path, "r", rdcc_nbytes=_CHUNK_CACHE_BYTES, rdcc_nslots=1_000_003, rdcc_w0=1.0)
    except OSError as e:
        raise DatasetLayoutError(
            f"{path} is not a MATLAB v7.3 (HDF5) file ({e}); expected nyu_depth_v2_labeled.mat "
            "(2,972,037,809 bytes). A partial download looks like this.",
            hint=hint,
        ) from e
    with file:
        expected = {"images": (4, "u", "uint8"), "depths": (3, "f", "float32"), "labels": (3, "iu", "uint16")}
        datasets = []
        for name, (ndim, kinds, dtype) in expected.items():
            ds = file.get(name)
            if not isinstance(ds, h5py.Dataset) or ds.ndim != ndim or ds.dtype.kind not in kinds:
                found = f"{ds.dtype} {ds.shape}" if isinstance(ds, h5py.Dataset) else "nothing"
                raise DatasetLayoutError(
                    f"{path}: {name!r} must be a {ndim}-D {dtype} array laid out [N, (C,) W, H] as in "
                    f"nyu_depth_v2_labeled.mat; found {found}.",
                    hint=hint,
                )
            datasets.append(ds)
        images, depths, labels = datasets
        if images.shape[1] != 3 or not (images.shape[0] == depths.shape[0] == labels.shape[0]):
            raise DatasetLayoutError(
                f"{path}: inconsistent shapes (images {images.shape}, depths {depths.shape}, labels {labels.shape}); "
                "expected (N, 3, W, H), (N, W, H), (N, W, H).",
                hint=hint,
            )
        yield images, depths, labels


def _check_depth(depth: np.ndarray, path: str | os.PathLike, index: int) -> None:
    if not np.isfinite(depth).all() or depth.min() < 0 or depth.max() >= MAX_DEPTH_M:
        raise DatasetLayoutError(
            f"{path}: depth of image {index} spans [{np.nanmin(depth)}, {np.nanmax(depth)}] m; the uint16 encoding "
            f"(× 2**16/10) needs finite depths in [0, {MAX_DEPTH_M}) m.",
            hint="this is not the official in-painted labeled set; download nyu_depth_v2_labeled.mat again",
        )


def _map_labels(raw: np.ndarray, lut: np.ndarray, index: int) -> np.ndarray:
    if raw.size and (top := int(raw.max())) >= len(lut):
        raise DatasetLayoutError(
            f"image {index} holds raw label id {top}, but classMapping40.mat maps only ids 1..{len(lut) - 1}.",
            hint="pass the classMapping40.mat that belongs to nyu_depth_v2_labeled.mat (894 raw classes)",
        )
    return lut[raw]


def _loadmat(path: str | os.PathLike, name: str) -> dict:
    from scipy.io import loadmat

    if not Path(path).is_file():
        raise DatasetLayoutError(f"{path} does not exist.", hint=f"download {name} or pass --download")
    try:
        return loadmat(path)
    except (ValueError, TypeError, OSError, NotImplementedError) as e:
        raise DatasetLayoutError(
            f"{path} is not a MATLAB v5 .mat file ({e}).", hint=f"delete it and download {name} again (--download)"
        ) from e


def _url(key: str) -> str:
    return next(raw.url for raw in RAW_FILES if raw.key == key)


def _progress(jobs: list[tuple[int, str]], enabled: bool) -> Iterable[tuple[int, str]]:
    if not enabled:
        return jobs
    from rich.progress import track

    return track(jobs, description="Preparing NYUv2")

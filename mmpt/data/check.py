"""Validation of an NYUv2 tree against the official layout, as a structured report (the CLI only prints it)."""

from __future__ import annotations

import os
import re
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from mmpt.data.layout import (
    DOMAINS,
    NUM_CLASSES,
    REPREPARE,
    SPLITS,
    check_domains,
    decode_depth,
    depth_units,
    domain_dir,
    open_png,
    semseg_ids,
)
from mmpt.errors import DatasetLayoutError

# Folders the official preparation may also write (`--normals_path`), and the name users give `mask/`.
OPTIONAL_DOMAINS = ("normal", "mask", "mask_valid")
_NAME = re.compile(r"\d{4,}\.png")
_CREATE = "`mmpt data prepare-nyuv2` (official raw files) or `mmpt data synth` (synthetic scenes)"


@dataclass(frozen=True)
class Problem:
    """One thing wrong with the tree.

    Attributes:
        path: the offending file or folder, relative to the root.
        message: what is wrong, with the value found and the one expected.
        fix: how to repair it.
    """

    path: str
    message: str
    fix: str


@dataclass
class SplitSummary:
    """What one split holds (over the files that could be read)."""

    files: dict[str, int] = field(default_factory=dict)
    sizes: Counter[tuple[int, int]] = field(default_factory=Counter)  # (width, height) per sample
    depth_min_m: float | None = None  # smallest valid (> 0) depth
    depth_max_m: float | None = None
    depth_valid: int = 0
    depth_pixels: int = 0
    class_pixels: np.ndarray = field(default_factory=lambda: np.zeros(NUM_CLASSES + 1, dtype=np.int64))

    @property
    def samples(self) -> int:
        return sum(self.sizes.values())


@dataclass
class CheckReport:
    """The result of `check_layout`: problems (empty when the tree is fine) and a summary per split."""

    root: Path
    domains: tuple[str, ...]
    splits: dict[str, SplitSummary] = field(default_factory=dict)
    problems: list[Problem] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems


def check_layout(root: str | os.PathLike, *, domains: Sequence[str] = DOMAINS, progress: bool = False) -> CheckReport:
    """Checks `root/{train,test}/<domain>/data/NNNN.png` file by file.

    Finds missing and stray files, samples whose modalities differ in size, wrong PNG modes (e.g. 8-bit
    depth, RGB semseg), class ids above 40, all-invalid depth maps, and samples in both splits.

    Args:
        root: dataset root.
        domains: the domains every sample must have.
        progress: show a progress bar per split.

    Returns:
        A `CheckReport`; `report.ok` is False when any problem was found.

    Raises:
        ConfigError: unknown domains.
    """
    check_domains(tuple(domains))
    root = Path(root)
    report = CheckReport(root=root, domains=tuple(domains))
    if not root.is_dir():
        report.problems.append(Problem(".", f"{root} is not a directory.", f"create the dataset: {_CREATE}"))
        return report
    names_per_split = {}
    for split in SPLITS:
        names = _list_split(report, split)
        if names is not None:
            report.splits[split] = summary = SplitSummary()
            _check_samples(report, split, names, summary, progress)
            names_per_split[split] = set().union(*names.values())
    if len(names_per_split) == len(SPLITS) and (shared := sorted(set.intersection(*names_per_split.values()))):
        report.problems.append(
            Problem(
                f"test/*/data/{shared[0]}.png",
                f"{len(shared)} sample names are in both train and test (first: {shared[0]}); a frame belongs to one "
                "split (official: 795 train, 654 test).",
                f"delete the duplicates from one split; or {REPREPARE}",
            )
        )
    return report


def _list_split(report: CheckReport, split: str) -> dict[str, set[str]] | None:
    """Lists the sample names per domain, recording missing folders and stray entries."""
    root, problems = report.root, report.problems
    split_dir = root / split
    if not split_dir.is_dir():
        problems.append(Problem(f"{split}/", f"missing split folder {split}/.", f"create the dataset: {_CREATE}"))
        return None
    for entry in sorted(split_dir.iterdir()):
        if entry.name not in report.domains and entry.name not in DOMAINS + OPTIONAL_DOMAINS:
            problems.append(_stray(entry, root, f"expected only the domain folders {list(report.domains)}"))
    names = {}
    for domain in report.domains:
        folder = domain_dir(root, split, domain)
        if not folder.is_dir():
            rest = ",".join(d for d in report.domains if d != domain)
            fix = f"{REPREPARE}; or check only the domains you have (--domains {rest})"
            problems.append(Problem(_rel(folder, root), f"missing folder for domain {domain!r}.", fix))
            continue
        for entry in sorted(folder.parent.iterdir()):
            if entry.name != "data":
                problems.append(_stray(entry, root, "expected only the folder data/"))
        names[domain] = set()
        for entry in sorted(folder.iterdir()):
            if entry.is_file() and _NAME.fullmatch(entry.name):
                names[domain].add(entry.name[:-4])
            elif entry.name.endswith((".tmp", ".part")):
                problems.append(
                    Problem(
                        _rel(entry, root),
                        "leftover of an interrupted write (the finished file never replaced it).",
                        "delete it and re-run the command that wrote the dataset (it resumes)",
                    )
                )
            else:
                problems.append(_stray(entry, root, "expected only zero-padded index PNGs like 0007.png"))
    every = set().union(*names.values()) if names else set()
    for domain, present in names.items():
        for name in sorted(every - present):
            others = [d for d in names if name in names[d]]
            problems.append(
                Problem(
                    _rel(domain_dir(root, split, domain) / f"{name}.png", root),
                    f"missing: sample {name} has {'/'.join(others)} but no {domain}.",
                    f"{REPREPARE}; or delete the sample's other files",
                )
            )
    return names


def _check_samples(
    report: CheckReport, split: str, names: dict[str, set[str]], summary: SplitSummary, progress: bool
) -> None:
    root = report.root
    summary.files = {domain: len(present) for domain, present in names.items()}
    every = sorted(set().union(*names.values())) if names else []
    for name in _track(every, f"Checking {split}", progress):
        sizes = {}
        for domain in names:
            if name not in names[domain]:
                continue
            path = domain_dir(root, split, domain) / f"{name}.png"
            try:
                image = open_png(path)
                sizes[domain] = image.size
                _check_image(report, domain, image, path, summary)
            except DatasetLayoutError as e:
                report.problems.append(
                    Problem(_rel(path, root), _relative_message(e.message, path, root), e.hint or "")
                )
        if len(set(sizes.values())) > 1:
            listing = ", ".join(f"{d} {w}×{h}" for d, (w, h) in sizes.items())
            first = next(iter(sizes))
            report.problems.append(
                Problem(
                    _rel(domain_dir(root, split, first) / f"{name}.png", root),
                    f"the modalities of sample {name} differ in size ({listing}, width×height); expected one size.",
                    REPREPARE,
                )
            )
        if sizes:
            summary.sizes[next(iter(sizes.values()))] += 1


def _check_image(report: CheckReport, domain: str, image, path: Path, summary: SplitSummary) -> None:
    """Validates one decoded PNG and adds it to the summary; raises DatasetLayoutError for bad files."""
    if domain == "rgb" and image.mode != "RGB":
        raise DatasetLayoutError(
            f"{path} is a {image.mode!r} PNG; expected 8-bit RGB (official NYUv2 layout).", hint=REPREPARE
        )
    if domain == "depth":
        units = depth_units(image, path)
        valid = units[units > 0]
        if valid.size == 0:
            raise DatasetLayoutError(
                f"{path} is all zeros, i.e. no valid depth (0 = invalid); the official maps are in-painted (dense).",
                hint=REPREPARE,
            )
        low, high = (float(decode_depth(v)) for v in (valid.min(), valid.max()))
        summary.depth_min_m = low if summary.depth_min_m is None else min(summary.depth_min_m, low)
        summary.depth_max_m = high if summary.depth_max_m is None else max(summary.depth_max_m, high)
        summary.depth_valid += valid.size
        summary.depth_pixels += units.size
    if domain == "semseg":
        summary.class_pixels += np.bincount(semseg_ids(image, path).ravel(), minlength=NUM_CLASSES + 1)


def _stray(entry: Path, root: Path, expected: str) -> Problem:
    kind = "folder" if entry.is_dir() else "file"
    return Problem(_rel(entry, root), f"stray {kind}; {expected}.", f"move or delete {entry.name}")


def _rel(path: Path, root: Path) -> str:
    return path.relative_to(root).as_posix()


def _relative_message(message: str, path: Path, root: Path) -> str:
    return message.replace(str(path), _rel(path, root))


def _track(items: list[str], description: str, enabled: bool) -> Iterable[str]:
    if not enabled:
        return items
    from rich.progress import track

    return track(items, description=description, transient=True)

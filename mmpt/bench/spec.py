"""Bench recipes: a shared tune config, tasks and tuners crossed into rows, each run over several seeds.

    # mmpt bench bench/quick_synth --out runs/bench/quick_synth
    title: Tuners on multimae-tiny-synth
    seeds: [0, 1]
    synthetic: {train: 400, test: 100, size: 128, seed: 1}   # optional: create data.root with `mmpt data synth`
    base: {backbone: ..., data: ..., head: ..., train: ...}  # a tune config shared by every row
    tasks:   {depth: {task: {name: depth}}, semseg: {task: {name: semseg}}}
    tuners:  {deep_prompt: {tuner: {name: deep_prompt}}, full: {tuner: {name: full}, reference: full}}
    latency: {batch_size: 1, rounds: 20}

A row is one task x one tuner entry (`task/tuner`); its config is `base`, then the task's, then the tuner's
mapping merged on top (as recipe `defaults:`), with `train.seed` and `output_dir` set per seed. Every row's
config is validated when the recipe is read, and all problems are reported at once.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from mmpt.config.load import config_from_dict, merge_recipes
from mmpt.config.recipes import resolve_recipe
from mmpt.config.schema import RunConfig
from mmpt.errors import ConfigError

REFERENCES = ("full", "linear_probe")
_TOP_KEYS = ("title", "seeds", "synthetic", "base", "tasks", "tuners", "latency")
_SYNTHETIC_KEYS = {"train": 400, "test": 100, "size": 128, "seed": 1}


@dataclass(frozen=True)
class BenchRow:
    """One task x tuner of a bench, with its validated config per seed.

    Attributes:
        name: `task/tuner`, unique in a bench; names the run folders.
        task, tuner: the task entry and tuner entry names of the recipe.
        reference: "full" / "linear_probe" when the row is a reference point in the plot, else None.
        configs: seed -> validated run config (output_dir under the bench's `runs/`).
    """

    name: str
    task: str
    tuner: str
    reference: str | None
    configs: dict[int, RunConfig]


@dataclass(frozen=True)
class BenchSpec:
    """A read bench recipe (or several, concatenated): rows, the synthetic data to create, latency settings."""

    title: str
    rows: list[BenchRow]
    synthetic: dict[str, Any] | None = None
    data_root: str | None = None
    latency: dict[str, int] = field(default_factory=lambda: {"batch_size": 1, "rounds": 20})
    sources: list[str] = field(default_factory=list)


def _mapping(value: Any, where: str, errors: list[str]) -> dict[str, Any]:
    if value is None:
        return {}
    if not isinstance(value, dict):
        errors.append(f"{where}: expected a mapping, got {type(value).__name__} {value!r}")
        return {}
    return value


def _read_yaml(path: Path) -> dict[str, Any]:
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except yaml.YAMLError as e:
        raise ConfigError(f"{path} is not valid YAML: {e}", hint="check the indentation and quoting there") from e
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: the top level is a {type(data).__name__}; expected a bench mapping.")
    return data


def _seeds(value: Any, errors: list[str]) -> list[int]:
    seeds = value if value is not None else [0]
    if (
        not isinstance(seeds, list)
        or not seeds
        or not all(isinstance(s, int) for s in seeds)
        or len(set(seeds)) < len(seeds)
    ):
        errors.append(f"seeds: {seeds!r} is not a non-empty list of distinct integers")
        return [0]
    return seeds


def _synthetic(value: Any, errors: list[str]) -> dict[str, Any] | None:
    if value is None:
        return None
    given = _mapping(value, "synthetic", errors)
    if unknown := sorted(set(given) - set(_SYNTHETIC_KEYS)):
        errors.append(f"synthetic: unknown key(s) {unknown}; valid: {sorted(_SYNTHETIC_KEYS)}")
    merged = {**_SYNTHETIC_KEYS, **{k: v for k, v in given.items() if k in _SYNTHETIC_KEYS}}
    if not all(isinstance(v, int) and v >= 0 for v in merged.values()):
        errors.append(f"synthetic: {merged} must hold non-negative integers")
    return merged


def _latency(value: Any, errors: list[str]) -> dict[str, int]:
    given = _mapping(value, "latency", errors)
    latency = {"batch_size": 1, "rounds": 20, **given}
    if set(latency) != {"batch_size", "rounds"} or not all(isinstance(v, int) and v > 0 for v in latency.values()):
        errors.append(f"latency: {given!r} is invalid; expected positive integers batch_size and rounds")
        return {"batch_size": 1, "rounds": 20}
    return latency


def _row(
    task: str, tuner: str, merged: dict[str, Any], seeds: list[int], runs_dir: Path, source: str, errors: list[str]
) -> BenchRow | None:
    name = f"{task}/{tuner}"
    merged = dict(merged)
    reference = merged.pop("reference", None)
    if reference is not None and reference not in REFERENCES:
        errors.append(f"tuners.{tuner}.reference: {reference!r} is not one of {list(REFERENCES)}")
    configs = {}
    for seed in seeds:
        data = merge_recipes(
            merged, {"train": {"seed": seed}, "output_dir": str(runs_dir / task / tuner / f"seed{seed}")}
        )
        data.setdefault("name", f"{task}_{tuner}")
        try:
            configs[seed] = config_from_dict(data, source=f"{source} row {name} (seed {seed})")
        except ConfigError as e:
            errors.append(e.message)
            return None
    return BenchRow(name, task, tuner, reference, configs)


def load_bench(recipes: list[str | Path], runs_dir: str | Path) -> BenchSpec:
    """Reads bench recipes (paths or shipped names such as `bench/quick_synth`) into one `BenchSpec`.

    Args:
        recipes: one or more bench recipes; their rows are concatenated (row names must stay unique).
        runs_dir: where the per-seed run folders go (`<runs_dir>/<task>/<tuner>/seed<N>`).

    Raises:
        ConfigError: listing every problem of every recipe: unknown top-level keys, bad seeds, invalid row
            configs (with the row and seed), duplicate rows, recipes that disagree on synthetic data or latency.
    """
    errors: list[str] = []
    rows: list[BenchRow] = []
    titles, synthetic, latency, data_roots, sources = [], [], [], [], []
    for recipe in recipes:
        path = resolve_recipe(recipe)
        sources.append(str(path))
        data = _read_yaml(path)
        if unknown := sorted(set(data) - set(_TOP_KEYS)):
            errors.append(f"{path}: unknown key(s) {unknown}; valid: {list(_TOP_KEYS)}")
        titles.append(str(data.get("title") or path.stem))
        seeds = _seeds(data.get("seeds"), errors)
        synthetic.append(_synthetic(data.get("synthetic"), errors))
        latency.append(_latency(data.get("latency"), errors))
        base = _mapping(data.get("base"), f"{path}: base", errors)
        data_roots.append((base.get("data") or {}).get("root"))
        tasks = _mapping(data.get("tasks"), f"{path}: tasks", errors)
        tuners = _mapping(data.get("tuners"), f"{path}: tuners", errors)
        if not tasks or not tuners:
            errors.append(f"{path}: needs at least one entry under tasks and under tuners")
        for task, task_part in tasks.items():
            for tuner, tuner_part in tuners.items():
                merged = merge_recipes(
                    merge_recipes(base, _mapping(task_part, f"tasks.{task}", errors)),
                    _mapping(tuner_part, f"tuners.{tuner}", errors),
                )
                if (row := _row(task, tuner, merged, seeds, Path(runs_dir), str(path), errors)) is not None:
                    rows.append(row)
    names = [row.name for row in rows]
    if duplicates := sorted({n for n in names if names.count(n) > 1}):
        errors.append(f"rows {duplicates} appear in more than one recipe; rename a task or tuner entry")
    if len({str(s) for s in synthetic if s is not None}) > 1 or len({str(lat) for lat in latency}) > 1:
        errors.append("the recipes disagree on `synthetic` or `latency`; bench them into separate --out folders")
    if errors:
        raise ConfigError(
            f"{len(errors)} problem(s) in {', '.join(sources)}:\n" + "\n".join(f"  - {e}" for e in errors),
            hint="fix the keys above; `mmpt recipes show bench/quick_synth` shows a working bench recipe",
        )
    made = next((s for s in synthetic if s is not None), None)
    return BenchSpec(
        title=" + ".join(titles),
        rows=rows,
        synthetic=made,
        data_root=next((r for r in data_roots if r), None) if made else None,
        latency=latency[0],
        sources=sources,
    )

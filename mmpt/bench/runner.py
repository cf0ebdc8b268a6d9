"""`mmpt bench`: runs every row of a bench over its seeds, resumably, and writes results.jsonl and the report.

Layout of `--out DIR`:
    runs/<task>/<tuner>/seed<N>/   one tune run per row and seed (config, metrics, artifact, results.json,
                                   bench.json with the peak memory and wall time measured around it)
    rows/<task>__<tuner>.json      a finished row: seeds aggregated, latency measured
    machine.json                   CPU, GPU, threads and library versions of the (last) run
    results.jsonl                  one finished row per line, in recipe order
    results.md, pareto.png         the report

A row whose file exists with the same config hashes is skipped; a seed run with results.json is reused; one
with checkpoints only continues with `train.resume=true`. A changed config in an existing folder is refused.
"""

from __future__ import annotations

import dataclasses
import json
import math
import statistics
import time
from pathlib import Path
from typing import Any

import torch

from mmpt.bench.measure import inference_latency, machine, peak_memory, reset_peak_memory
from mmpt.bench.spec import BenchRow, BenchSpec
from mmpt.config.load import config_hash
from mmpt.config.schema import RunConfig
from mmpt.errors import ConfigError, DatasetLayoutError
from mmpt.fileio import atomic_write, write_json_atomic


def ensure_synthetic_data(spec: BenchSpec, *, progress: bool = True) -> None:
    """Creates the bench's synthetic set (recipe key `synthetic`) at `base.data.root` unless it is already there.

    Raises:
        DatasetLayoutError: the folder holds a synthetic set made with other settings.
    """
    if spec.synthetic is None or spec.data_root is None:
        return
    from mmpt.data.synthetic import write_synthetic_nyuv2

    root = Path(spec.data_root)
    manifest = root / "synthetic.json"
    if manifest.is_file():
        made = json.loads(manifest.read_text())
        found = {key: made.get(key) for key in spec.synthetic}
        if found != spec.synthetic:
            raise DatasetLayoutError(
                f"{manifest} was made with {found}, but the bench asks for {spec.synthetic}.",
                hint=f"delete {root} (it is re-created), or point base.data.root elsewhere",
            )
        return
    write_synthetic_nyuv2(root, progress=progress, **spec.synthetic)


def run_seed(cfg: RunConfig, *, progress: bool = True) -> dict[str, Any]:
    """One tune run of a row, or its finished results; returns results.json plus bench.json's measurements."""
    from mmpt.train.loop import fit, list_checkpoints

    run_dir = Path(cfg.output_dir)
    results_file, bench_file = run_dir / "results.json", run_dir / "bench.json"
    expected = config_hash(cfg)
    if results_file.is_file():
        results = json.loads(results_file.read_text())
        if results["run_info"]["config_hash"] != expected:
            raise ConfigError(
                f"{run_dir} holds a finished run of another config (hash {results['run_info']['config_hash']}, "
                f"the recipe now gives {expected}).",
                hint="bench into a new --out folder, or delete that run folder to redo it",
            )
        if bench_file.is_file():
            return {**results, "bench": json.loads(bench_file.read_text())}
    else:
        resume = bool(list_checkpoints(run_dir))
        cfg = dataclasses.replace(cfg, train=dataclasses.replace(cfg.train, resume=resume))
        kind = reset_peak_memory()
        start = time.perf_counter()
        results = fit(cfg, progress=progress)
        measured = {"wall_time_s": round(time.perf_counter() - start, 2), "resumed": resume}
        write_json_atomic(bench_file, {**measured, "peak_memory_bytes": peak_memory(kind), "memory_kind": kind})
    if not bench_file.is_file():  # finished earlier, measurements lost: what results.json knows
        info = results["train_info"]
        write_json_atomic(
            bench_file, {"wall_time_s": info["train_time_s"], "peak_memory_bytes": None, "memory_kind": None}
        )
    return {**results, "bench": json.loads(bench_file.read_text())}


def _train_img_s(run_dir: Path) -> float | None:
    """Median training throughput over the logged steps (the first log line, with warm-up, left out)."""
    path = run_dir / "metrics.jsonl"
    if not path.is_file():
        return None
    speeds = [r["img_per_s"] for line in path.read_text().splitlines() if "img_per_s" in (r := json.loads(line))]
    speeds = speeds[1:] or speeds
    return round(statistics.median(speeds), 2) if speeds else None


def _spread(values: list[float]) -> dict[str, Any]:
    finite = [v for v in values if v is not None and math.isfinite(v)]
    mean = statistics.fmean(finite) if finite else None
    std = statistics.stdev(finite) if len(finite) > 1 else 0.0
    return {"mean": mean, "std": std, "n": len(finite), "values": values}


def _mean(values: list[Any]) -> float | None:
    known = [v for v in values if v is not None]
    return statistics.fmean(known) if known else None


def aggregate(row: BenchRow, seeds: dict[int, dict[str, Any]], latency: dict[str, Any]) -> dict[str, Any]:
    """One results.jsonl line from the seed results of a row and its measured latency."""
    from mmpt.tasks import build_task

    first = seeds[min(seeds)]
    cfg = row.configs[min(seeds)]
    task = build_task(cfg.task.name)
    metric_names = sorted(
        {k for r in seeds.values() for k, v in (r["metrics"]["best"] or {}).items() if _num(v) and k != "step"}
    )
    params = first["train_info"]["trainable_params"]
    peaks = [r["bench"]["peak_memory_bytes"] for r in seeds.values()]
    return {
        "name": row.name,
        "task": row.task,
        "tuner": cfg.tuner["name"],
        "tuner_entry": row.tuner,
        "head": cfg.head["name"],
        "reference": row.reference,
        "primary_metric": task.primary_metric,
        "higher_is_better": task.higher_is_better,
        "metrics": {m: _spread([(r["metrics"]["best"] or {}).get(m) for r in seeds.values()]) for m in metric_names},
        "params": {"tuner": params["tuner"], "head": params["head"], "total": params["total"]},
        "backbone_params": first["train_info"]["backbone_params"],
        "artifact_bytes": first["train_info"]["artifact_bytes"],
        "train_img_s": _mean([_train_img_s(Path(row.configs[s].output_dir)) for s in seeds]),
        "peak_memory_bytes": max((p for p in peaks if p is not None), default=None),
        "memory_kind": first["bench"]["memory_kind"],
        **latency,
        "wall_time_s": _mean([r["bench"]["wall_time_s"] for r in seeds.values()]),
        "seeds": sorted(seeds),
        "steps": cfg.train.steps,
        "backbone": cfg.backbone.source,
        "config_hashes": {str(s): config_hash(c) for s, c in row.configs.items()},
    }


def _num(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _row_file(out: Path, row: BenchRow) -> Path:
    return out / "rows" / f"{row.task}__{row.tuner}.json"


def run_row(row: BenchRow, spec: BenchSpec, out: Path, *, progress: bool = True) -> dict[str, Any]:
    """A finished row: read back when its configs are unchanged, else run (or resume) its seeds and measure it."""
    path = _row_file(out, row)
    hashes = {str(s): config_hash(c) for s, c in row.configs.items()}
    if path.is_file() and (done := json.loads(path.read_text())).get("config_hashes") == hashes:
        return done
    seeds = {seed: run_seed(cfg, progress=progress) for seed, cfg in row.configs.items()}
    cfg = row.configs[min(seeds)]
    latency = inference_latency(
        Path(seeds[min(seeds)]["train_info"]["artifact"]),
        backbone=cfg.backbone.source,
        num_heads=cfg.backbone.num_heads,
        **spec.latency,
    )
    result = aggregate(row, seeds, latency)
    write_json_atomic(path, result)
    return result


def write_results(rows: list[dict[str, Any]], out: Path) -> Path:
    """results.jsonl (one row per line), atomically."""
    text = "".join(json.dumps(r) + "\n" for r in rows)
    return atomic_write(out / "results.jsonl", lambda tmp: tmp.write_text(text, encoding="utf-8"))


def run_bench(spec: BenchSpec, out: str | Path, *, progress: bool = True, console=None) -> list[dict[str, Any]]:
    """Runs (or resumes) every row of `spec` into `out`; after each row rewrites results.jsonl and the report.

    Returns:
        The finished rows, in recipe order.
    """
    from rich.console import Console

    from mmpt.bench.report import write_report

    console = console or Console()
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    ensure_synthetic_data(spec, progress=progress)
    write_json_atomic(out / "machine.json", machine())
    finished: list[dict[str, Any]] = []
    for index, row in enumerate(spec.rows, 1):
        console.print(f"[bold]row {index}/{len(spec.rows)}[/bold] {row.name} (seeds {sorted(row.configs)})")
        start = time.perf_counter()
        finished.append(run_row(row, spec, out, progress=progress))
        console.print(f"  done in {time.perf_counter() - start:.0f} s", highlight=False)
        write_results(finished, out)
        write_report(finished, out, title=spec.title, machine=json.loads((out / "machine.json").read_text()))
    if torch.cuda.is_available():
        torch.cuda.empty_cache()
    return finished

"""Benchmark results as tables and a Pareto plot: markdown, rich and PNG, from `results.jsonl` rows.

Pure functions over the aggregated rows `mmpt bench` writes (one dict per task × tuner × head, metrics as
`{"mean", "std", "n", "values"}`); nothing here trains or loads a model. matplotlib and rich are imported
inside the functions that draw, so importing this module stays cheap. The plot uses a bare `Figure` (Agg),
never pyplot, so it touches no global backend state.
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from mmpt.errors import ConfigError
from mmpt.fileio import atomic_write

if TYPE_CHECKING:
    from rich.console import Console
    from rich.table import Table

Row = Mapping[str, Any]
MISSING = "–"
SECONDARY_METRICS = {"depth": ("abs_rel", "rmse"), "semseg": ("pixel_accuracy",)}
"""Metrics shown beside the primary one per task (all metrics stay in results.jsonl); other tasks show all."""
_ARROWS = {"abs_rel": "↓", "rmse": "↓", "pixel_accuracy": "↑", "delta1": "↑", "miou": "↑"}
FRONT_MARK = "★"
REFERENCE_LABELS = {"full": "full FT (ref.)", "linear_probe": "linear probe (ref.)"}
MEMORY_KINDS = {
    "cpu_peak_rss": "peak resident set size of the process (CPU run: includes the Python runtime and data loading)",
    "cuda_max_allocated": "`torch.cuda.max_memory_allocated` (GPU tensors only: no CUDA context, no allocator cache)",
}
REQUIRED_KEYS = ("task", "tuner", "primary_metric")


def pareto_front(
    params: Sequence[float | None], scores: Sequence[float | None], *, higher_is_better: bool
) -> list[int]:
    """Indices of the non-dominated points, sorted by params (then best score first).

    A point is dominated when another has fewer-or-equal params and a better-or-equal score, and is strictly
    better in one of the two; exact duplicates therefore both stay on the front. Points with a missing or
    non-finite value are never on the front and dominate nothing.

    Args:
        params: trainable parameters per point.
        scores: metric per point.
        higher_is_better: direction of the metric.
    """
    if len(params) != len(scores):
        raise ValueError(f"pareto_front: {len(params)} params but {len(scores)} scores; give one of each per point.")
    sign = 1.0 if higher_is_better else -1.0
    points = {
        i: (float(p), sign * float(s))  # scores flipped so that larger is always better
        for i, (p, s) in enumerate(zip(params, scores, strict=True))
        if p is not None and s is not None and math.isfinite(p) and math.isfinite(s)
    }

    def dominates(a: tuple[float, float], b: tuple[float, float]) -> bool:
        return a[0] <= b[0] and a[1] >= b[1] and (a[0] < b[0] or a[1] > b[1])

    front = [i for i, p in points.items() if not any(dominates(q, p) for j, q in points.items() if j != i)]
    return sorted(front, key=lambda i: (points[i][0], -points[i][1], i))


# ---------------------------------------------------------------- reading rows


def _check_rows(rows: Sequence[Row]) -> dict[str, list[Row]]:
    """Rows grouped by task (tasks in order of first appearance), after checking the keys every row needs."""
    if not rows:
        raise ConfigError(
            "No benchmark rows to report.", hint="results.jsonl is empty or every row failed; re-run `mmpt bench`."
        )
    by_task: dict[str, list[Row]] = {}
    for i, row in enumerate(rows):
        if missing := [key for key in REQUIRED_KEYS if row.get(key) is None]:
            raise ConfigError(
                f"Benchmark row {i} ({row.get('name', '?')!r}) lacks {missing}; every row needs {list(REQUIRED_KEYS)}.",
                hint="pass the rows `mmpt bench` writes to results.jsonl, one JSON object per line.",
            )
        by_task.setdefault(row["task"], []).append(row)
    for task, task_rows in by_task.items():
        directions = {(r["primary_metric"], bool(r.get("higher_is_better", True))) for r in task_rows}
        if len(directions) > 1:
            raise ConfigError(
                f"Task {task!r} mixes primary metrics {sorted(directions)}; one table and one front need one metric.",
                hint="give every row of a task the same primary_metric and higher_is_better.",
            )
    return by_task


def metric_stats(row: Row, name: str) -> tuple[float | None, float | None, int]:
    """(mean, std, n) of a row's metric; a bare number counts as a mean of one value."""
    value = (row.get("metrics") or {}).get(name)
    if isinstance(value, Mapping):
        n = value.get("n")
        return value.get("mean"), value.get("std"), len(value.get("values") or ()) if n is None else n
    return value, None, 1 if value is not None else 0


def _params(row: Row, part: str = "total") -> float | None:
    params = row.get("params") or {}
    if part == "total" and params.get("total") is None and params.get("tuner") is not None:
        return params["tuner"] + (params.get("head") or 0)
    return params.get(part)


def _score(row: Row) -> float | None:
    return metric_stats(row, row["primary_metric"])[0]


def _sorted(rows: Sequence[Row]) -> list[Row]:
    """Rows by total trainable params (unknown last), then name."""
    return sorted(rows, key=lambda r: (_params(r) is None, _params(r) or 0, str(r.get("name", r["tuner"]))))


def _higher(row: Row) -> bool:
    return bool(row.get("higher_is_better", True))


def _front_indices(rows: Sequence[Row]) -> list[int]:
    """Indices of the rows (all of one task) on the front of trainable params vs primary metric."""
    if not rows:
        return []
    return pareto_front([_params(r) for r in rows], [_score(r) for r in rows], higher_is_better=_higher(rows[0]))


# ---------------------------------------------------------------- cell formatting


def _scaled(value: float | None, base: float, units: Sequence[str], *, sep: str = " ") -> str:
    """`value` with the largest unit it reaches, one decimal ("9.2 K", "120.4 KB"); the first unit is exact."""
    if value is None:
        return MISSING
    power = 0
    while power + 1 < len(units) and round(abs(value) / base**power, 1) >= base:
        power += 1
    if power == 0:
        return f"{value:,.0f}{sep}{units[0]}".rstrip()
    return f"{value / base**power:.1f}{sep}{units[power]}"


def format_count(n: float | None) -> str:
    return _scaled(n, 1000.0, ("", "K", "M", "B"))


def format_bytes(n: float | None) -> str:
    return _scaled(n, 1000.0, ("B", "KB", "MB", "GB", "TB"))


def format_mean_std(mean: float | None, std: float | None, n: int) -> str:
    if mean is None:
        return MISSING
    return f"{mean:.3f}" if std is None or n <= 1 else f"{mean:.3f} ± {std:.3f}"


def _number(value: float | None, fmt: str = "{:.1f}") -> str:
    return MISSING if value is None else fmt.format(value)


def _duration(seconds: float | None) -> str:
    if seconds is None:
        return MISSING
    if seconds < 120:
        return f"{seconds:.0f} s"
    return f"{seconds / 60:.1f} min" if seconds < 7200 else f"{seconds / 3600:.1f} h"


def _tuner_cell(row: Row, on_front: bool) -> str:
    text = str(row["tuner"]) + (" (ref.)" if row.get("reference") else "")
    return f"{text} {FRONT_MARK}" if on_front else text


# ---------------------------------------------------------------- one task's table, shared by markdown and rich


@dataclass
class _TaskTable:
    """Headers, cells and notes of one task's table; `numeric[j]` says column j is right-aligned."""

    headers: list[str]
    numeric: list[bool]
    cells: list[list[str]] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)


def _task_table(rows: Sequence[Row]) -> _TaskTable:
    """The table of one task's rows: sorted by trainable params, the front marked, notes explaining it all."""
    rows = _sorted(rows)
    primary, higher = rows[0]["primary_metric"], _higher(rows[0])
    shown = SECONDARY_METRICS.get(rows[0]["task"])
    others = [m for m in dict.fromkeys(m for r in rows for m in (r.get("metrics") or {})) if m != primary]
    others = [m for m in others if m in shown] if shown is not None else others
    kinds = list(dict.fromkeys(r["memory_kind"] for r in rows if r.get("memory_kind")))
    front = {id(rows[i]) for i in _front_indices(rows)}

    headers = [
        "tuner",
        "head",
        f"{primary} {'↑' if higher else '↓'}",
        *(f"{m} {_ARROWS.get(m, '')}".strip() for m in others),
    ]
    headers += ["tuner params", "head params", "artifact", "train img/s", "peak memory", "latency (ms)", "overhead"]
    headers += ["wall time"]
    table = _TaskTable(headers=headers, numeric=[False, False] + [True] * (len(headers) - 2))
    for r in rows:
        memory = format_bytes(r.get("peak_memory_bytes"))
        if len(kinds) > 1 and r.get("memory_kind") and memory != MISSING:
            memory += f" ({r['memory_kind']})"  # mixed kinds in one table: say which on every cell
        overhead = r.get("overhead")
        table.cells.append(
            [
                _tuner_cell(r, id(r) in front),
                str(r.get("head") or MISSING),
                *(format_mean_std(*metric_stats(r, m)) for m in [primary, *others]),
                format_count(_params(r, "tuner")),
                format_count(_params(r, "head")),
                format_bytes(r.get("artifact_bytes")),
                _number(r.get("train_img_s")),
                memory,
                _number(r.get("latency_ms")),
                MISSING if overhead is None else f"{overhead * 100:+.1f} %",
                _duration(r.get("wall_time_s")),
            ]
        )

    seeds = sorted({metric_stats(r, primary)[2] for r in rows if metric_stats(r, primary)[0] is not None})
    table.notes.append(
        f"{FRONT_MARK} Pareto front: no other row has fewer-or-equal trainable params (tuner + head) "
        f"and a {'higher' if higher else 'lower'}-or-equal {primary}."
    )
    table.notes.append(f"Metrics: mean ± std over seeds (n = {', '.join(map(str, seeds)) or MISSING}), 3 decimals.")
    if refs := sorted({str(r["reference"]) for r in rows if r.get("reference")}):
        table.notes.append(f"(ref.) reference points, not parameter-efficient: {', '.join(refs)}.")
    for kind in kinds:
        table.notes.append(f"Peak memory ({kind}): {MEMORY_KINDS.get(kind, kind)}.")
    table.notes.append("Overhead: backbone latency with the tuner ÷ frozen backbone latency − 1.")
    return table


# ---------------------------------------------------------------- markdown and rich


def _md_cell(text: str) -> str:
    return text.replace("|", "\\|")  # a bare pipe would split the cell


def markdown_table(rows: Sequence[Row], *, title: str | None = None) -> str:
    """GitHub markdown: one `### <task>` table per task (tasks in order of first appearance) with its notes.

    Args:
        rows: aggregated benchmark rows (the lines of results.jsonl).
        title: optional `## <title>` heading above the tables.
    """
    parts = [f"## {title}\n"] if title else []
    for task, task_rows in _check_rows(rows).items():
        table = _task_table(task_rows)
        lines = [
            "| " + " | ".join(_md_cell(h) for h in table.headers) + " |",
            "|" + "|".join("---:" if numeric else ":---" for numeric in table.numeric) + "|",
            *("| " + " | ".join(_md_cell(c) for c in cells) + " |" for cells in table.cells),
        ]
        notes = "\n".join(f"- {note}" for note in table.notes)
        parts.append(f"### {task}\n\n" + "\n".join(lines) + f"\n\n{notes}\n")
    return "\n".join(parts)


def rich_table(rows: Sequence[Row], task: str) -> Table:
    """The rich table of one task: the markdown table's content, numbers right-aligned, notes as caption."""
    from rich.table import Table
    from rich.text import Text

    by_task = _check_rows(rows)
    if task not in by_task:
        raise ConfigError(f"No benchmark rows for task {task!r}.", hint=f"tasks in these rows: {list(by_task)}")
    table_data = _task_table(by_task[task])
    # A terminal is narrower than a markdown file: the primary metric only, no wall time, no constant head column.
    heads = {cells[1] for cells in table_data.cells}
    dropped = {h for h in table_data.headers[3:] if not h.startswith(("tuner params", "head params"))}
    dropped = {h for h in dropped if any(h.startswith(m) for m in _all_metrics(by_task[task]))} | {"wall time"}
    dropped |= {"head"} if len(heads) == 1 else set()
    keep = [i for i, h in enumerate(table_data.headers) if h not in dropped]
    title = f"{task}" + (f", {heads.pop()} head" if len(heads) == 1 else "")
    caption = "\n".join([*table_data.notes, "All metrics and the wall time: results.md."])
    table = Table(title=title, caption=caption, caption_justify="left")
    for i in keep:
        table.add_column(table_data.headers[i], justify="right" if table_data.numeric[i] else "left")
    for cells in table_data.cells:
        table.add_row(*(Text(cells[i]) for i in keep))  # Text: a "[" in a name is not rich markup
    return table


def _all_metrics(rows: Sequence[Row]) -> set[str]:
    return {m for r in rows for m in (r.get("metrics") or {})}


def print_tables(rows: Sequence[Row], console: Console | None = None) -> None:
    """Prints one rich table per task."""
    from rich.console import Console

    console = console or Console()
    for task in _check_rows(rows):
        console.print(rich_table(rows, task))


# ---------------------------------------------------------------- plot and report


def _point_label(row: Row, heads_differ: bool) -> str:
    if row.get("reference"):
        return REFERENCE_LABELS.get(row["reference"], f"{row['reference']} (ref.)")
    return f"{row['tuner']}/{row.get('head')}" if heads_differ else str(row["tuner"])


def _draw_task(ax: Any, task: str, rows: Sequence[Row], colours: Mapping[str, Any]) -> None:
    """One subplot: points with std bars, labels, reference markers and the front as a step line."""
    primary, higher = rows[0]["primary_metric"], _higher(rows[0])
    rows = [r for r in _sorted(rows) if _score(r) is not None]  # a row without a score has nothing to draw
    heads_differ = len({r.get("head") for r in rows}) > 1
    scores = [_score(r) for r in rows]
    near_y = 0.04 * ((max(scores) - min(scores)) or 1.0)  # labels of points closer than this would overlap
    labelled: list[tuple[float, float]] = []  # (log10 params, score) of the labels above their point
    clipped = False
    for r in rows:
        mean, std, n = metric_stats(r, primary)
        x = _params(r)
        clipped |= x is not None and x < 1
        x = max(x or 0, 1)  # a log axis cannot show 0 params; drawn at 1 and said so on the axis
        yerr = std if std and n > 1 else None
        if r.get("reference"):
            marker = "s" if r["reference"] == "full" else "D"
            style = {"color": "black", "mfc": "none", "mew": 1.5, "ms": 8}
        else:
            marker, style = "o", {"color": colours[str(r["tuner"])], "ms": 7}
        ax.errorbar([x], [mean], yerr=None if yerr is None else [yerr], fmt=marker, capsize=3, zorder=3, **style)
        crowded = any(abs(math.log10(x) - lx) < 0.3 and abs(mean - ly) < near_y for lx, ly in labelled)
        if not crowded:
            labelled.append((math.log10(x), mean))
        offset = (6, -11) if crowded else (6, 4)  # a near neighbour's label is above: put this one below
        ax.annotate(_point_label(r, heads_differ), (x, mean), xytext=offset, textcoords="offset points", fontsize=8)
    front = [rows[i] for i in _front_indices(rows)]
    if len(front) > 1:  # one point is no line
        xs = [max(_params(r) or 0, 1) for r in front]
        # "post": the best score reachable with p params is the last front point at or left of p.
        ax.step(
            xs, [_score(r) for r in front], where="post", ls="--", color="grey", lw=1, zorder=2, label="Pareto front"
        )
        ax.legend(fontsize=8, loc="best")
    ax.set_xscale("log")
    ax.margins(x=0.15, y=0.15)
    ax.set_title(task)
    ax.set_xlabel("trainable params (tuner + head, log)" + (", 0 drawn at 1" if clipped else ""))
    ax.set_ylabel(f"{primary} ({'↑' if higher else '↓'} better)")
    ax.grid(True, which="major", alpha=0.3)


def pareto_plot(rows: Sequence[Row], path: str | os.PathLike, *, title: str | None = None) -> Path:
    """Draws primary metric vs trainable params, one subplot per task, and saves it as a 150 dpi PNG.

    Each point is a row's seed mean with ± std bars (none for one seed), labelled with its tuner; references
    (`reference` = "full" / "linear_probe") are hollow black squares / diamonds; the front is a dashed step
    line. The x axis is log-scaled, so rows with 0 trainable params are drawn at 1.

    Args:
        rows: aggregated benchmark rows.
        path: PNG to write (atomically; parent folders created).
        title: optional figure title.

    Returns:
        `path` as a Path.
    """
    from matplotlib import colormaps
    from matplotlib.figure import Figure

    by_task = _check_rows(rows)
    tuners = sorted({str(r["tuner"]) for r in rows if not r.get("reference")})
    palette = colormaps["tab10"]
    colours = {t: palette(i % palette.N) for i, t in enumerate(tuners)}
    fig = Figure(figsize=(5.5 * len(by_task), 4.5), layout="constrained")
    axes = fig.subplots(1, len(by_task), squeeze=False)[0]
    for ax, (task, task_rows) in zip(axes, by_task.items(), strict=True):
        _draw_task(ax, task, task_rows, colours)
    if title:
        fig.suptitle(title)
    return atomic_write(path, lambda tmp: fig.savefig(tmp, format="png", dpi=150))


def _provenance(rows: Sequence[Row]) -> str:
    """One line on what the rows ran: backbone(s), steps, seeds."""

    def values(found: Any) -> str:
        return ", ".join(dict.fromkeys(str(v) for v in found if v is not None)) or MISSING

    backbones, steps = values(r.get("backbone") for r in rows), values(r.get("steps") for r in rows)
    seeds = values(s for r in rows for s in r.get("seeds") or ())
    return f"Backbone {backbones}; {steps} steps; seeds {seeds}."


def write_report(
    rows: Sequence[Row], out_dir: str | os.PathLike, *, title: str, machine: Mapping[str, str] | None = None
) -> dict[str, Path]:
    """Writes `results.md` (title, what ran and on which machine, tables, plot link) and `pareto.png` into `out_dir`.

    Returns:
        {"markdown": path of results.md, "plot": path of pareto.png}.
    """
    out = Path(out_dir)
    plot = pareto_plot(rows, out / "pareto.png", title=title)
    where = "Machine: " + ", ".join(f"{k} {v}" for k, v in machine.items()) + "\n\n" if machine else ""
    text = (
        f"# {title}\n\n{_provenance(rows)}\n\n{where}{markdown_table(rows)}\n## Pareto front\n\n![Pareto](pareto.png)\n"
    )
    markdown = atomic_write(out / "results.md", lambda tmp: tmp.write_text(text, encoding="utf-8"))
    return {"markdown": markdown, "plot": plot}

"""Benchmark report: the Pareto front, markdown and rich tables, the atomic Pareto plot and the report folder."""

from __future__ import annotations

import io
import math
from typing import Any

import pytest
from matplotlib.figure import Figure
from PIL import Image
from rich.console import Console

from mmpt.bench.report import (
    MISSING,
    _draw_task,
    markdown_table,
    pareto_front,
    pareto_plot,
    print_tables,
    rich_table,
    write_report,
)
from mmpt.errors import ConfigError


def make_row(
    task: str,
    tuner: str,
    *,
    tuner_params: int,
    head_params: int = 1000,
    mean: float,
    std: float = 0.01,
    n: int = 2,
    reference: str | None = None,
    metric: str = "delta1",
    higher_is_better: bool = True,
    **extra: Any,
) -> dict[str, Any]:
    """One results.jsonl row as `mmpt bench` writes it."""
    values = [mean - std, mean + std][:n]
    row = {
        "name": f"{task}/{tuner}",
        "task": task,
        "tuner": tuner,
        "head": "linear",
        "reference": reference,
        "primary_metric": metric,
        "higher_is_better": higher_is_better,
        "metrics": {
            metric: {"mean": mean, "std": std, "n": n, "values": values},
            "rmse": {"mean": 0.5, "std": 0.02, "n": n, "values": [0.5] * n},
        },
        "params": {"tuner": tuner_params, "head": head_params, "total": tuner_params + head_params},
        "artifact_bytes": 120400,
        "train_img_s": 41.2,
        "peak_memory_bytes": 812345678,
        "memory_kind": "cpu_peak_rss",
        "latency_ms": 12.3,
        "backbone_latency_ms": 10.1,
        "overhead": 0.218,
        "wall_time_s": 95.0,
        "seeds": [0, 1][:n],
        "steps": 300,
        "backbone": "multimae-tiny-synth",
    }
    row.update(extra)
    return row


@pytest.fixture
def rows() -> list[dict[str, Any]]:
    """Depth: 5 rows, front = linear probe, deep_prompt, lora; prompt_pool and full FT dominated by lora.

    Semseg: one row with 0 trainable params and a single seed.
    """
    return [
        make_row("depth", "lora", tuner_params=120_000, mean=0.63),
        make_row("depth", "deep_prompt", tuner_params=9216, head_params=49408, mean=0.61, latency_ms=None),
        make_row("depth", "full", tuner_params=5_500_000, mean=0.62, reference="full"),
        make_row("depth", "prompt_pool", tuner_params=1_300_000, mean=0.60, overhead=None),
        make_row("depth", "linear_probe", tuner_params=0, mean=0.40, reference="linear_probe"),
        make_row(
            "semseg",
            "linear_probe",
            tuner_params=0,
            head_params=0,
            mean=0.3,
            n=1,
            metric="miou",
            std=0.0,
            reference="linear_probe",
        ),
    ]


def table_lines(markdown: str, task: str) -> list[str]:
    """The `|` lines of the table under `### task`."""
    section = markdown.split(f"### {task}\n", 1)[1].split("### ", 1)[0]
    return [line for line in section.splitlines() if line.startswith("|")]


def cells(line: str) -> list[str]:
    return [c.strip() for c in line.strip().strip("|").split(" | ")]


# ---------------------------------------------------------------- pareto_front


def test_pareto_front_keeps_non_dominated_points_sorted_by_params_when_higher_is_better() -> None:
    params = [10, 5, 20, 5, 30, 10, 15]
    scores = [0.5, 0.4, 0.7, 0.4, 0.6, 0.45, 0.5]
    # 4: more params, lower score than 2; 5: same params, lower score than 0; 6: same score, more params than 0.
    # 1 and 3 are exact duplicates: neither is strictly better, so both stay.
    assert pareto_front(params, scores, higher_is_better=True) == [1, 3, 0, 2]


def test_pareto_front_flips_with_the_metric_direction() -> None:
    params = [10, 5, 20, 30]
    rmse = [0.5, 0.6, 0.3, 0.3]  # 3 ties 2 on score with more params: dominated
    assert pareto_front(params, rmse, higher_is_better=False) == [1, 0, 2]
    # The same points read as "higher is better": only the lightest (5, 0.6) and nothing else survives.
    assert pareto_front(params, rmse, higher_is_better=True) == [1]


def test_pareto_front_drops_a_dominated_reference_and_ignores_missing_scores() -> None:
    params = [1000, 58_624, 121_000, 5_501_000, 2000]
    scores = [0.40, 0.61, 0.63, 0.62, None]  # full fine-tuning (index 3) is beaten by lora with fewer params
    assert pareto_front(params, scores, higher_is_better=True) == [0, 1, 2]
    assert pareto_front([1, 2], [math.nan, 0.1], higher_is_better=True) == [1]
    with pytest.raises(ValueError, match="2 params but 1 scores"):
        pareto_front([1, 2], [0.1], higher_is_better=True)


# ---------------------------------------------------------------- markdown


def test_markdown_has_one_table_per_task_with_a_line_per_row_sorted_by_params(rows) -> None:
    markdown = markdown_table(rows, title="tiny bench")
    assert markdown.startswith("## tiny bench\n")
    assert markdown.count("\n### ") == 2 and "### depth\n" in markdown and "### semseg\n" in markdown
    depth, semseg = table_lines(markdown, "depth"), table_lines(markdown, "semseg")
    assert len(depth) == 2 + 5 and len(semseg) == 2 + 1  # header, separator, one line per row
    header = cells(depth[0])
    assert header[:4] == ["tuner", "head", "delta1 ↑", "rmse ↓"]
    assert header[4:] == [
        "tuner params",
        "head params",
        "artifact",
        "train img/s",
        "peak memory",
        "latency (ms)",
        "overhead",
        "wall time",
    ]
    # Valid GitHub markdown: a blank line before the table, every line as many cells as the header.
    assert "\n\n| tuner |" in markdown
    assert {line.count("|") for line in depth} == {len(header) + 1}
    assert depth[1] == "|:---|:---|" + "---:|" * (len(header) - 2)
    tuners = [cells(line)[0].replace(" ★", "") for line in depth[2:]]
    assert tuners == ["linear_probe (ref.)", "deep_prompt", "lora", "prompt_pool", "full (ref.)"]


def test_markdown_cells_are_human_readable_and_missing_values_are_dashes(rows) -> None:
    lines = table_lines(markdown_table(rows), "depth")
    header = cells(lines[0])
    by_tuner = {cells(line)[0].replace(" ★", ""): dict(zip(header, cells(line), strict=True)) for line in lines[2:]}
    deep = by_tuner["deep_prompt"]
    assert deep["delta1 ↑"] == "0.610 ± 0.010" and deep["rmse ↓"] == "0.500 ± 0.020"
    assert deep["tuner params"] == "9.2 K" and deep["head params"] == "49.4 K"
    assert deep["artifact"] == "120.4 KB" and deep["peak memory"] == "812.3 MB"
    assert deep["train img/s"] == "41.2" and deep["overhead"] == "+21.8 %" and deep["wall time"] == "95 s"
    assert deep["latency (ms)"] == MISSING == "–"
    assert by_tuner["prompt_pool"]["tuner params"] == "1.3 M" and by_tuner["prompt_pool"]["overhead"] == "–"
    assert by_tuner["lora"]["latency (ms)"] == "12.3"


def test_markdown_marks_exactly_the_front_rows_and_explains_the_marks(rows) -> None:
    markdown = markdown_table(rows)
    starred = [cells(line)[0] for line in table_lines(markdown, "depth")[2:] if "★" in line]
    assert starred == ["linear_probe (ref.) ★", "deep_prompt ★", "lora ★"]  # not prompt_pool, not full FT
    assert "★ Pareto front" in markdown
    assert "(ref.) reference points" in markdown
    assert "Peak memory (cpu_peak_rss): peak resident set size" in markdown


def test_single_seed_single_row_task_with_zero_params_is_a_plain_mean_on_the_front(rows) -> None:
    lines = table_lines(markdown_table(rows), "semseg")
    row = cells(lines[2])
    assert row[0] == "linear_probe (ref.) ★"
    assert row[2] == "0.300"  # n = 1: no "± 0.000"
    assert "rmse ↓" not in table_lines(markdown_table(rows), "semseg")[0]  # not a semseg metric: kept out
    assert row[3:5] == ["0", "0"]


def test_markdown_escapes_pipes_and_says_which_memory_kind_when_kinds_are_mixed(rows) -> None:
    rows[0]["head"] = "dpt|small"
    rows[1]["memory_kind"] = "cuda_max_allocated"
    markdown = markdown_table(rows)
    assert "dpt\\|small" in markdown
    assert "812.3 MB (cuda_max_allocated)" in markdown and "812.3 MB (cpu_peak_rss)" in markdown
    assert "torch.cuda.max_memory_allocated" in markdown


def test_bad_rows_raise_errors_that_name_the_missing_keys(rows) -> None:
    with pytest.raises(ConfigError, match="No benchmark rows"):
        markdown_table([])
    del rows[2]["primary_metric"]
    with pytest.raises(ConfigError, match=r"row 2 \('depth/full'\) lacks \['primary_metric'\]"):
        markdown_table(rows)


# ---------------------------------------------------------------- rich


def test_rich_table_has_one_row_per_task_row_and_right_aligned_numbers(rows) -> None:
    table = rich_table(rows, "depth")
    assert table.row_count == 5 and rich_table(rows, "semseg").row_count == 1
    headers = [str(c.header) for c in table.columns]
    assert headers[:2] == ["tuner", "delta1 ↑"] and "rmse ↓" not in headers and "wall time" not in headers
    assert "head" not in headers and table.title == "depth, linear head"  # one head for all rows: in the title
    assert table.columns[0].justify == "left" and all(c.justify == "right" for c in table.columns[1:])
    assert list(table.columns[1].cells)[1].plain == "0.610 ± 0.010"  # deep_prompt, second by params
    with pytest.raises(ConfigError, match=r"\['depth', 'semseg'\]"):
        rich_table(rows, "normals")


def test_print_tables_prints_every_task(rows) -> None:
    out = io.StringIO()
    print_tables(rows, Console(file=out, width=300))
    text = out.getvalue()
    assert "depth" in text and "semseg" in text and text.count("★") == 4 + 2  # 4 marks + 2 notes


# ---------------------------------------------------------------- plot and report


@pytest.mark.filterwarnings("error")  # e.g. a glyph missing from the font
def test_pareto_plot_writes_a_png_atomically(rows, tmp_path) -> None:
    path = pareto_plot(rows, tmp_path / "plots" / "pareto.png", title="tiny")
    assert path == tmp_path / "plots" / "pareto.png"
    with Image.open(path) as image:
        assert image.format == "PNG" and image.size == (1650, 675)  # 2 tasks × 5.5 in × 150 dpi, 4.5 in tall
    assert [p.name for p in path.parent.iterdir()] == ["pareto.png"]  # no temp file left


def test_a_failed_plot_leaves_no_temp_file_and_keeps_the_old_png(rows, tmp_path, monkeypatch) -> None:
    path = pareto_plot(rows, tmp_path / "pareto.png")
    before = path.read_bytes()

    def broken_savefig(self, *args, **kwargs):
        raise RuntimeError("disk full")

    monkeypatch.setattr(Figure, "savefig", broken_savefig)
    with pytest.raises(RuntimeError, match="disk full"):
        pareto_plot(rows, path)
    assert path.read_bytes() == before and [p.name for p in tmp_path.iterdir()] == ["pareto.png"]


def test_plot_draws_the_front_as_steps_and_references_hollow(rows) -> None:
    ax = Figure().subplots()
    _draw_task(
        ax, "depth", [r for r in rows if r["task"] == "depth"], {"lora": "C0", "deep_prompt": "C1", "prompt_pool": "C2"}
    )
    (front,) = [line for line in ax.get_lines() if line.get_label() == "Pareto front"]
    assert front.get_drawstyle() == "steps-post"
    assert list(front.get_xdata()) == [1000, 58_624, 121_000] and list(front.get_ydata()) == [0.40, 0.61, 0.63]
    labels = sorted(t.get_text() for t in ax.texts)
    assert labels == ["deep_prompt", "full FT (ref.)", "linear probe (ref.)", "lora", "prompt_pool"]
    assert ax.get_xscale() == "log" and ax.get_ylabel() == "delta1 (↑ better)"
    hollow = [line for line in ax.get_lines() if line.get_markerfacecolor() == "none"]
    assert sorted(line.get_marker() for line in hollow) == ["D", "s"]


def test_plot_of_a_zero_param_single_row_task_clips_to_one_and_says_so(rows) -> None:
    ax = Figure().subplots()
    _draw_task(ax, "semseg", rows[-1:], {})
    assert ax.get_xlabel().endswith("0 drawn at 1") and ax.get_ylabel() == "miou (↑ better)"
    (point,) = [line for line in ax.get_lines() if len(line.get_xdata()) == 1]
    assert list(point.get_xdata()) == [1]
    assert not [line for line in ax.get_lines() if line.get_label() == "Pareto front"]  # one point, no line


def test_lower_is_better_front_steps_down(rows) -> None:
    depth = [
        make_row("depth", t, tuner_params=p, mean=m, metric="abs_rel", higher_is_better=False)
        for t, p, m in [("a", 100, 0.9), ("b", 1000, 0.5), ("c", 5000, 0.7)]
    ]
    ax = Figure().subplots()
    _draw_task(ax, "depth", depth, {"a": "C0", "b": "C1", "c": "C2"})
    (front,) = [line for line in ax.get_lines() if line.get_label() == "Pareto front"]
    assert list(front.get_ydata()) == [0.9, 0.5] and ax.get_ylabel() == "abs_rel (↓ better)"


def test_write_report_writes_markdown_linking_the_plot(rows, tmp_path) -> None:
    paths = write_report(rows, tmp_path, title="mmpt bench: tiny")
    assert paths == {"markdown": tmp_path / "results.md", "plot": tmp_path / "pareto.png"}
    text = paths["markdown"].read_text(encoding="utf-8")
    assert text.startswith("# mmpt bench: tiny\n\nBackbone multimae-tiny-synth; 300 steps; seeds 0, 1.\n")
    assert "### depth" in text and "### semseg" in text and text.rstrip().endswith("![Pareto](pareto.png)")
    assert text.count("\n|:---|") == 2
    with Image.open(paths["plot"]) as image:
        assert image.format == "PNG" and image.width > 0
    assert sorted(p.name for p in tmp_path.iterdir()) == ["pareto.png", "results.md"]

"""Copies a finished `mmpt bench` into benchmarks/results/ and regenerates the README's results table from it.

    mmpt bench bench/quick_synth --out runs/bench/quick_synth
    python -m benchmarks.publish_bench runs/bench/quick_synth --name bench_quick_synth

The README block between the `bench-results` markers is rewritten from results.jsonl, so the table in the
README is always the committed results (tests/test_readme_results.py checks that).
"""

from __future__ import annotations

import argparse
import json
import re
import shutil
from pathlib import Path

from mmpt.bench.report import format_bytes, format_count, format_mean_std, metric_stats

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "benchmarks" / "results"
FILES = ("results.jsonl", "results.md", "pareto.png", "machine.json")
START, END = "<!-- bench-results:start -->", "<!-- bench-results:end -->"
README_BENCH = "bench_quick_synth"


def load_rows(folder: Path) -> list[dict]:
    return [json.loads(line) for line in (folder / "results.jsonl").read_text().splitlines() if line.strip()]


def readme_block(folder: Path) -> str:
    """The README's results section: one line per tuner, both tasks side by side, then the plot."""
    rows = load_rows(folder)
    machine = json.loads((folder / "machine.json").read_text())
    tasks = list(dict.fromkeys(r["task"] for r in rows))
    tuners = list(dict.fromkeys(r["tuner_entry"] for r in rows))
    by = {(r["task"], r["tuner_entry"]): r for r in rows}
    first = rows[0]
    header = ["tuner", *(f"{t} {by[(t, tuners[0])]['primary_metric']} ↑" for t in tasks)]
    header += ["tuner params", "artifact (depth)", "train img/s", "inference overhead"]
    lines = ["| " + " | ".join(header) + " |", "|:---|" + "---:|" * (len(header) - 1)]
    for tuner in tuners:
        some = next(by[(t, tuner)] for t in tasks if (t, tuner) in by)
        scores = [format_mean_std(*metric_stats(by[(t, tuner)], by[(t, tuner)]["primary_metric"])) for t in tasks]
        ref = " (ref.)" if some.get("reference") else ""
        overhead = some.get("overhead")
        lines.append(
            "| "
            + " | ".join(
                [
                    f"{some['tuner']}{ref}",
                    *scores,
                    format_count(some["params"]["tuner"]),
                    format_bytes(by.get((tasks[0], tuner), some)["artifact_bytes"]),
                    f"{some['train_img_s']:.0f}" if some.get("train_img_s") else "–",
                    "–" if overhead is None else f"{overhead * 100:+.0f} %",
                ]
            )
            + " |"
        )
    relative = folder.relative_to(ROOT).as_posix()
    return "\n".join(
        [
            START,
            f"`mmpt bench bench/quick_synth` on `{first['backbone']}` ({first['steps']} steps, seeds "
            f"{', '.join(map(str, first['seeds']))}, linear heads, mean ± std; {machine['cpu']}, "
            f"{machine['cpu_threads']} threads, GPU {machine['gpu']}; {_training_minutes(rows):.0f} min of training "
            f"in all). Full table: `{relative}/results.md`. Train img/s are the depth rows' (the linear probe caches "
            "its frozen features); overhead is the tuned backbone's latency over the frozen one's, batch 1.",
            "",
            *lines,
            "",
            f"![Pareto plot: metric against trainable parameters]({relative}/pareto.png)",
            END,
        ]
    )


def _training_minutes(rows: list[dict]) -> float:
    return sum(r["wall_time_s"] * len(r["seeds"]) for r in rows) / 60


def update_readme(folder: Path, readme: Path = ROOT / "README.md") -> None:
    text = readme.read_text(encoding="utf-8")
    pattern = re.compile(re.escape(START) + ".*?" + re.escape(END), re.S)
    if not pattern.search(text):
        raise SystemExit(f"{readme} has no {START} ... {END} block")
    readme.write_text(pattern.sub(lambda _: readme_block(folder), text), encoding="utf-8")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run", type=Path, help="the --out folder of a finished mmpt bench")
    parser.add_argument("--name", default=README_BENCH, help="folder name under benchmarks/results/")
    args = parser.parse_args()
    target = RESULTS / args.name
    target.mkdir(parents=True, exist_ok=True)
    for name in FILES:
        shutil.copy2(args.run / name, target / name)
    if args.name == README_BENCH:
        update_readme(target)
    print(f"copied {', '.join(FILES)} to {target}")


if __name__ == "__main__":
    main()

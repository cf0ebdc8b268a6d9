"""The README's results table is generated from the committed bench results, never typed by hand."""

from __future__ import annotations

import pytest

from benchmarks.publish_bench import README_BENCH, RESULTS, ROOT, START, readme_block


def test_the_readme_table_is_the_committed_bench_results() -> None:
    folder = RESULTS / README_BENCH
    if not (folder / "results.jsonl").is_file():
        pytest.fail(f"{folder}/results.jsonl is missing: run the bench and python -m benchmarks.publish_bench")
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    assert START in readme
    assert readme_block(folder) in readme, "README is stale: python -m benchmarks.publish_bench <bench run folder>"

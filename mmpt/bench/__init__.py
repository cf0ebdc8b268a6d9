"""Benchmark recipes that compare tuners: read (`spec`), run and measure (`runner`, `measure`), report (`report`)."""

from mmpt.bench.runner import run_bench
from mmpt.bench.spec import BenchRow, BenchSpec, load_bench

__all__ = ["BenchRow", "BenchSpec", "load_bench", "run_bench"]

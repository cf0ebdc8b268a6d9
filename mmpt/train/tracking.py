"""Run files that need no extra dependency: `metrics.jsonl`, `summary.csv`, `results.json`."""

from __future__ import annotations

import csv
import json
import platform
from pathlib import Path
from typing import Any


class RunLog:
    """Appends one JSON object per logged step to `metrics.jsonl` and one row per evaluation to `summary.csv`.

    On resume, lines past the resumed step are dropped so the files read as one uninterrupted run.
    """

    def __init__(self, run_dir: Path, *, resume_step: int | None = None) -> None:
        self.jsonl = run_dir / "metrics.jsonl"
        self.csv = run_dir / "summary.csv"
        if resume_step is None:
            for path in (self.jsonl, self.csv):
                path.unlink(missing_ok=True)
        else:
            self._truncate(resume_step)

    def _truncate(self, step: int) -> None:
        if self.jsonl.exists():
            kept = [ln for ln in self.jsonl.read_text().splitlines() if ln and json.loads(ln)["step"] <= step]
            self.jsonl.write_text("".join(ln + "\n" for ln in kept))
        if self.csv.exists():
            with open(self.csv, newline="") as f:
                rows = [r for r in csv.DictReader(f) if int(r["step"]) <= step]
            self.csv.unlink()
            for row in rows:
                self.summary(row)

    def log(self, record: dict[str, Any]) -> None:
        with open(self.jsonl, "a") as f:
            f.write(json.dumps(record, default=float) + "\n")

    def summary(self, row: dict[str, Any]) -> None:
        new = not self.csv.exists()
        with open(self.csv, "a", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=list(row))
            if new:
                writer.writeheader()
            writer.writerow(row)


def environment() -> dict[str, str]:
    """Package versions and host, for results.json's meta_info."""
    import accelerate
    import peft
    import timm
    import torch

    import mmpt

    return {
        "mmpt": mmpt.__version__,
        "torch": torch.__version__,
        "timm": timm.__version__,
        "peft": peft.__version__,
        "accelerate": accelerate.__version__,
        "python": platform.python_version(),
        "platform": platform.platform(),
        "cuda": torch.cuda.get_device_name(0) if torch.cuda.is_available() else "none",
    }

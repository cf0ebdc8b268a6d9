"""Synthetic NYUv2 generation speed on one thread, and a check that depth is learnable from rgb.

    python benchmarks/synth_speed.py [--rounds 3]

Speed: `write_synthetic_nyuv2` end to end (render + 3 PNGs per sample) at 128² and 256²; images/s from wall
time and from this process's CPU time (the single-core rate, robust to other jobs on the machine). The
requirement is ≥ 50 images/s at 128².
Learnability: ridge regression from per-pixel features (image row, colour, local context) to log-depth,
fitted on synthetic train scenes and scored (R²) on held-out scenes; a constant predictor scores 0. The real
NYUv2 subset in ../shared, when present, gets the same model as a reference point.
Writes benchmarks/results/synth_speed.md.
"""

from __future__ import annotations

import os

for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):  # one thread, set before numpy loads
    os.environ[_var] = "1"

import argparse  # noqa: E402
import platform  # noqa: E402
import statistics  # noqa: E402
import subprocess  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402
from PIL import Image  # noqa: E402

from mmpt.data.layout import decode_depth  # noqa: E402
from mmpt.data.synthetic import render_scene, scene_seed, write_synthetic_nyuv2  # noqa: E402

REAL = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "nyuv2_real_subset" / "NYUv2"
RESULTS = Path(__file__).resolve().parent / "results" / "synth_speed.md"


def machine() -> str:
    """`lscpu` model name and core count."""
    out = subprocess.run(["lscpu"], capture_output=True, text=True, check=False).stdout
    fields = dict(ln.split(":", 1) for ln in out.splitlines() if ":" in ln)
    model = fields.get("Model name", platform.processor()).strip()
    return f"{model}, {fields.get('CPU(s)', '?').strip()} CPUs (lscpu), Python {platform.python_version()}"


def speed(size: int, count: int, rounds: int) -> tuple[float, float]:
    """Median images/s over `rounds` fresh datasets of `count` samples: (wall clock, process CPU time)."""
    wall, cpu = [], []
    write_synthetic_nyuv2(tempfile.mkdtemp(), train=2, test=0, size=size, seed=99, progress=False)  # warm caches
    for r in range(rounds):
        with tempfile.TemporaryDirectory() as tmp:
            w0, c0 = time.perf_counter(), time.process_time()
            write_synthetic_nyuv2(tmp, train=count - count // 5, test=count // 5, size=size, seed=r, progress=False)
            wall.append(count / (time.perf_counter() - w0))
            cpu.append(count / (time.process_time() - c0))
    return statistics.median(wall), statistics.median(cpu)


def box_mean(img: np.ndarray, r: int) -> np.ndarray:
    """Mean over a (2r+1)² window (edge padded), via summed-area tables."""
    k = 2 * r + 1
    p = np.pad(img, ((r + 1, r), (r + 1, r)), mode="edge").cumsum(0).cumsum(1)
    return (p[k:, k:] - p[:-k, k:] - p[k:, :-k] + p[:-k, :-k]) / k**2


def features(rgb: np.ndarray) -> np.ndarray:
    """(H*W, 19) per-pixel features: cubic in the row (4), rgb and rgb² (6), then local context at 2, 6 and
    16 px: mean grey, mean contrast, grey variance (9)."""
    h, w, _ = rgb.shape
    x = rgb.astype(np.float32) / 255
    row = np.repeat(np.linspace(-1, 1, h, dtype=np.float32)[:, None], w, 1)
    grey = x.mean(-1)
    contrast = np.abs(grey - np.roll(grey, 1, 0)) + np.abs(grey - np.roll(grey, 1, 1))
    cols = [np.ones_like(row), row, row**2, row**3, *np.moveaxis(x, -1, 0), *np.moveaxis(x**2, -1, 0)]
    for r in (2, 6, 16):
        cols += [box_mean(grey, r), box_mean(contrast, r), box_mean(grey**2, r) - box_mean(grey, r) ** 2]
    return np.stack(cols, -1).reshape(h * w, -1)


FEATURE_SETS = {"row": 4, "row + colour": 10, "row + colour + context": 19}  # leading columns of `features`


def ridge_r2(train: list[tuple[np.ndarray, np.ndarray]], test: list[tuple[np.ndarray, np.ndarray]]) -> dict[str, str]:
    """Held-out R² of log-depth (valid pixels) per feature set, as "absolute / scale-aligned".

    Scale-aligned removes each test image's mean residual: how well relative depth (the layout) is predicted
    when the overall room scale is given.
    """
    xa = np.concatenate([features(rgb)[(d > 0).ravel()] for rgb, d in train]).astype(np.float64)
    ya = np.concatenate([np.log(d[d > 0]) for _, d in train])
    tests = [(features(rgb)[(d > 0).ravel()].astype(np.float64), np.log(d[d > 0])) for rgb, d in test]
    yb = np.concatenate([y for _, y in tests])
    centred = np.concatenate([y - y.mean() for _, y in tests])
    out = {"constant": f"{1 - np.mean((yb - ya.mean()) ** 2) / np.var(yb):.3f} / 0"}
    for name, n in FEATURE_SETS.items():
        coef = np.linalg.solve(xa[:, :n].T @ xa[:, :n] + 1e-3 * np.eye(n), xa[:, :n].T @ ya)
        res = [y - x[:, :n] @ coef for x, y in tests]
        r2 = 1 - np.mean(np.concatenate(res) ** 2) / np.var(yb)
        r2_aligned = 1 - np.mean(np.concatenate([e - e.mean() for e in res]) ** 2) / np.mean(centred**2)
        out[name] = f"{r2:.3f} / {r2_aligned:.3f}"
    return out


def real_pairs(split: str, size: int) -> list[tuple[np.ndarray, np.ndarray]]:
    """Real NYUv2 frames (centre square crop resized to size) as (rgb, depth metres)."""
    pairs = []
    for path in sorted((REAL / split / "rgb" / "data").glob("*.png")):
        rgb, depth = Image.open(path).convert("RGB"), Image.open(str(path).replace("/rgb/", "/depth/"))
        box = ((rgb.width - rgb.height) // 2, 0, (rgb.width + rgb.height) // 2, rgb.height)
        rgb, depth = (
            rgb.crop(box).resize((size, size), Image.BILINEAR),
            depth.crop(box).resize((size, size), Image.NEAREST),
        )
        pairs.append((np.asarray(rgb), decode_depth(np.asarray(depth))))
    return pairs


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    rows = []
    for size, count in ((128, 250), (256, 100)):
        wall, cpu = speed(size, count, args.rounds)
        rows.append(f"| {size}² | {count} | {wall:.1f} | {cpu:.1f} |")
        print(f"{size}x{size}: {wall:.1f} images/s wall, {cpu:.1f} images/s per CPU-second")

    n_train, n_test = 200, 100
    synth = [(s.rgb, s.depth) for s in (render_scene(scene_seed(1234, i), 128) for i in range(n_train + n_test))]
    r2 = {"synthetic": ridge_r2(synth[:n_train], synth[n_train:])}
    if REAL.is_dir():  # 10 train / 8 test real frames: a rough reference, not a benchmark
        r2["real NYUv2 subset"] = ridge_r2(real_pairs("train", 128), real_pairs("test", 128))
    names = list(next(iter(r2.values())))
    table = ["| data | " + " | ".join(names) + " |", "|---" * (len(names) + 1) + "|"]
    table += [f"| {data} | " + " | ".join(v[n] for n in names) + " |" for data, v in r2.items()]
    print("\n".join(table))

    load = " ".join(f"{x:.1f}" for x in os.getloadavg())  # other jobs on the machine lower the wall-clock rate
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(
        "# Synthetic NYUv2 generation speed and depth learnability\n\n"
        f"Command: `python benchmarks/synth_speed.py --rounds {args.rounds}` (one thread: OMP/BLAS threads = 1).\n"
        f"Machine: {machine()}. Date: {time.strftime('%Y-%m-%d')}. Load average at the end: {load}.\n\n"
        "## Speed: `write_synthetic_nyuv2` end to end (render + rgb/depth/semseg PNGs), median of rounds\n\n"
        "Wall-clock numbers drop when other jobs share the machine; images per CPU-second of this process is\n"
        "the single-core rate. Requirement: ≥ 50 images/s at 128².\n\n"
        "| size | images | images/s (wall) | images/s (per CPU-second) |\n|---|---|---|---|\n"
        + "\n".join(rows)
        + "\n\n"
        "## Learnability: ridge regression to log-depth, R² on held-out pixels (absolute / scale-aligned)\n\n"
        f"Synthetic: {n_train} train / {n_test} test scenes at 128² (seed 1234). Per-pixel features: row (cubic),\n"
        "rgb and rgb², then mean grey, contrast and grey variance in 5, 13 and 33 px windows. A constant (train\n"
        "mean) scores ≈ 0. Scale-aligned removes each test image's mean log residual (relative depth). The\n"
        "real subset (10 train / 8 test frames, centre crop to 128²) gets the same model as a reference point.\n\n"
        + "\n".join(table)
        + "\n"
    )
    print(f"wrote {RESULTS}")


if __name__ == "__main__":
    main()

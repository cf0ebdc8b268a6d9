"""Synthetic indoor scenes in the official NYUv2 layout: analytic ray casting and dataset writing.

The random room, furniture, materials and textures come from `mmpt.data.synthetic_scenes`; this module
casts every pixel's ray against the room planes and the boxes (vectorised numpy, nearest hit wins), so rgb,
metric z-depth and NYU-40 labels agree exactly. Depth is made predictable from rgb: Lambertian shading from
a point light, world-space textures whose scale follows perspective, corner/contact darkening and fog.
`render_scene` renders one scene; `write_synthetic_nyuv2` (behind `mmpt data synth`) writes a dataset.

World frame: x right, y forward (into the room), z up; the room spans [0, W] x [0, L] x [0, H].
Pixel (i, j) has its centre at (u, v) = (j + 0.5, i + 0.5) and the ray `d = f + (u-cx)/fx * r - (v-cy)/fy * up`
(f, r, up: camera forward/right/up in world coordinates). d has unit forward component, so the hit
parameter t along d *is* the z-depth along the optical axis (the NYU convention).
"""

from __future__ import annotations

import functools
import json
import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from mmpt.data.layout import DOMAINS, SPLITS, sample_path, write_sample
from mmpt.data.synthetic_scenes import LABELS_USED, Layout, sample_layout, surface_albedo
from mmpt.errors import ConfigError

GENERATOR_VERSION = 1
NYU_FX = 518.8579  # Kinect rgb focal length in pixels at 480 rows; a square crop keeps NYU's ~50° field of view
MAX_SAMPLES = 10_000  # 4-digit file names keep name order == index order


@dataclass
class SyntheticScene:
    """One rendered scene plus the geometry needed to re-derive its depth independently.

    Attributes:
        rgb: (H, W, 3) uint8 image (shaded, fogged, noisy, slightly blurred).
        depth: (H, W) float32 z-depth in metres along the optical axis; 0 marks the rare invalid pixels.
        labels: (H, W) uint8 NYU-40 ids (see `LABELS_USED`).
        fx, fy, cx, cy: pinhole intrinsics in pixels (pixel centres at integer + 0.5).
        camera_position: (x, y, z) of the optical centre in room coordinates; z is the camera height.
        pitch: radians, positive looks up (no roll).
        yaw: radians about the vertical axis, positive turns from +y towards +x.
        room_size: (W, L, H) in metres; the room is [0, W] x [0, L] x [0, H], floor at z = 0.
        boxes: (lo, hi, label) of every furniture box, axis-aligned in room coordinates.
        light_position: point light in room coordinates.
    """

    rgb: np.ndarray
    depth: np.ndarray
    labels: np.ndarray
    fx: float
    fy: float
    cx: float
    cy: float
    camera_position: tuple[float, float, float]
    pitch: float
    yaw: float
    room_size: tuple[float, float, float]
    boxes: list[tuple[tuple[float, float, float], tuple[float, float, float], int]] = field(default_factory=list)
    light_position: tuple[float, float, float] = (0.0, 0.0, 0.0)

    @property
    def camera_height(self) -> float:
        """Height of the optical centre above the floor in metres."""
        return self.camera_position[2]


def scene_seed(seed: int, index: int) -> int:
    """The seed of sample `index` of a dataset generated with `seed`, so any sample re-renders alone."""
    return int(np.random.SeedSequence([seed, index]).generate_state(1, np.uint64)[0])


def intrinsics(size: int) -> tuple[float, float, float, float]:
    """(fx, fy, cx, cy) of a size×size image: NYU's focal length scaled like a 480-row centre crop."""
    f = NYU_FX * size / 480
    return f, f, size / 2, size / 2


def _camera_basis(yaw: float, pitch: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    sy, cy, sp, cp = np.sin(yaw), np.cos(yaw), np.sin(pitch), np.cos(pitch)
    return np.array([sy * cp, cy * cp, sp]), np.array([cy, -sy, 0.0]), np.array([-sy * sp, -cy * sp, cp])


@functools.lru_cache(maxsize=8)
def _pixel_grid(size: int) -> tuple[np.ndarray, np.ndarray]:
    fx, fy, cx, cy = intrinsics(size)
    c = np.arange(size, dtype=np.float32) + np.float32(0.5)
    xs, ys = np.meshgrid((c - cx) / fx, (c - cy) / fy)
    return xs.astype(np.float32), ys.astype(np.float32)


@functools.lru_cache(maxsize=4)
def _noise_field(size: int) -> np.ndarray:
    return np.random.default_rng(0).standard_normal((2 * size, 2 * size, 3), np.float32)


def _box_windows(lay: Layout, size: int) -> list[tuple[slice, slice] | None]:
    """Pixel rectangle holding each box's projection (whole image if it straddles the camera, None if behind)."""
    if not lay.boxes:
        return []
    f, r, up = _camera_basis(lay.yaw, lay.pitch)
    lo, hi = np.array([b[0] for b in lay.boxes]), np.array([b[1] for b in lay.boxes])
    pick = np.array([[i >> 2 & 1, i >> 1 & 1, i & 1] for i in range(8)], bool)  # the 8 corners
    corners = np.where(pick[None], hi[:, None], lo[:, None]) - lay.camera  # (B, 8, 3)
    zc = corners @ f
    fx, fy, cx, cy = intrinsics(size)
    safe = np.maximum(zc, 0.05)
    cols, rows = corners @ r / safe * fx + cx, -(corners @ up) / safe * fy + cy
    c0, c1 = np.clip(np.floor(cols.min(1)), 0, size), np.clip(np.ceil(cols.max(1)) + 1, 0, size)
    r0, r1 = np.clip(np.floor(rows.min(1)), 0, size), np.clip(np.ceil(rows.max(1)) + 1, 0, size)
    straddles, behind = zc.min(1) < 0.05, zc.max(1) <= 0
    full = (slice(0, size), slice(0, size))
    return [
        None if behind[i] else full if straddles[i] else (slice(int(r0[i]), int(r1[i])), slice(int(c0[i]), int(c1[i])))
        for i in range(len(lay.boxes))
    ]  # an empty slice (box off-screen) costs nothing: the hit test runs on 0 pixels


def _render(lay: Layout, size: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Ray casts the layout: returns rgb uint8 (S, S, 3), z-depth float32 (S, S) and NYU-40 labels uint8."""
    f32, xs, ys = np.float32, *_pixel_grid(size)
    f, r, up = _camera_basis(lay.yaw, lay.pitch)
    d = [(f[k] + xs * f32(r[k]) - ys * f32(up[k])).astype(f32) for k in range(3)]
    d = [np.where(np.abs(dk) < 1e-7, f32(1e-7), dk) for dk in d]  # no exact zeros to divide by
    inv, o = [f32(1) / dk for dk in d], lay.camera.astype(f32)
    # The camera is inside the room: each ray leaves through the plane ahead on every axis; the nearest exit wins.
    tr = [np.where(d[k] > 0, f32(lay.room[k]) - o[k], -o[k]) * inv[k] for k in range(3)]
    t = np.minimum(np.minimum(tr[0], tr[1]), tr[2])
    axis = np.where(tr[0] == t, 0, np.where(tr[1] == t, 1, 2)).astype(np.int8)
    sid = np.where(axis == 2, (d[2] > 0) * 1, np.where(axis == 0, 2 + (d[0] > 0), 4 + (d[1] > 0))).astype(np.int16)
    room_sid, p = sid.copy(), [o[k] + t * d[k] for k in range(3)]
    for on, ia, a0, a1, ib, b0, b1, s in lay.decos:  # flush rectangles: new label and look, same depth
        sid[(room_sid == on) & (p[ia] >= a0) & (p[ia] < a1) & (p[ib] >= b0) & (p[ib] < b1)] = s
    on_box = np.zeros_like(sid, dtype=bool)
    windows = _box_windows(lay, size)
    for (lo, hi, s), win in zip(lay.boxes, windows, strict=True):  # slab test in the box's screen rectangle only
        if win is None:
            continue
        lo_t = [(lo[k] - o[k]) * inv[k][win] for k in range(3)]
        hi_t = [(hi[k] - o[k]) * inv[k][win] for k in range(3)]
        mn = [np.minimum(lo_t[k], hi_t[k]) for k in range(3)]
        near = np.maximum(np.maximum(mn[0], mn[1]), mn[2])
        far = np.minimum(
            np.minimum(np.maximum(lo_t[0], hi_t[0]), np.maximum(lo_t[1], hi_t[1])), np.maximum(lo_t[2], hi_t[2])
        )
        hit = (near < far) & (near > 0) & (near < t[win])
        t[win] = np.where(hit, near, t[win])
        axis[win] = np.where(hit, np.where(mn[0] == near, 0, np.where(mn[1] == near, 1, 2)), axis[win])
        sid[win] = np.where(hit, s, sid[win])
        on_box[win] |= hit

    # Shading: Lambert from a point light with distance falloff + ambient, darkened into corners and under furniture.
    p = [o[k] + t * d[k] for k in range(3)]
    lv = [f32(lay.light[k]) - p[k] for k in range(3)]
    dist = np.sqrt(lv[0] ** 2 + lv[1] ** 2 + lv[2] ** 2)
    d_n = np.where(axis == 0, d[0], np.where(axis == 1, d[1], d[2]))
    lv_n = np.where(axis == 0, lv[0], np.where(axis == 1, lv[1], lv[2]))
    ndotl = -np.sign(d_n) * lv_n / dist  # normal along `axis`, facing the camera
    ambient, intensity, falloff = lay.light_params
    shade = ambient + 0.2 * (sid == 1) + intensity * np.maximum(ndotl, 0) / (1 + (dist / falloff) ** 2)
    W, L, H = lay.room
    dx, dy, dz = np.minimum(p[0], W - p[0]), np.minimum(p[1], L - p[1]), np.minimum(p[2], H - p[2])
    edge = np.where(axis == 0, np.minimum(dy, dz), np.where(axis == 1, np.minimum(dx, dz), np.minimum(dx, dy)))
    edge = np.where(on_box, np.minimum(np.minimum(dx, dy), dz), edge)  # a box face never lies on a room plane
    shade *= 1 - 0.35 * np.exp(-edge / 0.25)
    floor = np.flatnonzero(~on_box & (axis == 2) & (d[2] < 0))
    fx_, fy_, flat = p[0].ravel()[floor], p[1].ravel()[floor], shade.ravel()  # flat: a view of shade
    for x0, y0, x1, y1 in lay.footprints:
        gap = np.hypot(np.maximum(np.maximum(x0 - fx_, fx_ - x1), 0), np.maximum(np.maximum(y0 - fy_, fy_ - y1), 0))
        flat[floor] *= 1 - 0.45 * np.exp(-gap / 0.12)
    emissive = np.array([s.emissive for s in lay.surfaces])[sid]
    shade = np.where(emissive, f32(1), shade)

    # Albedo per surface, in that surface's world-space texture coordinates.
    sflat, ax = sid.ravel(), axis.ravel()
    order, counts = np.argsort(sflat, kind="stable"), np.bincount(sflat, minlength=len(lay.surfaces))
    albedo = np.empty((size * size, 3), f32)
    for s_id, start in enumerate(np.cumsum(counts) - counts):
        if counts[s_id]:
            idx = order[start : start + counts[s_id]]
            px, py, pz, a_ = p[0].ravel()[idx], p[1].ravel()[idx], p[2].ravel()[idx], ax[idx]
            a, b = np.where(a_ == 0, py, px), np.where(a_ == 2, py, pz)
            albedo[idx] = surface_albedo(lay.surfaces[s_id], a, b, a_ != 2)
    density, fog_colour = lay.fog
    keep = np.exp(-f32(density) * t)
    rgb = albedo.reshape(size, size, 3) * (shade * keep)[..., None] + fog_colour * (1 - keep)[..., None]

    # Camera: auto-exposure, white balance, slight optical blur, sensor noise. Depth stays exact.
    rgb *= np.clip(0.5 / max(float(rgb.mean()), 1e-3), 0.8, 1.5) * rng.uniform(0.93, 1.07, 3).astype(f32)
    pad = np.pad(rgb, ((1, 1), (1, 1), (0, 0)), mode="edge")
    blur = pad[:-2] + 2 * pad[1:-1] + pad[2:]
    blur = (blur[:, :-2] + 2 * blur[:, 1:-1] + blur[:, 2:]) * f32(1 / 16)
    alpha = f32(rng.uniform(0.3, 1.0))
    oy, ox = rng.integers(0, size, 2)  # a shifted window of a fixed noise field: as random, far cheaper to draw
    noise = _noise_field(size)[oy : oy + size, ox : ox + size]
    rgb = (1 - alpha) * rgb + alpha * blur + f32(rng.uniform(0.006, 0.018)) * noise
    rgb8 = np.clip(rgb * 255 + 0.5, 0, 255).astype(np.uint8)
    depth = t.astype(f32)
    depth.ravel()[rng.integers(0, size * size, rng.integers(0, size * size // 4000 + 1))] = 0  # rare sensor holes
    labels = np.array([s.label for s in lay.surfaces], np.uint8)[sid]
    return rgb8, depth, labels


def _check_size(size: int) -> None:
    if isinstance(size, bool) or not isinstance(size, int) or size < 32 or size % 16:
        raise ConfigError(
            f"synthetic image size {size!r} is invalid; expected an integer >= 32 and a multiple of 16",
            hint="pass e.g. --size 128 or --size 256 (ViT patches are 16 px).",
        )


def render_scene(seed: int, size: int) -> SyntheticScene:
    """Renders one random room; the same (seed, size) always gives identical arrays.

    The scene (room, camera, furniture, light) depends on `seed` only, so sizes differ only in resolution
    and sensor noise.

    Args:
        seed: non-negative integer; use `scene_seed(dataset_seed, index)` for sample `index` of a dataset.
        size: side of the square image in pixels (multiple of 16, >= 32).

    Raises:
        ConfigError: for a bad size or seed.
    """
    _check_size(size)
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
        raise ConfigError(
            f"synthetic seed {seed!r} is invalid; expected a non-negative integer", hint="pass e.g. --seed 0."
        )
    layout_seq, pixel_seq = np.random.SeedSequence(int(seed)).spawn(2)
    lay = sample_layout(np.random.default_rng(layout_seq))
    rgb, depth, labels = _render(lay, size, np.random.default_rng(pixel_seq))
    fx, fy, cx, cy = intrinsics(size)
    boxes = [(tuple(map(float, lo)), tuple(map(float, hi)), lay.surfaces[s].label) for lo, hi, s in lay.boxes]
    return SyntheticScene(
        rgb, depth, labels, fx, fy, cx, cy, tuple(map(float, lay.camera)), lay.pitch, lay.yaw,
        tuple(map(float, lay.room)), boxes, tuple(map(float, lay.light)),
    )  # fmt: skip


def write_synthetic_nyuv2(
    out: str | os.PathLike, *, train: int, test: int, size: int, seed: int, progress: bool = True
) -> Path:
    """Writes a synthetic dataset in the official NYUv2 layout and returns its root.

    Files are `out/{train,test}/{rgb,depth,semseg}/data/NNNN.png`; train samples take indices 0..train-1 and
    test samples continue after them, so names are unique across splits like the official .mat indices.
    Sample `index` is rendered from `scene_seed(seed, index)`: an interrupted run resumes by skipping the
    samples whose three files exist (writes are atomic) and produces identical files.
    `out/synthetic.json` records the generator version, seed, counts, size and camera model.

    Args:
        out: dataset root (created if missing).
        train: number of train samples (>= 0).
        test: number of test samples (>= 0).
        size: side of the square images in pixels (multiple of 16, >= 32).
        seed: dataset seed (>= 0).
        progress: show a rich progress bar.

    Raises:
        ConfigError: for bad counts, size or seed, or an `out` generated with other settings.
    """
    _check_size(size)
    for name, value in (("train", train), ("test", test), ("seed", seed)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 0:
            raise ConfigError(
                f"--{name} {value!r} is invalid; expected a non-negative integer", hint=f"pass e.g. --{name} 10."
            )
    if not 0 < train + test <= MAX_SAMPLES:
        raise ConfigError(
            f"--train {train} + --test {test} = {train + test} samples; expected 1..{MAX_SAMPLES}",
            hint="4-digit file names hold at most 10000 samples; ask for fewer.",
        )
    root = Path(out)
    fx, fy, cx, cy = intrinsics(size)
    camera = dict(model="pinhole", fx=fx, fy=fy, cx=cx, cy=cy, width=size, height=size, roll=0.0)
    camera["depth"] = "z-depth along the optical axis in metres; PNG uint16 = metres * 2**16/10 (truncated)"
    meta = dict(generator="mmpt.data.synthetic", version=GENERATOR_VERSION, seed=seed, train=train, test=test)
    meta |= dict(size=size, indices={"train": [0, train - 1], "test": [train, train + test - 1]}, camera=camera)
    meta["sample_seed"] = "sample i is render_scene(scene_seed(seed, i), size): numpy SeedSequence([seed, i])"
    meta["labels"] = "NYU-40 ids, 0 = unlabeled; used: " + ",".join(map(str, sorted(LABELS_USED)))
    meta_path = root / "synthetic.json"
    if meta_path.exists():
        old = json.loads(meta_path.read_text())
        diff = {k: (old.get(k), meta[k]) for k in ("version", "seed", "train", "size") if old.get(k) != meta[k]}
        if diff:
            raise ConfigError(
                f"{meta_path} was generated with other settings (existing, requested): {diff}",
                hint="use a new --out directory, or repeat the original --seed/--train/--size to resume.",
            )
    elif any((root / split).exists() for split in SPLITS):  # never mix synthetic files into another dataset
        raise ConfigError(
            f"{root} already holds a dataset without synthetic.json; refusing to add synthetic samples to it",
            hint="pass an empty or new --out directory.",
        )
    root.mkdir(parents=True, exist_ok=True)
    meta_path.write_text(json.dumps(meta, indent=2) + "\n")

    jobs = [("train", i) for i in range(train)] + [("test", i) for i in range(train, train + test)]
    todo = [(split, i) for split, i in jobs if not all(sample_path(root, split, m, i).exists() for m in DOMAINS)]

    def work(split: str, index: int) -> None:
        scene = render_scene(scene_seed(seed, index), size)
        write_sample(root, split, index, rgb=scene.rgb, depth_m=scene.depth, labels40=scene.labels)

    if not progress:
        for split, index in todo:
            work(split, index)
        return root
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    columns = (TextColumn("[bold]synth"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn())
    with Progress(*columns) as bar:
        task = bar.add_task("synth", total=len(jobs), completed=len(jobs) - len(todo))
        for split, index in todo:
            work(split, index)
            bar.advance(task)
    return root

"""Procedural synthetic indoor scenes in the official NYUv2 layout, rendered analytically.

A scene is an axis-aligned room (floor 2, walls 1, ceiling 22) with furniture made of boxes and flat
rectangles on walls/floor (door, window, picture, ...), seen by a pinhole camera. Every pixel's ray is
intersected with the room planes and the boxes (vectorised numpy, nearest hit wins), so rgb, metric
z-depth and NYU-40 labels agree exactly. Depth is made predictable from rgb: Lambertian shading from a
point light, world-space textures whose scale follows perspective, corner/contact darkening and fog.

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
from mmpt.errors import ConfigError

GENERATOR_VERSION = 1
NYU_FX = 518.8579  # Kinect rgb focal length in pixels at 480 rows; a square crop keeps NYU's ~50° field of view
MAX_SAMPLES = 10_000  # 4-digit file names keep name order == index order
LABELS_USED = frozenset({1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 14, 17, 18, 20, 22, 23, 24, 29, 30, 32, 39, 40})

_C = {  # base colours (display rgb in [0, 1]) per material family; each surface jitters one of them
    "wall": ((0.86, 0.84, 0.78), (0.80, 0.80, 0.80), (0.78, 0.80, 0.70), (0.70, 0.76, 0.82), (0.88, 0.77, 0.64)),
    "floor": ((0.55, 0.38, 0.22), (0.45, 0.43, 0.42), (0.78, 0.75, 0.70), (0.30, 0.25, 0.22), (0.40, 0.36, 0.46)),
    "ceiling": ((0.93, 0.93, 0.91), (0.86, 0.87, 0.85)),
    "wood": ((0.55, 0.36, 0.20), (0.70, 0.52, 0.32), (0.35, 0.22, 0.12), (0.80, 0.68, 0.50)),
    "laminate": ((0.90, 0.90, 0.88), (0.60, 0.60, 0.62), (0.18, 0.18, 0.20), (0.75, 0.72, 0.66)),
    "fabric": ((0.20, 0.28, 0.55), (0.55, 0.18, 0.16), (0.30, 0.45, 0.30), (0.45, 0.45, 0.48), (0.72, 0.64, 0.52)),
    "linen": ((0.92, 0.90, 0.86), (0.80, 0.84, 0.90), (0.88, 0.80, 0.78)),
    "cardboard": ((0.62, 0.47, 0.30),),
}
# piece: (label, stands against a wall, sampling weight, material, texture, width/depth/height ranges in metres)
_PIECES = {
    "cabinet": (3, True, 3.0, "laminate", "drawers", ((0.5, 1.8), (0.4, 0.6), (0.6, 2.0))),
    "dresser": (17, True, 1.0, "wood", "drawers", ((0.8, 1.5), (0.45, 0.55), (0.7, 1.1))),
    "nightstand": (32, True, 0.8, "wood", "drawers", ((0.4, 0.55), (0.35, 0.45), (0.5, 0.65))),
    "bookshelf": (10, True, 2.0, "wood", "books", ((0.7, 1.6), (0.28, 0.4), (1.2, 2.2))),
    "fridge": (24, True, 0.5, "laminate", "plain", ((0.6, 0.8), (0.6, 0.75), (1.6, 1.9))),
    "bed": (4, True, 1.0, "linen", "plain", ((1.0, 1.9), (1.9, 2.1), (0.45, 0.6))),
    "sofa": (6, True, 1.5, "fabric", "plain", ((1.4, 2.2), (0.8, 0.95), (0.4, 0.45))),
    "desk": (14, True, 2.0, "wood", "grain", ((1.0, 1.6), (0.55, 0.75), (0.72, 0.76))),
    "table": (7, False, 2.5, "wood", "grain", ((0.8, 1.8), (0.6, 1.0), (0.7, 0.78))),
    "chair": (5, False, 1.5, "fabric", "plain", ((0.4, 0.5), (0.4, 0.5), (0.43, 0.48))),
    "box": (29, False, 1.0, "cardboard", "plain", ((0.25, 0.6), (0.25, 0.6), (0.2, 0.6))),
    "other": (39, False, 1.5, "wood", "grain", ((0.4, 1.2), (0.3, 0.8), (0.4, 1.4))),
}


@dataclass(frozen=True)
class _Surface:
    label: int
    colour: np.ndarray  # (3,) display rgb in [0, 1]
    kind: str  # texture, see _albedo
    scale: float  # texture period in metres
    seed: int  # texture hash seed
    emissive: bool = False  # windows: light comes through, no shading


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


def _pick(rng: np.random.Generator, family: str, jitter: float = 0.06) -> np.ndarray:
    options = _C[family]
    base = np.asarray(options[rng.integers(len(options))], dtype=np.float32)
    return np.clip(base * rng.uniform(0.85, 1.1) + rng.normal(0, jitter, 3), 0.03, 1).astype(np.float32)


def _piece(name: str, rng: np.random.Generator) -> list[tuple[tuple[float, ...], tuple[float, ...], int]]:
    """Boxes (lo, hi, label) of one piece in its local frame: footprint centred at 0, back towards +y."""
    label, ranges = _PIECES[name][0], _PIECES[name][5]
    w, d, h = (rng.uniform(*r) for r in ranges)
    body = ((-w / 2, -d / 2, 0.0), (w / 2, d / 2, h), label)

    def slab(x0: float, y0: float, z0: float, x1: float, y1: float, z1: float, lab: int = label) -> tuple:
        return (x0, y0, z0), (x1, y1, z1), lab

    def legs(inset: float, top: float, s: float) -> list[tuple]:
        at = [(sx * (w / 2 - inset), sy * (d / 2 - inset)) for sx in (-1, 1) for sy in (-1, 1)]
        return [slab(x - s / 2, y - s / 2, 0.0, x + s / 2, y + s / 2, top) for x, y in at]

    if name == "table":
        return [slab(-w / 2, -d / 2, h - 0.04, w / 2, d / 2, h), *legs(0.06, h - 0.04, 0.05)]
    if name == "chair":  # seat, back rest, four legs
        back = slab(-w / 2, d / 2 - 0.05, h, w / 2, d / 2, h + rng.uniform(0.35, 0.5))
        return [slab(-w / 2, -d / 2, h - 0.05, w / 2, d / 2, h), back, *legs(0.03, h - 0.05, 0.035)]
    if name == "desk":  # top on two side panels
        sides = [slab(x, -d / 2, 0.0, x + 0.03, d / 2, h - 0.03) for x in (-w / 2, w / 2 - 0.03)]
        return [slab(-w / 2, -d / 2, h - 0.03, w / 2, d / 2, h), *sides]
    if name == "sofa":  # seat, back rest, two arms
        arms = [slab(x, -d / 2, 0.0, x + 0.15, d / 2, h + 0.2) for x in (-w / 2, w / 2 - 0.15)]
        return [body, slab(-w / 2, d / 2 - 0.2, 0.0, w / 2, d / 2, rng.uniform(0.75, 0.9)), *arms]
    if name == "bed":  # mattress, headboard, one or two pillows (class 18)
        xs = [0.0] if w < 1.3 else [-w / 4, w / 4]
        pillows = [slab(x - 0.27, d / 2 - 0.5, h, x + 0.27, d / 2 - 0.12, h + 0.13, 18) for x in xs]
        return [body, slab(-w / 2, d / 2 - 0.06, 0.0, w / 2, d / 2, rng.uniform(0.9, 1.2)), *pillows]
    return [body]


@dataclass
class _Layout:
    room: tuple[float, float, float]
    camera: np.ndarray  # (3,)
    yaw: float
    pitch: float
    surfaces: list[_Surface]  # 0 floor, 1 ceiling, 2/3 walls x=0/x=W, 4/5 walls y=0/y=L, then the rest
    boxes: list[tuple[np.ndarray, np.ndarray, int]]  # (lo, hi, surface id)
    decos: list[tuple[int, int, float, float, int, float, float, int]]  # (on sid, axis a, a0, a1, axis b, b0, b1, sid)
    footprints: list[tuple[float, float, float, float]]  # (x0, y0, x1, y1) for contact shadows on the floor
    light: np.ndarray  # (3,)
    light_params: tuple[float, float, float]  # ambient, intensity, falloff distance (m)
    fog: tuple[float, np.ndarray]  # density per metre, colour


def _rotate(lo: tuple[float, ...], hi: tuple[float, ...], k: int) -> tuple[np.ndarray, np.ndarray]:
    """Rotates a box about the z axis by k * 90° (stays axis-aligned)."""
    c, s = [(1, 0), (0, 1), (-1, 0), (0, -1)][k]
    xs = [c * lo[0] - s * lo[1], c * hi[0] - s * hi[1]]
    ys = [s * lo[0] + c * lo[1], s * hi[0] + c * hi[1]]
    return np.array([min(xs), min(ys), lo[2]], np.float32), np.array([max(xs), max(ys), hi[2]], np.float32)


def _sample_layout(rng: np.random.Generator) -> _Layout:
    """Draws room, camera, furniture, wall rectangles and lighting (independent of the image size)."""
    u = rng.uniform
    # Diagonal stays < 9.5 m, so every z-depth is < 10 m and the uint16 encoding never overflows.
    W, L, H = u(2.8, 5.5), u(3.0, 7.0), u(2.4, 3.1)
    cam = np.array([u(0.6, W - 0.6), u(0.3, max(0.4, 0.3 * L)), u(1.2, 1.8)])
    yaw = 0.6 * np.arctan2(W / 2 - cam[0], L - cam[1]) + u(-0.35, 0.35)  # roughly towards the room centre
    pitch = u(-0.35, 0.12)  # handheld Kinect: mostly level to ~20° down
    wall_col, wall_kind = _pick(rng, "wall", 0.03), "stripes" if u() < 0.3 else "plain"
    surfaces = [
        _Surface(2, _pick(rng, "floor", 0.04), ("planks", "tiles", "carpet")[rng.integers(3)], u(0.12, 0.6), 11),
        _Surface(22, _pick(rng, "ceiling", 0.02), "acoustic" if u() < 0.6 else "plain", u(0.5, 0.65), 12),
    ]
    accent = rng.integers(2, 6) if u() < 0.2 else -1
    for sid in range(2, 6):
        colour = _pick(rng, "wall", 0.05) if sid == accent else wall_col
        surfaces.append(_Surface(1, colour, wall_kind, u(0.08, 0.3), 13))

    boxes: list[tuple[np.ndarray, np.ndarray, int]] = []
    footprints: list[tuple[float, float, float, float]] = []

    def place(name: str, k: int, centre: tuple[float, float] | None = None) -> tuple[float, ...] | None:
        parts = [(*_rotate(lo, hi, k), label) for lo, hi, label in _piece(name, rng)]
        lo = np.min([p[0] for p in parts], axis=0)
        hi = np.max([p[1] for p in parts], axis=0)
        hx, hy = (hi[0] - lo[0]) / 2, (hi[1] - lo[1]) / 2
        if centre is None and _PIECES[name][1]:  # back flush against the wall the rotation points it to
            cx_, cy_ = [(u(hx, W - hx), L - hy - 0.01), (hx + 0.01, u(hy, L - hy)), (u(hx, W - hx), hy + 0.01),
                        (W - hx - 0.01, u(hy, L - hy))][k]  # fmt: skip
        elif centre is None:
            cx_, cy_ = u(hx + 0.1, W - hx - 0.1), u(hy + 0.1, L - hy - 0.1)
        else:
            cx_, cy_ = centre
        fp = (cx_ - hx, cy_ - hy, cx_ + hx, cy_ + hy)
        inside = fp[0] >= 0 and fp[1] >= 0 and fp[2] <= W and fp[3] <= L
        clear = not (fp[0] - 0.6 < cam[0] < fp[2] + 0.6 and fp[1] - 0.6 < cam[1] < fp[3] + 0.6)
        free = all(fp[0] >= g[2] or fp[2] <= g[0] or fp[1] >= g[3] or fp[3] <= g[1] for g in footprints)
        if not (inside and clear and free):
            return None
        family, kind = _PIECES[name][3:5]
        sids = {}
        for label in {p[2] for p in parts}:
            sids[label] = len(surfaces)
            fam, knd = (family, kind) if label != 18 else ("linen", "plain")
            surfaces.append(_Surface(label, _pick(rng, fam), knd, u(0.2, 0.4), int(rng.integers(1 << 20))))
        shift = np.array([cx_ - (lo[0] + hi[0]) / 2, cy_ - (lo[1] + hi[1]) / 2, 0], np.float32)
        boxes.extend((p[0] + shift, p[1] + shift, sids[p[2]]) for p in parts)
        footprints.append(fp)
        if name in ("table", "desk", "cabinet", "dresser", "nightstand", "other") and hi[2] < 1.5:
            for _ in range(rng.integers(0, 4)):  # clutter on the top: boxes, books, other props
                w, dd, h = u(0.1, 0.4), u(0.1, 0.35), u(0.04, 0.35)
                x, y = u(fp[0], max(fp[0], fp[2] - w)), u(fp[1], max(fp[1], fp[3] - dd))
                label = int(rng.choice([29, 23, 40]))
                family = "cardboard" if label == 29 else ("fabric", "laminate")[rng.integers(2)]
                surfaces.append(_Surface(label, _pick(rng, family, 0.1), "plain", 1.0, int(rng.integers(1 << 20))))
                corner = np.array([x, y, hi[2]], np.float32)
                boxes.append((corner, corner + np.array([w, dd, h], np.float32), len(surfaces) - 1))
        return fp

    names = list(_PIECES)
    weights = np.array([_PIECES[n][2] for n in names])
    for _ in range(rng.integers(3, 10)):
        name = names[rng.choice(len(names), p=weights / weights.sum())]
        k = int(rng.choice(4, p=[0.45, 0.25, 0.05, 0.25])) if _PIECES[name][1] else int(rng.integers(4))
        for _attempt in range(4):
            fp = place(name, k)
            if fp is not None:
                break
        if name == "table" and fp is not None:  # chairs facing the table, backs turned away from it
            x0, y0, x1, y1 = fp
            sides = [((x0 + x1) / 2, y0 - 0.3, 2), ((x0 + x1) / 2, y1 + 0.3, 0), (x0 - 0.3, (y0 + y1) / 2, 1),
                     (x1 + 0.3, (y0 + y1) / 2, 3)]  # fmt: skip
            for i in rng.permutation(4)[: rng.integers(0, 4)]:
                place("chair", sides[i][2], sides[i][:2])

    decos: list[tuple[int, int, float, float, int, float, float, int]] = []
    used: dict[int, list[tuple[float, float]]] = {}

    def rect(label: int, family: str, kind: str, width: float, z0: float, z1: float, frame: float,
             emissive: bool = False) -> None:  # fmt: skip
        wall = int(rng.choice([2, 3, 4, 5], p=[0.3, 0.3, 0.05, 0.35]))
        axis, length = (1, L) if wall < 4 else (0, W)
        a0 = u(0.1, max(0.11, length - width - 0.1))
        a1, z1 = min(a0 + width, length - 0.05), min(z1, H - 0.1)
        if any(a0 < b1 + 0.1 and a1 > b0 - 0.1 for b0, b1 in used.get(wall, [])):
            return
        used.setdefault(wall, []).append((a0, a1))
        for pad, fam, knd, emit in ((0.0, "laminate", "plain", False), (frame, family, kind, emissive)):
            surfaces.append(_Surface(label, _pick(rng, fam, 0.04), knd, u(0.3, 0.6), int(rng.integers(1 << 20)), emit))
            decos.append((wall, axis, a0 + pad, a1 - pad, 2, z0 + pad * (z0 > 0), z1 - pad, len(surfaces) - 1))

    if u() < 0.5:
        rect(8, "wood", "grain", u(0.8, 0.95), 0.0, u(2.0, 2.1), 0.06)
    if u() < 0.5:
        rect(9, "linen", "window", u(0.8, 1.6), u(0.8, 1.0), u(1.9, 2.2), 0.06, emissive=True)
    if u() < 0.15:
        rect(30, "linen", "plain", u(1.2, 2.0), u(0.9, 1.0), u(1.9, 2.1), 0.03)
    for _ in range(rng.integers(0, 3)):
        zc, hh = u(1.3, 1.7), u(0.15, 0.4)
        rect(11, "fabric", "picture", u(0.3, 1.0), zc - hh, zc + hh, 0.03)
    if u() < 0.25:
        surfaces.append(_Surface(20, _pick(rng, "fabric"), "stripes", u(0.05, 0.15), 14))
        x0, y0 = u(0, W - 1.0), u(cam[1], L - 1.0)
        decos.append((0, 0, x0, x0 + u(0.6, 1.6), 1, y0, y0 + u(0.5, 1.2), len(surfaces) - 1))

    light = np.array([u(0.25, 0.75) * W, u(0.3, 0.8) * L, H - u(0.2, 0.5)])
    fog_colour = np.full(3, u(0.55, 0.8), np.float32) + rng.normal(0, 0.03, 3).astype(np.float32)
    return _Layout((W, L, H), cam, float(yaw), float(pitch), surfaces, boxes, decos, footprints, light,
                   (u(0.22, 0.38), u(0.6, 0.9), u(2.5, 4.5)), (u(0.02, 0.06), fog_colour))  # fmt: skip


def _hash(a: np.ndarray, b: np.ndarray, seed: int) -> np.ndarray:
    """Deterministic per-cell random numbers in [0, 1) from integer cell coordinates (wrapping int64 maths)."""
    h = (a.astype(np.int64) * 73856093) ^ (b.astype(np.int64) * 19349663) ^ seed
    h = (h ^ (h >> 13)) * 1274126177
    return ((h ^ (h >> 16)) & 0xFFFF).astype(np.float32) / np.float32(65536)


def _albedo(s: _Surface, a: np.ndarray, b: np.ndarray, vertical: np.ndarray) -> np.ndarray:
    """(n, 3) reflectance at in-plane world coordinates (a, b) in metres; b is the height on vertical faces.

    Textures live in world units, so their on-screen scale shrinks with distance: a depth cue.
    """
    p, c, f32 = s.scale, s.colour[None, :], np.float32
    if s.kind == "planks":  # boards along a, staggered butt joints, one tone per board, dark seams
        row = np.floor(b / p)
        col = np.floor(a / (5 * p) + _hash(row, row, s.seed))
        tone = 0.75 + 0.5 * _hash(row, col, s.seed) * (np.abs(b / p - row - 0.5) < 0.45)
        t = tone * (1 + 0.05 * np.sin(a * 40 + 6 * _hash(row, col, s.seed + 1)))
    elif s.kind in ("tiles", "acoustic"):  # square tiles with grout lines
        fa, fb = a / p - np.floor(a / p), b / p - np.floor(b / p)
        grout = (np.minimum(fa, 1 - fa) < 0.03) | (np.minimum(fb, 1 - fb) < 0.03)
        t = np.where(grout, f32(0.65), 0.92 + 0.16 * _hash(np.floor(a / p), np.floor(b / p), s.seed))
    elif s.kind == "carpet":  # fine speckle: visible texture near, averaged out far away
        t = 0.85 + 0.3 * _hash(np.floor(a / 0.02), np.floor(b / 0.02), s.seed)
    elif s.kind == "stripes":
        t = np.where(a / p - np.floor(a / p) < 0.5, f32(1.0), f32(0.86))
    elif s.kind == "drawers":  # drawer fronts with dark gaps on vertical faces
        fb = b / p - np.floor(b / p)
        t = np.where(vertical & (fb < 0.06), f32(0.45), 1 - 0.1 * _hash(np.floor(b / p), np.floor(b / p), s.seed))
    elif s.kind == "books":  # shelves every ~0.35 m holding books of random colour and height
        shelf, fb = np.floor(b / 0.35), b / 0.35 - np.floor(b / 0.35)
        spine = np.floor(a / 0.035)
        book = (fb > 0.08) & (fb < 0.55 + 0.4 * _hash(spine, shelf, s.seed)) & vertical
        hue = np.stack([_hash(spine, shelf, s.seed + k) for k in (1, 2, 3)], axis=1)
        out = np.where(
            book[:, None], 0.15 + 0.75 * hue, c * np.where(vertical & (fb > 0.08), f32(0.35), f32(1))[:, None]
        )
        return out.astype(np.float32)
    elif s.kind == "grain":
        t = 1 + 0.08 * np.sin(a * 30 + 3 * np.sin(b * 4 + s.seed))
    elif s.kind == "window":  # bright sky with mullions
        fa, fb = a / 0.5 - np.floor(a / 0.5), b / 0.6 - np.floor(b / 0.6)
        t = np.where((fa < 0.04) | (fb < 0.04), f32(0.7), 1.1 + 0.1 * np.sin(b * 3.0))
    elif s.kind == "picture":  # smooth random blobs per colour channel
        ph = np.array([s.seed % 7, s.seed % 11, s.seed % 13], np.float32)
        waves = np.sin(a[:, None] * (5 + ph) + b[:, None] * (7 - ph / 3) + ph)
        return np.clip(c * 0.6 + 0.35 * waves, 0, 1).astype(np.float32)
    else:  # plain: a faint low-frequency variation
        t = 1 + 0.04 * np.sin(a * 2.1 + s.seed) * np.cos(b * 1.7)
    return (c * np.asarray(t, np.float32)[:, None]).astype(np.float32)


@functools.lru_cache(maxsize=4)
def _noise_field(size: int) -> np.ndarray:
    return np.random.default_rng(0).standard_normal((2 * size, 2 * size, 3), np.float32)


def _box_windows(lay: _Layout, size: int) -> list[tuple[slice, slice] | None]:
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


def _render(lay: _Layout, size: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
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
            albedo[idx] = _albedo(lay.surfaces[s_id], a, b, a_ != 2)
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
    lay = _sample_layout(np.random.default_rng(layout_seq))
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

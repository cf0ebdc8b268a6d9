"""Seeded random scene descriptions for the synthetic NYUv2 renderer: what is in the room and how it looks.

A scene is an axis-aligned room (floor 2, walls 1, ceiling 22) with furniture made of boxes and flat
rectangles on walls/floor (door, window, picture, ...), plus a point light and fog. Every surface carries a
material colour and a procedural texture; `surface_albedo` evaluates that texture in world units, so its on-screen
scale follows perspective (a depth cue). `mmpt.data.synthetic` ray casts the `Layout` drawn here.

World frame: x right, y forward (into the room), z up; the room spans [0, W] x [0, L] x [0, H].
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

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
    kind: str  # texture, see surface_albedo
    scale: float  # texture period in metres
    seed: int  # texture hash seed
    emissive: bool = False  # windows: light comes through, no shading


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
class Layout:
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


def sample_layout(rng: np.random.Generator) -> Layout:
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
    return Layout((W, L, H), cam, float(yaw), float(pitch), surfaces, boxes, decos, footprints, light,
                   (u(0.22, 0.38), u(0.6, 0.9), u(2.5, 4.5)), (u(0.02, 0.06), fog_colour))  # fmt: skip


def _hash(a: np.ndarray, b: np.ndarray, seed: int) -> np.ndarray:
    """Deterministic per-cell random numbers in [0, 1) from integer cell coordinates (wrapping int64 maths)."""
    h = (a.astype(np.int64) * 73856093) ^ (b.astype(np.int64) * 19349663) ^ seed
    h = (h ^ (h >> 13)) * 1274126177
    return ((h ^ (h >> 16)) & 0xFFFF).astype(np.float32) / np.float32(65536)


def surface_albedo(s: _Surface, a: np.ndarray, b: np.ndarray, vertical: np.ndarray) -> np.ndarray:
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

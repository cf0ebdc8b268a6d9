"""Synthetic NYUv2 scenes: determinism, exact file round trip, and depth that obeys the camera geometry."""

from __future__ import annotations

import ast
import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from mmpt.data import synthetic
from mmpt.data.layout import DEPTH_SCALE, sample_path
from mmpt.data.synthetic import LABELS_USED, SyntheticScene, render_scene, scene_seed, write_synthetic_nyuv2
from mmpt.errors import ConfigError

SEEDS = range(12)
FLUSH_ON_WALL = {1, 8, 9, 11, 30}  # wall and the flat rectangles on it (door, window, picture, whiteboard)
ROOM = FLUSH_ON_WALL | {2, 20, 22}  # plus floor, floor mat, ceiling


@pytest.fixture(scope="module")
def scenes() -> list[SyntheticScene]:
    return [render_scene(s, 64) for s in SEEDS]


def rays(scene: SyntheticScene) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per-pixel world ray (unit forward component) and its image-plane offsets, derived from the returned pose."""
    size = scene.depth.shape[0]
    c = np.arange(size) + 0.5
    a, b = np.meshgrid((c - scene.cx) / scene.fx, (c - scene.cy) / scene.fy)  # right, down offsets
    yaw, pitch = scene.yaw, scene.pitch
    forward = np.array([np.sin(yaw) * np.cos(pitch), np.cos(yaw) * np.cos(pitch), np.sin(pitch)])
    right = np.array([np.cos(yaw), -np.sin(yaw), 0.0])
    up = np.cross(right, forward)
    return forward + a[..., None] * right - b[..., None] * up, a, b


def nearest_box(scene: SyntheticScene, ray: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Brute-force slab test of every ray against every box: (nearest t or inf, its label or 0)."""
    o = np.array(scene.camera_position)
    best, label = np.full(ray.shape[:2], np.inf), np.zeros(ray.shape[:2], int)
    with np.errstate(divide="ignore", invalid="ignore"):
        for lo, hi, lab in scene.boxes:
            t1, t2 = (np.array(lo) - o) / ray, (np.array(hi) - o) / ray
            near, far = np.minimum(t1, t2).max(-1), np.maximum(t1, t2).min(-1)
            hit = (near < far) & (near > 0) & (near < best)
            best, label = np.where(hit, near, best), np.where(hit, lab, label)
    return best, label


def test_render_is_deterministic_per_seed() -> None:
    a, b, c = render_scene(7, 64), render_scene(7, 64), render_scene(8, 64)
    for name in ("rgb", "depth", "labels"):
        np.testing.assert_array_equal(getattr(a, name), getattr(b, name))
    assert not np.array_equal(a.rgb, c.rgb) and not np.array_equal(a.depth, c.depth)
    assert a.rgb.dtype == np.uint8 and a.depth.dtype == np.float32 and a.labels.dtype == np.uint8
    assert a.rgb.shape == (64, 64, 3) and a.depth.shape == a.labels.shape == (64, 64)


def test_scene_depends_on_seed_not_size() -> None:
    small, large = render_scene(5, 32), render_scene(5, 96)
    assert small.camera_position == large.camera_position and small.room_size == large.room_size
    assert small.boxes == large.boxes and large.fx == pytest.approx(3 * small.fx)


def test_labels_and_depth_range_are_valid(scenes: list[SyntheticScene]) -> None:
    seen: set[int] = set()
    for scene in scenes:
        seen |= set(np.unique(scene.labels).tolist())
        valid = scene.depth > 0
        assert valid.mean() > 0.995  # holes exist but are rare
        assert scene.depth[valid].min() > 0.3 and scene.depth.max() < 10.0
        assert 1.2 <= scene.camera_height <= 1.8 and abs(scene.pitch) < 0.36
    assert seen <= LABELS_USED and {1, 2, 22} <= seen and len(seen - ROOM) >= 5  # room + several furniture classes


def test_floor_and_ceiling_depth_follow_camera_height_and_pitch(scenes: list[SyntheticScene]) -> None:
    floor_pixels = ceiling_pixels = 0
    for scene in scenes:
        _, _, b = rays(scene)
        h, p, room_h = scene.camera_height, scene.pitch, scene.room_size[2]
        slope = b * np.cos(p) - np.sin(p)  # how fast the ray descends per metre of z-depth
        valid = scene.depth > 0
        floor = valid & np.isin(scene.labels, [2, 20])
        ceiling = valid & (scene.labels == 22)
        np.testing.assert_allclose(scene.depth[floor], (h / slope)[floor], rtol=1e-4)
        np.testing.assert_allclose(scene.depth[ceiling], ((room_h - h) / -slope)[ceiling], rtol=1e-4)
        floor_pixels, ceiling_pixels = floor_pixels + floor.sum(), ceiling_pixels + ceiling.sum()
    assert floor_pixels > 2000 and ceiling_pixels > 500


def test_wall_pixels_lie_on_a_wall_plane(scenes: list[SyntheticScene]) -> None:
    for scene in scenes:
        ray, _, _ = rays(scene)
        wall = (scene.depth > 0) & np.isin(scene.labels, list(FLUSH_ON_WALL))
        point = np.array(scene.camera_position) + scene.depth[wall][:, None] * ray[wall]  # (n, 3)
        width, length, height = scene.room_size
        gap = np.min(np.abs(np.stack([point[:, 0], point[:, 0] - width, point[:, 1], point[:, 1] - length])), 0)
        assert wall.sum() > 100 and gap.max() < 2e-3
        assert point[:, 2].min() > -2e-3 and point[:, 2].max() < height + 2e-3


def test_depth_is_the_nearest_hit_so_furniture_occludes_the_room(scenes: list[SyntheticScene]) -> None:
    occluding = 0
    for scene in scenes:
        ray, _, _ = rays(scene)
        o, size = np.array(scene.camera_position), np.array(scene.room_size)
        room_t = np.where(ray > 0, (size - o) / ray, -o / ray).min(-1)  # camera inside: exit of the room box
        box_t, box_label = nearest_box(scene, ray)
        valid = scene.depth > 0
        expected = np.minimum(room_t, box_t)
        np.testing.assert_allclose(scene.depth[valid], expected[valid], rtol=2e-4)
        on_box = valid & (box_t < room_t - 1e-3)
        np.testing.assert_array_equal(scene.labels[on_box], box_label[on_box])
        assert not np.isin(scene.labels[on_box], list(ROOM)).any()
        assert (scene.depth[on_box] < room_t[on_box]).all()  # nearer than the floor/wall behind it
        occluding += on_box.sum()
    assert occluding > 3000


def test_written_files_decode_to_the_rendered_arrays(tmp_path) -> None:
    root = write_synthetic_nyuv2(tmp_path / "syn", train=2, test=1, size=32, seed=5, progress=False)
    for split, index in (("train", 0), ("train", 1), ("test", 2)):
        scene = render_scene(scene_seed(5, index), 32)
        rgb = np.asarray(Image.open(sample_path(root, split, "rgb", index)))
        units = np.asarray(Image.open(sample_path(root, split, "depth", index)))
        semseg = Image.open(sample_path(root, split, "semseg", index))
        np.testing.assert_array_equal(rgb, scene.rgb)
        assert units.dtype == np.uint16 and semseg.mode == "P"
        error = scene.depth - units / DEPTH_SCALE
        assert error.min() >= -1e-6 and error.max() < 10 / 65536  # truncation, never rounding up
        np.testing.assert_array_equal(np.asarray(semseg), scene.labels)
    assert not sample_path(root, "test", "rgb", 0).exists()  # test indices continue after train
    meta = json.loads((root / "synthetic.json").read_text())
    assert (meta["seed"], meta["train"], meta["test"], meta["size"]) == (5, 2, 1, 32)
    assert meta["camera"]["model"] == "pinhole" and meta["camera"]["fx"] == pytest.approx(scene.fx)


def test_resume_skips_existing_files_and_reproduces_missing_ones(tmp_path) -> None:
    root = write_synthetic_nyuv2(tmp_path, train=2, test=1, size=32, seed=1, progress=False)
    missing, kept = sample_path(root, "test", "depth", 2), sample_path(root, "train", "rgb", 0)
    original = missing.read_bytes()
    missing.unlink()
    kept.write_bytes(b"sentinel")  # a complete sample is skipped, not re-rendered
    write_synthetic_nyuv2(tmp_path, train=2, test=1, size=32, seed=1, progress=True)
    assert missing.read_bytes() == original and kept.read_bytes() == b"sentinel"
    with pytest.raises(ConfigError, match="seed"):
        write_synthetic_nyuv2(tmp_path, train=2, test=1, size=32, seed=2, progress=False)


@pytest.mark.parametrize("size", [0, 30, 100, 16])
def test_bad_size_is_a_config_error_naming_the_value(size: int, tmp_path) -> None:
    with pytest.raises(ConfigError, match=f"size {size} "):
        write_synthetic_nyuv2(tmp_path, train=1, test=0, size=size, seed=0, progress=False)
    with pytest.raises(ConfigError, match="multiple of 16"):
        render_scene(0, size)


def test_bad_counts_and_seed_are_config_errors(tmp_path) -> None:
    with pytest.raises(ConfigError, match="--train 0 \\+ --test 0"):
        write_synthetic_nyuv2(tmp_path, train=0, test=0, size=32, seed=0)
    with pytest.raises(ConfigError, match="--seed -1"):
        write_synthetic_nyuv2(tmp_path, train=1, test=0, size=32, seed=-1)
    with pytest.raises(ConfigError, match="seed -3"):
        render_scene(-3, 32)


def test_refuses_to_mix_into_a_dataset_it_did_not_write(tmp_path) -> None:
    (tmp_path / "train" / "rgb" / "data").mkdir(parents=True)
    with pytest.raises(ConfigError, match=r"without synthetic\.json"):
        write_synthetic_nyuv2(tmp_path, train=1, test=0, size=32, seed=0, progress=False)
    assert not (tmp_path / "synthetic.json").exists()


def test_rich_is_imported_lazily() -> None:
    tree = ast.parse(Path(synthetic.__file__).read_text())
    top_level = [n for n in tree.body if isinstance(n, (ast.Import, ast.ImportFrom))]
    names = [a.name for n in top_level for a in n.names] + [
        n.module for n in top_level if isinstance(n, ast.ImportFrom)
    ]
    assert "numpy" in names and not any(str(name).startswith("rich") for name in names)

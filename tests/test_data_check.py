"""`mmpt data check` (and `mmpt data synth`): every bad case exits 1 and names the file; a good tree exits 0."""

from __future__ import annotations

import types

import numpy as np
import pytest
from data_fixtures import write_tree
from PIL import Image
from typer.testing import CliRunner

from mmpt.cli.app import app
from mmpt.data.check import check_layout
from mmpt.data.layout import sample_path, write_sample

runner = CliRunner(env={"COLUMNS": "240"})  # no line wrapping inside quoted paths
SAMPLES = {"train": [0, 2, 3], "test": [1, 4]}


@pytest.fixture
def tree(tmp_path):
    root = tmp_path / "NYUv2"
    write_tree(root, SAMPLES)
    return root


def test_a_valid_tree_passes_with_a_summary(tree):
    report = check_layout(tree)
    assert report.ok and report.problems == []
    train = report.splits["train"]
    assert train.files == {"rgb": 3, "depth": 3, "semseg": 3} and train.sizes == {(32, 24): 3}
    assert 0.5 <= train.depth_min_m < train.depth_max_m < 9.0
    assert train.depth_valid == 3 * (24 * 32 - 1)  # one invalid pixel per depth map
    assert train.class_pixels.sum() == 3 * 24 * 32 and len(train.class_pixels) == 41

    result = runner.invoke(app, ["data", "check", str(tree)])
    assert result.exit_code == 0, result.output
    assert "the layout is valid" in result.output and "NYU-40 classes" in result.output
    assert "640×480" not in result.output and "32×24" in result.output


def _uint8_depth(root):
    Image.fromarray(np.full((24, 32), 9, dtype=np.uint8)).save(sample_path(root, "train", "depth", 2))
    return "train/depth/data/0002.png", "uint8"


def _missing_file(root):
    sample_path(root, "test", "rgb", 4).unlink()
    return "test/rgb/data/0004.png", "missing"


def _different_sizes(root):
    write_sample(root, "train", 3, labels40=np.ones((12, 16), dtype=np.uint8))
    return "train/rgb/data/0003.png", "differ in size"


def _label_above_40(root):
    write_sample(root, "test", 1, labels40=np.full((24, 32), 57))
    return "test/semseg/data/0001.png", "class id 57"


def _all_invalid_depth(root):
    write_sample(root, "train", 0, depth_m=np.zeros((24, 32), dtype=np.float32))
    return "train/depth/data/0000.png", "no valid depth"


def _stray_file(root):
    (root / "train" / "rgb" / "data" / "notes.txt").write_text("hello")
    return "train/rgb/data/notes.txt", "stray file"


def _leftover_tmp(root):
    (root / "test" / "depth" / "data" / "0004.png.tmp").write_bytes(b"half")
    return "test/depth/data/0004.png.tmp", "interrupted write"


def _grey_rgb(root):
    Image.new("L", (32, 24)).save(sample_path(root, "train", "rgb", 0))
    return "train/rgb/data/0000.png", "expected 8-bit RGB"


def _rgb_semseg(root):
    Image.new("RGB", (32, 24)).save(sample_path(root, "test", "semseg", 4))
    return "test/semseg/data/0004.png", "palettized"


def _corrupt_png(root):
    path = sample_path(root, "train", "semseg", 3)
    path.write_bytes(path.read_bytes()[:40])
    return "train/semseg/data/0003.png", "cannot be read"


def _sample_in_both_splits(root):
    write_tree(root, {"test": [2]})
    return "test/*/data/0002.png", "in both train and test"


def _missing_split(root):
    import shutil

    shutil.rmtree(root / "test")
    return "test/", "missing split folder"


def _stray_folder(root):
    (root / "train" / "depth_old").mkdir()
    return "train/depth_old", "stray folder"


BAD_CASES = [
    _uint8_depth,
    _missing_file,
    _different_sizes,
    _label_above_40,
    _all_invalid_depth,
    _stray_file,
    _leftover_tmp,
    _grey_rgb,
    _rgb_semseg,
    _corrupt_png,
    _sample_in_both_splits,
    _missing_split,
    _stray_folder,
]


@pytest.mark.parametrize("corrupt", BAD_CASES, ids=[case.__name__.strip("_") for case in BAD_CASES])
def test_each_problem_exits_1_and_names_the_file(tree, corrupt):
    path, words = corrupt(tree)

    report = check_layout(tree)
    assert [(p.path, words in p.message) for p in report.problems] == [(path, True)]
    assert report.problems[0].fix

    result = runner.invoke(app, ["data", "check", str(tree)])
    assert result.exit_code == 1
    assert path in result.output and words in result.output and "fix:" in result.output


def test_check_can_require_fewer_domains(tree):
    import shutil

    shutil.rmtree(tree / "train" / "semseg")
    assert runner.invoke(app, ["data", "check", str(tree)]).exit_code == 1
    result = runner.invoke(app, ["data", "check", str(tree), "--domains", "rgb,depth"])
    assert result.exit_code == 0, result.output


def test_check_rejects_unknown_domains_and_a_missing_root(tmp_path):
    result = runner.invoke(app, ["data", "check", str(tmp_path), "--domains", "rgb,normals"])
    assert result.exit_code == 2 and "normals" in result.output
    result = runner.invoke(app, ["data", "check", str(tmp_path / "nowhere")])
    assert result.exit_code == 1 and "is not a directory" in result.output


def test_synth_command_passes_its_options_to_the_renderer(tmp_path, monkeypatch):
    calls = []

    def fake_writer(out, *, train, test, size, seed, progress=True):
        calls.append({"out": out, "train": train, "test": test, "size": size, "seed": seed})
        write_tree(out, {"train": list(range(train)), "test": list(range(train, train + test))})
        return out

    fake = types.ModuleType("mmpt.data.synthetic")
    fake.write_synthetic_nyuv2 = fake_writer
    monkeypatch.setitem(__import__("sys").modules, "mmpt.data.synthetic", fake)
    out = tmp_path / "syn"
    args = ["data", "synth", "--out", str(out), "--train", "3", "--test", "2", "--size", "32", "--seed", "7"]
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    assert calls == [{"out": out, "train": 3, "test": 2, "size": 32, "seed": 7}]
    assert runner.invoke(app, ["data", "check", str(out)]).exit_code == 0


def test_synthetic_sets_pass_the_check_and_load(tmp_path):
    pytest.importorskip("mmpt.data.synthetic", reason="the synthetic renderer is not in this checkout")
    from mmpt.data.nyuv2 import NYUv2

    out = tmp_path / "syn"
    result = runner.invoke(app, ["data", "synth", "--out", str(out), "--train", "2", "--test", "1", "--size", "32"])
    assert result.exit_code == 0, result.output
    check = runner.invoke(app, ["data", "check", str(out)])
    assert check.exit_code == 0, check.output
    sample = NYUv2(out, "test")[0]
    assert sample["rgb"].shape == (3, 32, 32) and bool(sample["mask_valid"].any())

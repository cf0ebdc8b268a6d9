"""`mmpt data prepare-nyuv2`: pixel-exact official layout from tiny generated .mat files, resume, download."""

from __future__ import annotations

import re

import numpy as np
import pytest
import scipy.io
from data_fixtures import SHARED_NYUV2, loopback_server, make_raw_nyuv2
from PIL import Image
from typer.testing import CliRunner

import mmpt.data.layout
import mmpt.data.prepare
from mmpt.cli.app import app
from mmpt.data.prepare import RawFile, prepare_nyuv2
from mmpt.errors import DatasetLayoutError

runner = CliRunner(env={"COLUMNS": "240"})  # no line wrapping inside quoted paths


def _files(root):
    return sorted(p.relative_to(root).as_posix() for p in root.rglob("*") if p.is_file())


def _expected_labels40(raw):
    """The spec's label map: 0 → 0, k → mapClass[k - 1]."""
    return np.where(raw.raw_labels == 0, 0, raw.map_class[np.maximum(raw.raw_labels.astype(int) - 1, 0)])


@pytest.mark.parametrize("chunked", [False, True], ids=["contiguous", "chunked-gzip"])
def test_prepare_writes_the_official_layout_pixel_exact(tmp_path, chunked):
    raw = make_raw_nyuv2(tmp_path / "raw", chunked=chunked)
    result = prepare_nyuv2(raw.labeled_mat, raw.splits, raw.class_map, tmp_path / "out", progress=False)

    out = tmp_path / "out"
    # names are the zero-based .mat index, not the position inside the split
    expected_files = [
        f"{split}/{domain}/data/{i - 1:04d}.png"
        for split, ones in (("train", raw.train), ("test", raw.test))
        for domain in ("rgb", "depth", "semseg")
        for i in ones
    ]
    assert _files(out) == sorted(expected_files)
    assert result.written == {"train": 4, "test": 3} and result.skipped == {"train": 0, "test": 0}

    labels40 = _expected_labels40(raw)
    for split, ones in (("train", raw.train), ("test", raw.test)):
        for i in (k - 1 for k in ones):
            rgb = Image.open(out / split / "rgb" / "data" / f"{i:04d}.png")
            assert rgb.mode == "RGB" and rgb.size == (16, 12)
            np.testing.assert_array_equal(np.asarray(rgb), raw.rgb[i])

            depth = Image.open(out / split / "depth" / "data" / f"{i:04d}.png")
            assert depth.mode == "I;16"
            np.testing.assert_array_equal(np.asarray(depth), raw.depth_units[i])  # truncation, not rounding
            spec = np.floor(raw.depth_m[i].astype(np.float64) * 2**16 / 10).astype(np.uint16)
            np.testing.assert_array_equal(np.asarray(depth), spec)

            semseg = Image.open(out / split / "semseg" / "data" / f"{i:04d}.png")
            assert semseg.mode == "P"
            np.testing.assert_array_equal(np.asarray(semseg), labels40[i])
    assert np.asarray(Image.open(out / "train/depth/data/0000.png"))[1, 1] == 65535


def test_prepared_palette_matches_the_real_official_files(tmp_path):
    real = SHARED_NYUV2 / "test" / "semseg" / "data" / "0000.png"
    if not real.exists():
        pytest.skip(f"{real} is absent (needs ../shared)")
    raw = make_raw_nyuv2(tmp_path / "raw", n=2, train=(1,), test=(2,))
    prepare_nyuv2(raw.labeled_mat, raw.splits, raw.class_map, tmp_path / "out", progress=False)
    ours = Image.open(tmp_path / "out" / "train" / "semseg" / "data" / "0000.png")
    assert ours.getpalette() == Image.open(real).getpalette()


def test_prepare_resumes_after_an_interruption(tmp_path, monkeypatch):
    raw = make_raw_nyuv2(tmp_path / "raw")
    prepare_nyuv2(raw.labeled_mat, raw.splits, raw.class_map, tmp_path / "reference", progress=False)

    real_write_png = mmpt.data.layout.write_png
    calls = []

    def interrupted(image, path):
        calls.append(path)
        if len(calls) == 3 * 2 + 2:  # in the middle of the third sample: rgb and depth written, semseg not
            raise KeyboardInterrupt
        real_write_png(image, path)

    monkeypatch.setattr(mmpt.data.layout, "write_png", interrupted)
    with pytest.raises(KeyboardInterrupt):
        prepare_nyuv2(raw.labeled_mat, raw.splits, raw.class_map, tmp_path / "out", progress=False)

    calls.clear()
    monkeypatch.setattr(
        mmpt.data.layout, "write_png", lambda image, path: (calls.append(path), real_write_png(image, path))
    )
    result = prepare_nyuv2(raw.labeled_mat, raw.splits, raw.class_map, tmp_path / "out", progress=False)

    assert sum(result.skipped.values()) == 2  # the two finished samples are kept ...
    assert len(calls) == 3 * (7 - 2)  # ... and the half-written one is written again, whole
    assert _files(tmp_path / "out") == _files(tmp_path / "reference")
    for name in _files(tmp_path / "reference"):
        assert (tmp_path / "out" / name).read_bytes() == (tmp_path / "reference" / name).read_bytes(), name


def _bad_splits(raw, tmp_path):
    scipy.io.savemat(raw.splits, {"trainNdxs": np.array([[1], [99]]), "testNdxs": np.array([[2]])})
    return raw.splits, "refers to image 99"


def _shared_splits(raw, tmp_path):
    scipy.io.savemat(raw.splits, {"trainNdxs": np.array([[1], [2]]), "testNdxs": np.array([[2]])})
    return raw.splits, "in both trainNdxs and testNdxs"


def _fractional_splits(raw, tmp_path):
    scipy.io.savemat(raw.splits, {"trainNdxs": np.array([[1.5]]), "testNdxs": np.array([[2.0]])})
    return raw.splits, "integer 1-based indices"


def _class_map_out_of_range(raw, tmp_path):
    scipy.io.savemat(raw.class_map, {"mapClass": np.full((1, 894), 41.0)})
    return raw.class_map, "NYU-40 ids 1..40"


def _truncated_labeled_mat(raw, tmp_path):
    raw.labeled_mat.write_bytes(raw.labeled_mat.read_bytes()[:300])
    return raw.labeled_mat, "not a MATLAB v7.3 (HDF5) file"


def _depth_over_10m(raw, tmp_path):
    import h5py

    with h5py.File(raw.labeled_mat, "r+") as f:
        f["depths"][2, 0, 0] = 10.5
    return raw.labeled_mat, "depth of image 2 spans"


@pytest.mark.parametrize(
    "corrupt",
    [_bad_splits, _shared_splits, _fractional_splits, _class_map_out_of_range, _truncated_labeled_mat, _depth_over_10m],
)
def test_prepare_rejects_bad_raw_files_naming_the_file(tmp_path, corrupt):
    raw = make_raw_nyuv2(tmp_path / "raw")
    path, words = corrupt(raw, tmp_path)
    with pytest.raises(DatasetLayoutError, match=re.escape(words)) as info:
        prepare_nyuv2(raw.labeled_mat, raw.splits, raw.class_map, tmp_path / "out", progress=False)
    assert str(path) in str(info.value) and info.value.hint


def test_prepare_cli_writes_the_layout_and_reports_counts(tmp_path):
    raw = make_raw_nyuv2(tmp_path / "raw")
    out = tmp_path / "out"
    args = ["data", "prepare-nyuv2", "--labeled-mat", raw.labeled_mat, "--splits", raw.splits]
    result = runner.invoke(app, [*map(str, args), "--class-map", str(raw.class_map), "--out", str(out)])
    assert result.exit_code == 0, result.output
    assert "train 4 written" in result.output and "test 3 written" in result.output
    assert len(_files(out)) == 3 * 7

    again = runner.invoke(app, [*map(str, args), "--class-map", str(raw.class_map), "--out", str(out)])
    assert again.exit_code == 0 and "train 0 written / 4 kept" in again.output


def test_prepare_cli_without_files_or_download_explains_the_fix(tmp_path):
    result = runner.invoke(app, ["data", "prepare-nyuv2", "--out", str(tmp_path / "out")])
    assert result.exit_code == 2
    assert "--labeled-mat" in result.output and "--download" in result.output


@pytest.fixture
def raw_server(tmp_path, monkeypatch):
    """The three raw files behind a loopback server (labeled set cut short once); RAW_FILES points there."""
    raw = make_raw_nyuv2(tmp_path / "raw")
    files = {p.name: p.read_bytes() for p in (raw.labeled_mat, raw.splits, raw.class_map)}
    monkeypatch.setenv("MMPT_CACHE", str(tmp_path / "cache"))
    with loopback_server(files, truncate={"nyu_depth_v2_labeled.mat"}) as server:
        monkeypatch.setattr(
            mmpt.data.prepare,
            "RAW_FILES",
            tuple(
                RawFile(
                    raw_file.key, raw_file.filename, f"{server.url}/{raw_file.filename}", len(files[raw_file.filename])
                )
                for raw_file in mmpt.data.prepare.RAW_FILES
            ),
        )
        yield raw, files, server


def test_prepare_download_resumes_a_cut_transfer_over_http_range(tmp_path, raw_server):
    _raw, files, server = raw_server
    result = runner.invoke(app, ["data", "prepare-nyuv2", "--download", "--out", str(tmp_path / "out")])
    assert result.exit_code == 0, result.output

    half = len(files["nyu_depth_v2_labeled.mat"]) // 2
    assert ("nyu_depth_v2_labeled.mat", None) in server.requests
    assert ("nyu_depth_v2_labeled.mat", f"bytes={half}-") in server.requests  # resumed, not restarted
    cache = tmp_path / "cache" / "nyuv2"
    for name, body in files.items():
        assert (cache / name).read_bytes() == body
    assert not list(cache.glob("*.part"))
    assert len(_files(tmp_path / "out")) == 3 * 7

    server.requests.clear()
    again = runner.invoke(app, ["data", "prepare-nyuv2", "--download", "--out", str(tmp_path / "out2")])
    assert again.exit_code == 0 and server.requests == []  # complete files in the cache are not fetched again


def test_prepare_download_uses_given_files_and_fetches_only_the_rest(tmp_path, raw_server):
    raw, _files_served, server = raw_server
    args = ["data", "prepare-nyuv2", "--download", "--labeled-mat", str(raw.labeled_mat), "--out", str(tmp_path / "o")]
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    assert sorted(name for name, _ in server.requests) == ["classMapping40.mat", "splits.mat"]


def test_prepare_download_rejects_a_file_of_the_wrong_size(tmp_path, raw_server, monkeypatch):
    _raw, files, _server = raw_server
    wrong = tuple(
        RawFile(f.key, f.filename, f.url, f.size + 1 if f.key == "splits" else f.size)
        for f in mmpt.data.prepare.RAW_FILES
    )
    monkeypatch.setattr(mmpt.data.prepare, "RAW_FILES", wrong)
    result = runner.invoke(app, ["data", "prepare-nyuv2", "--download", "--out", str(tmp_path / "out")])
    assert result.exit_code == 1
    assert "splits.mat" in result.output and f"expected {len(files['splits.mat']) + 1}" in result.output

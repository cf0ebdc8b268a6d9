"""The NYUv2 Dataset: decoding checked against direct PIL reads, alignment by file name, clear layout errors."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from data_fixtures import SHARED_NYUV2, write_tree
from PIL import Image
from torch.utils.data import DataLoader

from mmpt.data.layout import sample_path, write_sample
from mmpt.data.nyuv2 import NYUv2
from mmpt.data.transforms import train_transform
from mmpt.errors import ConfigError, DatasetLayoutError

MEAN = np.array([0.485, 0.456, 0.406], dtype=np.float32)
STD = np.array([0.229, 0.224, 0.225], dtype=np.float32)


@pytest.fixture
def real_root():
    if not SHARED_NYUV2.is_dir():
        pytest.skip(f"{SHARED_NYUV2} is absent (needs ../shared)")
    return SHARED_NYUV2


def test_real_files_decode_to_the_documented_values(real_root):
    ds = NYUv2(real_root, "test")
    assert len(ds) == 8 and ds.names == ["0000", "0001", "0008", "0013", "0014", "0015", "0016", "0017"]
    for index in range(len(ds)):
        sample = ds[index]
        name = sample["name"]
        assert sample["index"] == index and name == ds.names[index]

        rgb = np.asarray(Image.open(real_root / "test" / "rgb" / "data" / f"{name}.png"), dtype=np.float32)
        expected_rgb = ((rgb / 255 - MEAN) / STD).transpose(2, 0, 1)
        assert sample["rgb"].dtype == torch.float32 and sample["rgb"].shape == (3, 480, 640)
        np.testing.assert_allclose(sample["rgb"].numpy(), expected_rgb, atol=1e-5)

        units = np.asarray(Image.open(real_root / "test" / "depth" / "data" / f"{name}.png"))
        assert units.dtype == np.uint16
        assert sample["depth"].dtype == torch.float32 and sample["depth"].shape == (1, 480, 640)
        np.testing.assert_allclose(sample["depth"][0].numpy(), units / 6553.6, rtol=1e-6)
        assert 0.5 < float(sample["depth"].max()) < 10
        assert sample["mask_valid"].dtype == torch.bool
        assert torch.equal(sample["mask_valid"][0], torch.from_numpy(units > 0))

        ids = np.asarray(Image.open(real_root / "test" / "semseg" / "data" / f"{name}.png"))  # palette indices
        expected = np.where(ids == 0, 255, ids.astype(np.int64) - 1)
        assert sample["semseg"].dtype == torch.int64 and sample["semseg"].shape == (480, 640)
        np.testing.assert_array_equal(sample["semseg"].numpy(), expected)
    assert int(ds[0]["semseg"].max()) == 255 and 39 in ds[0]["semseg"]  # id 40 (no palette colour) → 39


def test_real_train_split_without_labels_names_the_missing_folder(real_root):
    with pytest.raises(DatasetLayoutError, match=r"train/semseg/data does not exist") as info:
        NYUv2(real_root, "train")
    assert "domains" in info.value.hint
    ds = NYUv2(real_root, "train", domains=("rgb", "depth"))
    assert len(ds) == 10 and set(ds[3]) == {"rgb", "depth", "mask_valid", "name", "index"}


def test_samples_are_aligned_by_file_name(tmp_path):
    rng = np.random.default_rng(0)
    for index in (5, 11, 100):  # sparse names, as in a real split
        depth = np.full((6, 8), index / 20, dtype=np.float32)
        write_sample(tmp_path, "test", index, rgb=rng.integers(0, 256, (6, 8, 3)), depth_m=depth, labels40=None)
    ds = NYUv2(tmp_path, "test", domains=("depth",))
    assert [ds[i]["name"] for i in range(3)] == ["0005", "0011", "0100"]
    expected = np.floor(np.float32(100 / 20) * 6553.6) / 6553.6
    assert float(ds[2]["depth"][0, 0, 0]) == pytest.approx(expected, abs=1e-6)


def test_a_file_missing_in_one_domain_is_an_error_not_a_misalignment(tmp_path):
    write_tree(tmp_path, {"train": [0, 1, 2]})
    sample_path(tmp_path, "train", "depth", 1).unlink()
    with pytest.raises(DatasetLayoutError) as info:
        NYUv2(tmp_path, "train")
    message = str(info.value)
    assert "train/depth/data/0001.png is missing" in message and "rgb/semseg" in message
    assert "mmpt data check" in info.value.hint


def test_missing_root_suggests_how_to_create_one(tmp_path):
    with pytest.raises(DatasetLayoutError, match="does not exist") as info:
        NYUv2(tmp_path / "nowhere", "train")
    assert "mmpt data synth" in info.value.hint and "mmpt data prepare-nyuv2" in info.value.hint

    write_tree(tmp_path / "NYUv2", {"train": [0]})
    with pytest.raises(DatasetLayoutError) as info:
        NYUv2(tmp_path, "train")  # one level too high
    assert str(tmp_path / "NYUv2") in info.value.hint


def test_eight_bit_depth_is_rejected_with_the_file_name(tmp_path):
    write_tree(tmp_path, {"train": [0, 1]})
    bad = sample_path(tmp_path, "train", "depth", 1)
    Image.fromarray(np.full((24, 32), 7, dtype=np.uint8)).save(bad)
    ds = NYUv2(tmp_path, "train")
    ds[0]
    with pytest.raises(DatasetLayoutError, match="uint8") as info:
        ds[1]
    assert str(bad) in str(info.value)


def test_semseg_ids_above_40_are_rejected(tmp_path):
    write_tree(tmp_path, {"train": [0]})
    write_sample(tmp_path, "train", 0, labels40=np.full((24, 32), 41))  # e.g. raw NYU ids written unmapped
    with pytest.raises(DatasetLayoutError, match="class id 41"):
        NYUv2(tmp_path, "train")[0]


def test_modalities_of_different_sizes_are_rejected(tmp_path):
    write_tree(tmp_path, {"train": [0]})
    write_sample(tmp_path, "train", 0, labels40=np.zeros((10, 10), dtype=np.uint8))
    with pytest.raises(DatasetLayoutError, match="different sizes"):
        NYUv2(tmp_path, "train")[0]


def test_unknown_split_or_domain_lists_the_valid_ones(tmp_path):
    with pytest.raises(ConfigError, match="'train', 'test'"):
        NYUv2(tmp_path, "val")
    with pytest.raises(ConfigError, match=r"normals.*expected a subset of \['rgb', 'depth', 'semseg'\]"):
        NYUv2(tmp_path, "train", domains=("rgb", "normals"))
    with pytest.raises(ConfigError, match="empty list"):
        NYUv2(tmp_path, "train", domains=())


def test_dataloader_batches_transformed_samples_with_workers(tmp_path):
    write_tree(tmp_path, {"train": list(range(4))}, height=40, width=56)
    ds = NYUv2(tmp_path, "train", transform=train_transform(32))
    batch = next(iter(DataLoader(ds, batch_size=4, num_workers=2)))
    assert batch["rgb"].shape == (4, 3, 32, 32) and batch["rgb"].dtype == torch.float32
    assert batch["depth"].shape == (4, 1, 32, 32) and batch["mask_valid"].shape == (4, 1, 32, 32)
    assert batch["semseg"].shape == (4, 32, 32) and batch["semseg"].dtype == torch.int64
    assert batch["name"] == ["0000", "0001", "0002", "0003"] and batch["index"].tolist() == [0, 1, 2, 3]
    assert torch.equal(batch["mask_valid"], batch["depth"] > 0)

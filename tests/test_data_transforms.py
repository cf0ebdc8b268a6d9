"""Joint transforms keep rgb, depth and labels aligned; depth and labels are never blended."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torchvision import tv_tensors

from mmpt.data.transforms import Depth, eval_transform, to_model_inputs, train_transform

FILL_RGB = (124, 116, 104)  # ImageNet mean × 255


def _blocks(height: int, width: int, block: int = 16) -> dict[str, torch.Tensor]:
    """A sample whose rgb red channel, depth and labels all encode the same block pattern.

    Label = block id mod 40 (neighbouring blocks always differ), red = 6 × label, depth = 0.5 + 0.2 × label,
    except labels divisible by 7, whose depth is 0 (invalid).
    """
    y, x = np.mgrid[:height, :width]
    labels = ((y // block) * 9 + (x // block) * 2) % 40
    rgb = np.stack([labels * 6, (y * 255) // height, np.full_like(labels, 90)]).astype(np.uint8)
    depth = np.where(labels % 7 == 0, 0.0, 0.5 + 0.2 * labels).astype(np.float32)
    return {
        "rgb": tv_tensors.Image(torch.from_numpy(rgb)),
        "depth": Depth(torch.from_numpy(depth)[None]),
        "semseg": tv_tensors.Mask(torch.from_numpy(labels.astype(np.uint8))),
    }


def _assert_aligned(out: dict[str, torch.Tensor], margin: int = 3) -> int:
    """Checks rgb, depth and labels agree wherever labels are constant within `margin` pixels; returns that count."""
    labels = out["semseg"].long()
    window = 2 * margin + 1
    padded = F.pad(labels[None, None].float(), (margin,) * 4, mode="replicate")
    high = F.max_pool2d(padded, window, stride=1)[0, 0]
    low = -F.max_pool2d(-padded, window, stride=1)[0, 0]
    interior = (high == low) & (labels != 255)
    red = out["rgb"][0].long()
    assert (red[interior] - 6 * labels[interior]).abs().max() <= 1
    expected_depth = torch.where(labels % 7 == 0, 0.0, 0.5 + 0.2 * labels.float())
    assert torch.allclose(out["depth"][0][interior], expected_depth[interior])
    return int(interior.sum())


@pytest.mark.parametrize("seed", range(12))
def test_train_transform_keeps_rgb_depth_and_labels_aligned(seed):
    torch.manual_seed(seed)
    out = train_transform(64, color_jitter=False)(_blocks(96, 128, block=24))
    assert out["rgb"].shape == (3, 64, 64) and out["depth"].shape == (1, 64, 64) and out["semseg"].shape == (64, 64)
    assert (
        out["rgb"].dtype == torch.uint8 and out["semseg"].dtype == torch.uint8 and out["depth"].dtype == torch.float32
    )
    assert _assert_aligned(out, margin=2) > 150


def test_train_transform_crops_and_flips_at_random():
    sample = _blocks(96, 128)
    labels = sample["semseg"]
    crops = {(left, False): labels[:, left : left + 96] for left in range(33)}
    crops |= {(left, True): crop.flip(-1) for (left, _), crop in crops.items()}
    torch.manual_seed(0)
    seen = set()
    for _ in range(16):  # at scale 1 the output is an exact crop of the input, flipped or not
        out = train_transform(96, scale=(1.0, 1.0), color_jitter=False)(sample)
        match = [key for key, crop in crops.items() if torch.equal(out["semseg"], crop)]
        assert len(match) >= 1
        seen.add(match[0])
        assert _assert_aligned(out) > 0.3 * 96 * 96
    assert {flipped for _, flipped in seen} == {False, True} and len({left for left, _ in seen}) > 3


@pytest.mark.parametrize("seed", range(6))
def test_invalid_depth_is_never_interpolated(seed):
    rng = np.random.default_rng(seed)
    values = np.array([0.8, 2.5, 4.0, 7.25], dtype=np.float32)
    depth = rng.choice(values, size=(1, 60, 80))
    depth[rng.random(depth.shape) < 0.3] = 0.0  # isolated invalid pixels everywhere
    labels = rng.integers(0, 40, (60, 80), dtype=np.uint8)
    sample = {"depth": Depth(torch.from_numpy(depth)), "semseg": tv_tensors.Mask(torch.from_numpy(labels))}
    torch.manual_seed(seed)
    out = to_model_inputs(train_transform(48)(sample))
    assert set(out["depth"].unique().tolist()) <= {0.0, *values.tolist()}  # no blend of 0 and a valid depth
    assert set(out["semseg"].unique().tolist()) <= {*range(40), 255}
    assert torch.equal(out["mask_valid"], out["depth"] > 0)
    assert out["mask_valid"].dtype == torch.bool and out["semseg"].dtype == torch.int64


def test_padding_marks_depth_invalid_and_labels_ignored():
    sample = {
        "rgb": tv_tensors.Image(torch.full((3, 20, 30), 200, dtype=torch.uint8)),
        "depth": Depth(torch.full((1, 20, 30), 3.0)),
        "semseg": tv_tensors.Mask(torch.full((20, 30), 7, dtype=torch.uint8)),
    }
    out = train_transform(40, scale=(0.5, 0.5), color_jitter=False)(sample)  # 20×30 stays, padded to 40×40
    pad = out["semseg"] == 255
    assert int(pad.sum()) == 40 * 40 - 20 * 30
    assert torch.equal(out["depth"][0] == 0, pad) and torch.equal(out["semseg"][~pad], torch.full((600,), 7).byte())
    assert torch.equal(out["rgb"][:, pad], torch.tensor(FILL_RGB, dtype=torch.uint8)[:, None].expand(3, 1000))
    normalised = to_model_inputs(out)["rgb"][:, pad]
    assert normalised.abs().max() < 0.01  # the padded rgb is the ImageNet mean, i.e. 0 after normalisation


def test_eval_transform_is_the_official_shorter_side_resize_and_centre_crop():
    y, x = np.mgrid[:480, :640].astype(np.float64)
    ramps = np.stack([x * 255 / 639, y * 255 / 479, np.zeros_like(x)]).round().astype(np.uint8)
    sample = {"rgb": tv_tensors.Image(torch.from_numpy(ramps))}
    out = eval_transform(256)(sample)["rgb"].double()
    assert out.shape == (3, 256, 256)
    # 480×640 → 256×341 (shorter side 256), then columns 42..297 of it
    j, i = np.arange(2, 254), np.arange(2, 254)
    expected_x = ((j + 42 + 0.5) * 640 / 341 - 0.5) * 255 / 639
    expected_y = ((i + 0.5) * 480 / 256 - 0.5) * 255 / 479
    np.testing.assert_allclose(out[0, 128, 2:254].numpy(), expected_x, atol=1.5)
    np.testing.assert_allclose(out[1, 2:254, 128].numpy(), expected_y, atol=1.5)

    blocks = _blocks(480, 640, block=32)
    first, second = eval_transform(256)(blocks), eval_transform(256)(blocks)
    assert all(torch.equal(first[k], second[k]) for k in blocks)  # deterministic
    assert _assert_aligned(first) > 0.3 * 256 * 256


@pytest.mark.parametrize("domains", [("rgb",), ("depth",), ("semseg",), ("depth", "semseg"), ("rgb", "semseg")])
def test_transforms_accept_any_subset_of_domains(domains):
    full = _blocks(48, 64)
    sample = {d: full[d] for d in domains}
    for transform in (train_transform(32), eval_transform(32)):
        out = transform(sample)
        assert set(out) == set(domains)
        assert all(tuple(out[d].shape[-2:]) == (32, 32) for d in domains)
        assert all(type(out[d]) is type(sample[d]) for d in domains)


def test_to_model_inputs_normalises_rgb_once_with_imagenet_statistics():
    white = {"rgb": tv_tensors.Image(torch.full((3, 2, 2), 255, dtype=torch.uint8))}
    out = to_model_inputs(white)["rgb"]
    expected = (1 - torch.tensor([0.485, 0.456, 0.406])) / torch.tensor([0.229, 0.224, 0.225])
    assert out.dtype == torch.float32 and torch.allclose(out[:, 0, 0], expected)
    as_float = to_model_inputs({"rgb": tv_tensors.Image(torch.ones(3, 2, 2))})["rgb"]  # float input is in [0, 1]
    assert torch.allclose(as_float, out)


def test_train_transform_rejects_an_empty_scale_range():
    with pytest.raises(ValueError, match="scale"):
        train_transform(64, scale=(2.0, 1.0))


def test_colour_jitter_changes_rgb_only():
    sample = _blocks(48, 64)
    changed = 0
    for seed in range(10):
        torch.manual_seed(seed)
        out = train_transform(48, scale=(1.0, 1.0), hflip=False, color_jitter=True)(sample)
        left = next(x for x in range(17) if torch.equal(out["semseg"], sample["semseg"][:, x : x + 48]))
        assert torch.equal(out["depth"], sample["depth"][..., left : left + 48])  # exact crop, values untouched
        changed += not torch.equal(out["rgb"], sample["rgb"][..., left : left + 48])
    assert changed >= 3  # jitter (p=0.5) or grey (p=0.3) hit most draws

"""Segmentation loss and metrics: the official mIoU definition, ignore handling, batch/merge invariance."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from mmpt.errors import ConfigError
from mmpt.tasks import SegmentationMetrics, build_task, cross_entropy_loss

IGNORE = 255


def numpy_official_metrics(pred: np.ndarray, gt: np.ndarray, num_classes: int) -> dict[str, object]:
    """The official `mean_iou` as specified in reference/multimae.md §5.2, written independently."""
    keep = gt != IGNORE
    pred, gt = pred[keep], gt[keep]  # ignore pixels removed from BOTH maps
    intersect = np.array([np.sum((pred == c) & (gt == c)) for c in range(num_classes)], dtype=np.float64)
    area_pred = np.array([np.sum(pred == c) for c in range(num_classes)], dtype=np.float64)
    area_gt = np.array([np.sum(gt == c) for c in range(num_classes)], dtype=np.float64)
    union = area_pred + area_gt - intersect
    with np.errstate(divide="ignore", invalid="ignore"):
        iou, acc = intersect / union, intersect / area_gt
    return {
        "miou": float(np.nanmean(iou)),
        "per_class_iou": iou,
        "pixel_accuracy": float(intersect.sum() / area_gt.sum()),
        "mean_accuracy": float(np.nanmean(acc)),
    }


# 4 classes. gt holds classes 0, 1 and ignore; the prediction adds class 2 (absent from gt → IoU 0, counts);
# class 3 is predicted only on ignored pixels, so it is absent from both after removal → skipped.
GT = torch.tensor([[[0, 0, 1, 1], [0, 1, IGNORE, IGNORE]]])
PRED = torch.tensor([[[0, 2, 1, 1], [0, 0, 3, 3]]])


def test_miou_follows_the_official_definition() -> None:
    metrics = SegmentationMetrics(num_classes=4)
    metrics.update(PRED, GT)
    got = metrics.compute()
    # class 0: ∩ 2, ∪ 3 + 3 - 2 = 4 → 0.5; class 1: ∩ 2, ∪ 3 + 2 - 2 = 3 → 2/3; class 2: 0/1 = 0; class 3: nan.
    assert got["per_class_iou"][:3].tolist() == pytest.approx([0.5, 2 / 3, 0.0])
    assert math.isnan(got["per_class_iou"][3])
    assert got["miou"].item() == pytest.approx((0.5 + 2 / 3 + 0.0) / 3)
    assert got["pixel_accuracy"].item() == pytest.approx(4 / 6)
    assert got["mean_accuracy"].item() == pytest.approx((2 / 3 + 2 / 3) / 2)  # classes absent from gt skipped
    expected = numpy_official_metrics(PRED.numpy(), GT.numpy(), 4)
    np.testing.assert_allclose(got["per_class_iou"].numpy(), expected["per_class_iou"])
    for name in ("miou", "pixel_accuracy", "mean_accuracy"):
        assert got[name].item() == pytest.approx(expected[name], rel=1e-12)


def test_predictions_on_ignored_pixels_do_not_count() -> None:
    base = SegmentationMetrics(num_classes=4)
    base.update(PRED, GT)
    changed = PRED.clone()
    changed[GT == IGNORE] = 1  # would add false positives for class 1 if ignore pixels stayed in the prediction
    other = SegmentationMetrics(num_classes=4)
    other.update(changed, GT)
    torch.testing.assert_close(other.compute()["per_class_iou"], base.compute()["per_class_iou"], equal_nan=True)


def test_random_sets_match_numpy_independent_of_batching_and_merging() -> None:
    gen = torch.Generator().manual_seed(0)
    gt = torch.randint(0, 40, (6, 12, 16), generator=gen)
    gt[torch.rand(gt.shape, generator=gen) < 0.15] = IGNORE
    gt[gt == 7] = 8  # class 7 absent from gt ...
    logits = torch.randn(6, 40, 12, 16, generator=gen)
    logits[:, 9] -= 100  # ... and class 9 never predicted
    pred = logits.argmax(1)
    expected = numpy_official_metrics(pred.numpy(), gt.numpy(), 40)
    whole = SegmentationMetrics()
    whole.update(logits, gt)  # logits are reduced by argmax
    np.testing.assert_allclose(whole.compute()["per_class_iou"].numpy(), expected["per_class_iou"], rtol=1e-12)
    assert whole.compute()["miou"].item() == pytest.approx(expected["miou"], rel=1e-12)
    split, first, second = SegmentationMetrics(), SegmentationMetrics(), SegmentationMetrics()
    for i in range(6):
        split.update(pred[i : i + 1], gt[i : i + 1])
    first.update(pred[:2], gt[:2])
    second.update(pred[2:], gt[2:])
    first.merge_state(second)  # what the DDP sum reduction does with the confusion matrices
    for other in (split, first):
        assert torch.equal(other.confmat, whole.confmat)


def test_out_of_range_ids_are_reported() -> None:
    metrics = SegmentationMetrics(num_classes=4)
    with pytest.raises(ValueError, match="target holds ids in \\[0, 40\\]"):
        metrics.update(torch.zeros(1, 2, 2, dtype=torch.long), torch.tensor([[[0, 40], [1, 1]]]))


def test_cross_entropy_ignores_255_and_survives_empty_crops() -> None:
    gen = torch.Generator().manual_seed(0)
    logits = torch.randn(2, 5, 3, 4, generator=gen)
    target = torch.randint(0, 5, (2, 3, 4), generator=gen)
    target[0, 0] = IGNORE
    expected = F.cross_entropy(logits, target, ignore_index=IGNORE)
    assert cross_entropy_loss(logits, target).item() == pytest.approx(expected.item(), rel=1e-6)
    empty = logits.clone().requires_grad_(True)
    loss = cross_entropy_loss(empty, torch.full_like(target, IGNORE))
    loss.backward()
    assert loss.item() == 0.0 and torch.isfinite(empty.grad).all()


def test_semseg_task_spec() -> None:
    task = build_task("semseg")
    assert (task.out_channels, task.default_loss, task.target_keys) == (40, "ce", ("semseg",))
    assert (task.primary_metric, task.higher_is_better) == ("miou", True)
    gen = torch.Generator().manual_seed(1)
    logits = torch.randn(2, 40, 4, 6, generator=gen)
    labels = torch.randint(0, 40, (2, 8, 12), generator=gen)
    batch = {"semseg": labels}
    upsampled = F.interpolate(logits, size=(8, 12), mode="bilinear", align_corners=False)
    assert task.loss()(logits, batch).item() == pytest.approx(F.cross_entropy(upsampled, labels).item(), rel=1e-6)
    assert torch.equal(task.prediction(upsampled), upsampled.argmax(1))
    metrics = task.metrics()
    task.update_metrics(metrics, logits, batch)
    expected = numpy_official_metrics(upsampled.argmax(1).numpy(), labels.numpy(), 40)
    assert metrics.compute()["miou"].item() == pytest.approx(expected["miou"], rel=1e-12)
    with pytest.raises(ConfigError, match="Did you mean 'ce'"):
        task.loss("cee")

"""Semantic segmentation on NYUv2 (40 classes): cross-entropy, the official mIoU, the `semseg` task spec.

Labels are the official reduced NYU-40 ids: 0..39 (NYU id k → k - 1), 255 = ignore (unlabeled, padding).
Metrics follow the official `mean_iou` (mmseg; reference/multimae.md §5.2): pixels whose ground truth is
255 are removed from the prediction AND the ground truth; areas are summed over the whole evaluated set;
IoU_c = ∩_c / ∪_c and acc_c = ∩_c / gt_c; a class absent from both ground truth and prediction (0/0) is
skipped by the mean, a class predicted but absent from the ground truth has IoU 0 and counts. Values are
fractions in 0..1 (the official tables report round(100·x, 2)).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
import torch.nn.functional as F
from PIL import Image
from torch import Tensor
from torchmetrics import Metric

from mmpt.data.layout import NUM_CLASSES
from mmpt.data.transforms import IGNORE_INDEX
from mmpt.tasks.base import TASKS, LossFn, match_size, pick_loss, require_targets


def cross_entropy_loss(logits: Tensor, target: Tensor) -> Tensor:
    """Pixel-wise cross-entropy on (B, C, H, W) logits and (B, H, W) labels, ignoring 255 (official).

    Computed in float32 (autocast logits may be half precision). Equal to torch's mean reduction, except that
    a batch with only ignored pixels gives 0 instead of nan (so one empty crop does not poison the step), and
    without a host sync to check for it.
    """
    total = F.cross_entropy(logits.float(), target, ignore_index=IGNORE_INDEX, reduction="sum")
    return total / (target != IGNORE_INDEX).sum().clamp_min(1)


class SegmentationMetrics(Metric):
    """mIoU, per-class IoU, pixel accuracy and mean class accuracy with the official definitions.

    One (C, C) confusion matrix (rows = ground truth, columns = prediction) summed over updates and DDP
    processes, so batch size and world size never change the result. `compute()` returns `miou`,
    `pixel_accuracy`, `mean_accuracy` (0-d tensors) and `per_class_iou` (C,), nan for classes absent from
    both ground truth and prediction; all fractions in 0..1.

    Args:
        num_classes: C; labels and predictions must lie in 0..C-1 except ignored ground-truth pixels.
        ignore_index: ground-truth value whose pixels are removed from both maps.
    """

    is_differentiable = False
    higher_is_better = True
    full_state_update = False

    def __init__(self, num_classes: int = NUM_CLASSES, ignore_index: int = IGNORE_INDEX, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.num_classes = num_classes
        self.ignore_index = ignore_index
        self.add_state("confmat", default=torch.zeros(num_classes, num_classes, dtype=torch.long), dist_reduce_fx="sum")

    def update(self, preds: Tensor, target: Tensor) -> None:
        """Adds a batch.

        Args:
            preds: class ids (B, H, W), or logits (B, C, H, W) reduced with argmax over C.
            target: class ids (B, H, W), `ignore_index` = ignore.
        """
        if preds.ndim == target.ndim + 1:
            preds = preds.argmax(dim=1)
        if preds.shape != target.shape:
            raise ValueError(
                f"SegmentationMetrics: preds {tuple(preds.shape)} and target {tuple(target.shape)} differ."
            )
        keep = target != self.ignore_index
        preds, target = preds[keep].long(), target[keep].long()
        c = self.num_classes
        # An id outside 0..C-1 would silently land in another class's bin; say which map holds it instead.
        for name, ids in (("target", target), ("preds", preds)):
            if ids.numel() and (ids.min() < 0 or ids.max() >= c):
                raise ValueError(
                    f"SegmentationMetrics: {name} holds ids in [{int(ids.min())}, {int(ids.max())}] outside "
                    f"0..{c - 1} (ignore_index={self.ignore_index}); map void labels to {self.ignore_index}."
                )
        self.confmat += torch.bincount(target * c + preds, minlength=c * c).reshape(c, c)

    def compute(self) -> dict[str, Tensor]:
        confmat = self.confmat.double()
        intersection = confmat.diagonal()
        area_gt, area_pred = confmat.sum(dim=1), confmat.sum(dim=0)
        union = area_gt + area_pred - intersection
        iou = intersection / union  # 0/0 = nan: absent from both, skipped by nanmean
        accuracy = intersection / area_gt  # nan for classes absent from the ground truth (official)
        return {
            "miou": iou.nanmean(),
            "per_class_iou": iou,
            "pixel_accuracy": intersection.sum() / area_gt.sum(),
            "mean_accuracy": accuracy.nanmean(),
        }


class SemsegTask:
    """The `semseg` task: 40 logits per pixel; the prediction is their argmax."""

    name = "semseg"
    target_keys = ("semseg",)
    out_channels = NUM_CLASSES
    losses: Mapping[str, Any] = {"ce": cross_entropy_loss}
    default_loss = "ce"
    primary_metric = "miou"
    higher_is_better = True

    def loss(self, name: str | None = None) -> LossFn:
        """The loss called `name` (default cross-entropy) as `fn(head_output, batch) -> scalar`."""
        fn = pick_loss(self.name, self.losses, name or self.default_loss)

        def semseg_loss(head_output: Tensor, batch: Mapping[str, Any]) -> Tensor:
            (labels,) = require_targets(self.name, batch, self.target_keys)
            return fn(match_size(head_output, labels.shape[-2:]), labels)

        return semseg_loss

    def metrics(self) -> SegmentationMetrics:
        return SegmentationMetrics(self.out_channels, IGNORE_INDEX)

    def prediction(self, head_output: Tensor) -> Tensor:
        """Class ids 0..39, (B, H, W)."""
        return head_output.argmax(dim=1)

    def update_metrics(self, metrics: Metric, head_output: Tensor, batch: Mapping[str, Any]) -> None:
        (labels,) = require_targets(self.name, batch, self.target_keys)
        metrics.update(self.prediction(match_size(head_output, labels.shape[-2:])), labels)

    def visualise(self, batch: Mapping[str, Any], head_output: Tensor, max_samples: int = 4) -> Image.Image:
        """A grid with one row per sample: input | ground truth | prediction | prediction over the input."""
        from mmpt.tasks import viz

        (labels,) = require_targets(self.name, batch, self.target_keys)
        pred = self.prediction(match_size(head_output.detach(), labels.shape[-2:])).cpu()
        labels = labels.cpu()
        rows = []
        for i in range(min(max_samples, labels.shape[0])):
            picture = viz.input_picture(batch, i)
            rows.append(
                [picture, viz.colorize_semseg(labels[i]), viz.colorize_semseg(pred[i]), viz.overlay(picture, pred[i])]
            )
        return viz.comparison_grid(rows, ["input", "ground truth", "prediction", "overlay"])


TASKS.add("semseg", SemsegTask())

"""Monocular depth on NYUv2: masked losses on metric depth, set-level metrics, the `depth` task spec.

Everything here is in metres. The official code (reference/multimae.md §5.1) works on standardised maps and
PNG units; the formulas below are the official ones, the units and aggregation are not:

| mmpt       | formula over the valid pixels of the whole evaluated set       | official name, difference    |
|------------|----------------------------------------------------------------|------------------------------|
| `delta{k}` | share with max(p / max(t, 1e-6), t / max(p, 1e-6)) < 1.25^k    | `delta_k`, same              |
| `abs_rel`  | mean abs(p - t) / max(t, 1e-6)                                 | `rel`, same                  |
| `sq_rel`   | mean (p - t)² / max(t, 1e-6), metres                           | `srel` = 6553.6 × ours (PNG) |
| `rmse`     | sqrt(mean (p - t)²), metres                                    | `rmse` = 6553.6 × ours (PNG) |
| `rmse_log` | sqrt(mean (ln max(p, 1e-6) - ln max(t, 1e-6))²)                | called `log10` officially    |
| `log10`    | mean abs(log10 max(p, 1e-6) - log10 max(t, 1e-6))              | not computed officially      |

Official aggregation averages per-batch values over batches (batch-size dependent) on 100 random test
images; here every metric is a ratio of sums over all valid pixels of the evaluated set, so batch size and
the number of DDP processes do not change it. `δ` uses a strict `<`, and a prediction ≤ 0 is never within
a threshold (t / 1e-6 is huge). No depth cap, minimum-depth mask or Eigen crop, as officially.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
from PIL import Image
from torch import Tensor
from torchmetrics import Metric

from mmpt.tasks.base import TASKS, LossFn, match_size, pick_loss, require_targets

EPS = 1e-6  # the official clamp in every ratio and logarithm
BERHU_FRACTION = 0.2  # c = 0.2·max|d| (official)
BERHU_MIN_C = 1e-5  # official floor on c, so an all-exact batch does not divide by zero
SILOG_LAMBDA = 0.85  # Lee et al. 2019 (BTS); λ = 1 is fully scale-invariant, λ = 0 is log-RMSE
DELTA_BASE = 1.25
_SUMS = ("abs_rel", "sq_rel", "sq_err", "sq_log_err", "abs_log10_err", "delta1", "delta2", "delta3")


def _valid(mask: Tensor | None, target: Tensor) -> Tensor:
    """The boolean valid-pixel mask in target's shape (target > 0 when no mask is given)."""
    if mask is None:
        return target > 0
    return mask.to(torch.bool).expand_as(target)


def berhu_loss(pred: Tensor, target: Tensor, mask: Tensor | None = None) -> Tensor:
    """The official masked reverse Huber (berHu) loss, on metric depth.

    d = pred - target, zeroed on invalid pixels; c = max(0.2·max|d|, 1e-5) over the whole batch, without
    gradient; loss = (Σ_{|d|<c} |d| + Σ_{|d|≥c} (d² + c²) / 2c) / #valid. Zeroed pixels have |d| = 0 < c, so
    they add nothing. With no valid pixel the loss is 0 (officially 0/0 = nan, which would poison the step).

    Args:
        pred: predicted depth in metres, e.g. (B, 1, H, W).
        target: ground-truth depth in metres, same shape.
        mask: bool, broadcastable to target; True = valid. None means target > 0.
    """
    valid = _valid(mask, target)
    diff = torch.where(valid, pred.float() - target.float(), 0.0)
    abs_diff = diff.abs()
    c = (BERHU_FRACTION * abs_diff.max()).detach().clamp_min(BERHU_MIN_C)
    loss = torch.where(abs_diff < c, abs_diff, (diff**2 + c**2) / (2 * c))
    return loss.sum() / valid.sum().clamp_min(1)


def silog_loss(pred: Tensor, target: Tensor, mask: Tensor | None = None, lam: float = SILOG_LAMBDA) -> Tensor:
    """Scale-invariant log loss (Eigen et al. 2014) with λ = 0.85 as in BTS (Lee et al. 2019).

    g = ln max(pred, 1e-6) - ln max(target, 1e-6) over the valid pixels of the whole batch;
    loss = sqrt(mean g² - λ·(mean g)²). BTS and AdaBins multiply this by 10; we do not (with Adam the factor
    changes almost nothing, and unscaled values compare with `rmse_log`). Predictions ≤ 1e-6 get no gradient
    through the clamp, so use it with a positive depth parametrisation or after a berHu warm-up.

    Args:
        pred: predicted depth in metres.
        target: ground-truth depth in metres, same shape.
        mask: bool, broadcastable to target; None means target > 0.
        lam: weight of the scale term (0 = log-RMSE, 1 = fully scale-invariant).
    """
    valid = _valid(mask, target)
    g = torch.where(valid, torch.log(pred.float().clamp_min(EPS)) - torch.log(target.float().clamp_min(EPS)), 0.0)
    n = valid.sum().clamp_min(1)
    mean_g, mean_g2 = g.sum() / n, (g**2).sum() / n
    # mean g² ≥ (mean g)² ≥ λ(mean g)², so the radicand is ≥ 0; the floor keeps sqrt's gradient finite at 0.
    return torch.sqrt((mean_g2 - lam * mean_g**2).clamp_min(1e-12))


def l1_loss(pred: Tensor, target: Tensor, mask: Tensor | None = None) -> Tensor:
    """Masked L1 (the official `masked_l1_loss`): Σ_valid |pred - target| / #valid, metres."""
    valid = _valid(mask, target)
    return torch.where(valid, (pred.float() - target.float()).abs(), 0.0).sum() / valid.sum().clamp_min(1)


class DepthMetrics(Metric):
    """δ1..δ3, abs_rel, sq_rel, rmse, rmse_log and log10 over every valid pixel of the evaluated set.

    States are float64 sums (`dist_reduce_fx="sum"`), so any batch split and any number of DDP processes
    give the same values; see the module docstring for the formulas and how they map to the official names.
    `compute()` returns a dict of 0-d float64 tensors (nan before any valid pixel was seen).

    Example:
        >>> metrics = DepthMetrics()
        >>> metrics.update(pred_m, depth_m, mask_valid)   # (B, 1, H, W) each
        >>> metrics.compute()["delta1"]
    """

    is_differentiable = False
    higher_is_better = None  # mixed: δ up, errors down
    full_state_update = False
    names = ("delta1", "delta2", "delta3", "abs_rel", "sq_rel", "rmse", "rmse_log", "log10")

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.add_state("count", default=torch.tensor(0.0, dtype=torch.float64), dist_reduce_fx="sum")
        for name in _SUMS:
            self.add_state(f"sum_{name}", default=torch.tensor(0.0, dtype=torch.float64), dist_reduce_fx="sum")

    def update(self, preds: Tensor, target: Tensor, mask: Tensor | None = None) -> None:
        """Adds a batch.

        Args:
            preds: predicted depth in metres, same shape as target.
            target: ground-truth depth in metres, e.g. (B, 1, H, W), 0 = invalid.
            mask: bool valid-pixel mask broadcastable to target; None means target > 0.
        """
        if preds.shape != target.shape:
            raise ValueError(f"DepthMetrics: preds {tuple(preds.shape)} and target {tuple(target.shape)} differ.")
        valid = _valid(mask, target)
        # Invalid pixels become p = t = 1: every error term is then exactly 0 there, and no boolean indexing
        # (a host sync on GPU) is needed. float64 keeps the sums exact enough that splits agree to ~1e-15.
        p = torch.where(valid, preds.detach().double(), 1.0)
        t = torch.where(valid, target.detach().double(), 1.0)
        p_c, t_c = p.clamp_min(EPS), t.clamp_min(EPS)
        err = p - t
        self.count += valid.sum()
        self.sum_abs_rel += (err.abs() / t_c).sum()
        self.sum_sq_rel += (err**2 / t_c).sum()
        self.sum_sq_err += (err**2).sum()
        self.sum_sq_log_err += ((torch.log(p_c) - torch.log(t_c)) ** 2).sum()
        self.sum_abs_log10_err += (torch.log10(p_c) - torch.log10(t_c)).abs().sum()
        ratio = torch.maximum(p / t_c, t / p_c)  # p ≤ 0 → t / 1e-6: never within a threshold
        self.sum_delta1 += ((ratio < DELTA_BASE) & valid).sum()
        self.sum_delta2 += ((ratio < DELTA_BASE**2) & valid).sum()
        self.sum_delta3 += ((ratio < DELTA_BASE**3) & valid).sum()

    def compute(self) -> dict[str, Tensor]:
        n = self.count
        return {
            "delta1": self.sum_delta1 / n,
            "delta2": self.sum_delta2 / n,
            "delta3": self.sum_delta3 / n,
            "abs_rel": self.sum_abs_rel / n,
            "sq_rel": self.sum_sq_rel / n,
            "rmse": torch.sqrt(self.sum_sq_err / n),
            "rmse_log": torch.sqrt(self.sum_sq_log_err / n),
            "log10": self.sum_abs_log10_err / n,
        }


_DEPTH_LOSSES = {"berhu": berhu_loss, "silog": silog_loss, "l1": l1_loss}


class DepthTask:
    """The `depth` task: one output channel read directly as metres.

    Parametrisation: `prediction(head_output) = head_output` — no activation, as the official DPT head (which
    predicts standardised depth, an affine map of metres). Identity keeps berHu's official gradients, lets the
    metrics see (and penalise) non-positive predictions instead of hiding them behind a clamp, and adds no
    constant an artifact would silently depend on. Losses and metrics resize the head output bilinearly to
    the target size when a head predicts at a lower resolution.
    """

    name = "depth"
    target_keys = ("depth", "mask_valid")
    out_channels = 1
    losses: Mapping[str, Any] = _DEPTH_LOSSES
    default_loss = "berhu"
    primary_metric = "delta1"
    higher_is_better = True

    def loss(self, name: str | None = None) -> LossFn:
        """The loss called `name` (default berHu) as `fn(head_output, batch) -> scalar`."""
        fn = pick_loss(self.name, self.losses, name or self.default_loss)

        def depth_loss(head_output: Tensor, batch: Mapping[str, Any]) -> Tensor:
            depth, valid = require_targets(self.name, batch, self.target_keys)
            return fn(self.prediction(match_size(head_output, depth.shape[-2:])), depth, valid)

        return depth_loss

    def metrics(self) -> DepthMetrics:
        return DepthMetrics()

    def prediction(self, head_output: Tensor) -> Tensor:
        """Metres, (B, 1, H, W): the raw head output (see the class docstring)."""
        return head_output

    def update_metrics(self, metrics: Metric, head_output: Tensor, batch: Mapping[str, Any]) -> None:
        depth, valid = require_targets(self.name, batch, self.target_keys)
        metrics.update(self.prediction(match_size(head_output, depth.shape[-2:])), depth, valid)

    def visualise(self, batch: Mapping[str, Any], head_output: Tensor, max_samples: int = 4) -> Image.Image:
        """A grid with one row per sample: input | ground truth | prediction | |error| (0–10 m, 0–1 m)."""
        from mmpt.tasks import viz  # keeps PIL drawing code out of the training import path

        depth, valid = require_targets(self.name, batch, self.target_keys)
        pred = self.prediction(match_size(head_output.detach(), depth.shape[-2:])).float().cpu()
        depth, valid = depth.cpu(), valid.cpu()
        rows = []
        for i in range(min(max_samples, depth.shape[0])):
            error = torch.where(valid[i], (pred[i] - depth[i]).abs(), 0.0)
            rows.append(
                [
                    viz.input_picture(batch, i),
                    viz.colorize_depth(depth[i]),
                    viz.colorize_depth(pred[i], valid=torch.ones_like(valid[i])),  # every predicted pixel is drawn
                    viz.colorize_error(error, valid[i]),
                ]
            )
        return viz.comparison_grid(rows, ["input", "ground truth", "prediction", "abs error (0-1 m)"])


TASKS.add("depth", DepthTask())

"""Depth losses and metrics: official formulas on metric depth, set-level sums, DDP-style merging."""

from __future__ import annotations

import math
import os
import socket

import numpy as np
import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from mmpt.errors import ConfigError
from mmpt.tasks import DepthMetrics, berhu_loss, build_task, l1_loss, silog_loss

# (1, 1, 2, 3): one invalid pixel (target 0) whose wild prediction must not count anywhere.
TARGET = torch.tensor([[[[1.0, 2.0, 4.0], [3.0, 0.0, 5.0]]]])
PRED = torch.tensor([[[[1.1, 2.0, 2.2], [4.5, 100.0, -1.0]]]])
MASK = TARGET > 0


def numpy_depth_metrics(pred: np.ndarray, target: np.ndarray, mask: np.ndarray) -> dict[str, float]:
    """The spec (reference/multimae.md §5.1 formulas, metres, all valid pixels pooled), written independently."""
    p, t = pred[mask].astype(np.float64), target[mask].astype(np.float64)
    pc, tc = np.maximum(p, 1e-6), np.maximum(t, 1e-6)
    ratio = np.maximum(p / tc, t / pc)
    return {
        "delta1": float(np.mean(ratio < 1.25)),
        "delta2": float(np.mean(ratio < 1.25**2)),
        "delta3": float(np.mean(ratio < 1.25**3)),
        "abs_rel": float(np.mean(np.abs(p - t) / tc)),
        "sq_rel": float(np.mean((p - t) ** 2 / tc)),
        "rmse": float(np.sqrt(np.mean((p - t) ** 2))),
        "rmse_log": float(np.sqrt(np.mean((np.log(pc) - np.log(tc)) ** 2))),
        "log10": float(np.mean(np.abs(np.log10(pc) - np.log10(tc)))),
    }


def as_floats(values: dict[str, torch.Tensor]) -> dict[str, float]:
    return {k: float(v) for k, v in values.items()}


def test_berhu_matches_hand_computed_example() -> None:
    # valid d = [0.1, 0, -1.8, 1.5, -6]; c = 0.2 * 6 = 1.2; |d| < c: |d|; else (d² + c²) / 2c.
    c = 1.2
    expected = (0.1 + 0.0 + (1.8**2 + c**2) / (2 * c) + (1.5**2 + c**2) / (2 * c) + (36 + c**2) / (2 * c)) / 5
    assert berhu_loss(PRED, TARGET, MASK).item() == pytest.approx(expected, rel=1e-6)


def test_berhu_ignores_invalid_pixels_in_value_threshold_and_gradient() -> None:
    pred = PRED.clone().requires_grad_(True)
    loss = berhu_loss(pred, TARGET, MASK)
    other = PRED.clone()
    other[~MASK] = -1e4  # would change c if invalid pixels entered max|d|
    assert berhu_loss(other, TARGET, MASK).item() == pytest.approx(loss.item(), rel=1e-7)
    loss.backward()
    assert pred.grad[~MASK].abs().sum() == 0
    # |d| < c: gradient sign(d) / n; |d| ≥ c: d / (c n).
    assert pred.grad[0, 0, 0, 0].item() == pytest.approx(1 / 5)
    assert pred.grad[0, 0, 0, 2].item() == pytest.approx(-1.8 / 1.2 / 5)


def test_berhu_threshold_floor_and_empty_mask() -> None:
    assert berhu_loss(TARGET, TARGET, MASK).item() == 0.0  # c floored at 1e-5: no 0/0
    pred = PRED.clone().requires_grad_(True)
    loss = berhu_loss(pred, TARGET, torch.zeros_like(MASK))
    loss.backward()
    assert loss.item() == 0.0 and pred.grad.abs().sum() == 0


def test_l1_and_silog_values() -> None:
    assert l1_loss(PRED, TARGET, MASK).item() == pytest.approx((0.1 + 0 + 1.8 + 1.5 + 6) / 5, rel=1e-6)
    # A uniformly scaled prediction: g = ln 2 everywhere → sqrt(ln²2 - 0.85 ln²2).
    expected = math.log(2) * math.sqrt(0.15)
    assert silog_loss(2 * TARGET, TARGET, MASK).item() == pytest.approx(expected, rel=1e-5)
    assert silog_loss(2 * TARGET, TARGET, MASK, lam=1.0).item() == pytest.approx(0.0, abs=1e-5)


def test_metrics_match_numpy_spec_and_hand_values() -> None:
    metrics = DepthMetrics()
    metrics.update(PRED, TARGET, MASK)
    got = as_floats(metrics.compute())
    expected = numpy_depth_metrics(PRED.numpy(), TARGET.numpy(), MASK.numpy())
    assert got == pytest.approx(expected, rel=1e-12)
    # By hand: ratios 1.1, 1, 1.82, 1.5, 5e6 against 1.25, 1.5625, 1.953125; the invalid pixel is ignored.
    assert got["delta1"] == pytest.approx(2 / 5)
    assert got["delta2"] == pytest.approx(3 / 5)
    assert got["delta3"] == pytest.approx(4 / 5)
    assert got["rmse"] == pytest.approx(math.sqrt((0.01 + 0 + 1.8**2 + 1.5**2 + 36) / 5))
    assert got["abs_rel"] == pytest.approx((0.1 / 1 + 0 + 1.8 / 4 + 1.5 / 3 + 6 / 5) / 5)
    assert got["log10"] == pytest.approx(
        (math.log10(1.1) + 0 + math.log10(4 / 2.2) + math.log10(1.5) + math.log10(5 / 1e-6)) / 5
    )


def test_delta_threshold_is_strict_and_nonpositive_predictions_always_fail() -> None:
    target = torch.tensor([[[[4.0, 5.0, 2.0, 2.0]]]])
    pred = torch.tensor([[[[5.0, 4.0, 0.0, -2.0]]]])  # ratio exactly 1.25 (both ways), zero, negative
    metrics = DepthMetrics()
    metrics.update(pred, target)
    got = metrics.compute()
    assert got["delta1"].item() == 0.0  # 1.25 is not < 1.25
    assert got["delta2"].item() == pytest.approx(0.5)
    assert got["delta3"].item() == pytest.approx(0.5)  # 0 and -2 never within any threshold
    negative = DepthMetrics()
    negative.update(-target, target)  # |p| = t: fails by sign alone
    assert negative.compute()["delta3"].item() == 0.0


def random_batch(seed: int, batch: int = 6) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    target = torch.rand(batch, 1, 8, 10, generator=gen) * 9 + 0.5
    target[torch.rand(target.shape, generator=gen) < 0.2] = 0.0
    pred = target * (1 + 0.4 * torch.randn(target.shape, generator=gen)) + 0.1
    return pred, target, target > 0


def test_metrics_do_not_depend_on_how_the_set_is_split_into_batches() -> None:
    pred, target, mask = random_batch(0)
    whole = DepthMetrics()
    whole.update(pred, target, mask)
    for size in (1, 2, 4):
        split = DepthMetrics()
        for start in range(0, pred.shape[0], size):
            split.update(pred[start : start + size], target[start : start + size], mask[start : start + size])
        for name, value in split.compute().items():
            torch.testing.assert_close(value, whole.compute()[name], rtol=1e-12, atol=0)
    expected = numpy_depth_metrics(pred.numpy(), target.numpy(), mask.numpy())
    assert as_floats(whole.compute()) == pytest.approx(expected, rel=1e-12)


def test_merged_states_equal_one_metric_over_all_data() -> None:
    pred, target, mask = random_batch(1)
    whole, first, second = DepthMetrics(), DepthMetrics(), DepthMetrics()
    whole.update(pred, target, mask)
    first.update(pred[:1], target[:1], mask[:1])  # uneven shards, as the last DDP batch can be
    second.update(pred[1:], target[1:], mask[1:])
    first.merge_state(second)
    for name, value in first.compute().items():
        torch.testing.assert_close(value, whole.compute()[name], rtol=1e-12, atol=0)


def _ddp_worker(rank: int, world: int, port: int, queue: mp.Queue) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=world)
    try:
        pred, target, mask = random_batch(2)
        shard = slice(0, 1) if rank == 0 else slice(1, None)  # uneven shards
        metrics = DepthMetrics()
        metrics.update(pred[shard], target[shard], mask[shard])
        values = as_floats(metrics.compute())  # all-reduces the sum states
        if rank == 0:
            queue.put(values)
    finally:
        dist.destroy_process_group()


@pytest.mark.slow  # ~30 s on 2 cores: each spawned process imports torch, torchmetrics and mmpt
def test_two_process_gloo_ddp_gives_the_single_process_numbers() -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    ctx = mp.get_context("spawn")
    queue = ctx.Queue()
    mp.start_processes(_ddp_worker, args=(2, port, queue), nprocs=2, join=True, start_method="spawn")
    pred, target, mask = random_batch(2)
    assert queue.get(timeout=5) == pytest.approx(numpy_depth_metrics(pred.numpy(), target.numpy(), mask.numpy()))


def test_depth_task_spec() -> None:
    task = build_task("depth")
    assert (task.out_channels, task.primary_metric, task.higher_is_better) == (1, "delta1", True)
    assert task.target_keys == ("depth", "mask_valid")
    batch = {"depth": TARGET, "mask_valid": MASK}
    assert task.loss()(PRED, batch).item() == pytest.approx(berhu_loss(PRED, TARGET, MASK).item())
    assert task.loss("l1")(PRED, batch).item() == pytest.approx(l1_loss(PRED, TARGET, MASK).item())
    # A head predicting at half resolution is resized to the target before the loss.
    low = torch.full((1, 1, 1, 2), 3.0)
    assert task.loss("l1")(low, batch).item() == pytest.approx(l1_loss(torch.full_like(TARGET, 3.0), TARGET, MASK))
    metrics = task.metrics()
    task.update_metrics(metrics, PRED, batch)
    assert metrics.compute()["delta1"].item() == pytest.approx(2 / 5)
    assert task.prediction(PRED) is PRED  # identity: metres


def test_unknown_loss_and_missing_targets_explain_the_fix() -> None:
    task = build_task("depth")
    with pytest.raises(ConfigError, match="Did you mean 'silog'") as err:
        task.loss("silgo")
    assert "berhu, l1, silog" in str(err.value)
    with pytest.raises(ConfigError, match="lacks \\['mask_valid'\\]"):
        task.loss()(PRED, {"depth": TARGET})
    with pytest.raises(ConfigError, match="Did you mean 'depth'"):
        build_task("dept")

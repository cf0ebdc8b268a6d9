"""The task contract (a Protocol), the `TASKS` registry and the helpers both tasks share.

A task turns a head's output `(B, C, H, W)` into a loss, metrics, a prediction and pictures. Tasks hold no
parameters: an artifact stores the tuner and the head, and the task is named in its metadata. The training
loop only talks to this interface, so it never branches on the task name:

    task = build_task("depth")
    loss = task.loss("berhu")(head_output, batch)          # scalar, differentiable
    metrics = task.metrics()                               # torchmetrics Metric, sum states (DDP-safe)
    task.update_metrics(metrics, head_output, batch)
    values = metrics.compute()                             # {"delta1": ..., ...}; values[task.primary_metric]
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

import torch.nn.functional as F
from torch import Tensor
from torchmetrics import Metric

from mmpt.errors import ConfigError
from mmpt.registry import Registry, did_you_mean

if TYPE_CHECKING:
    from PIL import Image

# A loss takes the raw head output and the batch (which holds the task's target keys) and returns a scalar.
LossFn = Callable[[Tensor, Mapping[str, Any]], Tensor]


@runtime_checkable
class Task(Protocol):
    """What a task provides to the training loop, evaluation and `mmpt predict`.

    Attributes:
        name: registry name ("depth", "semseg").
        target_keys: batch keys the losses and metrics read (e.g. ("depth", "mask_valid")).
        out_channels: channels the head must produce.
        losses: loss functions by name; `default_loss` is used when a recipe names none.
        primary_metric: the metric that picks the best checkpoint; `higher_is_better` gives its direction.
    """

    name: str
    target_keys: tuple[str, ...]
    out_channels: int
    losses: Mapping[str, LossFn]
    default_loss: str
    primary_metric: str
    higher_is_better: bool

    def loss(self, name: str | None = None) -> LossFn: ...

    def metrics(self) -> Metric: ...

    def prediction(self, head_output: Tensor) -> Tensor: ...

    def update_metrics(self, metrics: Metric, head_output: Tensor, batch: Mapping[str, Any]) -> None: ...

    def visualise(self, batch: Mapping[str, Any], head_output: Tensor, max_samples: int = 4) -> Image.Image: ...


TASKS: Registry[Task] = Registry("task")


def build_task(name: str) -> Task:
    """The registered task spec called `name` (a did-you-mean ConfigError for unknown names)."""
    return TASKS.get(name)


def pick_loss(task: str, losses: Mapping[str, LossFn], name: str) -> LossFn:
    """`losses[name]`, or a ConfigError that lists the task's losses and suggests the closest one."""
    if name not in losses:
        valid = ", ".join(sorted(losses))
        raise ConfigError(
            f"Unknown {task} loss '{name}'.{did_you_mean(name, list(losses))}",
            hint=f"set task.loss to one of: {valid}",
        )
    return losses[name]


def require_targets(task: str, batch: Mapping[str, Any], keys: Sequence[str]) -> list[Tensor]:
    """The tensors `batch[key]` for `keys`, or a ConfigError naming the missing ones and the fix."""
    if missing := [key for key in keys if key not in batch]:
        raise ConfigError(
            f"The {task} task needs batch keys {list(keys)}, but the batch lacks {missing} (it holds {sorted(batch)}).",
            hint=f"load the '{keys[0]}' domain in the dataset (NYUv2(..., domains=(..., '{keys[0]}')))",
        )
    return [batch[key] for key in keys]


def match_size(head_output: Tensor, size: Sequence[int]) -> Tensor:
    """Bilinearly resizes `(B, C, h, w)` to `size` when it differs (heads predicting at a lower resolution).

    align_corners=False, as the official ConvNeXt head's final upsampling.
    """
    if tuple(head_output.shape[-2:]) == tuple(size):
        return head_output
    return F.interpolate(head_output, size=tuple(size), mode="bilinear", align_corners=False)

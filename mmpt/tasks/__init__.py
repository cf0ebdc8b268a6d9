"""Task specs (depth, semseg): targets, losses, metrics, predictions and pictures.

Importing this package registers both tasks in `TASKS`. Note that torchmetrics imports matplotlib.pyplot
when matplotlib is installed, so `mmpt/__init__.py` must keep importing this package lazily.
"""

from mmpt.tasks.base import TASKS, LossFn, Task, build_task
from mmpt.tasks.depth import DepthMetrics, DepthTask, berhu_loss, l1_loss, silog_loss
from mmpt.tasks.semseg import SegmentationMetrics, SemsegTask, cross_entropy_loss

__all__ = [
    "TASKS",
    "DepthMetrics",
    "DepthTask",
    "LossFn",
    "SegmentationMetrics",
    "SemsegTask",
    "Task",
    "berhu_loss",
    "build_task",
    "cross_entropy_loss",
    "l1_loss",
    "silog_loss",
]

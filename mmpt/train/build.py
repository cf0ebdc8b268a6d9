"""From a RunConfig to the objects a run needs: backbone, tuner, head, task, data loaders, artifact, results."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import Tensor
from torch.utils.data import DataLoader, Subset

from mmpt.backbone import MultiViT, load_backbone
from mmpt.config.schema import RunConfig
from mmpt.errors import ConfigError
from mmpt.train.model import TunedModel
from mmpt.train.sampling import resumable_loader

_DTYPES = {"float16": torch.float16, "float32": torch.float32}


@dataclass
class Run:
    """The built components of a run."""

    backbone: MultiViT
    tuner: Any
    head: Any
    task: Any
    model: TunedModel
    loss_fn: Any

    def extra_loss(self) -> Tensor | None:
        extra = getattr(self.tuner, "extra_loss", None)
        return extra() if extra is not None else None


def build_run(cfg: RunConfig, *, device: torch.device | str = "cpu") -> Run:
    """Loads the backbone for the run's inputs and size, applies the tuner, builds head and task."""
    from mmpt.heads import HEADS, build_head
    from mmpt.tasks import build_task
    from mmpt.tuners import build

    task = build_task(cfg.task.name)
    loss_fn = task.loss(cfg.task.loss)
    unsupported = [d for d in cfg.data.inputs if d not in ("rgb", "depth")]
    if unsupported:
        raise ConfigError(f"data.inputs={cfg.data.inputs} has {unsupported}; tuning supports rgb and depth inputs.")
    backbone = load_backbone(
        cfg.backbone.source, domains=cfg.data.inputs, image_size=cfg.data.image_size, num_heads=cfg.backbone.num_heads
    )
    backbone.set_grad_checkpointing(cfg.backbone.grad_checkpointing)
    tuner_cfg = dict(cfg.tuner)
    tuner = build(tuner_cfg.pop("name"), **tuner_cfg)
    tuner.apply(backbone)
    head_cfg = dict(cfg.head)
    head_name = head_cfg.pop("name")
    fields = {f.name for f in dataclasses.fields(HEADS.get(head_name).config_class)}
    fixed = {
        "dim": backbone.dim,
        "patch_size": backbone.patch_size,
        "out_channels": task.out_channels,
        "depth": backbone.depth,
    }
    fixed = {k: v for k, v in fixed.items() if k in fields}  # what the head's shape follows from
    if clashes := [f"head.{k}={head_cfg[k]} (must be {v})" for k, v in fixed.items() if head_cfg.get(k, v) != v]:
        raise ConfigError(
            f"{', '.join(clashes)}: these head settings follow from the backbone and the task.",
            hint="remove them from the recipe; mmpt fills them in",
        )
    head_cfg.update(fixed)
    head = build_head(head_name, **head_cfg)
    model = TunedModel(backbone, tuner, head, cfg.data.inputs, feature_cache=_feature_cache(cfg, tuner)).to(device)
    return Run(backbone=backbone, tuner=tuner, head=head, task=task, model=model, loss_fn=loss_fn)


def _feature_cache(cfg: RunConfig, tuner):
    """An in-memory FeatureCache when `train.cache_features` is on (linear_probe, no augmentation only)."""
    if not cfg.train.cache_features:
        return None
    if tuner.name != "linear_probe" or cfg.data.augment:
        raise ConfigError(
            f"train.cache_features=true needs tuner linear_probe and data.augment=false (got tuner "
            f"{tuner.name}, augment {cfg.data.augment}): cached features are only valid for a frozen backbone "
            "and inputs that never change.",
            hint="set data.augment=false, or train.cache_features=false",
        )
    from mmpt.tuners.linear_probe import FeatureCache

    return FeatureCache()


def _dataset(cfg: RunConfig, task, split: str, train: bool):
    from mmpt.data import NYUv2
    from mmpt.data.transforms import eval_transform, train_transform

    domains = list(dict.fromkeys([*cfg.data.inputs, *_task_domains(task)]))
    transform = (
        train_transform(cfg.data.image_size) if train and cfg.data.augment else eval_transform(cfg.data.image_size)
    )
    dataset = NYUv2(cfg.data.root, split, domains=domains, transform=transform)
    limit = cfg.data.max_train_samples if train else cfg.data.max_eval_samples
    if limit is not None:
        dataset = Subset(dataset, range(min(limit, len(dataset))))
    return dataset


def _task_domains(task) -> list[str]:
    return [key for key in task.target_keys if key in ("rgb", "depth", "semseg")]


def _collate(samples: list[dict]) -> dict[str, Any]:
    out = {}
    for key in samples[0]:
        values = [s[key] for s in samples]
        out[key] = torch.stack(values) if isinstance(values[0], Tensor) else values
    return out


def train_loader(cfg: RunConfig, run: Run, accelerator, *, start: int) -> DataLoader:
    """Endless, deterministic, resumable training batches (see `mmpt.train.sampling`)."""
    dataset = _dataset(cfg, run.task, cfg.data.train_split, train=True)
    return resumable_loader(
        dataset,
        batch_size=cfg.data.batch_size,
        num_workers=cfg.data.num_workers,
        seed=cfg.train.seed,
        accelerator=accelerator,
        start=start,
        collate_fn=_collate,
    )


def eval_loader(cfg: RunConfig, run: Run, accelerator) -> DataLoader:
    """This process's share of the evaluation split (every world-th sample, no padding duplicates)."""
    dataset = _dataset(cfg, run.task, cfg.data.eval_split, train=False)
    shard = Subset(dataset, range(accelerator.process_index, len(dataset), accelerator.num_processes))
    return DataLoader(shard, batch_size=cfg.data.eval_batch_size, num_workers=cfg.data.num_workers, collate_fn=_collate)


def to_device(batch: dict[str, Any], device: torch.device) -> dict[str, Any]:
    return {k: v.to(device, non_blocking=True) if isinstance(v, Tensor) else v for k, v in batch.items()}


def progress_bar(*, enabled: bool, total: int):
    """A rich progress bar with loss, lr, img/s and ETA (a no-op context when disabled)."""
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeElapsedColumn,
        TimeRemainingColumn,
    )

    return Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("loss {task.fields[loss]:.4f}  lr {task.fields[lr]:.2e}  {task.fields[ips]:.1f} img/s"),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
        disable=not enabled,
    )


def save_run_config(cfg: RunConfig, run_dir: Path) -> None:
    from mmpt.config.load import save_resolved

    save_resolved(cfg, run_dir)


def artifact_path(cfg: RunConfig) -> Path:
    return Path(cfg.output_dir) / f"{cfg.run_name}.safetensors"


def save_best_artifact(cfg: RunConfig, run: Run, *, metrics: dict[str, Any]) -> Path:
    from mmpt.artifacts import save_artifact

    return save_artifact(
        artifact_path(cfg),
        run.tuner,
        run.head,
        run.backbone,
        task=cfg.task.name,
        metrics=metrics,
        dtype=_DTYPES[cfg.train.artifact_dtype],
    )


def results(cfg: RunConfig, run: Run, state, accelerator, *, train_time: float, environment: dict) -> dict[str, Any]:
    """results.json in the peft method_comparison shape: run_info, train_info, metrics, meta_info."""
    from mmpt.artifacts import read_metadata
    from mmpt.config.load import config_hash, dump_config

    path = artifact_path(cfg)
    tuner_params = sum(p.numel() for _, p in run.tuner.trainable_parameters())
    head_params = sum(p.numel() for p in run.head.parameters() if p.requires_grad)
    memory = torch.cuda.max_memory_allocated() if torch.cuda.is_available() else None
    return {
        "run_info": {"name": cfg.run_name, "config_hash": config_hash(cfg), "config": dump_config(cfg)},
        "train_info": {
            "steps": state.step,
            "trainable_params": {"tuner": tuner_params, "head": head_params, "total": tuner_params + head_params},
            "backbone_params": sum(t.numel() for t in run.backbone.base_state_dict().values()),
            "artifact": str(path),
            "artifact_bytes": path.stat().st_size if path.exists() else None,
            "train_time_s": round(train_time, 2),
            "accelerator_memory_max": memory,
            "num_processes": accelerator.num_processes,
        },
        "metrics": {
            "best_step": state.best_step,
            run.task.primary_metric: state.best_metric,
            "best": read_metadata(path)["metrics"] if path.exists() else None,
        },
        "meta_info": environment,
    }

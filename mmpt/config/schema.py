"""Run configuration: what a recipe (YAML) describes, as validated dataclasses.

Components are selected by registry name with their own config next to it
(`tuner: {name: deep_prompt, num_tokens: 50}`); those nested configs are validated against the
component's own dataclass (`mmpt.tuners.TUNERS`, `mmpt.heads.HEADS`) when the run is built.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from mmpt.errors import ConfigError

DOMAINS = ("rgb", "depth", "semseg")  # the NYUv2 layout's domains (mmpt.data.layout.DOMAINS), kept import-free


def _check(condition: bool, key: str, value: Any, expected: str) -> None:
    if not condition:
        raise ConfigError(f"{key}={value!r} is invalid; expected {expected}.")


@dataclass
class BackboneConfig:
    source: str = field(default="multimae-b", metadata={"help": "registry name, URL or checkpoint path"})
    num_heads: int | None = field(default=None, metadata={"help": "attention heads (default dim // 64)"})
    grad_checkpointing: bool = field(default=False, metadata={"help": "recompute blocks in backward (GPU memory)"})


@dataclass
class DataConfig:
    root: str = field(default="data/nyuv2", metadata={"help": "dataset root in the official MultiMAE layout"})
    inputs: list[str] = field(default_factory=lambda: ["rgb"], metadata={"help": "input domains, e.g. [rgb, depth]"})
    image_size: int = field(default=256, metadata={"help": "square training/eval crop (multiple of the patch)"})
    train_split: str = field(default="train", metadata={"help": "split to train on"})
    eval_split: str = field(default="test", metadata={"help": "split to evaluate on"})
    batch_size: int = field(default=8, metadata={"help": "training batch per process"})
    eval_batch_size: int = field(default=8, metadata={"help": "evaluation batch per process"})
    num_workers: int = field(default=2, metadata={"help": "DataLoader workers"})
    augment: bool = field(default=True, metadata={"help": "random scale/crop/flip/colour jitter in training"})
    max_train_samples: int | None = field(default=None, metadata={"help": "use only the first N training samples"})
    max_eval_samples: int | None = field(default=None, metadata={"help": "evaluate on the first N samples only"})

    def __post_init__(self) -> None:
        _check(bool(self.inputs), "data.inputs", self.inputs, "a non-empty list such as [rgb]")
        _check(len(set(self.inputs)) == len(self.inputs), "data.inputs", self.inputs, "distinct domains")
        _check(set(self.inputs) <= set(DOMAINS), "data.inputs", self.inputs, f"domains from {list(DOMAINS)}")
        _check(self.image_size > 0, "data.image_size", self.image_size, "a positive multiple of the patch size")
        _check(self.batch_size > 0, "data.batch_size", self.batch_size, "> 0")
        _check(self.eval_batch_size > 0, "data.eval_batch_size", self.eval_batch_size, "> 0")
        _check(self.num_workers >= 0, "data.num_workers", self.num_workers, ">= 0")


@dataclass
class TaskConfig:
    name: str = field(default="depth", metadata={"help": "depth | semseg"})
    loss: str | None = field(default=None, metadata={"help": "depth: berhu (default) | silog | l1; semseg: ce"})

    def __post_init__(self) -> None:
        _check(self.name in ("depth", "semseg"), "task.name", self.name, "'depth' or 'semseg'")


@dataclass
class TrainConfig:
    steps: int = field(default=1000, metadata={"help": "optimizer steps"})
    lr: float = field(default=1e-3, metadata={"help": "peak learning rate"})
    head_lr: float | None = field(default=None, metadata={"help": "head learning rate (default: lr)"})
    weight_decay: float = field(default=1e-4, metadata={"help": "decoupled weight decay (not on 1-D tensors)"})
    optimizer: str = field(default="adamw", metadata={"help": "adamw | sgd"})
    momentum: float = field(default=0.9, metadata={"help": "SGD momentum"})
    warmup_steps: int = field(default=50, metadata={"help": "linear warm-up from 0"})
    min_lr: float = field(default=0.0, metadata={"help": "cosine floor"})
    grad_clip: float | None = field(default=1.0, metadata={"help": "max gradient norm (None: off)"})
    grad_accum: int = field(default=1, metadata={"help": "gradient accumulation steps"})
    mixed_precision: str = field(default="no", metadata={"help": "no | bf16 | fp16 (GPU only; bf16 is slow on CPU)"})
    seed: int = field(default=0, metadata={"help": "random seed"})
    eval_every: int = field(default=250, metadata={"help": "evaluate (and keep the best artifact) every N steps"})
    log_every: int = field(default=10, metadata={"help": "write metrics.jsonl every N steps"})
    checkpoint_every: int = field(default=250, metadata={"help": "save a resumable checkpoint every N steps"})
    keep_checkpoints: int = field(default=2, metadata={"help": "how many resumable checkpoints to keep"})
    resume: bool = field(default=False, metadata={"help": "continue from the last checkpoint in output_dir"})
    cache_features: bool = field(default=False, metadata={"help": "linear_probe: run the backbone once per image"})
    artifact_dtype: str = field(default="float16", metadata={"help": "float16 | float32 artifact storage"})

    def __post_init__(self) -> None:
        _check(self.steps > 0, "train.steps", self.steps, "> 0")
        _check(self.lr > 0, "train.lr", self.lr, "> 0")
        _check(self.optimizer in ("adamw", "sgd"), "train.optimizer", self.optimizer, "'adamw' or 'sgd'")
        _check(self.head_lr is None or self.head_lr > 0, "train.head_lr", self.head_lr, "> 0 or null (= lr)")
        _check(self.weight_decay >= 0, "train.weight_decay", self.weight_decay, ">= 0")
        _check(0 <= self.momentum < 1, "train.momentum", self.momentum, "a value in [0, 1)")
        _check(0 <= self.min_lr <= self.lr, "train.min_lr", self.min_lr, f"a value in [0, lr={self.lr}]")
        _check(self.grad_clip is None or self.grad_clip > 0, "train.grad_clip", self.grad_clip, "> 0 or null (off)")
        _check(self.keep_checkpoints >= 1, "train.keep_checkpoints", self.keep_checkpoints, ">= 1")
        _check(self.warmup_steps >= 0, "train.warmup_steps", self.warmup_steps, ">= 0")
        _check(self.grad_accum >= 1, "train.grad_accum", self.grad_accum, ">= 1")
        _check(
            self.mixed_precision in ("no", "bf16", "fp16"),
            "train.mixed_precision",
            self.mixed_precision,
            "'no', 'bf16' or 'fp16'",
        )
        _check(self.eval_every > 0, "train.eval_every", self.eval_every, "> 0")
        _check(self.log_every > 0, "train.log_every", self.log_every, "> 0")
        _check(self.checkpoint_every > 0, "train.checkpoint_every", self.checkpoint_every, "> 0")
        _check(
            self.artifact_dtype in ("float16", "float32"),
            "train.artifact_dtype",
            self.artifact_dtype,
            "'float16' or 'float32'",
        )


@dataclass
class RunConfig:
    """A whole tuning run. `tuner` and `head` are `{name: ..., <component config>}` mappings."""

    backbone: BackboneConfig = field(default_factory=BackboneConfig)
    data: DataConfig = field(default_factory=DataConfig)
    task: TaskConfig = field(default_factory=TaskConfig)
    tuner: dict[str, Any] = field(default_factory=lambda: {"name": "deep_prompt"})
    head: dict[str, Any] = field(default_factory=lambda: {"name": "linear"})
    train: TrainConfig = field(default_factory=TrainConfig)
    output_dir: str = field(default="runs/run", metadata={"help": "run directory (config, metrics, artifact)"})
    name: str | None = field(default=None, metadata={"help": "artifact/run name (default: <task>_<tuner>)"})

    def __post_init__(self) -> None:
        for key in ("tuner", "head"):
            value = getattr(self, key)
            _check(isinstance(value, dict) and "name" in value, key, value, "a mapping with a 'name' key")
        # The target must not be an input: depth -> depth (or semseg -> semseg) would learn the identity.
        _check(
            self.task.name not in self.data.inputs,
            "data.inputs",
            self.data.inputs,
            f"input domains without the task's target '{self.task.name}' (e.g. [rgb])",
        )

    @property
    def run_name(self) -> str:
        return self.name or f"{self.task.name}_{self.tuner['name']}"

"""Pretraining configuration: `PretrainConfig` dataclasses, validated, and their recipe loader.

    cfg = load_pretrain_config("pretrain/multimae_tiny_synth", ["train.steps=200", "data.root=data/synth"])

Recipes use the same YAML and `key=value` / `~key` override grammar as tuning recipes (`mmpt.config.load`);
every unknown key, wrong type and bad value is reported at once.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from mmpt.errors import ConfigError

DOMAINS = ("rgb", "depth", "semseg")
SEMSEG_CLASSES = 41
"""Semseg classes of mmpt's pretraining: NYU-40 classes 1..40 as ids 0..39 (the labels `mmpt.data.NYUv2` gives)
plus id 40 = unlabeled (the dataset's ignore value 255, which needs an embedding row as an input)."""
SEMSEG_UNLABELED = 40


def _check(condition: bool, key: str, value: Any, expected: str) -> None:
    if not condition:
        raise ConfigError(f"{key}={value!r} is invalid; expected {expected}.")


@dataclass
class PretrainModelConfig:
    domains: list[str] = field(default_factory=lambda: list(DOMAINS), metadata={"help": "input = target domains"})
    dim: int = field(default=192, metadata={"help": "encoder token width (ViT-Ti 192, ViT-B 768)"})
    depth: int = field(default=12, metadata={"help": "encoder blocks"})
    num_heads: int = field(default=3, metadata={"help": "encoder heads; loaders assume dim // 64 unless told"})
    mlp_ratio: float = field(default=4.0, metadata={"help": "MLP hidden width / dim"})
    patch_size: int = field(default=16, metadata={"help": "patch side in pixels (a multiple of 4 with semseg)"})
    image_size: int = field(default=128, metadata={"help": "square training crop; sets the position-table grid"})
    drop_path_rate: float = field(default=0.0, metadata={"help": "stochastic depth of the last block"})
    decoder_dim: int = field(default=128, metadata={"help": "decoder width (release: 256)"})
    decoder_depth: int = field(default=2, metadata={"help": "decoder blocks after the cross-attention (release: 2)"})
    decoder_heads: int = field(default=4, metadata={"help": "decoder heads (release: 8)"})
    init_from: str | None = field(
        default=None,
        metadata={
            "help": "start from this release-format checkpoint (encoder, adapters, decoders), e.g. a previous "
            "`checkpoint-final.pth`: continued / domain-adaptive pretraining"
        },
    )
    norm_rgb_decoder: bool = field(
        default=False,
        metadata={"help": "add the release's norm_rgb decoder; rgb then regresses plain, not patch-normalised, pixels"},
    )

    def __post_init__(self) -> None:
        _check(
            bool(self.domains)
            and len(set(self.domains)) == len(self.domains)
            and all(d in DOMAINS for d in self.domains),
            "model.domains",
            self.domains,
            f"distinct domains among {list(DOMAINS)}",
        )
        for key in (
            "dim",
            "depth",
            "num_heads",
            "patch_size",
            "image_size",
            "decoder_dim",
            "decoder_depth",
            "decoder_heads",
        ):
            _check(getattr(self, key) > 0, f"model.{key}", getattr(self, key), "> 0")
        _check(self.dim % self.num_heads == 0, "model.num_heads", self.num_heads, f"a divisor of dim={self.dim}")
        _check(
            self.decoder_dim % self.decoder_heads == 0,
            "model.decoder_heads",
            self.decoder_heads,
            f"a divisor of decoder_dim={self.decoder_dim}",
        )
        _check(
            self.image_size % self.patch_size == 0,
            "model.image_size",
            self.image_size,
            f"a multiple of patch_size={self.patch_size}",
        )
        if "semseg" in self.domains:
            _check(self.patch_size % 4 == 0, "model.patch_size", self.patch_size, "a multiple of 4 (semseg is at 1/4)")
        _check(0 <= self.drop_path_rate < 1, "model.drop_path_rate", self.drop_path_rate, "in [0, 1)")
        _check(
            not self.norm_rgb_decoder or "rgb" in self.domains,
            "model.norm_rgb_decoder",
            self.norm_rgb_decoder,
            "false unless rgb is a domain",
        )

    @property
    def tokens_per_domain(self) -> int:
        return (self.image_size // self.patch_size) ** 2

    @property
    def outputs(self) -> list[str]:
        return [*self.domains, *(["norm_rgb"] if self.norm_rgb_decoder else [])]


@dataclass
class MaskingConfig:
    num_encoded_tokens: int = field(default=48, metadata={"help": "visible tokens per sample, all domains together"})
    alpha: float = field(default=1.0, metadata={"help": "Dirichlet concentration of the per-domain split (paper: 1)"})

    def __post_init__(self) -> None:
        _check(self.num_encoded_tokens > 0, "masking.num_encoded_tokens", self.num_encoded_tokens, "> 0")
        _check(self.alpha > 0, "masking.alpha", self.alpha, "> 0")


@dataclass
class PretrainDataConfig:
    root: str = field(default="data/synth", metadata={"help": "NYUv2-layout root (e.g. from `mmpt data synth`)"})
    split: str = field(default="train", metadata={"help": "split to pretrain on"})
    batch_size: int = field(default=64, metadata={"help": "batch per process"})
    num_workers: int = field(default=1, metadata={"help": "DataLoader worker processes"})
    crop_scale: tuple[float, float] = field(default=(0.2, 1.0), metadata={"help": "RandomResizedCrop area range"})
    hflip: bool = field(default=True, metadata={"help": "horizontal flip with probability 0.5"})
    max_samples: int | None = field(default=None, metadata={"help": "use only the first N samples"})

    def __post_init__(self) -> None:
        self.crop_scale = tuple(self.crop_scale)
        _check(self.split in ("train", "test"), "data.split", self.split, "'train' or 'test'")
        _check(self.batch_size > 0, "data.batch_size", self.batch_size, "> 0")
        _check(self.num_workers >= 0, "data.num_workers", self.num_workers, ">= 0")
        low, high = self.crop_scale if len(self.crop_scale) == 2 else (0, -1)
        _check(0 < low <= high <= 1, "data.crop_scale", list(self.crop_scale), "[low, high] with 0 < low <= high <= 1")
        _check(self.max_samples is None or self.max_samples > 0, "data.max_samples", self.max_samples, "> 0 or null")


@dataclass
class PretrainTrainConfig:
    steps: int = field(default=1000, metadata={"help": "optimizer steps"})
    lr: float = field(default=1e-3, metadata={"help": "peak learning rate (AdamW)"})
    min_lr: float = field(default=1e-5, metadata={"help": "cosine floor"})
    warmup_steps: int = field(default=50, metadata={"help": "linear warm-up from 0"})
    weight_decay: float = field(default=0.05, metadata={"help": "decoupled weight decay (not on 1-D tensors, tokens)"})
    beta2: float = field(default=0.95, metadata={"help": "AdamW beta2 (official pretraining: 0.95)"})
    grad_clip: float | None = field(default=None, metadata={"help": "max gradient norm (null: off, as official)"})
    mixed_precision: str = field(default="no", metadata={"help": "no | bf16 | fp16 (GPU only)"})
    cpu_threads: int | None = field(
        default=None,
        metadata={"help": "intra-op CPU threads (null: torch's default); 1 beside one data worker on 2 cores"},
    )
    seed: int = field(default=0, metadata={"help": "seed of the init, data order, augmentation and masks"})
    log_every: int = field(default=10, metadata={"help": "write metrics.jsonl every N steps"})
    checkpoint_every: int = field(default=100, metadata={"help": "save a resumable checkpoint every N steps"})
    keep_checkpoints: int = field(default=2, metadata={"help": "resumable checkpoints kept"})
    resume: bool = field(default=False, metadata={"help": "continue from the last checkpoint in output_dir"})
    export_dtype: str = field(default="float16", metadata={"help": "float16 | float32 for the .safetensors export"})

    def __post_init__(self) -> None:
        _check(self.steps > 0, "train.steps", self.steps, "> 0")
        _check(self.lr > 0, "train.lr", self.lr, "> 0")
        _check(0 <= self.min_lr <= self.lr, "train.min_lr", self.min_lr, f"in [0, lr={self.lr}]")
        _check(self.warmup_steps >= 0, "train.warmup_steps", self.warmup_steps, ">= 0")
        _check(self.weight_decay >= 0, "train.weight_decay", self.weight_decay, ">= 0")
        _check(0 < self.beta2 < 1, "train.beta2", self.beta2, "in (0, 1)")
        _check(self.grad_clip is None or self.grad_clip > 0, "train.grad_clip", self.grad_clip, "> 0 or null")
        _check(self.cpu_threads is None or self.cpu_threads > 0, "train.cpu_threads", self.cpu_threads, "> 0 or null")
        _check(
            self.mixed_precision in ("no", "bf16", "fp16"),
            "train.mixed_precision",
            self.mixed_precision,
            "'no', 'bf16' or 'fp16'",
        )
        for key in ("log_every", "checkpoint_every", "keep_checkpoints"):
            _check(getattr(self, key) > 0, f"train.{key}", getattr(self, key), "> 0")
        _check(
            self.export_dtype in ("float16", "float32"),
            "train.export_dtype",
            self.export_dtype,
            "'float16' or 'float32'",
        )


@dataclass
class PretrainConfig:
    """A whole MultiMAE pretraining run (`mmpt pretrain RECIPE`)."""

    model: PretrainModelConfig = field(default_factory=PretrainModelConfig)
    masking: MaskingConfig = field(default_factory=MaskingConfig)
    loss_weights: dict[str, float] = field(default_factory=dict, metadata={"help": "domain -> weight (default 1)"})
    data: PretrainDataConfig = field(default_factory=PretrainDataConfig)
    train: PretrainTrainConfig = field(default_factory=PretrainTrainConfig)
    output_dir: str = field(default="runs/pretrain", metadata={"help": "run directory"})
    name: str = field(default="multimae-tiny-synth", metadata={"help": "name of the exported checkpoint"})

    def __post_init__(self) -> None:
        total = len(self.model.domains) * self.model.tokens_per_domain
        _check(
            self.masking.num_encoded_tokens <= total,
            "masking.num_encoded_tokens",
            self.masking.num_encoded_tokens,
            f"<= {total}, the tokens of {len(self.model.domains)} domains x {self.model.tokens_per_domain}",
        )
        outputs = self.model.outputs
        weights = self.loss_weights.items()
        bad = {k: v for k, v in weights if k not in outputs or not isinstance(v, int | float) or v < 0}
        _check(not bad, "loss_weights", bad, f"non-negative numbers for the decoded domains {outputs}")
        _check(bool(self.name) and "/" not in self.name, "name", self.name, "a file name without '/'")


def load_pretrain_config(recipe: str | Path, overrides: Sequence[str] = ()) -> PretrainConfig:
    """Reads a pretraining recipe (path or shipped name), applies overrides, validates everything at once.

    Args:
        recipe: a YAML path or a shipped recipe name such as `pretrain/multimae_tiny_synth`.
        overrides: `key=value` / `~key` items, e.g. `train.steps=200`.

    Raises:
        ConfigError: listing every unknown key (with the valid ones), wrong type and bad value.
    """
    from mmpt.config.load import apply_overrides, read_recipe
    from mmpt.config.recipes import resolve_recipe
    from mmpt.config.validate import build_dataclass

    data, errors = apply_overrides(read_recipe(recipe), overrides, registries={})
    cfg = build_dataclass(PretrainConfig, data, "", errors)
    if errors:
        source = str(resolve_recipe(recipe)) + (" with overrides" if overrides else "")
        count = f"{len(errors)} problem{'s' if len(errors) > 1 else ''}"
        raise ConfigError(
            f"{count} in {source}:\n" + "\n".join(f"  - {e}" for e in errors),
            hint="fix the keys above in the recipe or the key=value overrides",
        )
    return cfg


def dump_pretrain_config(cfg: PretrainConfig) -> str:
    """The config as YAML in field order; `load_pretrain_config` on it gives an equal config."""
    from mmpt.config.validate import plain

    return yaml.safe_dump(plain(cfg), sort_keys=False, width=120)

"""`load_backbone`: any checkpoint source → a frozen MultiViT, with a load report."""

from __future__ import annotations

from pathlib import Path

import torch

from mmpt.backbone import checkpoint as ckpt
from mmpt.backbone.hub import hash_from_filename, resolve_source
from mmpt.backbone.multivit import MultiViT
from mmpt.download import sha256_file
from mmpt.errors import CheckpointError, ConfigError


def _as_grid(image_size: int | tuple[int, int], patch_size: int) -> tuple[int, int]:
    h, w = (image_size, image_size) if isinstance(image_size, int) else tuple(image_size)
    if h % patch_size or w % patch_size:
        raise ConfigError(
            f"image_size {h}x{w} is not a multiple of the checkpoint's patch size {patch_size}.",
            hint=f"use e.g. {h // patch_size * patch_size}x{w // patch_size * patch_size}",
        )
    return h // patch_size, w // patch_size


def load_backbone(
    source: str | Path,
    *,
    domains: list[str] | tuple[str, ...] | None = None,
    image_size: int | tuple[int, int] | None = None,
    num_heads: int | None = None,
    freeze: bool = True,
) -> MultiViT:
    """Builds a MultiViT from a checkpoint and loads it strictly.

    Args:
        source: registry name (`multimae-b`, `mae-b`; see `mmpt.backbone.BACKBONES`), URL, or path to an
            official MultiViT-format `.pth`, an official timm-format `.pth`, or an mmpt `.safetensors`.
        domains: input adapters to build (default: all in the checkpoint); the others are skipped.
        image_size: build the position tables for this input size (int or (H, W)) and resize the stored
            ones once, bicubic, as the official fine-tuning does. Without it the stored tables are resized
            in each forward pass (bicubic rgb/depth, bilinear semseg), as the official forward does.
        num_heads: attention heads; not stored in official checkpoints, so dim // 64 by default.
        freeze: set requires_grad=False on every backbone parameter.

    Returns:
        The model, with `model.load_report` (a `LoadReport`) and `model.source_name`.

    Example:
        >>> backbone = load_backbone("multimae-b", domains=["rgb", "depth"], image_size=256)
    """
    path, spec = resolve_source(source)
    sha256 = sha256_file(path)
    expected = spec.sha256 if spec else (hash_from_filename(path.name) if "://" in str(source) else None)
    if expected and not sha256.startswith(expected):
        raise CheckpointError(
            f"{path} has sha256 {sha256}, but {source} should start with {expected}.",
            hint=f"the file is damaged or not the release file: delete {path} and run again to re-download it",
        )
    state, metadata = ckpt.read_state_dict(path)
    fmt = ckpt.detect_format(state, path)
    report = ckpt.LoadReport(source=str(path), format="safetensors" if path.suffix == ".safetensors" else fmt)
    report.sha256 = sha256
    if fmt == "timm":
        state, report.skipped = ckpt.timm_to_multivit(state)
    heads_from = "given"
    if num_heads is None and metadata.get("num_heads"):
        num_heads, heads_from = int(metadata["num_heads"]), "checkpoint metadata"
    elif num_heads is None:
        heads_from = "assumed dim // 64 (not stored in the checkpoint)"
    state = ckpt.select_domains(state, list(domains) if domains is not None else None, report)
    config = ckpt.infer_config(state, num_heads=num_heads)
    if image_size is not None:
        config.grid = _as_grid(image_size, config.patch_size)
        ckpt.resize_pos_tables(state, config.grid, report)
    with torch.device("cpu"):
        model = MultiViT(config)
    ckpt.load_into(model, state, report)
    report.num_heads_from = heads_from
    model.load_report = report
    model.source_name = spec.name if spec else metadata.get("name", path.name)
    if freeze:
        model.freeze()
    return model


def describe_backbone(model: MultiViT) -> dict:
    """A JSON-ready summary of a loaded backbone (what `mmpt inspect` prints)."""
    cfg, report = model.config, model.load_report
    return {
        "source": report.source,
        "name": model.source_name,
        "format": report.format,
        "sha256": report.sha256,
        "fingerprint": model.fingerprint,
        "domains": {
            name: ({"kind": "semseg", "num_classes": s.num_classes} if s.kind == "semseg" else {"channels": s.channels})
            for name, s in cfg.domains.items()
        },
        "dim": cfg.dim,
        "depth": cfg.depth,
        "num_heads": cfg.num_heads,
        "num_heads_from": report.num_heads_from,
        "patch_size": cfg.patch_size,
        "mlp_ratio": cfg.mlp_ratio,
        "num_global_tokens": cfg.num_global_tokens,
        "pos_grid": list(cfg.grid),
        "native_image_size": list(cfg.image_size),
        "parameters": sum(t.numel() for t in model.base_state_dict().values()),
        "loaded_tensors": report.loaded,
        "skipped": {reason: len(keys) for reason, keys in report.skipped.items()},
        "resized": {k: [list(a), list(b)] for k, (a, b) in report.resized.items()},
    }

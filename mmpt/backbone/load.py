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
    state, metadata = ckpt.read_state_dict(path)
    if path.suffix == ".safetensors":
        fmt = "safetensors"
        ckpt.detect_format(state, path)
    else:
        fmt = ckpt.detect_format(state, path)
    report = ckpt.LoadReport(source=str(path), format=fmt, sha256=sha256_file(path))
    expected = spec.sha256 if spec else (hash_from_filename(path.name) if "://" in str(source) else None)
    if expected and not report.sha256.startswith(expected):
        raise CheckpointError(
            f"{path} has sha256 {report.sha256}, but {source} should start with {expected}.",
            hint=f"the file is damaged or not the release file: delete {path} and run again to re-download it",
        )
    if fmt == "timm":
        state, report.skipped = ckpt.timm_to_multivit(state)
    if num_heads is None and metadata.get("num_heads"):
        num_heads = int(metadata["num_heads"])
    state = ckpt.select_domains(state, list(domains) if domains is not None else None, report)
    config = ckpt.infer_config(state, num_heads=num_heads)
    if image_size is not None:
        config.grid = _as_grid(image_size, config.patch_size)
        ckpt.resize_pos_tables(state, config.grid, report)
    with torch.device("cpu"):
        model = MultiViT(config)
    ckpt.load_into(model, state, report)
    model.load_report = report
    model.source_name = spec.name if spec else metadata.get("name", path.name)
    if freeze:
        model.freeze()
    return model

"""Checkpoint files → MultiViT: safe reading, format detection, key conversion, strict load report.

Formats (multimae.md §3): the official MultiViT release (`{'model': state_dict}`, decoders included),
the official timm conversion (RGB only, cls token first), and mmpt's own `.safetensors`.
"""

from __future__ import annotations

import pickle
import re
from dataclasses import dataclass, field
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, safe_open, save_file
from torch import Tensor

from mmpt.backbone.adapters import resize_pos_emb
from mmpt.backbone.multivit import DomainSpec, MultiViT, MultiViTConfig
from mmpt.errors import CheckpointError
from mmpt.fileio import atomic_write

SAFETENSORS_FORMAT = "mmpt-multivit"
_BLOCK_KEY = re.compile(r"^encoder\.(\d+)\.")


@dataclass
class LoadReport:
    """What loading a checkpoint did, key by key.

    Attributes:
        source: the file that was read.
        format: "multivit", "timm" or "safetensors".
        sha256: the file's sha256.
        loaded: number of tensors copied into the model.
        skipped: reason → keys deliberately not loaded (pretraining decoders, unselected domains, ...).
        missing: model keys the checkpoint lacks (an error).
        unexpected: checkpoint keys the model has no place for (an error).
        mismatched: (key, checkpoint shape, model shape) triples (an error).
        resized: position tables resized at load, key → (old grid, new grid).
        num_heads_from: where the head count came from (given, checkpoint metadata, or assumed).
    """

    source: str
    format: str
    sha256: str = ""
    loaded: int = 0
    skipped: dict[str, list[str]] = field(default_factory=dict)
    missing: list[str] = field(default_factory=list)
    unexpected: list[str] = field(default_factory=list)
    mismatched: list[tuple[str, tuple[int, ...], tuple[int, ...]]] = field(default_factory=list)
    resized: dict[str, tuple[tuple[int, int], tuple[int, int]]] = field(default_factory=dict)
    num_heads_from: str = "given"

    @property
    def ok(self) -> bool:
        return not (self.missing or self.unexpected or self.mismatched)

    def __str__(self) -> str:
        lines = [f"{self.source} ({self.format}): loaded {self.loaded} tensors"]
        for reason, keys in self.skipped.items():
            lines.append(f"  skipped {len(keys)} {reason}")
        for key, (old, new) in self.resized.items():
            lines.append(f"  resized {key} {old[0]}x{old[1]} -> {new[0]}x{new[1]}")
        lines += [f"  missing: {k}" for k in self.missing]
        lines += [f"  unexpected: {k}" for k in self.unexpected]
        lines += [f"  shape mismatch: {k} checkpoint {list(a)} vs model {list(b)}" for k, a, b in self.mismatched]
        return "\n".join(lines)


# ---- reading ------------------------------------------------------------------------------------
def read_state_dict(path: Path) -> tuple[dict[str, Tensor], dict[str, str]]:
    """Reads the tensors (and safetensors metadata) of a `.pth` or `.safetensors` file, never running code."""
    if path.suffix == ".safetensors":
        try:
            with safe_open(str(path), framework="pt") as f:
                metadata = f.metadata() or {}
            return load_file(str(path)), metadata
        except (SafetensorError, OSError) as e:
            raise CheckpointError(f"{path} is not a readable safetensors file: {e}.") from e
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        found = re.search(r"Unsupported global: GLOBAL ([\w.]+)", str(e))
        if found is None:
            raise CheckpointError(f"{path} is not a readable PyTorch checkpoint (unpickling failed).") from e
        raise CheckpointError(
            f"{path} contains Python objects besides tensors ({found.group(1)}), which could run code when "
            "loaded; mmpt only reads checkpoints with torch.load(weights_only=True) and refused it.",
            hint="if you trust the file (e.g. an official fine-tuning output with its argparse 'args'), keep only "
            "its weights: python -c \"import torch; torch.save({'model': torch.load('IN', weights_only=False)"
            "['model']}, 'OUT.pth')\"",
        ) from e
    except Exception as e:  # torch.load raises many types on damaged files (RuntimeError, EOFError, ...)
        raise CheckpointError(f"{path} is not a readable PyTorch checkpoint ({type(e).__name__}: {e}).") from e
    return _unwrap(obj, path), {}


def _unwrap(obj: object, path: Path) -> dict[str, Tensor]:
    if isinstance(obj, dict):
        for key in ("model", "state_dict"):
            if isinstance(obj.get(key), dict):
                obj = obj[key]
                break
    if not isinstance(obj, dict) or not obj or not all(isinstance(v, Tensor) for v in obj.values()):
        found = sorted(obj)[:8] if isinstance(obj, dict) else type(obj).__name__
        raise CheckpointError(
            f"{path} holds no state dict: found {found}; expected a mapping of tensors, "
            "or {'model': state_dict} as in the MultiMAE release files."
        )
    return obj


def detect_format(state: dict[str, Tensor], path: Path) -> str:
    """'multivit' or 'timm', from the keys; a CheckpointError saying what was found otherwise."""
    if any(_BLOCK_KEY.match(k) for k in state) and any(k.startswith("input_adapters.") for k in state):
        return "multivit"
    if "patch_embed.proj.weight" in state and any(k.startswith("blocks.") for k in state):
        return "timm"
    raise CheckpointError(
        f"{path} is not a MultiMAE checkpoint: its {len(state)} keys start with {sorted(state)[:5]}; expected "
        "'input_adapters.<domain>.proj.weight' and 'encoder.<i>.attn.qkv.weight' (MultiViT release format) "
        "or 'patch_embed.proj.weight' and 'blocks.<i>....' (timm format).",
        hint="pass a MultiMAE/MAE checkpoint, e.g. the registry name 'multimae-b'",
    )


# ---- conversion ---------------------------------------------------------------------------------
def timm_to_multivit(state: dict[str, Tensor]) -> tuple[dict[str, Tensor], dict[str, list[str]]]:
    """Maps a timm ViT state dict onto MultiViT names (the inverse of the official converter).

    The cls token becomes the global token, with its position row folded in (it is a constant added at
    the input); the patch rows of `pos_embed` become the rgb table (1, D, h, w).
    """
    out, skipped = {}, {}
    for key, value in state.items():
        if key.startswith("blocks."):
            out["encoder." + key.removeprefix("blocks.")] = value
        elif key.startswith("patch_embed.proj."):
            out["input_adapters.rgb.proj." + key.removeprefix("patch_embed.proj.")] = value
        elif key not in ("cls_token", "pos_embed"):
            skipped.setdefault("timm head/final-norm keys (MultiViT has none)", []).append(key)
    pos = state["pos_embed"]  # (1, 1 + h*w, D)
    n = pos.shape[1] - 1
    side = round(n**0.5)
    if "cls_token" not in state or side * side != n:
        raise CheckpointError(
            f"timm checkpoint has pos_embed {list(pos.shape)} and cls_token={'cls_token' in state}; expected a cls "
            "token and a square grid of patch positions after it (1, 1 + h*w, D)."
        )
    out["global_tokens"] = state["cls_token"] + pos[:, :1]
    out["input_adapters.rgb.pos_emb"] = pos[:, 1:].reshape(1, side, side, -1).permute(0, 3, 1, 2).contiguous()
    return out, skipped


def infer_config(state: dict[str, Tensor], *, num_heads: int | None = None) -> MultiViTConfig:
    """Reads the architecture off the tensors' names and shapes (heads are not stored: dim // 64 by default)."""
    needed = ["global_tokens", "encoder.0.mlp.fc1.weight"]
    if missing := [k for k in needed if k not in state]:
        raise CheckpointError(f"checkpoint lacks {missing}; a MultiViT checkpoint always has them.")
    dim = state["global_tokens"].shape[-1]
    depth = 1 + max(int(m.group(1)) for k in state if (m := _BLOCK_KEY.match(k)))
    domains, patch, grid = {}, None, None
    names = dict.fromkeys(k.split(".")[1] for k in state if k.startswith("input_adapters."))
    canonical = ["rgb", "depth", "semseg"]  # safetensors sorts keys; keep the official adapter order
    for name in sorted(names, key=lambda n: (canonical.index(n) if n in canonical else len(canonical), n)):
        weight = state[f"input_adapters.{name}.proj.weight"]  # (D, C, p, p)
        if f"input_adapters.{name}.class_emb.weight" in state:
            rows, width = state[f"input_adapters.{name}.class_emb.weight"].shape
            domains[name] = DomainSpec("semseg", num_classes=rows, dim_class_emb=width)
            domain_patch = weight.shape[-1] * 4
        else:
            domains[name] = DomainSpec("patched", channels=weight.shape[1])
            domain_patch = weight.shape[-1]
        if patch is not None and domain_patch != patch:
            raise CheckpointError(f"input adapters disagree on the patch size: {patch} and {domain_patch} ({name}).")
        patch = domain_patch
        grid = grid or tuple(state[f"input_adapters.{name}.pos_emb"].shape[-2:])
    fc1 = state["encoder.0.mlp.fc1.weight"]
    return MultiViTConfig(
        domains=domains,
        dim=dim,
        depth=depth,
        num_heads=num_heads or max(1, dim // 64),
        mlp_ratio=fc1.shape[0] / dim,
        qkv_bias="encoder.0.attn.qkv.bias" in state,
        patch_size=patch,
        num_global_tokens=state["global_tokens"].shape[1],
        grid=grid,
    )


def select_domains(state: dict[str, Tensor], domains: list[str] | None, report: LoadReport) -> dict[str, Tensor]:
    """Drops the pretraining decoders and the input adapters of domains not asked for (both reported)."""
    present = list(dict.fromkeys(k.split(".")[1] for k in state if k.startswith("input_adapters.")))
    if domains is not None:
        absent = [d for d in domains if d not in present]
        if absent:
            raise CheckpointError(
                f"{report.source} has no input adapter for {absent}; it has {present}.",
                hint=f"choose domains among {present}",
            )
    kept = {}
    for key, value in state.items():
        if key.startswith("output_adapters."):
            report.skipped.setdefault("pretraining decoder keys (output_adapters.*)", []).append(key)
        elif key.startswith("input_adapters.") and domains is not None and key.split(".")[1] not in domains:
            report.skipped.setdefault("input-adapter keys of unselected domains", []).append(key)
        else:
            kept[key] = value
    return kept


def resize_pos_tables(state: dict[str, Tensor], grid: tuple[int, int], report: LoadReport) -> None:
    """Resizes every stored position table to `grid` once, bicubic for all domains (official fine-tuning)."""
    for key in [k for k in state if k.endswith(".pos_emb") and k.startswith("input_adapters.")]:
        old = tuple(state[key].shape[-2:])
        if old != tuple(grid):
            state[key] = resize_pos_emb(state[key].float(), grid, "bicubic")
            report.resized[key] = (old, tuple(grid))


def load_into(model: MultiViT, state: dict[str, Tensor], report: LoadReport) -> None:
    """Strictly copies `state` into `model`; any missing, unexpected or mis-shaped key is a CheckpointError."""
    own = model.state_dict()
    report.missing = [k for k in own if k not in state]
    report.unexpected = [k for k in state if k not in own]
    report.mismatched = [
        (k, tuple(state[k].shape), tuple(own[k].shape)) for k in own if k in state and state[k].shape != own[k].shape
    ]
    if not report.ok:
        raise CheckpointError(
            f"{report.source} does not fit the MultiViT built from it:\n{report}",
            hint="the file may be damaged or of another architecture; `mmpt inspect FILE` shows what it holds",
        )
    with torch.no_grad():
        for key, tensor in own.items():
            tensor.copy_(state[key].to(tensor.dtype))
    report.loaded = len(own)


def save_safetensors(model: MultiViT, path: str | Path, *, dtype: torch.dtype = torch.float32, **metadata: str) -> Path:
    """Writes the base weights under official names as mmpt's `.safetensors` backbone format.

    Args:
        model: the backbone.
        path: destination (written atomically).
        dtype: storage dtype (fp16 halves the size; loading casts back to fp32).
        **metadata: extra string metadata (e.g. name="multimae-tiny-synth").
    """
    path = Path(path)
    tensors = {k: v.detach().to("cpu", dtype).contiguous() for k, v in model.base_state_dict().items()}
    meta = {"format": "pt", "mmpt_format": SAFETENSORS_FORMAT, "num_heads": str(model.config.num_heads), **metadata}
    return atomic_write(path, lambda tmp: save_file(tensors, str(tmp), metadata=meta))

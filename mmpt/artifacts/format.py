"""One tuned task = one `.safetensors` file: tuner tensors (`tuner.*`), head tensors (`head.*`), string metadata.

Metadata (all strings; JSON where noted): `format=pt`, `mmpt_artifact_version`, `mmpt_version`, `tuner`,
`tuner_config` (JSON), `task`, `head_config` (JSON with the head's registry `name`, or `null`), `backbone`
(name), `backbone_sha256` (checkpoint file), `backbone_fingerprint`, `domains` (JSON), `image_size` (JSON
[H, W]), `metrics` (JSON), `created_at`, and `content_sha256`: sha256 over the other metadata and every
tensor's name, dtype, shape and bytes — safetensors itself has no checksum, so without it a flipped bit in
a weight would load silently.

Loading refuses a backbone whose fingerprint differs from `backbone_fingerprint` (`BaseMismatchError`), and
raises `ArtifactError` for truncated, corrupted, foreign or newer-version files. Writes are atomic.
"""

from __future__ import annotations

import hashlib
import json
import math
import struct
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, safe_open, save_file
from torch import Tensor, nn

from mmpt.backbone.multivit import MultiViT
from mmpt.errors import ArtifactError, BaseMismatchError, ConfigError, MmptError
from mmpt.fileio import atomic_write

ARTIFACT_VERSION = 1
JSON_FIELDS = ("tuner_config", "head_config", "domains", "image_size", "metrics")
REQUIRED_FIELDS = (
    "format",
    "mmpt_artifact_version",
    "mmpt_version",
    "tuner",
    "tuner_config",
    "task",
    "head_config",
    "backbone",
    "backbone_sha256",
    "backbone_fingerprint",
    "domains",
    "image_size",
    "metrics",
    "created_at",
    "content_sha256",
)
DTYPE_BYTES = {"F64": 8, "F32": 4, "F16": 2, "BF16": 2, "I64": 8, "I32": 4, "I16": 2, "I8": 1, "U8": 1, "BOOL": 1}
PARTS = ("tuner", "head")


@dataclass
class Artifact:
    """A loaded artifact: the tuner applied to the given backbone with its state, the head, the metadata.

    Attributes:
        tuner: built from `tuner`/`tuner_config`, applied to the backbone, state loaded.
        head: built through `HEADS` from `head_config`, state loaded (None for a tuner-only artifact).
        metadata: the metadata with the JSON fields decoded.
        path: the file read.
    """

    tuner: nn.Module
    head: nn.Module | None
    metadata: dict[str, Any]
    path: Path = field(default_factory=Path)


# ---- writing ------------------------------------------------------------------------------------
def _storage_tensors(state: Mapping[str, Tensor], prefix: str, dtype: torch.dtype, seen: set[int]) -> dict:
    out = {}
    for name, tensor in state.items():
        t = tensor.detach().to("cpu")
        t = (t.to(dtype) if t.is_floating_point() else t).contiguous()
        ptr = t.untyped_storage().data_ptr()
        if ptr in seen:  # safetensors refuses shared storage (tied or aliased tensors)
            t = t.clone()
        seen.add(t.untyped_storage().data_ptr())
        out[prefix + name] = t
    return out


def _content_sha256(metadata: Mapping[str, str], tensors: Mapping[str, Tensor]) -> str:
    digest = hashlib.sha256()
    digest.update(json.dumps({k: v for k, v in metadata.items() if k != "content_sha256"}, sort_keys=True).encode())
    for name in sorted(tensors):
        tensor = tensors[name].contiguous()
        digest.update(f"\n{name}:{str(tensor.dtype).removeprefix('torch.')}:{list(tensor.shape)}\n".encode())
        digest.update(tensor.reshape(-1).view(torch.uint8).numpy().tobytes() if tensor.numel() else b"")
    return digest.hexdigest()


def save_artifact(
    path: str | Path,
    tuner: nn.Module,
    head: nn.Module | None,
    backbone: MultiViT,
    *,
    task: str,
    metrics: Mapping[str, Any] | None = None,
    dtype: torch.dtype = torch.float32,
) -> Path:
    """Writes a tuned task as one `.safetensors` file, atomically (temp file in the same folder, then rename).

    Args:
        path: destination file (conventionally `<name>.safetensors`).
        tuner: an applied tuner; its `state_dict()` is stored under `tuner.`.
        head: the task head (stored under `head.`), or None for a tuner-only artifact.
        backbone: the backbone the tuner is applied to; the artifact binds to its fingerprint (to the tuner's
            `base_fingerprint` when the tuner changed base weights: full fine-tuning, merged LoRA).
        task: task name ("depth", "semseg", ...).
        metrics: JSON-ready evaluation results.
        dtype: storage dtype of floating tensors (float16 halves the size; loading casts back).

    Returns:
        The path written.
    """
    from mmpt import __version__
    from mmpt.heads import head_config_dict

    path = Path(path)
    attached = getattr(tuner, "backbone", None)
    if attached is not None and attached is not backbone:
        raise ConfigError(
            "save_artifact got a backbone that is not the one the tuner is applied to.",
            hint="pass the backbone you called tuner.apply() on",
        )
    seen: set[int] = set()
    tensors = _storage_tensors(tuner.state_dict(), "tuner.", dtype, seen)
    if head is not None:
        tensors.update(_storage_tensors(head.state_dict(), "head.", dtype, seen))
    try:
        metrics_json = json.dumps(dict(metrics or {}), sort_keys=True)
    except TypeError as e:
        raise ConfigError(f"metrics are not JSON-ready ({e}).", hint="convert tensors with .item() or .tolist()") from e
    report = getattr(backbone, "load_report", None)
    metadata = {
        "format": "pt",
        "mmpt_artifact_version": str(ARTIFACT_VERSION),
        "mmpt_version": __version__,
        "tuner": tuner.name,
        "tuner_config": json.dumps(tuner.config.to_dict(), sort_keys=True),
        "task": task,
        "head_config": json.dumps(head_config_dict(head) if head is not None else None, sort_keys=True),
        "backbone": getattr(backbone, "source_name", None) or type(backbone).__name__,
        "backbone_sha256": getattr(report, "sha256", "") or "",
        "backbone_fingerprint": getattr(tuner, "base_fingerprint", None) or backbone.fingerprint,
        "domains": json.dumps(backbone.domains),
        "image_size": json.dumps(list(backbone.config.image_size)),
        "metrics": metrics_json,
        "created_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
    }
    metadata["content_sha256"] = _content_sha256(metadata, tensors)
    return atomic_write(path, lambda tmp: save_file(tensors, str(tmp), metadata=metadata))


# ---- reading ------------------------------------------------------------------------------------
def _open_error(path: Path, error: Exception) -> ArtifactError:
    return ArtifactError(
        f"{path} is not a readable safetensors file ({error}): it is truncated, corrupted, or not an artifact.",
        hint="re-download or re-export it; `mmpt inspect FILE` shows what a file holds",
    )


def _raw_metadata(path: Path) -> dict[str, str]:
    if not path.is_file():
        raise ArtifactError(f"Artifact {path} does not exist or is not a file.")
    try:
        with safe_open(str(path), framework="pt") as f:
            return f.metadata() or {}
    except (SafetensorError, OSError, ValueError) as e:
        raise _open_error(path, e) from e


def read_metadata(path: str | Path) -> dict[str, Any]:
    """The validated metadata of an artifact, JSON fields decoded, without reading the tensors."""
    path = Path(path)
    raw = _raw_metadata(path)
    if "mmpt_artifact_version" not in raw:
        raise ArtifactError(
            f"{path} is a safetensors file without mmpt artifact metadata (it has {sorted(raw) or 'none'}); "
            "it is not an mmpt artifact.",
            hint="backbone checkpoints load with mmpt.load_backbone; peft adapters with PeftModel.from_pretrained",
        )
    try:
        version = int(raw["mmpt_artifact_version"])
    except ValueError as e:
        raise ArtifactError(f"{path}: mmpt_artifact_version={raw['mmpt_artifact_version']!r} is not an integer.") from e
    if version > ARTIFACT_VERSION:
        raise ArtifactError(
            f"{path} is artifact version {version} (written by mmpt {raw.get('mmpt_version', '?')}); this mmpt reads "
            f"versions up to {ARTIFACT_VERSION}.",
            hint="upgrade mmpt (pip install -U mmpt) to read it",
        )
    if version < 1:
        raise ArtifactError(f"{path}: mmpt_artifact_version={version} is not a valid version (>= 1).")
    if missing := [k for k in REQUIRED_FIELDS if k not in raw]:
        raise ArtifactError(f"{path} lacks artifact metadata field(s) {missing}; the file is damaged.")
    metadata: dict[str, Any] = dict(raw)
    for key in JSON_FIELDS:
        try:
            metadata[key] = json.loads(raw[key])
        except json.JSONDecodeError as e:
            raise ArtifactError(f"{path}: metadata field {key!r} is not valid JSON ({e}); the file is damaged.") from e
    return metadata


def _read_tensors(path: Path, raw_metadata: Mapping[str, str]) -> dict[str, dict[str, Tensor]]:
    try:
        tensors = load_file(str(path))
    except (SafetensorError, OSError, ValueError) as e:
        raise _open_error(path, e) from e
    if _content_sha256(raw_metadata, tensors) != raw_metadata["content_sha256"]:
        raise ArtifactError(
            f"{path} does not match its content_sha256: a tensor or a metadata value changed after it was written.",
            hint="the file is corrupted; re-download or re-export it",
        )
    parts: dict[str, dict[str, Tensor]] = {p: {} for p in PARTS}
    for name, tensor in tensors.items():
        part, _, key = name.partition(".")
        if part not in parts or not key:
            raise ArtifactError(f"{path} holds tensor {name!r}; artifact tensors start with 'tuner.' or 'head.'.")
        parts[part][key] = tensor
    return parts


def verify_artifact(path: str | Path) -> dict[str, Any]:
    """Checks a whole artifact without a backbone: its metadata, and every tensor against `content_sha256`.

    Args:
        path: the artifact file.

    Returns:
        The metadata, JSON fields decoded (as `read_metadata`).

    Raises:
        ArtifactError: the file is missing, truncated, corrupted, foreign or of a newer version.
    """
    path = Path(path)
    metadata = read_metadata(path)
    _read_tensors(path, _raw_metadata(path))
    return metadata


def load_artifact(path: str | Path, backbone: MultiViT, *, allow_base_mismatch: bool = False) -> Artifact:
    """Rebuilds a tuned task on `backbone`: checks the base, applies the tuner, loads tuner and head state.

    Args:
        path: the artifact file.
        backbone: a fresh backbone (no tuner applied yet), loaded as the artifact's `backbone` was.
        allow_base_mismatch: load onto a backbone with another fingerprint anyway (for experiments only).

    Returns:
        An `Artifact` whose tuner is applied to `backbone`.

    Raises:
        BaseMismatchError: the backbone's fingerprint is not the one the artifact was trained on.
        ArtifactError: the file is truncated, corrupted, foreign, of a newer version, or its state does not fit.
    """
    from mmpt.heads import build_head
    from mmpt.tuners import build

    path = Path(path)
    metadata = read_metadata(path)
    parts = _read_tensors(path, _raw_metadata(path))  # integrity first: a damaged file is not a "mismatch"
    expected, actual = metadata["backbone_fingerprint"], backbone.fingerprint
    if actual != expected and not allow_base_mismatch:
        given = getattr(backbone, "source_name", None) or type(backbone).__name__
        raise BaseMismatchError(
            f"{path.name} was trained on backbone '{metadata['backbone']}' with fingerprint {expected}, but the given "
            f"backbone '{given}' has fingerprint {actual}.",
            hint=f"load the base it was trained on: mmpt.load_backbone('{metadata['backbone']}', "
            f"domains={metadata['domains']}, image_size={tuple(metadata['image_size'])}) (checkpoint sha256 "
            f"{metadata['backbone_sha256'] or 'unknown'}); domains and image_size change the fingerprint too",
        )
    try:
        tuner = build(metadata["tuner"], **metadata["tuner_config"])
        tuner.apply(backbone)
        tuner.load_state_dict(parts["tuner"], strict=True)
        head = None
        if metadata["head_config"] is not None:
            head_config = dict(metadata["head_config"])
            head = build_head(head_config.pop("name"), **head_config)
            head.load_state_dict(parts["head"], strict=True)
        elif parts["head"]:
            raise ArtifactError(f"{path} has head tensors but head_config is null.")
    except ArtifactError:
        raise
    except (MmptError, RuntimeError, TypeError, KeyError) as e:
        raise ArtifactError(
            f"{path} ({metadata['tuner']} tuner, mmpt {metadata['mmpt_version']}) cannot be rebuilt: {e}",
            hint="it may need a newer mmpt, or the file was edited",
        ) from e
    return Artifact(tuner=tuner, head=head, metadata=metadata, path=path)


# ---- inspecting ---------------------------------------------------------------------------------
def is_artifact(path: str | Path) -> bool:
    """Whether `path` is a safetensors file with mmpt artifact metadata (never raises)."""
    try:
        with safe_open(str(path), framework="pt") as f:
            return "mmpt_artifact_version" in (f.metadata() or {})
    except Exception:
        return False


def describe_artifact(path: str | Path) -> dict[str, Any]:
    """What `mmpt inspect ARTIFACT` shows, read from the header only (no backbone, no tensor data).

    Returns:
        `path`, `file_bytes`, `header_bytes`, `metadata` (JSON fields decoded), `tensors` (rows with `name`,
        `part`, `shape`, `dtype`, `parameters`, `bytes`) and `sizes` (per part: tensors, parameters, bytes).
    """
    path = Path(path)
    metadata = read_metadata(path)
    rows = []
    with safe_open(str(path), framework="pt") as f:
        for name in sorted(f.keys(), key=lambda n: (not n.startswith("tuner."), n)):  # tuner rows first
            view = f.get_slice(name)
            shape, dtype = list(view.get_shape()), view.get_dtype()
            numel = math.prod(shape)
            rows.append(
                {
                    "name": name,
                    "part": name.partition(".")[0],
                    "shape": shape,
                    "dtype": dtype,
                    "parameters": numel,
                    "bytes": numel * DTYPE_BYTES.get(dtype, 0),
                }
            )
    with open(path, "rb") as f:
        header_bytes = 8 + struct.unpack("<Q", f.read(8))[0]
    sizes = {
        part: {
            "tensors": sum(1 for r in rows if r["part"] == part),
            "parameters": sum(r["parameters"] for r in rows if r["part"] == part),
            "bytes": sum(r["bytes"] for r in rows if r["part"] == part),
        }
        for part in PARTS
    }
    return {
        "path": str(path),
        "file_bytes": path.stat().st_size,
        "header_bytes": header_bytes,
        "metadata": metadata,
        "tensors": rows,
        "sizes": sizes,
    }

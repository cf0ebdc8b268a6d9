"""Linear probe: the frozen backbone as a feature extractor (only the head trains), with a feature cache.

Paper: the linear-probing protocol of MAE, He et al., CVPR 2022, https://arxiv.org/abs/2111.06377 (and
MultiMAE's frozen-encoder baselines, https://arxiv.org/abs/2204.01678).

The backbone runs under `torch.no_grad()`: no graph, no saved activations, so a step costs one frozen
inference plus the head (performance.md §4). The tuner has no trainable tensors of its own.

Feature cache: when a sample's input is the same every epoch, its features are too, so the backbone needs
to run once per sample for a whole run. `LinearProbe.features(keys, inputs, cache)` returns cached features
and runs the backbone only on the samples it has not seen; `FeatureCache` keeps them in memory or on disk as
safetensors shards (fp16 by default: 1.5 KB per image for the global token, ~3.2 MB for 4 layers of rgbd256
tokens). **Only valid without random augmentation** (or with a fixed set of pre-augmented views, each under
its own key): a cache would silently train on the first epoch's augmentation forever.

Example:
    >>> probe = mmpt.tuners.build("linear_probe", layers=[-1])
    >>> probe.apply(backbone)
    >>> with FeatureCache("runs/lp/features") as cache:
    ...     for keys, inputs, target in loader:      # keys: sample names or indices
    ...         tokens = probe.features(keys, inputs, cache)[0]  # (B, N + G, D)
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from safetensors import safe_open
from safetensors.torch import save_file
from torch import Tensor, nn

from mmpt.backbone.multivit import MultiViT
from mmpt.errors import ConfigError
from mmpt.tuners.base import TunerConfig, load_named_tensors, register, resolve_layers, tokens_at
from mmpt.tuners.deep_prompt import check_layer_list

CACHE_VERSION = "1"


@dataclass
class LinearProbeConfig(TunerConfig):
    """Linear-probe settings."""

    layers: list[int] = field(
        default_factory=lambda: [-1],
        metadata={"help": "blocks whose output tokens are the features (negative from the end); default the last"},
    )

    def __post_init__(self) -> None:
        if self.layers is None:
            raise ConfigError("LinearProbeConfig.layers=null; give block indices, e.g. [-1] (the last block).")
        self.layers = check_layer_list("LinearProbeConfig", self.layers)


@register("linear_probe")
class LinearProbe(nn.Module):
    """A frozen MultiViT whose tokens at `config.layers` feed the head; nothing in the tuner trains."""

    config_class = LinearProbeConfig

    def __init__(self, config: LinearProbeConfig) -> None:
        super().__init__()
        self.config = config
        self.layer_ids: list[int] = []
        self.backbone: MultiViT | None = None  # registered as a submodule at `apply`, so .to()/.eval() reach it

    def _backbone(self) -> MultiViT:
        if self.backbone is None:
            raise ConfigError("The linear_probe tuner is not applied yet.", hint="call tuner.apply(backbone) first")
        return self.backbone

    def apply(self, backbone: MultiViT) -> LinearProbe:  # type: ignore[override]
        """Freezes every backbone tensor. A callable that is not a MultiViT gets `nn.Module.apply`'s meaning."""
        if not isinstance(backbone, MultiViT):
            return super().apply(backbone)
        if self.backbone is not None:
            raise ConfigError("This linear_probe tuner is already applied to a backbone; build a new one for another.")
        self.layer_ids = resolve_layers(self.config.layers, backbone.depth)
        backbone.freeze()
        self.backbone = backbone
        self._fingerprint = backbone.fingerprint  # a linear probe never changes the backbone
        return self

    def forward(self, inputs: Mapping[str, Tensor], layers: Sequence[int] | None = None) -> list[Tensor]:
        """Frozen tokens at `layers` (default `config.layers`), each (B, N + G, D), computed without a graph."""
        with torch.no_grad():
            return tokens_at(self._backbone(), inputs, self.layer_ids if layers is None else layers)

    def extract(self, inputs: Mapping[str, Tensor]) -> list[Tensor]:
        """The features that `features` caches: tokens at `config.layers`, each (B, N + G, D)."""
        return self.forward(inputs)

    def features(self, keys: Sequence[str | int], inputs: Mapping[str, Tensor], cache: FeatureCache) -> list[Tensor]:
        """Features of a batch, running the backbone only on samples whose key `cache` does not hold yet.

        Args:
            keys: one unique, stable name or index per sample (the same sample must keep its key).
            inputs: the batch, as for `forward`.
            cache: where features are kept; bound on first use to this backbone, layers and input shapes.

        Returns:
            One (B, N + G, D) tensor per layer in `config.layers`, in the cache's output dtype.
        """
        cache.bind(self.cache_binding(inputs))
        names = [str(k) for k in keys]
        missing = [i for i, name in enumerate(names) if name not in cache]
        if missing:
            if len(missing) == len(names):
                subset = inputs
            else:
                rows = torch.tensor(missing)
                subset = {domain: x[rows.to(x.device)] for domain, x in inputs.items()}
            cache.put([names[i] for i in missing], self.extract(subset))
        return cache.get(names)

    def cache_binding(self, inputs: Mapping[str, Tensor]) -> dict[str, str]:
        """What cached features depend on: the backbone's fingerprint, the layers and the per-sample input shapes."""
        shapes = ",".join(f"{d}:{'x'.join(map(str, x.shape[1:]))}" for d, x in inputs.items())
        return {
            "backbone_fingerprint": self._fingerprint,
            "layers": json.dumps(self.layer_ids),
            "inputs": shapes,
        }

    def trainable_parameters(self) -> Iterator[tuple[str, nn.Parameter]]:
        """Nothing: the head is the only thing that trains."""
        self._backbone()
        return iter(())

    def state_dict(self, *, destination: dict | None = None, prefix: str = "", keep_vars: bool = False) -> dict:
        """Empty: a linear probe has no tuned tensors (its artifact holds the head only)."""
        return {} if destination is None else destination

    def load_state_dict(self, state_dict: Mapping[str, Tensor], strict: bool = True, assign: bool = False) -> Any:
        """Accepts only an empty state (unexpected keys are an error when `strict`)."""
        return load_named_tensors({}, state_dict, strict=strict, owner="linear_probe")

    def extra_repr(self) -> str:
        return f"layers={self.layer_ids or self.config.layers}"


class FeatureCache:
    """Per-sample frozen features, in memory or on disk as safetensors shards.

    Each sample is one tensor (L, N + G, D) named by its key. On disk, `shard_size` samples go into a file
    `shard-NNNNN.safetensors` and `index.json` maps keys to shards and records the binding (backbone
    fingerprint, layers, input shapes), so a cache from another backbone or setup is refused, not reused.
    Valid only when a sample's input never changes (no random augmentation).

    Args:
        directory: where shards live (created if needed; an existing cache there is reopened); None keeps
            everything in memory.
        dtype: storage dtype (fp16 halves the size; features are returned as `out_dtype`).
        out_dtype: dtype of the tensors `get` returns (the head usually trains in fp32).
        shard_size: samples per shard file.
    """

    def __init__(
        self,
        directory: str | Path | None = None,
        *,
        dtype: torch.dtype = torch.float16,
        out_dtype: torch.dtype = torch.float32,
        shard_size: int = 256,
    ) -> None:
        if shard_size < 1:
            raise ConfigError(f"FeatureCache shard_size={shard_size} must be >= 1.")
        self.directory = Path(directory) if directory is not None else None
        self.dtype, self.out_dtype, self.shard_size = dtype, out_dtype, shard_size
        self.binding: dict[str, str] | None = None
        self._pending: dict[str, Tensor] = {}  # in memory: everything; on disk: not yet written
        self._shard_of: dict[str, str] = {}
        self._shards: dict[str, list[str]] = {}
        self._open: dict[str, Any] = {}
        if self.directory is not None and (self.directory / "index.json").exists():
            index = json.loads((self.directory / "index.json").read_text())
            if index.get("version") != CACHE_VERSION:
                raise ConfigError(
                    f"{self.directory}/index.json has cache version {index.get('version')!r}; "
                    f"expected {CACHE_VERSION}. Delete the directory to rebuild the cache."
                )
            self.binding = index["binding"]
            self._shards = index["shards"]
            self._shard_of = {key: shard for shard, keys in self._shards.items() for key in keys}

    def bind(self, binding: dict[str, str]) -> None:
        """Records what the features depend on, or refuses a cache built for something else."""
        if self.binding is None:
            self.binding = dict(binding)
            return
        if self.binding != binding:
            changed = {k: (self.binding.get(k), v) for k, v in binding.items() if self.binding.get(k) != v}
            where = self.directory or "this in-memory cache"
            raise ConfigError(
                f"Feature cache {where} was built for a different setup: {changed} (cached, requested).",
                hint="use a new cache directory, or delete this one to rebuild it",
            )

    def __contains__(self, key: object) -> bool:
        return str(key) in self._pending or str(key) in self._shard_of

    def __len__(self) -> int:
        return len(self._pending) + len(self._shard_of)

    def keys(self) -> list[str]:
        return [*self._shard_of, *self._pending]

    def put(self, keys: Sequence[str | int], features: Sequence[Tensor]) -> None:
        """Stores one sample per key from per-layer batches `features` [(B, N + G, D), ...]."""
        stacked = torch.stack([f.detach() for f in features], dim=1).to("cpu", self.dtype)  # (B, L, N + G, D)
        if stacked.shape[0] != len(keys):
            raise ConfigError(f"FeatureCache.put got {len(keys)} keys for a batch of {stacked.shape[0]} samples.")
        for key, sample in zip(keys, stacked, strict=True):
            self._pending[str(key)] = sample.clone()  # (L, N + G, D), its own storage
        if self.directory is not None:
            self._write_shards(full_only=True)

    def get(self, keys: Sequence[str | int]) -> list[Tensor]:
        """Per-layer batches [(B, N + G, D), ...] for `keys`, all of which must be cached."""
        samples = [self._read(str(key)) for key in keys]
        stacked = torch.stack(samples).to(self.out_dtype)  # (B, L, N + G, D)
        return list(stacked.unbind(dim=1))

    def _read(self, key: str) -> Tensor:
        if key in self._pending:
            return self._pending[key]
        if key not in self._shard_of:
            raise KeyError(f"{key!r} is not in the feature cache; compute it with LinearProbe.features first.")
        shard = self._shard_of[key]
        if shard not in self._open:
            self._open[shard] = safe_open(str(self.directory / shard), framework="pt")
        return self._open[shard].get_tensor(key)

    def flush(self) -> None:
        """Writes every pending sample to shards and rewrites `index.json` (no-op in memory)."""
        if self.directory is not None:
            self._write_shards(full_only=False)

    def _write_shards(self, full_only: bool) -> None:
        pending = list(self._pending)
        stop = len(pending) - len(pending) % self.shard_size if full_only else len(pending)
        if stop == 0:
            return
        self.directory.mkdir(parents=True, exist_ok=True)
        metadata = {"mmpt_feature_cache": CACHE_VERSION, **(self.binding or {})}
        for start in range(0, stop, self.shard_size):
            keys = pending[start : min(start + self.shard_size, stop)]
            shard = f"shard-{len(self._shards):05d}.safetensors"
            save_file({k: self._pending[k] for k in keys}, str(self.directory / shard), metadata=metadata)
            self._shards[shard] = keys
            self._shard_of.update(dict.fromkeys(keys, shard))
            for key in keys:
                del self._pending[key]
        index = {"version": CACHE_VERSION, "binding": self.binding, "shards": self._shards}
        (self.directory / "index.json").write_text(json.dumps(index))

    def __enter__(self) -> FeatureCache:
        return self

    def __exit__(self, *exc: object) -> None:
        self.flush()

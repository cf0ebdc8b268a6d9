"""The tuner contract (a Protocol, not a class tree), the registry, and small shared helpers.

A tuner adapts a frozen MultiViT without copying it: token hooks (prompts), injected modules (LoRA via
peft) or requires_grad changes (linear probe, full fine-tuning). Each tuner is one file
`mmpt/tuners/<name>.py` with a `<Name>Config` dataclass and an `nn.Module` registered by name.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar, Protocol, runtime_checkable

import torch
from torch import Tensor, nn
from torch.nn.modules.module import _IncompatibleKeys

from mmpt.backbone.multivit import MultiViT
from mmpt.errors import ArtifactError, ConfigError
from mmpt.registry import ComponentConfig, Registry


@dataclass
class TunerConfig(ComponentConfig):
    """Base of every tuner config (see `ComponentConfig`)."""


@runtime_checkable
class Tuner(Protocol):
    """What every tuner provides. Tuners are `nn.Module`s; after `apply`, `forward` runs the adapted backbone.

    - `apply(backbone)`: attach to a frozen backbone (hooks, injected modules, requires_grad changes).
    - `forward(inputs, layers=None)`: the adapted backbone's tokens at `layers` (block indices; default the
      last), each (B, N + G, D) in the official layout, returned as a list.
    - `trainable_parameters()`: (name, parameter) pairs the optimiser updates — nothing else may require grad.
    - `state_dict()` / `load_state_dict(sd, strict=True)`: the tuned tensors only (saved as `tuner.<name>`).
    - optional `extra_loss()` (e.g. prompt-pool key pull, a scalar Tensor or None) and `merge()` (LoRA).
    - optional `base_fingerprint`: the backbone fingerprint from before the tuner changed base weights in place
      (full fine-tuning, merged LoRA); artifacts bind to it instead of the backbone's current fingerprint.
    """

    name: ClassVar[str]
    config_class: ClassVar[type[TunerConfig]]
    config: TunerConfig

    def apply(self, backbone: MultiViT) -> None: ...

    def forward(self, inputs: Mapping[str, Tensor], layers: Sequence[int] | None = None) -> list[Tensor]: ...

    def trainable_parameters(self) -> Iterator[tuple[str, nn.Parameter]]: ...

    def state_dict(self) -> dict[str, Tensor]: ...

    def load_state_dict(self, state_dict: Mapping[str, Tensor], strict: bool = True) -> Any: ...


TUNERS: Registry[type] = Registry("tuner")


register = TUNERS.register_class  # class decorator: @register("deep_prompt")


def resolve_layers(layers: Sequence[int] | None, depth: int) -> list[int]:
    """Validates block indices (negative ones count from the end); None means the last block."""
    if layers is None:
        return [depth - 1]
    resolved = [i + depth if i < 0 else i for i in layers]
    if bad := [i for i, r in zip(layers, resolved, strict=True) if not 0 <= r < depth]:
        raise ConfigError(f"Layer indices {bad} are out of range for a backbone of depth {depth}.")
    return resolved


def load_named_tensors(
    targets: Mapping[str, Tensor], state_dict: Mapping[str, Tensor], *, strict: bool = True, owner: str = "tuner"
) -> _IncompatibleKeys:
    """Copies `state_dict` values into the same-named `targets` in place (cast to their dtype and device).

    For tuners whose tensors live inside the backbone (LoRA, full fine-tuning). Shape mismatches are always
    errors; missing/unexpected keys only when `strict`. Returns torch's (missing_keys, unexpected_keys).
    """
    missing = [k for k in targets if k not in state_dict]
    unexpected = [k for k in state_dict if k not in targets]
    mismatched = [
        f"{k}: saved {list(v.shape)} vs {owner} {list(targets[k].shape)}"
        for k, v in state_dict.items()
        if k in targets and v.shape != targets[k].shape
    ]
    if mismatched or (strict and (missing or unexpected)):
        problems = [f"missing: {k}" for k in missing] if strict else []
        problems += [f"unexpected: {k}" for k in unexpected] if strict else []
        problems += [f"shape mismatch: {m}" for m in mismatched]
        shown = "\n  ".join(problems[:20]) + (f"\n  ... and {len(problems) - 20} more" if len(problems) > 20 else "")
        raise ArtifactError(
            f"The saved state does not fit this {owner}:\n  {shown}",
            hint="the state was saved with another tuner config or backbone; build the tuner with the config "
            "it was saved with (artifacts store it as `tuner_config`)",
        )
    with torch.no_grad():
        for key, value in state_dict.items():
            if key in targets:
                targets[key].copy_(value.to(device=targets[key].device, dtype=targets[key].dtype))
    return _IncompatibleKeys(missing, unexpected)


def tokens_at(backbone: MultiViT, inputs: Mapping[str, Tensor], layers: Sequence[int] | None) -> list[Tensor]:
    """The backbone's tokens (B, N + G, D) after each requested block (default: the last), keeping only the
    outputs asked for."""
    wanted = resolve_layers(layers, backbone.depth)
    if wanted == [backbone.depth - 1]:
        return [backbone(inputs)]
    outputs = backbone(inputs, return_all_layers=True)
    return [outputs[i] for i in wanted]


def own_parameters_state(
    module: nn.Module, destination: dict | None = None, prefix: str = "", keep_vars: bool = False
) -> dict:
    """`state_dict` of a tuner whose tuned tensors are its own (non-recursive) parameters, detached unless
    `keep_vars`; the `destination`/`prefix` arguments keep a parent module's `state_dict()` working."""
    out = {} if destination is None else destination
    out.update({prefix + n: p if keep_vars else p.detach() for n, p in module.named_parameters(recurse=False)})
    return out


def trainable_summary(tuner: Tuner, backbone: MultiViT, head: nn.Module | None = None) -> str:
    """peft's line: `trainable params: X || all params: Y || trainable%: Z` (head included when given)."""
    base = backbone.base_state_dict()
    base_ptrs = {t.data_ptr() for t in base.values()}
    params = [p for _, p in tuner.trainable_parameters()] + (list(head.parameters()) if head is not None else [])
    trainable = sum(p.numel() for p in params)
    extra = sum(p.numel() for p in params if p.data_ptr() not in base_ptrs)  # tuner/head tensors
    total = sum(t.numel() for t in base.values()) + extra
    return f"trainable params: {trainable:,} || all params: {total:,} || trainable%: {100 * trainable / total:.4f}"

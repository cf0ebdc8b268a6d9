"""Full fine-tuning: every backbone weight trains — the baseline every comparison needs.

The fixed sin-cos position tables (`input_adapters.*.pos_emb`) stay frozen, as in the official MultiMAE
fine-tuning (multimae.md §1.2). Training changes the base weights in place, so the backbone fingerprint is
captured at `apply` (`base_fingerprint`) and artifacts bind to the original base, not to the tuned weights.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from torch import Tensor, nn

from mmpt.backbone.multivit import MultiViT
from mmpt.errors import ConfigError
from mmpt.tuners.base import TunerConfig, load_named_tensors, register, tokens_at

FIXED_SUFFIX = ".pos_emb"  # fixed sin-cos tables: never trained


@dataclass
class FullConfig(TunerConfig):
    """What full fine-tuning leaves frozen besides the position tables."""

    frozen: list[str] = field(
        default_factory=list,
        metadata={
            "help": "name prefixes of backbone tensors to keep frozen, e.g. ['input_adapters.semseg'] for a "
            "domain the task never feeds (each must match at least one tensor)"
        },
    )

    def __post_init__(self) -> None:
        if isinstance(self.frozen, str):
            self.frozen = [self.frozen]
        self.frozen = list(self.frozen)
        if not all(isinstance(p, str) and p for p in self.frozen):
            raise ConfigError(f"full frozen={self.frozen!r} is invalid; expected a list of non-empty name prefixes.")


@register("full")
class FullTuner(nn.Module):
    """Makes the backbone's own weights trainable; its state is those weights under their official names.

    Args:
        config: optional prefixes to keep frozen.
    """

    config_class = FullConfig

    def __init__(self, config: FullConfig) -> None:
        super().__init__()
        self.config = config
        self.backbone: MultiViT | None = None  # registered as a submodule at `apply`, so .to()/.eval() reach it
        self.base_fingerprint: str | None = None
        self._trainable: dict[str, nn.Parameter] = {}

    def apply(self, backbone: MultiViT) -> FullTuner:  # type: ignore[override]
        """Captures the base fingerprint, then sets requires_grad on every weight but the fixed tables.

        A callable that is not a MultiViT gets `nn.Module.apply`'s meaning (recursive `fn(module)`).
        """
        if not isinstance(backbone, MultiViT):
            return super().apply(backbone)
        if self.backbone is not None:
            raise ConfigError("This full tuner is already applied to a backbone; build a new tuner for another one.")
        base = backbone.base_state_dict()
        unmatched = [p for p in self.config.frozen if not any(name.startswith(p) for name in base)]
        if unmatched:
            raise ConfigError(
                f"full frozen prefixes {unmatched} match no backbone tensor.",
                hint=f"tensor names start with: {sorted({'.'.join(n.split('.')[:2]) for n in base})}",
            )
        self.base_fingerprint = backbone.fingerprint  # before any step changes the weights
        params = dict(backbone.named_parameters())
        for name in base:
            trainable = not name.endswith(FIXED_SUFFIX) and not name.startswith(tuple(self.config.frozen))
            params[name].requires_grad_(trainable)
            if trainable:
                self._trainable[name] = params[name]
        self.backbone = backbone
        return self

    def _backbone(self) -> MultiViT:
        if self.backbone is None:
            raise ConfigError("The full tuner is not applied yet.", hint="call tuner.apply(backbone) first")
        return self.backbone

    def forward(self, inputs: Mapping[str, Tensor] | Tensor, layers: Sequence[int] | None = None) -> list[Tensor]:
        """The backbone's tokens (B, N + G, D) after each requested block (default: the last)."""
        return tokens_at(self._backbone(), inputs, layers)

    def trainable_parameters(self) -> Iterator[tuple[str, nn.Parameter]]:
        """Every backbone weight except the fixed position tables (and `frozen` prefixes)."""
        self._backbone()
        return iter(self._trainable.items())

    def state_dict(self, *, destination: dict | None = None, prefix: str = "", keep_vars: bool = False) -> dict:
        """The trained backbone weights under their official names (detached unless `keep_vars`)."""
        self._backbone()
        out = {} if destination is None else destination
        out.update({prefix + name: p if keep_vars else p.detach() for name, p in self._trainable.items()})
        return out

    def load_state_dict(self, state_dict: Mapping[str, Tensor], strict: bool = True, assign: bool = False) -> Any:
        """Copies tuned weights into the backbone in place (its `base_fingerprint` stays the original's)."""
        self._backbone()
        return load_named_tensors(self._trainable, state_dict, strict=strict, owner="full tuner")

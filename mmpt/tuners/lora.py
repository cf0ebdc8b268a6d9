"""LoRA: trainable low-rank updates W + (alpha / r) B A on the blocks' Linears, injected by peft.

Hu et al., "LoRA: Low-Rank Adaptation of Large Language Models", https://arxiv.org/abs/2106.09685.
peft's `inject_adapter_in_model` wraps the official module names in place (`encoder.<i>.attn.qkv`, ...), so
the backbone's base Parameters stay where they are (and its fingerprint stays valid) until `merge()`.
B starts at zero, so the adapted model equals the frozen one at init; `merge()` folds B A into the weights
for zero-overhead inference, and `export_peft()` writes peft's own two files for peft users.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import peft
from peft.tuners.lora import LoraLayer
from safetensors.torch import save_file
from torch import Tensor, nn

from mmpt.backbone.multivit import MultiViT
from mmpt.errors import ConfigError
from mmpt.tuners.base import TunerConfig, load_named_tensors, register, resolve_layers, tokens_at

# Short target name -> the module path inside a block (official names; `proj` alone would also match the
# input adapters' patch-embedding convs, so targets are always qualified).
TARGETS = {"qkv": "attn.qkv", "proj": "attn.proj", "fc1": "mlp.fc1", "fc2": "mlp.fc2"}
ADAPTER = "default"  # peft's adapter name; stripped from every key mmpt stores
PEFT_PREFIX = "base_model.model."  # what `PeftModel.save_pretrained` puts before module names


@dataclass
class LoraConfig(TunerConfig):
    """LoRA hyper-parameters (peft's `LoraConfig` is built from these at `apply`)."""

    rank: int = field(default=8, metadata={"help": "rank r of the update B A (A: r x in, B: out x r)"})
    alpha: float = field(default=16.0, metadata={"help": "scaling numerator: the update is (alpha / rank) B A"})
    dropout: float = field(default=0.0, metadata={"help": "dropout on the LoRA branch's input, in [0, 1)"})
    targets: list[str] = field(
        default_factory=lambda: ["qkv"],
        metadata={"help": f"Linears to adapt in each block, any of {list(TARGETS)} (fused qkv: one A/B pair)"},
    )
    layers: list[int] | None = field(
        default=None, metadata={"help": "block indices to adapt (negative count from the end); null = all blocks"}
    )

    def __post_init__(self) -> None:
        if isinstance(self.rank, bool) or not isinstance(self.rank, int) or self.rank < 1:
            raise ConfigError(f"lora rank={self.rank!r} is invalid; expected an integer >= 1 (typical: 4-16).")
        if not self.alpha > 0:
            raise ConfigError(f"lora alpha={self.alpha!r} is invalid; expected a number > 0 (typical: 2 x rank).")
        if not 0.0 <= self.dropout < 1.0:
            raise ConfigError(f"lora dropout={self.dropout!r} is invalid; expected a value in [0, 1).")
        if isinstance(self.targets, str):
            self.targets = [self.targets]
        self.targets = list(self.targets)
        unknown = [t for t in self.targets if t not in TARGETS]
        if unknown or not self.targets or len(set(self.targets)) != len(self.targets):
            raise ConfigError(
                f"lora targets={self.targets!r} is invalid; expected a non-empty list without repeats of "
                f"{list(TARGETS)}.",
                hint="e.g. targets=[qkv] (the default) or targets=[qkv,proj,fc1,fc2] (all Linears)",
            )
        if self.layers is not None:
            self.layers = list(self.layers)
            if not self.layers or not all(isinstance(i, int) and not isinstance(i, bool) for i in self.layers):
                raise ConfigError(f"lora layers={self.layers!r} is invalid; expected a non-empty list of block ids.")
            if len(set(self.layers)) != len(self.layers):
                raise ConfigError(f"lora layers={self.layers!r} repeats a block index.")


@register("lora")
class LoraTuner(nn.Module):
    """peft LoRA on the backbone's block Linears; only the A/B matrices train.

    State-dict keys are peft's, without the adapter name: `encoder.<i>.attn.qkv.lora_A.weight` (r, in) and
    `encoder.<i>.attn.qkv.lora_B.weight` (out, r).

    Args:
        config: rank, alpha, dropout, target Linears and block subset.
    """

    config_class = LoraConfig

    def __init__(self, config: LoraConfig) -> None:
        super().__init__()
        self.config = config
        self.backbone: MultiViT | None = None  # registered as a submodule at `apply`, so .to()/.eval() reach it
        self._layers: dict[str, LoraLayer] = {}  # official module name -> peft layer
        self._base_fingerprint: str | None = None  # pinned before the first merge

    # ---- attaching ----------------------------------------------------------------------------
    def peft_config(self, backbone: MultiViT) -> peft.LoraConfig:
        """peft's LoraConfig for `backbone`: qualified suffixes for all blocks, full names for a subset."""
        if self.config.layers is None:
            modules = [TARGETS[t] for t in self.config.targets]
        else:
            blocks = resolve_layers(self.config.layers, backbone.depth)
            if len(set(blocks)) != len(blocks):
                raise ConfigError(
                    f"lora layers={self.config.layers} names a block twice (resolved: {blocks}; depth {backbone.depth})"
                )
            modules = [f"encoder.{i}.{TARGETS[t]}" for i in sorted(blocks) for t in self.config.targets]
        return peft.LoraConfig(
            r=self.config.rank,
            lora_alpha=self.config.alpha,
            lora_dropout=self.config.dropout,
            target_modules=modules,
            bias="none",  # base_model_name_or_path stays None: it is a Hub id to peft, which would look it up
        )

    def apply(self, backbone: MultiViT) -> LoraTuner:  # type: ignore[override]
        """Injects LoRA layers into `backbone` in place; everything but A and B stays frozen.

        A callable that is not a MultiViT gets `nn.Module.apply`'s meaning (recursive `fn(module)`).
        """
        if not isinstance(backbone, MultiViT):
            return super().apply(backbone)
        if self.backbone is not None:
            raise ConfigError("This lora tuner is already applied to a backbone; build a new tuner for another one.")
        if hasattr(backbone, "peft_config"):
            raise ConfigError(
                "This backbone already carries peft adapters.", hint="load a fresh backbone for each LoRA tuner"
            )
        peft.inject_adapter_in_model(self.peft_config(backbone), backbone, adapter_name=ADAPTER)
        self._layers = {name: m for name, m in backbone.named_modules() if isinstance(m, LoraLayer)}
        blocks = backbone.depth if self.config.layers is None else len(self.config.layers)
        expected = len(self.config.targets) * blocks
        if len(self._layers) != expected:
            raise ConfigError(f"peft wrapped {len(self._layers)} Linears, expected {expected}: {sorted(self._layers)}.")
        self.backbone = backbone
        return self

    def _backbone(self) -> MultiViT:
        if self.backbone is None:
            raise ConfigError("The lora tuner is not applied yet.", hint="call tuner.apply(backbone) first")
        return self.backbone

    # ---- running ------------------------------------------------------------------------------
    def forward(self, inputs: Mapping[str, Tensor] | Tensor, layers: Sequence[int] | None = None) -> list[Tensor]:
        """The adapted backbone's tokens (B, N + G, D) after each requested block (default: the last)."""
        return tokens_at(self._backbone(), inputs, layers)

    # ---- parameters and state -----------------------------------------------------------------
    def _named_lora(self) -> Iterator[tuple[str, nn.Parameter]]:
        for name, layer in self._layers.items():
            yield f"{name}.lora_A.weight", layer.lora_A[ADAPTER].weight
            yield f"{name}.lora_B.weight", layer.lora_B[ADAPTER].weight

    def trainable_parameters(self) -> Iterator[tuple[str, nn.Parameter]]:
        """The A and B matrices, under their state-dict names."""
        self._backbone()
        return self._named_lora()

    def state_dict(self, *, destination: dict | None = None, prefix: str = "", keep_vars: bool = False) -> dict:
        """The LoRA tensors only (detached unless `keep_vars`, sharing storage with the parameters)."""
        self._backbone()
        out = {} if destination is None else destination
        out.update({prefix + name: p if keep_vars else p.detach() for name, p in self._named_lora()})
        return out

    def load_state_dict(self, state_dict: Mapping[str, Tensor], strict: bool = True, assign: bool = False) -> Any:
        """Copies A/B tensors in (cast to the parameters' dtype); a merged tuner is re-merged with the new values."""
        self._backbone()
        merged = self.merged
        if merged:
            self.unmerge()
        result = load_named_tensors(dict(self._named_lora()), state_dict, strict=strict, owner="lora tuner")
        if merged:
            self.merge()
        return result

    # ---- merging ------------------------------------------------------------------------------
    @property
    def merged(self) -> bool:
        return bool(self._layers) and all(layer.merged for layer in self._layers.values())

    @property
    def base_fingerprint(self) -> str:
        """The fingerprint of the base weights this LoRA was trained on.

        Live until the first `merge()`, which changes the base weights in place; pinned from then on, since
        `unmerge()` restores them only up to float rounding.
        """
        return self._base_fingerprint or self._backbone().fingerprint

    def merge(self) -> None:
        """Folds (alpha / r) B A into each wrapped weight: the forward then costs what the frozen model costs."""
        backbone = self._backbone()
        if self.merged:
            return
        if self._base_fingerprint is None:
            self._base_fingerprint = backbone.fingerprint
        for layer in self._layers.values():
            layer.merge()

    def unmerge(self) -> None:
        """Subtracts the update again (exact up to float rounding, ~1e-7 relative in fp32)."""
        self._backbone()
        for layer in self._layers.values():
            if layer.merged:
                layer.unmerge()

    # ---- interop ------------------------------------------------------------------------------
    def export_peft(self, directory: str | Path) -> Path:
        """Writes peft's `adapter_model.safetensors` + `adapter_config.json` (what `save_pretrained` writes).

        Load them with `PeftModel.from_pretrained(backbone, directory)`, or with
        `inject_adapter_in_model(LoraConfig.from_pretrained(directory), backbone)` followed by
        `set_peft_model_state_dict(backbone, load_peft_weights(directory))` (peft strips the prefix).
        """
        backbone = self._backbone()
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        state = peft.get_peft_model_state_dict(backbone, adapter_name=ADAPTER, save_embedding_layers=False)
        state = {PEFT_PREFIX + k: v.detach().to("cpu").contiguous() for k, v in state.items()}
        save_file(state, str(directory / peft.utils.SAFETENSORS_WEIGHTS_NAME), metadata={"format": "pt"})
        config = self.peft_config(backbone)
        config.inference_mode = True
        auto_mapping = {"base_model_class": type(backbone).__name__, "parent_library": type(backbone).__module__}
        config.save_pretrained(str(directory), auto_mapping_dict=auto_mapping)
        return directory

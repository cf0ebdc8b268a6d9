"""VPT-deep: learned prompt tokens before every (or selected) block, replaced at the next one.

Paper: Jia et al., "Visual Prompt Tuning", ECCV 2022, https://arxiv.org/abs/2203.12119

Implementation: prompt outputs are discarded after every block, so the prompts act only as extra keys and
values of the original tokens' attention (`prefix.block_with_prefix`): identical outputs to
concat-then-strip, without the prompts' query/MLP compute and without ever changing the token layout that
heads and other hooks see. Frozen weights keep requires_grad=False, so the backward computes activation
gradients only. Measured (benchmarks/results/tuner_speed_prompts.md, ViT-B, rgb 224, batch 2, CPU): a p=10
step costs 1.03-1.06× the frozen fwd+bwd floor (the paper's concat-then-strip: 1.07×), p=50 1.08×, and
autograd saves as much as for the floor (141 vs 140 MiB); inference 1.02× the frozen forward.

`gated=True` adds one gate g >= 0 per prompted block that weights the prompts' share of the softmax
(`prefix.py` has the formula). Gates start at 0, where the model is the frozen backbone bit for bit, and
get a non-zero gradient at step 1 (the prompts get theirs once a gate opens: while every gate is 0 the
output does not depend on the prompts). This differs from GatedPromptTuning (arXiv 2306.05067), which gates
the prompt tokens' own block update (`g·block(p) + (1 − g)·p`), is not exactly the frozen model at init,
and only makes sense for prompts that are carried from block to block.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor, nn

from mmpt.backbone.multivit import MultiViT
from mmpt.errors import ConfigError
from mmpt.tuners.base import TunerConfig, load_named_tensors, own_parameters_state, register, resolve_layers
from mmpt.tuners.prefix import block_with_prefix, open_gate


def vpt_init_bound(patch_size: int, dim: int) -> float:
    """VPT's prompt init: uniform(±sqrt(6 / (3·patch² + dim))) (xavier over a patch's pixel fan-in)."""
    return math.sqrt(6.0 / (3 * patch_size**2 + dim))


def check_layer_list(owner: str, layers: Sequence[int] | None) -> list[int] | None:
    """Validates a config's `layers` list (ints, no duplicates); the range is checked at `apply`."""
    if layers is None:
        return None
    if isinstance(layers, (str, bytes)) or not all(isinstance(i, int) and not isinstance(i, bool) for i in layers):
        raise ConfigError(f"{owner}.layers={layers!r} must be a list of block indices (ints, e.g. [-2, -1]) or null.")
    if not layers:
        raise ConfigError(f"{owner}.layers=[] selects no block; give block indices or null for every block.")
    return list(layers)


def resolve_prompt_layers(owner: str, layers: Sequence[int] | None, depth: int) -> list[int]:
    """Block indices that get prompts: all when None, else `layers` (negative ones count from the end)."""
    resolved = list(range(depth)) if layers is None else resolve_layers(layers, depth)
    if len(set(resolved)) != len(resolved):
        raise ConfigError(f"{owner}.layers={list(layers)} names a block twice (resolved: {resolved}, depth {depth}).")
    return sorted(resolved)


def claim_blocks(owner: str, backbone: MultiViT, blocks: Sequence[int]) -> set[int]:
    """The blocks a hook will compute itself, refused if another hook already computes one of them.

    The backbone runs a block with the first hook whose `runs_block` says so, so a second prompt-K/V tuner on
    the same block would be silently ignored; this makes that an error instead.
    """
    taken = set().union(*(getattr(hook, "computes_blocks", set()) for hook in backbone.token_hooks))
    if clash := sorted(taken & set(blocks)):
        raise ConfigError(
            f"{owner} would compute blocks {clash}, which another tuner on this backbone already computes.",
            hint="give the tuners disjoint `layers`, or use one prompt tuner per backbone",
        )
    return set(blocks)


def collect_layers(backbone: MultiViT, x: Tensor, layers: Sequence[int] | None) -> list[Tensor]:
    """Runs the (hooked) blocks on input tokens `x` and returns the outputs at `layers` (default: the last)."""
    wanted = resolve_layers(layers, backbone.depth)
    if wanted == [backbone.depth - 1]:
        return [backbone.forward_blocks(x)]
    outputs = backbone.forward_blocks(x, return_all_layers=True)
    return [outputs[i] for i in wanted]


@dataclass
class DeepPromptConfig(TunerConfig):
    """VPT-deep settings (paper defaults: dropout 0.1 for VPT-deep; p searched over {1, 5, 10, 50, 100, 200})."""

    num_tokens: int = field(
        default=10, metadata={"help": "prompt tokens per prompted block (VPT's p; ViT-B: p=10 is 92K params)"}
    )
    layers: list[int] | None = field(
        default=None,
        metadata={
            "help": "blocks that get prompts; negative indices count from the end ([-6, ..., -1] = last 6); "
            "null = every block"
        },
    )
    dropout: float = field(default=0.0, metadata={"help": "dropout on the prompt tokens in train mode, in [0, 1)"})
    gated: bool = field(
        default=False,
        metadata={"help": "one gate per prompted block, starting closed (= frozen model exactly) and learned"},
    )

    def __post_init__(self) -> None:
        if isinstance(self.num_tokens, bool) or not isinstance(self.num_tokens, int) or self.num_tokens < 1:
            raise ConfigError(f"DeepPromptConfig.num_tokens={self.num_tokens!r} must be an integer >= 1 (e.g. 10).")
        self.layers = check_layer_list("DeepPromptConfig", self.layers)
        if not isinstance(self.dropout, (int, float)) or not 0.0 <= self.dropout < 1.0:
            raise ConfigError(f"DeepPromptConfig.dropout={self.dropout!r} must be in [0, 1) (VPT-deep uses 0.1).")
        if not isinstance(self.gated, bool):
            raise ConfigError(f"DeepPromptConfig.gated={self.gated!r} must be true or false.")


@register("deep_prompt")
class DeepPrompt(nn.Module):
    """VPT-deep on a frozen MultiViT, as a token hook that computes prompted blocks with prompt keys/values.

    Tensors: `prompts` (L, P, D) for the L prompted blocks in increasing order, and with `gated`, `gates` (L,).

    Example:
        >>> tuner = mmpt.tuners.build("deep_prompt", num_tokens=10, layers=[-6, -5, -4, -3, -2, -1])
        >>> tuner.apply(backbone)
        >>> tokens = tuner({"rgb": images})[0]  # (B, N + G, D), the official layout
    """

    config_class = DeepPromptConfig

    def __init__(self, config: DeepPromptConfig) -> None:
        super().__init__()
        self.config = config
        self.prompt_dropout = nn.Dropout(config.dropout)
        self.prompts: nn.Parameter | None = None
        self.gates: nn.Parameter | None = None
        self.layer_ids: list[int] = []
        self._slot: dict[int, int] = {}
        self.computes_blocks: set[int] = set()  # blocks this hook computes itself (see `claim_blocks`)
        self.backbone: MultiViT | None = None  # registered as a submodule at `apply`, so .to()/.eval() reach it

    def _backbone(self) -> MultiViT:
        if self.backbone is None:
            raise ConfigError("The deep_prompt tuner is not applied yet.", hint="call tuner.apply(backbone) first")
        return self.backbone

    def apply(self, backbone: MultiViT) -> DeepPrompt:  # type: ignore[override]
        """Freezes `backbone`, creates the prompts (VPT init) on its device and attaches as a token hook.

        A callable that is not a MultiViT gets `nn.Module.apply`'s meaning (recursive `fn(module)`), so code
        that walks a model tree with `.apply(init_fn)` keeps working.
        """
        if not isinstance(backbone, MultiViT):
            return super().apply(backbone)
        if self.backbone is not None:
            raise ConfigError("This deep_prompt tuner is already applied to a backbone; build a new one for another.")
        self.layer_ids = resolve_prompt_layers("DeepPromptConfig", self.config.layers, backbone.depth)
        self.computes_blocks = claim_blocks("deep_prompt", backbone, self.layer_ids)
        self._slot = {block: slot for slot, block in enumerate(self.layer_ids)}
        reference = backbone.global_tokens
        bound = vpt_init_bound(backbone.patch_size, backbone.dim)
        shape = (len(self.layer_ids), self.config.num_tokens, backbone.dim)  # (L, P, D)
        self.prompts = nn.Parameter(torch.empty(shape, device=reference.device, dtype=reference.dtype))
        nn.init.uniform_(self.prompts, -bound, bound)
        if self.config.gated:
            self.gates = nn.Parameter(torch.zeros(len(self.layer_ids), device=reference.device, dtype=reference.dtype))
        backbone.freeze()
        self.backbone = backbone
        backbone.token_hooks.append(self)
        return self

    # ---- TokenHook ----------------------------------------------------------------------------
    def before_block(self, index: int, x: Tensor) -> Tensor:
        return x

    def after_block(self, index: int, x: Tensor) -> Tensor:
        return x

    def runs_block(self, index: int) -> bool:
        return index in self._slot

    def run_block(self, index: int, block: nn.Module, x: Tensor) -> Tensor:
        slot = self._slot[index]
        prompts = self.prompts[slot]  # (P, D), shared by the batch
        if self.training and self.config.dropout > 0:  # one mask per sample, as VPT (expand, then dropout)
            prompts = self.prompt_dropout(prompts.expand(x.shape[0], -1, -1))  # (B, P, D)
        gate = open_gate(self.gates[slot]) if self.gates is not None else None
        return block_with_prefix(block, x, prompts, gate)

    # ---- Tuner --------------------------------------------------------------------------------
    def forward(self, inputs: Mapping[str, Tensor], layers: Sequence[int] | None = None) -> list[Tensor]:
        """Prompted tokens at block indices `layers` (default: the last), each (B, N + G, D), prompts stripped."""
        backbone = self._backbone()
        return collect_layers(backbone, backbone.embed(inputs), layers)

    def trainable_parameters(self) -> Iterator[tuple[str, nn.Parameter]]:
        """`prompts` (L, P, D) and, when gated, `gates` (L,)."""
        self._backbone()
        return self.named_parameters(recurse=False)

    def state_dict(self, *, destination: dict | None = None, prefix: str = "", keep_vars: bool = False) -> dict:
        """The prompts (and gates) only, detached unless `keep_vars`."""
        self._backbone()
        return own_parameters_state(self, destination, prefix, keep_vars)

    def load_state_dict(self, state_dict: Mapping[str, Tensor], strict: bool = True, assign: bool = False) -> Any:
        """Copies saved prompts (and gates) in, cast to the parameters' dtype and device."""
        return load_named_tensors(dict(self.trainable_parameters()), state_dict, strict=strict, owner="deep_prompt")

    def extra_repr(self) -> str:
        return f"num_tokens={self.config.num_tokens}, layers={self.layer_ids}, gated={self.config.gated}"

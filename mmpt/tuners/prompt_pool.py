"""L2P-style prompt pool: each sample picks its top-k prompts by cosine match of a frozen query to learned keys.

Paper: Wang et al., "Learning to Prompt for Continual Learning", CVPR 2022, https://arxiv.org/abs/2112.08654

Pool: `pool_size` (M) prompts of `length` (Lp) tokens and M keys. Per sample, the query (a frozen feature of
the input, never trained) is matched to the keys by cosine similarity and the top-k prompts are
concatenated (k·Lp tokens). Selection is per sample in train and eval: there is no batch-majority vote (l2p
#28), so a prediction never depends on the other images in its batch. The keys learn only from the
key-pull loss `extra_loss() = λ·mean_b Σ_selected (1 − cos(q_b, key))` (L2P's surrogate, written so that it
is >= 0); top-k itself passes no gradient.

Query (`query`), measured in benchmarks/results/tuner_speed_prompts.md (ViT-B, rgb 224, batch 2, CPU):
- `embed_mean` (default): the mean of the input tokens from `backbone.embed` minus their input-independent
  part (patch-projection biases + mean position embedding: the embedding of an all-zero input), i.e. the
  mean patch projection. Free: the forward embeds anyway; a step is 1.14× the fwd+bwd floor (the 25 prompt
  tokens), inference 1.14× the frozen forward. Without the subtraction, that shared offset dominates: on 18
  real NYUv2 frames (random-weight ViT-B) the queries' mean pairwise cosine is 0.88 and L2P's random keys
  (M=10, k=5) give 3.9 distinct top-5 sets; with it, 0.23 and 10.8 sets (usage entropy 0.95).
- `frozen_global`: L2P's choice, the frozen model's last-block global token: one more frozen forward per
  step (step 1.42× embed_mean's, inference 2.14× the frozen forward); on the same frames cosine 0.86, 5.8
  sets, entropy 0.81. Random weights say nothing about semantics: with a real checkpoint this query may
  route by scene content where embed_mean routes by colour and texture statistics; re-measure with
  `benchmarks/tuner_speed_prompts.py --checkpoint` before choosing it for its cost.

Insertion (`insert`):
- `shallow` (L2P): the k·Lp selected tokens enter before block 0 and are carried through every block
  (stripped from each block's output, so heads and hooks see the official layout, and put back).
- `deep`: every block in `layers` has its own pool of prompts (one key set shared by all blocks) used as
  extra keys/values, like VPT-deep (`prefix.block_with_prefix`).

Collapse is visible: `usage()` returns selection counts, frequencies and the normalised entropy since the last
`reset_usage()` (1 = uniform use of the pool, 0 = one prompt always).
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from mmpt.backbone.multivit import MultiViT
from mmpt.errors import ConfigError
from mmpt.tuners.base import TunerConfig, load_named_tensors, own_parameters_state, register
from mmpt.tuners.deep_prompt import (
    check_layer_list,
    claim_blocks,
    collect_layers,
    resolve_prompt_layers,
    vpt_init_bound,
)
from mmpt.tuners.prefix import block_with_prefix

INSERTS = ("shallow", "deep")
QUERIES = ("embed_mean", "frozen_global")


@dataclass
class PromptPoolConfig(TunerConfig):
    """Prompt-pool settings (L2P paper and port: M=10, Lp=5, k=5, λ=0.1)."""

    pool_size: int = field(default=10, metadata={"help": "prompts in the pool (M), each with a learned key"})
    length: int = field(default=5, metadata={"help": "tokens per prompt (Lp)"})
    top_k: int = field(default=5, metadata={"help": "prompts selected per sample (k <= pool_size)"})
    insert: str = field(
        default="shallow",
        metadata={
            "help": "'shallow': selected tokens enter before block 0 and pass through every block (L2P); "
            "'deep': a pool per block in `layers`, used as extra keys/values (VPT-deep style)"
        },
    )
    layers: list[int] | None = field(
        default=None, metadata={"help": "insert='deep' only: blocks with a pool (negative from the end); null = all"}
    )
    query: str = field(
        default="embed_mean",
        metadata={
            "help": "frozen query: 'embed_mean' (mean input token minus its input-independent part, free) or "
            "'frozen_global' (the frozen "
            "model's last global token; one more frozen forward per step)"
        },
    )
    pull_weight: float = field(default=0.1, metadata={"help": "λ of the key-pull loss returned by extra_loss(), >= 0"})

    def __post_init__(self) -> None:
        for name in ("pool_size", "length", "top_k"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ConfigError(f"PromptPoolConfig.{name}={value!r} must be an integer >= 1.")
        if self.top_k > self.pool_size:
            raise ConfigError(
                f"PromptPoolConfig.top_k={self.top_k} exceeds pool_size={self.pool_size}; "
                f"valid range 1..{self.pool_size}."
            )
        if self.insert not in INSERTS:
            raise ConfigError(f"PromptPoolConfig.insert={self.insert!r}; valid values: {', '.join(INSERTS)}.")
        if self.query not in QUERIES:
            raise ConfigError(f"PromptPoolConfig.query={self.query!r}; valid values: {', '.join(QUERIES)}.")
        self.layers = check_layer_list("PromptPoolConfig", self.layers)
        if self.layers is not None and self.insert == "shallow":
            raise ConfigError(
                f"PromptPoolConfig.layers={self.layers} only applies to insert='deep'; shallow prompts enter before "
                "block 0. Set insert: deep, or drop layers."
            )
        if not isinstance(self.pull_weight, (int, float)) or self.pull_weight < 0 or math.isnan(self.pull_weight):
            raise ConfigError(f"PromptPoolConfig.pull_weight={self.pull_weight!r} must be a number >= 0.")


@register("prompt_pool")
class PromptPool(nn.Module):
    """An L2P prompt pool on a frozen MultiViT, attached as a token hook.

    Tensors: `prompts` (S, M, Lp, D) with S = 1 (shallow) or the number of pooled blocks (deep), `keys` (M, D).

    Example:
        >>> pool = mmpt.tuners.build("prompt_pool", pool_size=10, length=5, top_k=5)
        >>> pool.apply(backbone)
        >>> loss = task_loss(head(pool(inputs)[0])) + pool.extra_loss()
        >>> pool.usage()["entropy"]  # normalised usage entropy since the last reset_usage()
    """

    config_class = PromptPoolConfig

    def __init__(self, config: PromptPoolConfig) -> None:
        super().__init__()
        self.config = config
        self.prompts: nn.Parameter | None = None
        self.keys: nn.Parameter | None = None
        self.register_buffer("usage_counts", torch.zeros(config.pool_size, dtype=torch.long), persistent=False)
        self.layer_ids: list[int] = []
        self._slot: dict[int, int] = {}
        self.computes_blocks: set[int] = set()  # deep: blocks this hook computes itself (see `claim_blocks`)
        self.backbone: MultiViT | None = None  # registered as a submodule at `apply`, so .to()/.eval() reach it
        # (S, B, k·Lp, D) of the latest forward. Kept after it: with gradient checkpointing, backward re-runs
        # `run_block`, which reads it again (so call backward before the next forward, as training loops do).
        self._selected: Tensor | None = None
        self._active = False  # inside `forward`: the hooks act only then (a bare backbone call stays frozen)
        self._carried: Tensor | None = None  # shallow: the prompt tokens between blocks (B, k·Lp, D)
        self._num_tokens = 0  # original tokens of the running forward
        self._pull: Tensor | None = None
        self.last_selection: Tensor | None = None  # (B, k) prompt indices of the last forward

    def _backbone(self) -> MultiViT:
        if self.backbone is None:
            raise ConfigError("The prompt_pool tuner is not applied yet.", hint="call tuner.apply(backbone) first")
        return self.backbone

    def apply(self, backbone: MultiViT) -> PromptPool:  # type: ignore[override]
        """Freezes `backbone`, creates prompts (VPT init) and keys (uniform ±1, as L2P) and attaches as a hook.

        A callable that is not a MultiViT gets `nn.Module.apply`'s meaning (recursive `fn(module)`).
        """
        if not isinstance(backbone, MultiViT):
            return super().apply(backbone)
        if self.backbone is not None:
            raise ConfigError("This prompt_pool tuner is already applied to a backbone; build a new one for another.")
        cfg = self.config
        if cfg.insert == "deep":
            self.layer_ids = resolve_prompt_layers("PromptPoolConfig", cfg.layers, backbone.depth)
            self.computes_blocks = claim_blocks("prompt_pool", backbone, self.layer_ids)
        else:
            self.layer_ids = [0]
        self._slot = {block: slot for slot, block in enumerate(self.layer_ids)}
        like = {"device": backbone.global_tokens.device, "dtype": backbone.global_tokens.dtype}
        bound = vpt_init_bound(backbone.patch_size, backbone.dim)
        shape = (len(self.layer_ids), cfg.pool_size, cfg.length, backbone.dim)  # (S, M, Lp, D)
        self.prompts = nn.Parameter(torch.empty(shape, **like).uniform_(-bound, bound))
        self.keys = nn.Parameter(torch.empty(cfg.pool_size, backbone.dim, **like).uniform_(-1.0, 1.0))  # (M, D)
        self.usage_counts = self.usage_counts.to(like["device"])
        backbone.freeze()
        self.backbone = backbone
        backbone.token_hooks.append(self)
        return self

    # ---- query and selection ------------------------------------------------------------------
    @torch.no_grad()
    def query(self, inputs: Mapping[str, Tensor], tokens: Tensor | None = None) -> Tensor:
        """The frozen query (B, D) of a batch (`tokens`: its `backbone.embed` output, if already computed)."""
        backbone = self._backbone()
        tokens = backbone.embed(inputs) if tokens is None else tokens  # (B, N + G, D)
        if self.config.query == "embed_mean":
            # Minus the input-independent part (patch-projection biases + mean position embedding, i.e. the
            # embedding of an all-zero input), which is the same for every sample and only shrinks cosines.
            offset = backbone.embed({d: torch.zeros_like(x[:1]) for d, x in inputs.items()})  # (1, N + G, D)
            return (tokens - offset)[:, : -backbone.num_global_tokens].mean(dim=1)
        x = tokens
        for block in backbone.encoder:  # the plain frozen blocks: no hooks, no prompts
            x = block(x)
        return x[:, -backbone.num_global_tokens :].mean(dim=1)

    def select(self, query: Tensor) -> tuple[Tensor, Tensor]:
        """Per-sample top-k by cosine similarity: indices (B, k) and their similarities (B, k), keys' grad kept."""
        similarity = F.normalize(query, dim=-1) @ F.normalize(self.keys, dim=-1).T  # (B, M)
        index = similarity.detach().topk(self.config.top_k, dim=1).indices  # (B, k)
        return index, similarity.gather(1, index)

    # ---- usage --------------------------------------------------------------------------------
    def usage(self) -> dict[str, Any]:
        """Selections since the last reset: counts (M,), frequencies (M,) and entropy normalised by log M."""
        counts = self.usage_counts.detach().cpu()
        total = int(counts.sum())
        freq = counts.double() / max(total, 1)
        nonzero = freq[freq > 0]
        entropy = float(-(nonzero * nonzero.log()).sum() / math.log(len(counts))) if len(counts) > 1 else 0.0
        return {"counts": counts.tolist(), "frequencies": freq.tolist(), "entropy": entropy, "selections": total}

    def reset_usage(self) -> None:
        self.usage_counts.zero_()

    # ---- TokenHook ----------------------------------------------------------------------------
    def before_block(self, index: int, x: Tensor) -> Tensor:
        if self.config.insert == "shallow" and self._active:
            carried = self._selected[0] if index == 0 else self._carried
            if carried is not None:
                self._num_tokens = x.shape[1]
                return torch.cat([x, carried], dim=1)  # (B, N + k·Lp, D)
        return x

    def after_block(self, index: int, x: Tensor) -> Tensor:
        if self.config.insert == "shallow" and self._active:
            self._carried = x[:, self._num_tokens :]  # (B, k·Lp, D), into the next block
            return x[:, : self._num_tokens]
        return x

    def runs_block(self, index: int) -> bool:
        return self.config.insert == "deep" and self._active and index in self._slot

    def run_block(self, index: int, block: nn.Module, x: Tensor) -> Tensor:
        return block_with_prefix(block, x, self._selected[self._slot[index]])

    # ---- Tuner --------------------------------------------------------------------------------
    def forward(self, inputs: Mapping[str, Tensor], layers: Sequence[int] | None = None) -> list[Tensor]:
        """Tokens at block indices `layers` (default: the last), each (B, N + G, D), with each sample's prompts."""
        backbone = self._backbone()
        tokens = backbone.embed(inputs)  # (B, N + G, D)
        index, similarity = self.select(self.query(inputs, tokens))
        batch, slots, dim = index.shape[0], self.prompts.shape[0], self.prompts.shape[-1]
        self._selected = self.prompts[:, index].reshape(slots, batch, -1, dim)  # (S, B, k·Lp, D)
        self._pull = self.config.pull_weight * (1 - similarity).sum(dim=1).mean()
        self.last_selection = index.detach()
        self.usage_counts += torch.bincount(index.flatten(), minlength=self.config.pool_size)
        self._active = True
        try:
            return collect_layers(backbone, tokens, layers)
        finally:
            self._active, self._carried = False, None

    def extra_loss(self) -> Tensor | None:
        """λ·(key-pull loss) of the last forward (None before any): pulls the selected keys toward the queries."""
        return self._pull

    def trainable_parameters(self) -> Iterator[tuple[str, nn.Parameter]]:
        """`prompts` (S, M, Lp, D) and `keys` (M, D)."""
        self._backbone()
        return self.named_parameters(recurse=False)

    def state_dict(self, *, destination: dict | None = None, prefix: str = "", keep_vars: bool = False) -> dict:
        """The prompts and keys only (usage counts are diagnostics, not state), detached unless `keep_vars`."""
        self._backbone()
        return own_parameters_state(self, destination, prefix, keep_vars)

    def load_state_dict(self, state_dict: Mapping[str, Tensor], strict: bool = True, assign: bool = False) -> Any:
        """Copies saved prompts and keys in, cast to the parameters' dtype and device."""
        return load_named_tensors(dict(self.trainable_parameters()), state_dict, strict=strict, owner="prompt_pool")

    def extra_repr(self) -> str:
        c = self.config
        return f"pool_size={c.pool_size}, length={c.length}, top_k={c.top_k}, insert={c.insert}, query={c.query}"

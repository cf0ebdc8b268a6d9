"""MultiViT: the MultiMAE encoder, readable top to bottom.

Tokens of each input domain (in the input dict's order), then the global token(s), through a stack
of pre-norm timm `Block`s. No cls token, no final norm, no head. Parameter names are the official
ones (`input_adapters.<domain>.*`, `global_tokens`, `encoder.<i>.*`). Facts: `reference/multimae.md` §1.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from functools import partial
from typing import Literal, Protocol

import torch
from timm.models.vision_transformer import Block
from torch import Tensor, nn
from torch.utils.checkpoint import checkpoint

from mmpt.backbone.adapters import PatchedInputAdapter, SemSegInputAdapter
from mmpt.errors import ConfigError


@dataclass(frozen=True)
class DomainSpec:
    """How one input domain enters the encoder.

    Attributes:
        kind: "patched" (dense image: rgb, depth) or "semseg" (class ids at 1/4 resolution).
        channels: input channels of a patched domain.
        num_classes: class-embedding rows of a semseg domain.
        dim_class_emb: class-embedding width of a semseg domain.
    """

    kind: Literal["patched", "semseg"] = "patched"
    channels: int = 3
    num_classes: int = 0
    dim_class_emb: int = 64


DEFAULT_DOMAINS: dict[str, DomainSpec] = {
    "rgb": DomainSpec("patched", channels=3),
    "depth": DomainSpec("patched", channels=1),
    "semseg": DomainSpec("semseg", num_classes=133),
}


@dataclass
class MultiViTConfig:
    """Architecture of a MultiViT (defaults: ViT-B, the official `multivit_base`)."""

    domains: dict[str, DomainSpec] = field(default_factory=lambda: dict(DEFAULT_DOMAINS))
    dim: int = 768
    depth: int = 12
    num_heads: int = 12
    mlp_ratio: float = 4.0
    qkv_bias: bool = True
    patch_size: int = 16
    num_global_tokens: int = 1
    grid: tuple[int, int] = (14, 14)  # position-table size in patches (image_size // patch_size)
    drop_path_rate: float = 0.0

    def __post_init__(self) -> None:
        self.grid = tuple(self.grid)
        if not self.domains:
            raise ConfigError("A MultiViT needs at least one input domain (e.g. 'rgb').")
        if self.dim % self.num_heads:
            raise ConfigError(
                f"num_heads={self.num_heads} does not divide dim={self.dim}.",
                hint=f"pass num_heads so that dim // num_heads is an integer (default dim // 64 = {self.dim // 64})",
            )

    @property
    def image_size(self) -> tuple[int, int]:
        return self.grid[0] * self.patch_size, self.grid[1] * self.patch_size


class TokenHook(Protocol):
    """How a tuner edits the computation around each block, without copying the model.

    `before_block`/`after_block` see and return (B, N, D) token tensors (VPT-style prompts are added
    before a block and stripped after it, so the next hook and the heads see the official layout).
    A hook may also compute a block itself from its frozen submodules (e.g. prompts as extra keys and
    values) by defining `runs_block(index) -> bool` and `run_block(index, block, x) -> Tensor`.
    """

    def before_block(self, index: int, x: Tensor) -> Tensor: ...

    def after_block(self, index: int, x: Tensor) -> Tensor: ...


def _build_adapter(name: str, spec: DomainSpec, cfg: MultiViTConfig) -> nn.Module:
    if spec.kind == "semseg":
        return SemSegInputAdapter(name, spec.num_classes, cfg.patch_size, cfg.dim, cfg.grid, spec.dim_class_emb)
    return PatchedInputAdapter(name, spec.channels, cfg.patch_size, cfg.dim, cfg.grid)


class MultiViT(nn.Module):
    """The MultiMAE encoder for any input size that is a multiple of the patch size.

    Args:
        config: architecture; see `MultiViTConfig`.
    """

    def __init__(self, config: MultiViTConfig) -> None:
        super().__init__()
        self.config = config
        self.input_adapters = nn.ModuleDict({n: _build_adapter(n, s, config) for n, s in config.domains.items()})
        self.global_tokens = nn.Parameter(torch.zeros(1, config.num_global_tokens, config.dim))
        drop_path = torch.linspace(0, config.drop_path_rate, config.depth).tolist()
        self.encoder = nn.Sequential(
            *[
                Block(
                    config.dim,
                    config.num_heads,
                    mlp_ratio=config.mlp_ratio,
                    qkv_bias=config.qkv_bias,
                    drop_path=drop_path[i],
                    norm_layer=partial(nn.LayerNorm, eps=1e-6),
                )
                for i in range(config.depth)
            ]
        )
        self.token_hooks: list[TokenHook] = []
        self.grad_checkpointing = False
        self.init_weights()
        # The frozen base tensors an artifact binds to, captured before any tuner injects its own.
        self._base_tensors: dict[str, Tensor] = dict(self.state_dict(keep_vars=True))

    # ---- construction -------------------------------------------------------------------------
    def init_weights(self) -> None:
        """The official initialisation (multimae.md §1): xavier Linears with per-Q/K/V fans, xavier patch
        projections on the (out, -1) view, trunc-normal(0.02) global tokens and class embeddings."""
        for name, module in self.named_modules():
            if isinstance(module, nn.Linear):
                if "qkv" in name:  # xavier computed per Q/K/V matrix
                    bound = math.sqrt(6.0 / (module.weight.shape[0] / 3 + module.weight.shape[1]))
                    nn.init.uniform_(module.weight, -bound, bound)
                else:
                    nn.init.xavier_uniform_(module.weight)
                if module.bias is not None:
                    nn.init.zeros_(module.bias)
            elif isinstance(module, nn.LayerNorm):
                nn.init.ones_(module.weight)
                nn.init.zeros_(module.bias)
            elif isinstance(module, nn.Conv2d) and name.endswith(".proj"):
                nn.init.xavier_uniform_(module.weight.view(module.weight.shape[0], -1))
            elif isinstance(module, nn.Embedding):
                nn.init.trunc_normal_(module.weight, std=0.02)
        nn.init.trunc_normal_(self.global_tokens, std=0.02, a=-0.04, b=0.04)

    # ---- introspection ------------------------------------------------------------------------
    @property
    def domains(self) -> list[str]:
        return list(self.input_adapters)

    @property
    def dim(self) -> int:
        return self.config.dim

    @property
    def depth(self) -> int:
        return self.config.depth

    @property
    def patch_size(self) -> int:
        return self.config.patch_size

    @property
    def num_global_tokens(self) -> int:
        return self.config.num_global_tokens

    def token_layout(self, inputs: Mapping[str, Tensor]) -> list[tuple[str, int, int, tuple[int, int]]]:
        """(domain, start, end, (grid_h, grid_w)) of each domain's tokens, in output order.

        The global token(s) follow the last domain: `x[:, -num_global_tokens:]`.
        """
        layout, start = [], 0
        for domain, x in self._as_dict(inputs).items():
            grid = self.input_adapters[domain].token_grid(x)
            layout.append((domain, start, start + grid[0] * grid[1], grid))
            start += grid[0] * grid[1]
        return layout

    # ---- forward ------------------------------------------------------------------------------
    def _as_dict(self, inputs: Mapping[str, Tensor] | Tensor) -> dict[str, Tensor]:
        if isinstance(inputs, Tensor):
            inputs = {"rgb": inputs}
        unknown = [d for d in inputs if d not in self.input_adapters]
        if unknown:
            raise ConfigError(
                f"Input domain(s) {unknown} have no input adapter; this backbone has {self.domains}.",
                hint="pass only the backbone's domains (select the input domains in the recipe/data config)",
            )
        if not inputs:
            raise ConfigError(f"No input given; expected a dict with some of {self.domains}.")
        return dict(inputs)

    def embed(self, inputs: Mapping[str, Tensor] | Tensor) -> Tensor:
        """Input tokens: each domain's tokens in input order, then the global token(s). (B, N + G, D)"""
        parts = [self.input_adapters[d](x) for d, x in self._as_dict(inputs).items()]  # each (B, N_d, D)
        batch = {p.shape[0] for p in parts}
        if len(batch) != 1:
            raise ConfigError(f"Input domains have different batch sizes {sorted(batch)}.")
        global_tokens = self.global_tokens.expand(parts[0].shape[0], -1, -1)  # (B, G, D)
        return torch.cat([*parts, global_tokens], dim=1)

    def forward_blocks(self, x: Tensor, start: int = 0, return_all_layers: bool = False) -> Tensor | list[Tensor]:
        """Runs blocks `start..depth-1` (and the token hooks) on a token sequence (B, N, D)."""
        outputs = []
        for index in range(start, self.config.depth):
            for hook in self.token_hooks:
                x = hook.before_block(index, x)
            x = self._run_block(index, x)  # (B, N', D)
            for hook in reversed(self.token_hooks):
                x = hook.after_block(index, x)
            if return_all_layers:
                outputs.append(x)
        return outputs if return_all_layers else x

    def _run_block(self, index: int, x: Tensor) -> Tensor:
        block = self.encoder[index]
        run = block
        for hook in self.token_hooks:
            if getattr(hook, "runs_block", None) is not None and hook.runs_block(index):
                run = partial(hook.run_block, index, block)
                break
        if self.grad_checkpointing and self.training and torch.is_grad_enabled():
            return checkpoint(run, x, use_reentrant=False)
        return run(x)

    def forward(self, inputs: Mapping[str, Tensor] | Tensor, return_all_layers: bool = False) -> Tensor | list[Tensor]:
        """Encodes a dict of domain inputs (a bare tensor means `{'rgb': x}`).

        Args:
            inputs: rgb/depth as (B, C, H, W) floats; semseg as (B, H/4, W/4) class ids.
            return_all_layers: return a list with every block's output instead of the last one.

        Returns:
            (B, N + G, D) tokens in the official order, or a list of `depth` such tensors.
        """
        return self.forward_blocks(self.embed(inputs), return_all_layers=return_all_layers)

    # ---- freezing and identity ----------------------------------------------------------------
    def freeze(self) -> MultiViT:
        """Sets requires_grad=False on every base parameter (so autograd skips their weight gradients)."""
        for tensor in self._base_tensors.values():
            tensor.requires_grad_(False)
        return self

    def set_grad_checkpointing(self, enable: bool = True) -> None:
        """Recompute block activations in the backward pass: less memory for ~25-35% more time."""
        self.grad_checkpointing = enable

    def base_state_dict(self) -> dict[str, Tensor]:
        """The base (pre-tuner) tensors under their official names, detached."""
        return {name: tensor.detach() for name, tensor in self._base_tensors.items()}

    @property
    def fingerprint(self) -> str:
        """sha256 over the head count, the sorted `name:shape:dtype` list and the bytes of the base tensors.

        What an artifact binds to (the head count changes the computation but is stored in no tensor).
        Recomputed on every access (about 1 s for ViT-B): writes through `.data` (as peft's merge does) leave
        no trace a cache could check, so callers that need it often keep the value.
        """
        items = sorted(self._base_tensors.items())
        digest = hashlib.sha256(f"num_heads:{self.config.num_heads}\n".encode())
        for name, tensor in items:
            digest.update(f"{name}:{list(tensor.shape)}:{str(tensor.dtype).removeprefix('torch.')}\n".encode())
        for _, tensor in items:
            data = tensor.detach().to("cpu").contiguous()
            digest.update(data.view(torch.uint8).numpy().tobytes() if data.numel() else b"")
        return digest.hexdigest()

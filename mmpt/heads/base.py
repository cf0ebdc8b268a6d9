"""The head contract (a Protocol), the `HEADS` registry, and the token selection every dense head shares.

A head turns the tuner's token list into a dense map. It is an `nn.Module` registered by name with a
dataclass config (so an artifact stores it as JSON: `head_config = {"name": ..., **config}`) and:

- `layers`: the block indices whose outputs it needs (pass them to `tuner(inputs, layers=head.layers)`);
- `forward(tokens, layout) -> (B, C, H, W)`: `tokens` is that list, each (B, N + G, D) in the official
  order; `layout` is `backbone.token_layout(inputs)`, one `(domain, start, end, (grid_h, grid_w))` per
  input domain. The global token(s) follow the last domain and are not part of any layout entry.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, ClassVar, Protocol, runtime_checkable

from torch import Tensor

from mmpt.errors import ConfigError
from mmpt.registry import ComponentConfig, Registry

Layout = Sequence[tuple[str, int, int, tuple[int, int]]]


@dataclass
class HeadConfig(ComponentConfig):
    """Base of every head config (see `ComponentConfig`)."""


@runtime_checkable
class Head(Protocol):
    """What every head provides (see the module docstring)."""

    name: ClassVar[str]
    config_class: ClassVar[type[HeadConfig]]
    config: HeadConfig
    layers: list[int]

    def forward(self, tokens: list[Tensor], layout: Layout) -> Tensor: ...


HEADS: Registry[type] = Registry("head")


register_head = HEADS.register_class  # class decorator: @register_head("linear")


def head_config_dict(head: Head) -> dict[str, Any]:
    """`{"name": ..., **config}`: what an artifact stores as `head_config` and `build_head(**...)` rebuilds."""
    return {"name": head.name, **head.config.to_dict()}


def domain_tokens(x: Tensor, layout: Layout, domains: Sequence[str]) -> tuple[list[Tensor], tuple[int, int]]:
    """The tokens of `domains` in one block output, and their common patch grid.

    Args:
        x: (B, N + G, D) block output in the official layout.
        layout: `backbone.token_layout(inputs)`.
        domains: which domains' tokens to take, in this order (the official heads concatenate them on channels).

    Returns:
        One (B, h * w, D) tensor per domain, and (h, w).
    """
    entries = {entry[0]: entry for entry in layout}
    if missing := [d for d in domains if d not in entries]:
        raise ConfigError(
            f"The head reads domain(s) {missing}, but the input holds {list(entries)}.",
            hint="feed those domains, or set the head's `domains` to ones the input has",
        )
    grids = {entries[d][3] for d in domains}
    if len(grids) != 1:
        raise ConfigError(f"Domains {list(domains)} have different token grids {sorted(grids)}; a head needs one.")
    return [x[:, entries[d][1] : entries[d][2]] for d in domains], grids.pop()

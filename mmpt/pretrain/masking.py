"""Multi-modal token masking for MultiMAE pretraining (paper §3.3, `reference/multimae.md` §1.4).

Every sample keeps exactly `num_encoded_tokens` visible tokens in total. How many of them each input
domain gets is drawn per sample from a symmetric (or per-domain) Dirichlet(α): small α makes samples
that show mostly one domain, α = 1 (the paper) spreads shares uniformly over the simplex. Within a domain
the visible tokens are a uniformly random subset.

Differences from the official implementation, on purpose:
- The official code rounds `share * num_encoded_tokens` per domain, so the per-domain counts may sum to
  one token more or less than the budget (and may exceed a domain's token count); the encoder then takes
  the first `num_encoded_tokens` of a shuffled order, so the returned masks can disagree with what was
  encoded. Here counts are apportioned by largest remainders, capped at each domain's size, and always sum
  to the budget, so the masks are exactly the complement of `ids_keep`.
- With explicit task masks, the official forward keeps `(mask_all == 0).sum()` tokens summed over the whole
  batch, which is only right for batch size 1. `masks_from_visible` takes explicit masks for any batch
  size and refuses masks whose samples keep different numbers of tokens (they cannot share one tensor).
- Kept tokens are listed in their original order (a stable sort), not a random one: attention is
  permutation-equivariant, so this changes nothing numerically but makes `ids_keep` readable.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor

from mmpt.errors import ConfigError


@dataclass
class TokenMask:
    """Which tokens of a multi-domain sequence the encoder sees.

    Token positions refer to the concatenation of the domains' tokens in `domains` order (the encoder
    input order, without global tokens).

    Attributes:
        domains: domain names, in token order.
        num_tokens: tokens per domain (grid_h * grid_w), in the same order.
        ids_keep: (B, K) positions of the visible tokens, ascending.
        ids_restore: (B, N) where each position went in `[kept tokens..., masked tokens...]`: gathering that
            sequence with `ids_restore` puts every token back in place.
        masked: domain → (B, N_d) bool, True where the token is hidden (what the losses are computed on).
        counts: (B, T) visible tokens per domain; each row sums to K.
    """

    domains: list[str]
    num_tokens: list[int]
    ids_keep: Tensor
    ids_restore: Tensor
    masked: dict[str, Tensor]
    counts: Tensor

    @property
    def num_encoded_tokens(self) -> int:
        return self.ids_keep.shape[1]

    def to(self, device: torch.device | str) -> TokenMask:
        """The same mask with every tensor on `device`."""
        return TokenMask(
            self.domains,
            self.num_tokens,
            self.ids_keep.to(device),
            self.ids_restore.to(device),
            {d: m.to(device) for d, m in self.masked.items()},
            self.counts.to(device),
        )


def apportion(shares: Tensor, total: int, caps: Tensor) -> Tensor:
    """Integer counts per domain that sum to `total`, close to `shares * total`, never above `caps`.

    Largest-remainder rounding; tokens a full domain cannot take go to the domains furthest below their
    ideal count (water filling), so the budget is always met when `total <= caps.sum()`.

    Args:
        shares: (B, T) non-negative rows summing to 1.
        total: tokens to distribute per row.
        caps: (T,) tokens available per domain.

    Returns:
        (B, T) int64 counts.
    """
    if total > int(caps.sum()):
        raise ValueError(f"cannot place {total} tokens in domains of sizes {caps.tolist()}")
    ideal = shares.double() * total  # (B, T)
    caps = caps.to(torch.int64).expand_as(ideal)
    counts = torch.minimum(ideal.floor().to(torch.int64), caps)
    rows = torch.arange(ideal.shape[0])
    # Each pass hands one token to the domain most below its ideal that still has room. The number of
    # passes is the largest deficit: < T without caps, at most `total` when a domain overflows.
    while (deficit := total - counts.sum(1)).any():
        priority = (ideal - counts).masked_fill(counts >= caps, -torch.inf)
        counts[rows, priority.argmax(1)] += (deficit > 0).to(torch.int64)
    return counts


def _from_visible(domains: list[str], num_tokens: list[int], visible: Tensor, counts: Tensor) -> TokenMask:
    """Builds a TokenMask from a (B, N) bool visibility map whose rows all hold K visible tokens."""
    # Stable sort on "is masked": visible tokens first, each group in its original order.
    ids_shuffle = torch.argsort((~visible).to(torch.int8), dim=1, stable=True)  # (B, N)
    ids_restore = torch.argsort(ids_shuffle, dim=1)  # (B, N)
    k = int(visible[0].sum())
    masked = dict(zip(domains, (~visible).split(num_tokens, dim=1), strict=True))
    return TokenMask(domains, num_tokens, ids_shuffle[:, :k], ids_restore, masked, counts)


def sample_token_masks(
    num_tokens: Mapping[str, int],
    batch_size: int,
    num_encoded_tokens: int,
    alpha: float | Sequence[float] = 1.0,
    *,
    seed: int | None = None,
    device: torch.device | str = "cpu",
) -> TokenMask:
    """Draws a multi-modal mask: per sample, Dirichlet(α) shares of the visible budget, then random tokens.

    Args:
        num_tokens: domain → number of tokens, in encoder input order.
        batch_size: B.
        num_encoded_tokens: visible tokens per sample, K (1 <= K <= total tokens).
        alpha: Dirichlet concentration, one value for all domains or one per domain (> 0).
        seed: makes the draw a pure function of the seed (the pretraining loop passes one per step, so a
            resumed run draws the same masks); None draws the seed from torch's global RNG.
        device: where the returned tensors live (the draw itself runs on the CPU, so it is identical on
            every device).

    Returns:
        The mask; exactly K tokens are visible in every sample.

    Raises:
        ConfigError: K out of range or a non-positive α.

    Example:
        >>> mask = sample_token_masks({"rgb": 64, "depth": 64, "semseg": 64}, 8, 48, alpha=1.0, seed=0)
        >>> mask.ids_keep.shape, mask.counts.sum(1).unique().item()
        (torch.Size([8, 48]), 48)
    """
    domains, sizes = list(num_tokens), [int(n) for n in num_tokens.values()]
    total = sum(sizes)
    if not 0 < num_encoded_tokens <= total:
        raise ConfigError(
            f"num_encoded_tokens={num_encoded_tokens} is out of range; expected 1..{total} (the inputs have "
            f"{dict(zip(domains, sizes, strict=True))} tokens).",
            hint="the paper keeps about 1/6 of the tokens visible (98 of 3x196)",
        )
    alphas = [float(alpha)] * len(domains) if isinstance(alpha, int | float) else [float(a) for a in alpha]
    if len(alphas) != len(domains) or min(alphas) <= 0:
        raise ConfigError(f"alpha={alpha!r} is invalid; expected a positive number or one per domain {domains}.")
    if seed is None:
        seed = int(torch.randint(0, 2**62, ()).item())
    shares = torch.from_numpy(np.random.default_rng(seed).dirichlet(alphas, size=batch_size))  # (B, T)
    counts = apportion(shares, num_encoded_tokens, torch.tensor(sizes))  # (B, T)
    gen = torch.Generator().manual_seed(seed)
    parts = []
    for i, size in enumerate(sizes):
        # A token's rank in a random permutation; the `count` lowest ranks are a uniform random subset.
        rank = torch.argsort(torch.rand(batch_size, size, generator=gen), dim=1).argsort(dim=1)  # (B, N_d)
        parts.append(rank < counts[:, i : i + 1])
    mask = _from_visible(domains, sizes, torch.cat(parts, dim=1), counts)
    return mask.to(device)


def masks_from_visible(visible: Mapping[str, Tensor]) -> TokenMask:
    """A TokenMask from explicit per-domain visibility maps (True = the encoder sees the token).

    Correct for any batch size, unlike the official explicit-mask path (see the module docstring).

    Args:
        visible: domain → (B, N_d) bool, in encoder input order.

    Raises:
        ConfigError: the samples keep different numbers of tokens, or none at all.
    """
    domains = list(visible)
    parts = [v.to(torch.bool) for v in visible.values()]
    flat = torch.cat(parts, dim=1)  # (B, N)
    kept = flat.sum(1)
    if kept.min() != kept.max() or kept.min() == 0:
        raise ConfigError(
            f"explicit masks keep {kept.tolist()} tokens per sample; expected the same positive number in every "
            "sample (one encoder batch holds one sequence length).",
            hint="give every sample the same visible budget, or run the samples one at a time",
        )
    counts = torch.stack([p.sum(1) for p in parts], dim=1)  # (B, T)
    return _from_visible(domains, [p.shape[1] for p in parts], flat, counts)

"""The MultiMAE pretraining decoder: one `SpatialOutputAdapter` per reconstructed domain.

Written from the documented semantics (`reference/multimae.md` §2, §3.1), not from the official code. The
parameter names are the release's, so a pretraining model saves to (and loads from) the official layout:
`mask_token, pos_emb, task_embeddings.<d>, decoder.{q,kv,proj}, {context,query,out}_norm, mlp.fc{1,2},
decoder_transformer.<i>, out_proj, proj_context` (49 tensors with two decoder blocks and three input
domains).

Decoding one domain, for a batch whose encoder saw only some tokens:
1. project the visible encoder tokens (and the global tokens) to the decoder width (`proj_context`);
2. put them back in place, with `mask_token` at every hidden position;
3. add to each input domain's slice the decoder's own position table (resized bilinearly to that
   domain's grid) and that domain's task embedding;
4. queries = the slice of the decoded domain itself (hidden positions are mask tokens), or mask tokens
   plus positions when the domain is not an input (e.g. `norm_rgb`);
5. one cross-attention from the queries to the *visible* context tokens plus the global tokens (no
   residual around it), then `x = x + mlp(out_norm(x))`, then `depth` transformer blocks over the queries;
6. `out_proj` predicts each token's C x P x P pixels, which are put back into an image.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from functools import partial

import torch
import torch.nn.functional as F
from timm.layers import Mlp
from timm.models.vision_transformer import Block
from torch import Tensor, nn

from mmpt.backbone.adapters import resize_pos_emb, sincos_pos_emb
from mmpt.pretrain.masking import TokenMask

_LayerNorm = partial(nn.LayerNorm, eps=1e-6)


class CrossAttention(nn.Module):
    """Multi-head attention of queries (B, Nq, D) over a context (B, Nc, D); official names `q`, `kv`, `proj`.

    Args:
        dim: token width.
        num_heads: attention heads (dim must be divisible by it).
        qkv_bias: biases on the q and kv projections.
    """

    def __init__(self, dim: int, num_heads: int, qkv_bias: bool = True) -> None:
        super().__init__()
        if dim % num_heads:
            raise ValueError(f"decoder num_heads={num_heads} does not divide its dim={dim}")
        self.num_heads = num_heads
        self.q = nn.Linear(dim, dim, bias=qkv_bias)
        self.kv = nn.Linear(dim, 2 * dim, bias=qkv_bias)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x: Tensor, context: Tensor) -> Tensor:
        b, nq, d = x.shape
        nc, h = context.shape[1], self.num_heads
        q = self.q(x).reshape(b, nq, h, d // h).transpose(1, 2)  # (B, h, Nq, d/h)
        k, v = self.kv(context).reshape(b, nc, 2, h, d // h).permute(2, 0, 3, 1, 4)  # each (B, h, Nc, d/h)
        out = F.scaled_dot_product_attention(q, k, v)  # (B, h, Nq, d/h), scale (d/h)**-0.5
        return self.proj(out.transpose(1, 2).reshape(b, nq, d))


class SpatialOutputAdapter(nn.Module):
    """Reconstructs one domain as an image from a partly visible multi-domain token sequence.

    Args:
        domain: the domain decoded (e.g. "rgb", "norm_rgb", "depth", "semseg").
        num_channels: output channels (3 rgb, 1 depth, the number of classes for semseg logits).
        patch_size: encoder patch size in full-resolution pixels.
        stride_level: output resolution divisor (4 for semseg, whose maps are at 1/4 resolution).
        dim_tokens_enc: encoder token width.
        context_domains: the encoder's input domains (one task embedding each).
        grid: position-table grid (h, w) in tokens (image_size // patch_size).
        dim: decoder width (256 in the release).
        depth: decoder transformer blocks after the cross-attention (2 in the release).
        num_heads: decoder attention heads (8 in the release).
        mlp_ratio: hidden width of the MLPs relative to `dim`.
    """

    def __init__(
        self,
        domain: str,
        num_channels: int,
        patch_size: int,
        dim_tokens_enc: int,
        context_domains: Sequence[str],
        grid: tuple[int, int],
        *,
        stride_level: int = 1,
        dim: int = 256,
        depth: int = 2,
        num_heads: int = 8,
        mlp_ratio: float = 4.0,
    ) -> None:
        super().__init__()
        if patch_size % stride_level:
            raise ValueError(f"patch_size={patch_size} is not divisible by stride_level={stride_level}")
        self.domain, self.num_channels = domain, num_channels
        self.patch = patch_size // stride_level  # output pixels per token side
        self.mask_token = nn.Parameter(torch.zeros(1, 1, dim))
        # Fixed sin-cos table, stored like the release's but not trained (official default).
        self.pos_emb = nn.Parameter(sincos_pos_emb(tuple(grid), dim), requires_grad=False)  # (1, dim, h, w)
        self.task_embeddings = nn.ParameterDict({d: nn.Parameter(torch.zeros(1, 1, dim)) for d in context_domains})
        self.decoder = CrossAttention(dim, num_heads)
        self.context_norm, self.query_norm, self.out_norm = _LayerNorm(dim), _LayerNorm(dim), _LayerNorm(dim)
        self.mlp = Mlp(dim, hidden_features=int(dim * mlp_ratio))
        self.decoder_transformer = nn.Sequential(
            *[Block(dim, num_heads, mlp_ratio=mlp_ratio, qkv_bias=True, norm_layer=_LayerNorm) for _ in range(depth)]
        )
        self.out_proj = nn.Linear(dim, num_channels * self.patch**2)
        self.proj_context = nn.Linear(dim_tokens_enc, dim)
        self.init_weights()

    def init_weights(self) -> None:
        """Official initialisation: xavier Linears (fans per Q/K/V in `qkv`, per K/V in `kv`), zero biases,
        unit LayerNorms, trunc-normal(0.02) mask token and task embeddings."""
        for name, module in self.named_modules():
            if isinstance(module, nn.Linear):
                parts = 3 if name.endswith("qkv") else 2 if name.endswith("kv") else 1
                bound = math.sqrt(6.0 / (module.weight.shape[0] / parts + module.weight.shape[1]))
                nn.init.uniform_(module.weight, -bound, bound)
                if module.bias is not None:
                    nn.init.zeros_(module.bias)
            elif isinstance(module, nn.LayerNorm):
                nn.init.ones_(module.weight)
                nn.init.zeros_(module.bias)
        for param in [self.mask_token, *self.task_embeddings.values()]:
            nn.init.trunc_normal_(param, std=0.02, a=-0.04, b=0.04)

    def _positions(self, grid: tuple[int, int]) -> Tensor:
        return resize_pos_emb(self.pos_emb, grid, "bilinear").flatten(2).transpose(1, 2)  # (1, h*w, dim)

    def forward(
        self,
        encoder_tokens: Tensor,
        mask: TokenMask,
        grids: Sequence[tuple[int, int]],
        out_grid: tuple[int, int],
        num_global_tokens: int,
    ) -> Tensor:
        """Decodes this adapter's domain.

        Args:
            encoder_tokens: (B, K + G, D_enc) encoder output: the K visible tokens in `mask.ids_keep` order,
                then the G global tokens.
            mask: the mask the encoder input was built with.
            grids: token grid (h, w) of each domain in `mask.domains`.
            out_grid: token grid of the output image.
            num_global_tokens: G.

        Returns:
            (B, C, out_h * P, out_w * P) with P = patch_size // stride_level.
        """
        x = self.proj_context(encoder_tokens)  # (B, K + G, dim)
        b, k, dim = x.shape[0], mask.num_encoded_tokens, x.shape[2]
        visible, global_tokens = x[:, :k], x[:, k:]  # (B, K, dim), (B, G, dim)
        if global_tokens.shape[1] != num_global_tokens:
            raise ValueError(
                f"{x.shape[1]} encoder tokens do not match a mask keeping {k} + {num_global_tokens} global"
            )
        n = sum(mask.num_tokens)
        # Every position back in place: visible tokens, then mask tokens, unshuffled with ids_restore.
        full = torch.cat([visible, self.mask_token.expand(b, n - k, dim)], dim=1)  # (B, N, dim)
        full = torch.gather(full, 1, mask.ids_restore.unsqueeze(-1).expand(-1, -1, dim))  # (B, N, dim)
        pieces = full.split(mask.num_tokens, dim=1)
        context = torch.cat(
            [
                p + self._positions(g) + self.task_embeddings[d]
                for p, g, d in zip(pieces, grids, mask.domains, strict=True)
            ],
            dim=1,
        )  # (B, N, dim)
        if self.domain in mask.domains:  # task queries: the domain's own slice, mask tokens where hidden
            i = mask.domains.index(self.domain)
            start = sum(mask.num_tokens[:i])
            queries = context[:, start : start + mask.num_tokens[i]]  # (B, N_d, dim)
        else:
            queries = self.mask_token + self._positions(out_grid)  # (1, h*w, dim)
            if self.domain in self.task_embeddings:
                queries = queries + self.task_embeddings[self.domain]
            queries = queries.expand(b, -1, -1)
        # The cross-attention sees only what the encoder saw (visible tokens + global), not mask tokens.
        seen = torch.gather(context, 1, mask.ids_keep.unsqueeze(-1).expand(-1, -1, dim))  # (B, K, dim)
        seen = torch.cat([seen, global_tokens], dim=1)  # (B, K + G, dim)
        y = self.decoder(self.query_norm(queries), self.context_norm(seen))  # (B, Nq, dim), no residual
        y = y + self.mlp(self.out_norm(y))
        y = self.out_proj(self.decoder_transformer(y))  # (B, h*w, C*P*P)
        return unpatchify(y, out_grid, self.num_channels, self.patch)


def unpatchify(tokens: Tensor, grid: tuple[int, int], channels: int, patch: int) -> Tensor:
    """(B, h*w, C*P*P) per-token predictions, channel-major within a token → (B, C, h*P, w*P)."""
    b, (h, w) = tokens.shape[0], grid
    x = tokens.reshape(b, h, w, channels, patch, patch)
    return x.permute(0, 3, 1, 4, 2, 5).reshape(b, channels, h * patch, w * patch)

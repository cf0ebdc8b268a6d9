"""An independent, deliberately naive MultiViT written from `reference/multimae.md` §1 (not from mmpt).

Explicit softmax attention, the official sin-cos builder (meshgrid over (w, h), then '(h w) d -> d h w'),
and position tables interpolated in every forward (even to the same size), exactly as the official
forward does. mmpt's MultiViT must match it within 1e-5 (fp32).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor


def official_sincos(h: int, w: int, dim: int, temperature: float = 10000.0) -> Tensor:
    """`build_2d_sincos_posemb` as described in §1.2, including its (w, h) grid order."""
    grid_w = torch.arange(w, dtype=torch.float32)
    grid_h = torch.arange(h, dtype=torch.float32)
    gw, gh = torch.meshgrid(grid_w, grid_h, indexing="ij")  # (w, h)
    pos_dim = dim // 4
    omega = 1.0 / temperature ** (torch.arange(pos_dim, dtype=torch.float32) / pos_dim)
    out_w = gw.flatten()[:, None] * omega[None]
    out_h = gh.flatten()[:, None] * omega[None]
    emb = torch.cat([out_w.sin(), out_w.cos(), out_h.sin(), out_h.cos()], dim=1)  # (w*h, D)
    return emb.reshape(h, w, dim).permute(2, 0, 1)[None]  # '(h w) d -> d h w' on the flat (w, h) order


def _layer_norm(x: Tensor, sd: dict, prefix: str) -> Tensor:
    mean = x.mean(-1, keepdim=True)
    var = ((x - mean) ** 2).mean(-1, keepdim=True)
    return (x - mean) / torch.sqrt(var + 1e-6) * sd[prefix + ".weight"] + sd[prefix + ".bias"]


def _linear(x: Tensor, sd: dict, prefix: str) -> Tensor:
    out = x @ sd[prefix + ".weight"].T
    return out + sd[prefix + ".bias"] if prefix + ".bias" in sd else out


def _block(x: Tensor, sd: dict, prefix: str, num_heads: int) -> Tensor:
    B, N, D = x.shape
    h = _layer_norm(x, sd, prefix + ".norm1")
    qkv = _linear(h, sd, prefix + ".attn.qkv").reshape(B, N, 3, num_heads, D // num_heads).permute(2, 0, 3, 1, 4)
    q, k, v = qkv[0], qkv[1], qkv[2]  # (B, heads, N, hd)
    attn = (q @ k.transpose(-2, -1)) * (D // num_heads) ** -0.5
    attn = attn.softmax(dim=-1)
    out = (attn @ v).transpose(1, 2).reshape(B, N, D)
    x = x + _linear(out, sd, prefix + ".attn.proj")
    h = _layer_norm(x, sd, prefix + ".norm2")
    h = _linear(h, sd, prefix + ".mlp.fc1")
    h = 0.5 * h * (1.0 + torch.erf(h / math.sqrt(2.0)))  # exact GELU
    return x + _linear(h, sd, prefix + ".mlp.fc2")


def _patched_tokens(x: Tensor, sd: dict, domain: str) -> Tensor:
    weight = sd[f"input_adapters.{domain}.proj.weight"]
    p = weight.shape[-1]
    tokens = F.conv2d(x, weight, sd[f"input_adapters.{domain}.proj.bias"], stride=p)  # (B, D, nh, nw)
    pos = F.interpolate(
        sd[f"input_adapters.{domain}.pos_emb"], size=tokens.shape[-2:], mode="bicubic", align_corners=False
    )
    return (tokens + pos).flatten(2).transpose(1, 2)


def _semseg_tokens(x: Tensor, sd: dict, domain: str) -> Tensor:
    emb = sd[f"input_adapters.{domain}.class_emb.weight"][x]  # (B, H', W', 64)
    weight = sd[f"input_adapters.{domain}.proj.weight"]
    p = weight.shape[-1]
    tokens = F.conv2d(emb.permute(0, 3, 1, 2), weight, sd[f"input_adapters.{domain}.proj.bias"], stride=p)
    pos = F.interpolate(
        sd[f"input_adapters.{domain}.pos_emb"], size=tokens.shape[-2:], mode="bilinear", align_corners=False
    )
    return (tokens + pos).flatten(2).transpose(1, 2)


def reference_forward(state: dict[str, Tensor], inputs: dict[str, Tensor], num_heads: int) -> list[Tensor]:
    """Every block's output for `inputs`, computed naively from an official-format state dict."""
    parts = []
    for domain, x in inputs.items():
        if f"input_adapters.{domain}.class_emb.weight" in state:
            parts.append(_semseg_tokens(x, state, domain))
        else:
            parts.append(_patched_tokens(x, state, domain))
    x = torch.cat([*parts, state["global_tokens"].expand(parts[0].shape[0], -1, -1)], dim=1)
    depth = 1 + max(int(k.split(".")[1]) for k in state if k.startswith("encoder."))
    outputs = []
    for i in range(depth):
        x = _block(x, state, f"encoder.{i}", num_heads)
        outputs.append(x)
    return outputs


def resize_tables_at_load(state: dict[str, Tensor], grid: tuple[int, int]) -> dict[str, Tensor]:
    """The official fine-tuning load step: every pos_emb resized bicubic to the model's grid (§3.3 step 5)."""
    out = dict(state)
    for key in [k for k in state if k.endswith("pos_emb") and k.startswith("input_adapters.")]:
        out[key] = F.interpolate(state[key], size=grid, mode="bicubic", align_corners=False)
    return out

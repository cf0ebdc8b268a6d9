"""Tiny checkpoints in the exact official layouts, for tests, demos and docs.

python -m mmpt.testing tiny.pth            # official MultiViT release layout, decoders included
mmpt inspect tiny.pth --num-heads 4
"""

from __future__ import annotations

import argparse
import tempfile
from collections.abc import Sequence
from pathlib import Path

import torch
from torch import Tensor

from mmpt.backbone.checkpoint import save_safetensors
from mmpt.backbone.multivit import DomainSpec, MultiViT, MultiViTConfig

_CHANNELS = {"rgb": 3, "depth": 1}


def tiny_config(
    *,
    dim: int = 64,
    depth: int = 2,
    num_heads: int = 4,
    patch_size: int = 16,
    domains: Sequence[str] = ("rgb", "depth", "semseg"),
    num_classes: int = 133,
    image_size: int = 224,
) -> MultiViTConfig:
    """A MultiViTConfig with the official domain definitions at a tiny size."""
    specs = {
        d: DomainSpec("semseg", num_classes=num_classes) if d == "semseg" else DomainSpec(channels=_CHANNELS.get(d, 1))
        for d in domains
    }
    grid = (image_size // patch_size, image_size // patch_size)
    return MultiViTConfig(domains=specs, dim=dim, depth=depth, num_heads=num_heads, patch_size=patch_size, grid=grid)


def _decoder_state(domain: str, config: MultiViTConfig, gen: torch.Generator, dec_dim: int = 32) -> dict[str, Tensor]:
    """Random tensors with the official SpatialOutputAdapter key names and shapes (multimae.md §2, §3.1)."""
    out_dim = {
        "rgb": 3 * config.patch_size**2,
        "norm_rgb": 3 * config.patch_size**2,
        "depth": config.patch_size**2,
        "semseg": config.domains["semseg"].num_classes * 16 if "semseg" in config.domains else 0,
    }[domain]
    shapes: dict[str, tuple[int, ...]] = {
        "mask_token": (1, 1, dec_dim),
        "pos_emb": (1, dec_dim, *config.grid),
        **{f"task_embeddings.{d}": (1, 1, dec_dim) for d in config.domains},
        "decoder.q.weight": (dec_dim, dec_dim),
        "decoder.q.bias": (dec_dim,),
        "decoder.kv.weight": (2 * dec_dim, dec_dim),
        "decoder.kv.bias": (2 * dec_dim,),
        "decoder.proj.weight": (dec_dim, dec_dim),
        "decoder.proj.bias": (dec_dim,),
        **{f"{n}_norm.{p}": (dec_dim,) for n in ("context", "query", "out") for p in ("weight", "bias")},
        "mlp.fc1.weight": (4 * dec_dim, dec_dim),
        "mlp.fc1.bias": (4 * dec_dim,),
        "mlp.fc2.weight": (dec_dim, 4 * dec_dim),
        "mlp.fc2.bias": (dec_dim,),
    }
    block = {
        "norm1.weight": (dec_dim,),
        "norm1.bias": (dec_dim,),
        "attn.qkv.weight": (3 * dec_dim, dec_dim),
        "attn.qkv.bias": (3 * dec_dim,),
        "attn.proj.weight": (dec_dim, dec_dim),
        "attn.proj.bias": (dec_dim,),
        "norm2.weight": (dec_dim,),
        "norm2.bias": (dec_dim,),
        "mlp.fc1.weight": (4 * dec_dim, dec_dim),
        "mlp.fc1.bias": (4 * dec_dim,),
        "mlp.fc2.weight": (dec_dim, 4 * dec_dim),
        "mlp.fc2.bias": (dec_dim,),
    }
    for i in range(2):
        shapes.update({f"decoder_transformer.{i}.{k}": s for k, s in block.items()})
    shapes.update(
        {
            "out_proj.weight": (out_dim, dec_dim),
            "out_proj.bias": (out_dim,),
            "proj_context.weight": (dec_dim, config.dim),
            "proj_context.bias": (dec_dim,),
        }
    )
    return {f"output_adapters.{domain}.{k}": torch.randn(s, generator=gen) * 0.02 for k, s in shapes.items()}


def _randomized(model: MultiViT, gen: torch.Generator) -> dict[str, Tensor]:
    """The model's state with every tensor perturbed, so that biases, norms and tokens are non-trivial."""
    state = {}
    for key, value in model.state_dict().items():
        noise = torch.randn(value.shape, generator=gen) * 0.05
        state[key] = value + noise if value.is_floating_point() else value
    return state


def make_tiny_checkpoint(
    path: str | Path,
    *,
    dim: int = 64,
    depth: int = 2,
    num_heads: int = 4,
    patch_size: int = 16,
    domains: Sequence[str] = ("rgb", "depth", "semseg"),
    num_classes: int = 133,
    seed: int = 0,
    fmt: str = "multivit",
) -> Path:
    """Writes a tiny MultiMAE checkpoint in an official layout.

    Args:
        path: destination file.
        dim, depth, num_heads, patch_size: encoder size (heads are stored only by the safetensors format).
        domains: input domains (official definitions: rgb 3 channels, depth 1, semseg class ids).
        num_classes: semseg input classes (133 in the official release).
        seed: weights are a deterministic function of the seed.
        fmt: "multivit" (`{'model': sd}` with pretraining decoders, like the release), "timm" (the official
            converter's output: cls token + zero pos row, RGB only) or "safetensors" (mmpt's format).

    Returns:
        The path written.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    gen = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    config = tiny_config(
        dim=dim, depth=depth, num_heads=num_heads, patch_size=patch_size, domains=domains, num_classes=num_classes
    )
    model = MultiViT(config)
    state = _randomized(model, gen)
    if fmt == "safetensors":
        model.load_state_dict(state)
        return save_safetensors(model, path, name=path.stem)
    if fmt == "timm":
        pos = state["input_adapters.rgb.pos_emb"].flatten(2).transpose(1, 2)  # (1, h*w, D)
        timm_state = {
            "cls_token": state["global_tokens"],
            "pos_embed": torch.cat([torch.zeros(1, 1, dim), pos], dim=1),  # (1, 1 + h*w, D), zero cls row
            "patch_embed.proj.weight": state["input_adapters.rgb.proj.weight"],
            "patch_embed.proj.bias": state["input_adapters.rgb.proj.bias"],
            **{"blocks." + k.removeprefix("encoder."): v for k, v in state.items() if k.startswith("encoder.")},
        }
        torch.save({"model": timm_state}, path)
        return path
    if fmt != "multivit":
        raise ValueError(f"fmt must be 'multivit', 'timm' or 'safetensors'; got {fmt!r}")
    decoders = [d for d in ("rgb", "depth", "semseg", "norm_rgb") if d in config.domains or d == "norm_rgb"]
    if "rgb" not in config.domains:
        decoders.remove("norm_rgb")
    release = {"global_tokens": state["global_tokens"]}  # the release's key order
    release.update({k: v for k, v in state.items() if k.startswith("input_adapters.")})
    for domain in decoders:
        release.update(_decoder_state(domain, config, gen))
    release.update({k: v for k, v in state.items() if k.startswith("encoder.")})
    torch.save({"model": release}, path)
    return path


def tiny_backbone(*, image_size: int | None = None, freeze: bool = True, **kwargs) -> MultiViT:
    """A tiny backbone loaded through `load_backbone` from a tiny checkpoint (kwargs: `make_tiny_checkpoint`)."""
    from mmpt.backbone.load import load_backbone

    with tempfile.TemporaryDirectory() as tmp:
        path = make_tiny_checkpoint(Path(tmp) / "tiny.pth", **kwargs)
        domains = kwargs.get("domains")
        return load_backbone(
            path,
            num_heads=kwargs.get("num_heads", 4),
            image_size=image_size,
            freeze=freeze,
            domains=list(domains) if domains else None,
        )


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m mmpt.testing", description="Write a tiny MultiMAE checkpoint.")
    parser.add_argument("path", type=Path)
    parser.add_argument("--fmt", choices=("multivit", "timm", "safetensors"), default="multivit")
    parser.add_argument("--dim", type=int, default=64)
    parser.add_argument("--depth", type=int, default=2)
    parser.add_argument("--num-heads", type=int, default=4)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    path = make_tiny_checkpoint(
        args.path, fmt=args.fmt, dim=args.dim, depth=args.depth, num_heads=args.num_heads, seed=args.seed
    )
    print(f"wrote {path} ({path.stat().st_size:,} bytes); try: mmpt inspect {path} --num-heads {args.num_heads}")


if __name__ == "__main__":
    main()

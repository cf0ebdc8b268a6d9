"""`MultiMAE`: the masked multi-modal autoencoder used for pretraining (paper §3, `reference/multimae.md` §1.4, §2).

The encoder is mmpt's `MultiViT` itself (not a copy), so what pretraining trains is exactly what
`load_backbone` later rebuilds. `release_state_dict()` writes the official release layout
(`global_tokens, input_adapters.*, output_adapters.*, encoder.*`), whose decoders `load_backbone` skips.

Losses (the official criteria, computed on hidden tokens only, averaged per sample, then over the
samples that have any hidden pixel — the official "mean per sample, then nanmean"):
- `rgb`: MSE on ImageNet-normalised pixels; by default on patch-normalised pixels (each patch to zero mean,
  unit variance, as MAE's `norm_pix_loss`), unless a `norm_rgb` decoder is present: then `rgb` regresses the
  plain pixels and `norm_rgb` the patch-normalised ones, as in the release's four decoders.
- `depth`: L1 on the (standardised) depth input, only on valid pixels (sensor holes carry no target; the
  official pretraining used dense pseudo-labels and had none).
- `semseg`: cross-entropy at 1/4 resolution; pixels of the class `semseg_ignore_index` (unlabeled) carry
  no target.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from mmpt.backbone.multivit import MultiViT, MultiViTConfig
from mmpt.errors import CheckpointError, ConfigError
from mmpt.pretrain.decoders import SpatialOutputAdapter
from mmpt.pretrain.masking import TokenMask

OUTPUTS = ("rgb", "norm_rgb", "depth", "semseg")


@dataclass
class DecoderConfig:
    """Size of every pretraining decoder (the release: dim 256, depth 2, 8 heads)."""

    dim: int = 256
    depth: int = 2
    num_heads: int = 8
    mlp_ratio: float = 4.0


class MultiMAE(nn.Module):
    """A MultiViT encoder plus one spatial decoder per reconstructed domain.

    Args:
        encoder: the MultiViT architecture (its domains are the inputs).
        outputs: decoded domains: input domains, plus "norm_rgb" when rgb is an input.
        decoder: decoder size.
        semseg_ignore_index: semseg class id that gets no loss (e.g. "unlabeled"); None: every pixel counts.
        loss_weights: domain → weight of its loss in the total (default 1 each).
    """

    def __init__(
        self,
        encoder: MultiViTConfig,
        *,
        outputs: Sequence[str] | None = None,
        decoder: DecoderConfig | None = None,
        semseg_ignore_index: int | None = None,
        loss_weights: Mapping[str, float] | None = None,
    ) -> None:
        super().__init__()
        decoder = decoder or DecoderConfig()
        outputs = list(outputs if outputs is not None else encoder.domains)
        allowed = [*encoder.domains, *(["norm_rgb"] if "rgb" in encoder.domains else [])]
        if bad := [o for o in outputs if o not in allowed or o not in OUTPUTS]:
            raise ConfigError(
                f"cannot decode {bad}; with inputs {list(encoder.domains)} the outputs are among {allowed}."
            )
        self.backbone = MultiViT(encoder)
        self.semseg_ignore_index = semseg_ignore_index
        self.loss_weights = {o: float((loss_weights or {}).get(o, 1.0)) for o in outputs}
        self.norm_pix_rgb = "norm_rgb" not in outputs  # rgb regresses patch-normalised pixels unless norm_rgb does
        adapters = {}
        for name in outputs:
            spec = encoder.domains.get(name)
            semseg = spec is not None and spec.kind == "semseg"
            channels = spec.num_classes if semseg else (3 if name == "norm_rgb" else spec.channels)
            adapters[name] = SpatialOutputAdapter(
                name,
                channels,
                encoder.patch_size,
                encoder.dim,
                list(encoder.domains),
                encoder.grid,
                stride_level=4 if semseg else 1,
                dim=decoder.dim,
                depth=decoder.depth,
                num_heads=decoder.num_heads,
                mlp_ratio=decoder.mlp_ratio,
            )
        self.output_adapters = nn.ModuleDict(adapters)

    @property
    def config(self) -> MultiViTConfig:
        return self.backbone.config

    def token_counts(self, inputs: Mapping[str, Tensor]) -> dict[str, int]:
        """Tokens per domain for these inputs, in encoder order (what `sample_token_masks` needs)."""
        return {d: end - start for d, start, end, _ in self.backbone.token_layout(inputs)}

    def forward(self, inputs: Mapping[str, Tensor], mask: TokenMask) -> dict[str, Tensor]:
        """Encodes the visible tokens and decodes every output domain.

        Args:
            inputs: rgb/depth (B, C, H, W), semseg (B, H/4, W/4) class ids; all domains of `mask`.
            mask: from `sample_token_masks(model.token_counts(inputs), ...)`.

        Returns:
            domain → prediction: (B, 3, H, W) rgb/norm_rgb, (B, 1, H, W) depth, (B, classes, H/4, W/4) semseg.
        """
        x = self.encode(inputs, mask)  # (B, K + G, D)
        grids = {d: grid for d, _, _, grid in self.backbone.token_layout(inputs)}
        first, g = grids[mask.domains[0]], self.backbone.num_global_tokens
        return {
            name: adapter(x, mask, list(grids.values()), grids.get(name, first), g)
            for name, adapter in self.output_adapters.items()
        }

    def encode(self, inputs: Mapping[str, Tensor], mask: TokenMask) -> Tensor:
        """Encoder tokens of the visible tokens: (B, K + G, D), kept tokens in `ids_keep` order, then global.

        With every token visible this is `self.backbone(inputs)` (kept tokens stay in input order).
        """
        layout = self.backbone.token_layout(inputs)
        if [d for d, *_ in layout] != mask.domains or [e - s for _, s, e, _ in layout] != mask.num_tokens:
            raise ConfigError(
                f"the mask covers {dict(zip(mask.domains, mask.num_tokens, strict=True))} tokens but the inputs have "
                f"{self.token_counts(inputs)}; draw the mask from model.token_counts(inputs)."
            )
        tokens = self.backbone.embed(inputs)  # (B, N + G, D)
        g, dim = self.backbone.num_global_tokens, tokens.shape[2]
        visible = torch.gather(tokens[:, :-g], 1, mask.ids_keep.unsqueeze(-1).expand(-1, -1, dim))  # (B, K, D)
        return self.backbone.forward_blocks(torch.cat([visible, tokens[:, -g:]], dim=1))  # (B, K + G, D)

    def losses(self, preds: Mapping[str, Tensor], batch: Mapping[str, Tensor], mask: TokenMask) -> dict[str, Tensor]:
        """Per-domain masked losses and their weighted sum under "loss".

        Args:
            preds: `forward`'s output.
            batch: the targets: the inputs themselves (rgb, depth, semseg) and optionally `mask_valid`
                (B, 1, H, W) bool for depth.
            mask: the mask used in `forward`.
        """
        p = self.backbone.patch_size
        out: dict[str, Tensor] = {}
        for name, pred in preds.items():
            source = "rgb" if name == "norm_rgb" else name
            hidden = mask.masked[source]  # (B, N_d) True where the encoder did not see the token
            if source == "semseg":
                target = batch["semseg"]  # (B, H/4, W/4)
                weight = _pixel_mask(hidden, target.shape[-2:], p // 4)  # (B, H/4, W/4)
                if self.semseg_ignore_index is not None:
                    weight = weight * (target != self.semseg_ignore_index)
                error = F.cross_entropy(pred.float(), target, reduction="none")  # (B, H/4, W/4)
            else:
                target = batch[source].float()  # (B, C, H, W)
                if name == "norm_rgb" or (name == "rgb" and self.norm_pix_rgb):
                    target = normalize_patches(target, p)
                weight = _pixel_mask(hidden, target.shape[-2:], p)  # (B, H, W)
                if name == "depth":
                    if "mask_valid" in batch:
                        weight = weight * batch["mask_valid"][:, 0]
                    error = (pred.float() - target).abs().mean(1)  # (B, H, W)
                else:
                    error = (pred.float() - target).square().mean(1)  # (B, H, W)
            out[name] = _per_sample_mean(error, weight)
        out["loss"] = sum(self.loss_weights[name] * out[name] for name in preds)
        return out

    # ---- the official release layout -----------------------------------------------------------
    def release_state_dict(self) -> dict[str, Tensor]:
        """The state in the official MultiViT release layout, detached: `global_tokens`, `input_adapters.*`,
        `output_adapters.*`, `encoder.*` (multimae.md §3.1). `torch.save({'model': sd}, path)` writes a
        checkpoint that `mmpt.load_backbone` (and the official fine-tuning) loads."""
        encoder = self.backbone.state_dict()
        state = {"global_tokens": encoder["global_tokens"]}
        state.update({k: v for k, v in encoder.items() if k.startswith("input_adapters.")})
        state.update({f"output_adapters.{k}": v for k, v in self.output_adapters.state_dict().items()})
        state.update({k: v for k, v in encoder.items() if k.startswith("encoder.")})
        return {k: v.detach() for k, v in state.items()}

    def load_release_state_dict(self, state: Mapping[str, Tensor]) -> None:
        """Loads a state in the release layout (e.g. to continue pretraining from a release file), strictly."""
        decoders = {k.removeprefix("output_adapters."): v for k, v in state.items() if k.startswith("output_adapters.")}
        encoder = {k: v for k, v in state.items() if not k.startswith("output_adapters.")}
        problems = []
        for module, part in ((self.backbone, encoder), (self.output_adapters, decoders)):
            result = module.load_state_dict(part, strict=False)
            problems += [f"missing: {k}" for k in result.missing_keys]
            problems += [f"unexpected: {k}" for k in result.unexpected_keys]
        if problems:
            raise CheckpointError("the state does not fit this MultiMAE:\n  " + "\n  ".join(problems))


def normalize_patches(images: Tensor, patch: int, eps: float = 1e-6) -> Tensor:
    """Each P x P patch (all channels together) to zero mean and unit variance: the `norm_rgb` target.

    Args:
        images: (B, C, H, W), H and W multiples of `patch`.
        patch: patch side.
        eps: added to the (unbiased) variance, as MAE does.
    """
    b, c, h, w = images.shape
    x = images.reshape(b, c, h // patch, patch, w // patch, patch).permute(0, 2, 4, 1, 3, 5)  # (B, h, w, C, P, P)
    x = x.reshape(b, h // patch, w // patch, -1)  # (B, h, w, C*P*P)
    x = (x - x.mean(-1, keepdim=True)) / (x.var(-1, keepdim=True) + eps).sqrt()
    x = x.reshape(b, h // patch, w // patch, c, patch, patch).permute(0, 3, 1, 4, 2, 5)  # (B, C, h, P, w, P)
    return x.reshape(b, c, h, w)


def _pixel_mask(hidden: Tensor, size: tuple[int, int], patch: int) -> Tensor:
    """(B, h*w) token flags → (B, H, W) float pixel weights (each token covers patch x patch pixels)."""
    h, w = size[0] // patch, size[1] // patch
    grid = hidden.reshape(hidden.shape[0], h, w).float()
    return grid.repeat_interleave(patch, dim=1).repeat_interleave(patch, dim=2)


def _per_sample_mean(error: Tensor, weight: Tensor) -> Tensor:
    """Weighted mean per sample, then mean over the samples with any weight (0 when none has any).

    Never divides 0 by 0, so a sample without hidden pixels cannot put NaN into the gradients.
    """
    den = weight.flatten(1).sum(1)  # (B,)
    per_sample = (error * weight).flatten(1).sum(1) / den.clamp(min=1e-12)  # (B,), 0 where den == 0
    has = (den > 0).float()
    return (per_sample * has).sum() / has.sum().clamp(min=1)

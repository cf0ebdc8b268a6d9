"""The trainable model: frozen backbone adapted by a tuner, followed by a task head."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import torch
from torch import Tensor, nn

from mmpt.backbone.multivit import MultiViT
from mmpt.errors import ConfigError
from mmpt.tuners.base import resolve_layers


def standardize_depth(depth: Tensor, valid: Tensor) -> Tensor:
    """Robust per-sample standardisation of depth used as an INPUT (official RGB-D fine-tuning, §4.2):
    mean and variance over the 10-90 % quantile range of the valid pixels, invalid pixels set to 0.

    Args:
        depth: (B, 1, H, W) metres.
        valid: (B, 1, H, W) bool.
    """
    out = torch.zeros_like(depth)
    for i in range(depth.shape[0]):
        values = depth[i][valid[i]].sort().values
        n = values.numel()
        if n < 2:
            continue
        trimmed = values[int(0.1 * n) : int(0.9 * n)] if n >= 10 else values
        mean, var = trimmed.mean(), trimmed.var()
        out[i] = torch.where(valid[i], (depth[i] - mean) / torch.sqrt(var + 1e-6), 0.0)
    return out


def model_inputs(batch: Mapping[str, Any], domains: Sequence[str]) -> dict[str, Tensor]:
    """The backbone inputs of a batch: rgb as normalised by the dataset, depth standardised per sample."""
    inputs = {}
    for domain in domains:
        if domain == "depth":
            inputs["depth"] = standardize_depth(batch["depth"], batch["mask_valid"])
        else:
            inputs[domain] = batch[domain]
    return inputs


class TunedModel(nn.Module):
    """backbone → tuner → head. Its state dict holds only what training changes (`tuner.*`, `head.*`), so
    accelerate checkpoints of a PEFT run stay small.

    Args:
        backbone: the (frozen) backbone the tuner was applied to.
        tuner: an applied tuner (see `mmpt.tuners.base.Tuner`).
        head: a task head (`layers` attribute, `forward(tokens, layout)`).
        inputs: input domains fed to the backbone, in token order.
    """

    def __init__(
        self, backbone: MultiViT, tuner: nn.Module, head: nn.Module, inputs: Sequence[str], feature_cache=None
    ) -> None:
        super().__init__()
        self.backbone, self.tuner, self.head, self.inputs = backbone, tuner, head, list(inputs)
        self.feature_cache = feature_cache  # linear_probe only: frozen features per training sample name
        if feature_cache is not None:
            tuner_layers = resolve_layers(tuner.config.layers, backbone.depth)
            wanted = resolve_layers(head.layers, backbone.depth)
            if missing := [i for i in wanted if i not in tuner_layers]:
                raise ConfigError(
                    f"The head reads blocks {missing} that the linear_probe does not cache (layers={tuner_layers}).",
                    hint="set tuner.layers to include the head's layers",
                )
            self._cached_positions = [tuner_layers.index(i) for i in wanted]

    def forward(self, batch: Mapping[str, Any]) -> Tensor:
        inputs = model_inputs(batch, self.inputs)
        if self.feature_cache is not None and self.training:  # the backbone runs once per image for the run
            cached = self.tuner.features(batch["name"], inputs, self.feature_cache)
            tokens = [cached[i] for i in self._cached_positions]
        else:
            tokens = self.tuner(inputs, layers=self.head.layers)  # list of (B, N + G, D)
        return self.head(tokens, self.backbone.token_layout(inputs))  # (B, C, H, W)

    def trainable_parameters(self) -> list[tuple[str, nn.Parameter]]:
        return [(f"tuner.{n}", p) for n, p in self.tuner.trainable_parameters()] + [
            (f"head.{n}", p) for n, p in self.head.named_parameters() if p.requires_grad
        ]

    def state_dict(self, *args, **kwargs) -> dict[str, Tensor]:
        state = {f"tuner.{k}": v for k, v in self.tuner.state_dict().items()}
        state.update({f"head.{k}": v for k, v in self.head.state_dict().items()})
        return state

    def load_state_dict(self, state_dict: Mapping[str, Tensor], strict: bool = True, assign: bool = False):
        self.tuner.load_state_dict({k[6:]: v for k, v in state_dict.items() if k.startswith("tuner.")}, strict=strict)
        return self.head.load_state_dict(
            {k[5:]: v for k, v in state_dict.items() if k.startswith("head.")}, strict=strict
        )

"""The DPT head: official ViT-B parameter count, output shapes, token selection, tiny backbones."""

from __future__ import annotations

import json

import pytest
import torch

from mmpt.backbone.multivit import MultiViT
from mmpt.errors import ConfigError
from mmpt.heads import HEADS, build_head, head_config_dict
from mmpt.heads.dpt import DPTHead, default_hooks
from mmpt.testing import tiny_config

OFFICIAL_VIT_B_PARAMS = 20_065_921  # reference/multimae.md §2, counted by running the official adapter
UNUSED_UNIT_PARAMS = 2 * (256 * 256 * 9 + 256)  # the coarsest fusion block's skip unit (2 conv3x3 + bias)


def tokens_for(grids: dict[str, tuple[int, int]], dim: int, batch: int = 1, global_tokens: int = 1):
    """Random block outputs for domains with the given grids, in the official layout (global token last)."""
    layout, start = [], 0
    for domain, (h, w) in grids.items():
        layout.append((domain, start, start + h * w, (h, w)))
        start += h * w
    gen = torch.Generator().manual_seed(0)
    return [torch.randn(batch, start + global_tokens, dim, generator=gen) for _ in range(4)], layout


def test_parameter_count_matches_the_official_vit_b_adapter() -> None:
    head = build_head("dpt", dim=768, out_channels=1)
    assert isinstance(head, DPTHead) and "dpt" in HEADS
    assert head.layers == [2, 5, 8, 11]
    assert sum(p.numel() for p in head.parameters()) == OFFICIAL_VIT_B_PARAMS
    # The never-called unit exists (for the count) but is frozen, so DDP needs no find_unused_parameters.
    trainable = sum(p.numel() for p in head.parameters() if p.requires_grad)
    assert trainable == OFFICIAL_VIT_B_PARAMS - UNUSED_UNIT_PARAMS


@pytest.mark.parametrize(
    ("size", "widths"),
    [
        ((256, 256), {}),  # the official configuration (one sample: ~15 GFLOP on CPU)
        ((192, 256), {"feature_dim": 32, "layer_dims": [8, 16, 32, 64]}),  # shapes do not depend on widths
    ],
)
def test_output_is_full_resolution_for_square_and_rectangular_inputs(size: tuple[int, int], widths: dict) -> None:
    head = build_head("dpt", dim=768, **widths)
    batch = 1 if not widths else 2
    tokens, layout = tokens_for({"rgb": (size[0] // 16, size[1] // 16)}, dim=768, batch=batch)
    with torch.no_grad():
        out = head(tokens, layout)
    assert out.shape == (batch, 1, *size)


def test_rgb_depth_tokens_are_concatenated_and_global_token_dropped() -> None:
    head = build_head("dpt", dim=16, patch_size=16, out_channels=3, domains=["rgb", "depth"], feature_dim=8,
                      layer_dims=[4, 4, 8, 8])  # fmt: skip
    assert head.reassemble[0][0].in_channels == 32  # 2 domains × dim
    tokens, layout = tokens_for({"rgb": (3, 5), "depth": (3, 5)}, dim=16, batch=2)
    with torch.no_grad():
        out = head(tokens, layout)
        assert out.shape == (2, 3, 48, 80)  # odd grid: the 1/32 level is ceil(h/2) and still fuses
        for x in tokens:
            x[:, -1] += 100.0  # the global token
        assert torch.equal(head(tokens, layout), out)
        tokens[0][:, 0] += 1.0  # an rgb token
        assert not torch.equal(head(tokens, layout), out)
    with pytest.raises(ConfigError, match="reads domain"):
        head(tokens, [layout[0]])


def test_default_hooks_are_official_at_depth_12_and_valid_for_tiny_backbones() -> None:
    assert default_hooks(12) == [2, 5, 8, 11]
    assert default_hooks(24) == [5, 11, 17, 23]
    assert default_hooks(2) == [0, 0, 1, 1]
    assert default_hooks(3) == [0, 1, 1, 2]
    with pytest.raises(ConfigError, match="expected 4 block indices"):
        build_head("dpt", depth=3, layers=[0, 1, 2])
    with pytest.raises(ConfigError, match="expected 4 block indices"):
        build_head("dpt", depth=3, layers=[0, 1, 2, 3])


@pytest.mark.parametrize("depth", [2, 3])
def test_trains_on_a_tiny_backbone(depth: int) -> None:
    torch.manual_seed(0)
    backbone = MultiViT(tiny_config(dim=32, depth=depth, patch_size=8, domains=("rgb", "depth"), image_size=64))
    head = build_head("dpt", dim=32, patch_size=8, depth=depth, domains=["rgb", "depth"], feature_dim=16,
                      layer_dims=[8, 8, 16, 16])  # fmt: skip
    inputs = {"rgb": torch.randn(2, 3, 48, 64), "depth": torch.rand(2, 1, 48, 64)}
    with torch.no_grad():
        blocks = backbone(inputs, return_all_layers=True)
    out = head([blocks[i] for i in head.layers], backbone.token_layout(inputs))
    assert out.shape == (2, 1, 48, 64)
    out.square().mean().backward()
    missing = [n for n, p in head.named_parameters() if p.requires_grad and (p.grad is None or not p.grad.any())]
    assert missing == []


def test_config_round_trips_through_json() -> None:
    head = build_head("dpt", dim=32, patch_size=8, depth=3, feature_dim=16, layer_dims=[8, 8, 16, 16])
    saved = json.loads(json.dumps(head_config_dict(head)))
    assert saved["layers"] == [0, 1, 1, 2]  # resolved, so the artifact does not depend on the default rule
    rebuilt = build_head(**saved)
    assert rebuilt.config == head.config
    rebuilt.load_state_dict(head.state_dict())

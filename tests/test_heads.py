"""The linear dense head: shapes for depth/semseg, rgb and rgb+depth layouts, rectangular inputs, locality."""

from __future__ import annotations

import json

import pytest
import torch

from mmpt import load_backbone
from mmpt.errors import ConfigError
from mmpt.heads import HEADS, build_head, head_config_dict
from mmpt.testing import make_tiny_checkpoint

DIM, PATCH = 32, 16


@pytest.fixture(scope="module")
def backbone(tmp_path_factory):
    path = make_tiny_checkpoint(tmp_path_factory.mktemp("heads") / "tiny.pth", dim=DIM, depth=2, num_heads=4)
    return load_backbone(path, num_heads=4).eval()


def _inputs(domains, h, w):
    gen = torch.Generator().manual_seed(0)
    return {d: torch.randn(2, 3 if d == "rgb" else 1, h, w, generator=gen) for d in domains}


def _head(**config):
    return build_head("linear", dim=DIM, patch_size=PATCH, **config)


@pytest.mark.parametrize("out_channels", [1, 40], ids=["depth", "semseg"])
@pytest.mark.parametrize("domains", [("rgb",), ("rgb", "depth")], ids=["rgb", "rgb+depth"])
@pytest.mark.parametrize("size", [(64, 64), (48, 80)], ids=["square", "rectangular"])
def test_output_is_full_resolution(backbone, out_channels, domains, size):
    x = _inputs(domains, *size)
    head = _head(out_channels=out_channels, domains=list(domains), layers=[0, -1])
    with torch.no_grad():
        tokens = backbone(x, return_all_layers=True)
        out = head([tokens[i] for i in head.layers], backbone.token_layout(x))
    assert out.shape == (2, out_channels, *size)
    assert torch.isfinite(out).all()


def test_reads_only_the_chosen_domain_even_when_more_are_fed(backbone):
    x = _inputs(("depth", "rgb"), 32, 48)  # rgb tokens come second in this layout
    head = _head(out_channels=1, domains=["rgb"])
    with torch.no_grad():
        both = head([backbone(x)], backbone.token_layout(x))
        tokens = backbone(x)
        layout = backbone.token_layout(x)
        _, start, end, _ = layout[1]
        tokens[:, :start] = 0.0  # depth tokens do not matter
        assert torch.equal(head([tokens], layout), both)
        tokens[:, start:end] += torch.randn(DIM)
        assert not torch.equal(head([tokens], layout), both)


def test_each_token_predicts_its_own_patch(backbone):
    x = _inputs(("rgb",), 48, 64)  # grid 3 x 4
    head = _head(out_channels=2)
    layout = backbone.token_layout(x)
    with torch.no_grad():
        tokens = backbone(x)
        before = head([tokens], layout)
        row, col = 1, 2
        tokens[:, row * 4 + col] += torch.randn(DIM)  # not a constant: LayerNorm would cancel it
        changed = (head([tokens], layout) - before).abs().sum(dim=(0, 1)) > 0  # (H, W)
    expected = torch.zeros(48, 64, dtype=torch.bool)
    expected[row * PATCH : (row + 1) * PATCH, col * PATCH : (col + 1) * PATCH] = True
    assert torch.equal(changed, expected)


def test_smaller_shuffle_upsamples_to_full_resolution_with_fewer_parameters(backbone):
    full, light = _head(out_channels=40), _head(out_channels=40, shuffle=4)
    assert full.proj.weight.shape == (40 * PATCH**2, DIM) and light.proj.weight.shape == (40 * 16, DIM)
    x = _inputs(("rgb",), 48, 64)
    with torch.no_grad():
        assert light([backbone(x)], backbone.token_layout(x)).shape == (2, 40, 48, 64)


def test_config_round_trips_through_json():
    head = _head(out_channels=40, layers=[2, 5], domains=["rgb", "depth"], shuffle=8)
    config = json.loads(json.dumps(head_config_dict(head)))
    assert config["name"] == "linear" and "linear" in HEADS
    rebuilt = build_head(config.pop("name"), **config)
    assert rebuilt.config == head.config and rebuilt.layers == [2, 5]


def test_errors_name_the_problem(backbone):
    x = _inputs(("rgb",), 32, 32)
    with pytest.raises(ConfigError, match=r"domain\(s\) \['depth'\]"):
        _head(domains=["depth"])([backbone(x)], backbone.token_layout(x))
    with pytest.raises(ConfigError, match=r"layers=head\.layers"):
        _head(layers=[0, 1])([backbone(x)], backbone.token_layout(x))
    with pytest.raises(ConfigError, match="shuffle=5"):
        _head(shuffle=5)
    with pytest.raises(ConfigError, match="out_channels=0"):
        _head(out_channels=0)
    with pytest.raises(ConfigError, match="Did you mean 'out_channels'"):
        build_head("linear", out_channel=3)
    with pytest.raises(ConfigError, match="Did you mean 'linear'") as error:
        build_head("lineer")
    assert "valid head names:" in str(error.value) and "linear" in str(error.value)

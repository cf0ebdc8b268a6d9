"""mmpt's MultiViT equals the official definition (naive reference in reference_multivit.py) at every layer."""

from __future__ import annotations

import pytest
import torch

from mmpt import load_backbone
from mmpt.backbone.adapters import sincos_pos_emb
from mmpt.testing import make_tiny_checkpoint
from tests.reference_multivit import official_sincos, reference_forward, resize_tables_at_load

ATOL = 1e-5


@pytest.fixture(scope="module")
def release_file(tmp_path_factory):
    return make_tiny_checkpoint(tmp_path_factory.mktemp("ckpt") / "tiny.pth", dim=64, depth=3, num_heads=4)


@pytest.fixture(scope="module")
def release_state(release_file):
    state = torch.load(release_file, weights_only=True)["model"]
    return {k: v for k, v in state.items() if not k.startswith("output_adapters.")}


def _inputs(domains, h, w, batch=2, seed=0):
    gen = torch.Generator().manual_seed(seed)
    make = {
        "rgb": lambda: torch.randn(batch, 3, h, w, generator=gen),
        "depth": lambda: torch.randn(batch, 1, h, w, generator=gen),
        "semseg": lambda: torch.randint(0, 133, (batch, h // 4, w // 4), generator=gen),
    }
    return {d: make[d]() for d in domains}


def _assert_all_layers_equal(ours, theirs):
    assert len(ours) == len(theirs)
    for i, (a, b) in enumerate(zip(ours, theirs, strict=True)):
        assert a.shape == b.shape, f"layer {i}"
        assert (a - b).abs().max().item() <= ATOL, f"layer {i}: max diff {(a - b).abs().max().item()}"


@pytest.mark.parametrize("domains", [("rgb",), ("rgb", "depth"), ("rgb", "depth", "semseg")])
@pytest.mark.parametrize("size", [(224, 224), (256, 256), (192, 256)], ids=["native", "larger", "rectangular"])
def test_every_layer_matches_official_forward(release_file, release_state, domains, size):
    model = load_backbone(release_file, num_heads=4)
    inputs = _inputs(domains, *size)
    with torch.no_grad():
        ours = model(inputs, return_all_layers=True)
        theirs = reference_forward(release_state, inputs, num_heads=4)
    _assert_all_layers_equal(ours, theirs)
    assert torch.equal(model(inputs), ours[-1])


@pytest.mark.parametrize("order", [("depth", "rgb"), ("semseg", "rgb", "depth")])
def test_token_order_follows_input_dict_order(release_file, release_state, order):
    model = load_backbone(release_file, num_heads=4)
    inputs = _inputs(order, 224, 224)
    with torch.no_grad():
        _assert_all_layers_equal(model(inputs, return_all_layers=True), reference_forward(release_state, inputs, 4))


def test_semseg_only_input_matches(release_file, release_state):
    model = load_backbone(release_file, num_heads=4)
    inputs = _inputs(("semseg",), 256, 192)
    with torch.no_grad():
        _assert_all_layers_equal(model(inputs, return_all_layers=True), reference_forward(release_state, inputs, 4))


@pytest.mark.parametrize("domains", [("rgb", "depth"), ("rgb", "depth", "semseg")])
def test_image_size_resizes_tables_at_load_like_official_finetuning(release_file, release_state, domains):
    model = load_backbone(release_file, num_heads=4, image_size=256, domains=list(domains))
    assert model.config.grid == (16, 16)
    state = resize_tables_at_load({k: v for k, v in release_state.items()}, (16, 16))
    inputs = _inputs(domains, 256, 256)
    with torch.no_grad():
        _assert_all_layers_equal(model(inputs, return_all_layers=True), reference_forward(state, inputs, 4))


def test_load_time_resize_equals_forward_time_resize_for_dense_domains(release_file):
    at_load = load_backbone(release_file, num_heads=4, image_size=256, domains=["rgb", "depth"])
    in_forward = load_backbone(release_file, num_heads=4, domains=["rgb", "depth"])
    inputs = _inputs(("rgb", "depth"), 256, 256)
    with torch.no_grad():
        assert (at_load(inputs) - in_forward(inputs)).abs().max().item() <= ATOL


@pytest.mark.parametrize("grid", [(14, 14), (16, 16), (5, 5)])
def test_sincos_table_equals_official_builder_on_square_grids(grid):
    assert torch.allclose(sincos_pos_emb(grid, 64), official_sincos(*grid, 64), atol=1e-6)


def test_timm_format_gives_the_same_rgb_tokens(tmp_path):
    multivit = load_backbone(make_tiny_checkpoint(tmp_path / "a.pth", seed=3), num_heads=4)
    timm = load_backbone(make_tiny_checkpoint(tmp_path / "b.pth", seed=3, fmt="timm"), num_heads=4)
    x = torch.randn(2, 3, 224, 224)
    with torch.no_grad():
        assert torch.equal(multivit({"rgb": x}), timm({"rgb": x}))
    assert timm.domains == ["rgb"]

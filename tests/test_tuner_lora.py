"""The lora tuner: peft injection on the official module names, identity at init, merge, peft interop."""

from __future__ import annotations

import json

import peft
import pytest
import torch
from peft.tuners.lora import LoraLayer

from mmpt import load_backbone
from mmpt.errors import ArtifactError, ConfigError
from mmpt.testing import make_tiny_checkpoint
from mmpt.tuners import build

DIM, DEPTH = 32, 2


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    return make_tiny_checkpoint(tmp_path_factory.mktemp("lora") / "tiny.pth", dim=DIM, depth=DEPTH, num_heads=4)


@pytest.fixture
def backbone(checkpoint):
    return load_backbone(checkpoint, num_heads=4)


def _inputs(seed=0):
    gen = torch.Generator().manual_seed(seed)
    return {"rgb": torch.randn(2, 3, 64, 48, generator=gen), "depth": torch.randn(2, 1, 64, 48, generator=gen)}


def _lora(backbone, **config):
    tuner = build("lora", **config)
    tuner.apply(backbone)
    return tuner


def _randomize_b(tuner, seed=1):
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in tuner.trainable_parameters():
            if "lora_B" in name:
                p.copy_(torch.randn(p.shape, generator=gen) * 0.1)


def test_lora_is_identity_at_init(checkpoint, backbone):
    frozen = load_backbone(checkpoint, num_heads=4)
    tuner = _lora(backbone, targets=["qkv", "proj", "fc1", "fc2"], dropout=0.1).eval()
    x = _inputs()
    with torch.no_grad():
        assert torch.equal(tuner(x)[0], frozen(x))
        layers = zip(tuner(x, layers=[0, 1]), frozen(x, return_all_layers=True), strict=True)
        assert all(torch.equal(a, b) for a, b in layers)


def test_only_lora_tensors_require_grad_and_counts_match_formula(backbone):
    rank = 4
    tuner = _lora(backbone, rank=rank, targets=["qkv", "proj", "fc1", "fc2"])
    trainable = dict(tuner.trainable_parameters())
    requiring = {id(p) for p in backbone.parameters() if p.requires_grad}
    assert requiring == {id(p) for p in trainable.values()}
    # r * (in + out) per Linear: qkv D->3D, proj D->D, fc1 D->4D, fc2 4D->D
    per_block = rank * ((DIM + 3 * DIM) + (DIM + DIM) + (DIM + 4 * DIM) + (4 * DIM + DIM))
    assert sum(p.numel() for p in trainable.values()) == DEPTH * per_block
    assert set(tuner.state_dict()) == set(trainable)
    assert tuner.state_dict()["encoder.0.attn.qkv.lora_A.weight"].shape == (rank, DIM)
    assert tuner.state_dict()["encoder.0.attn.qkv.lora_B.weight"].shape == (3 * DIM, rank)


def test_targets_and_layer_subset_wrap_only_those_linears(backbone):
    _lora(backbone, targets=["proj", "fc2"], layers=[-1])
    wrapped = sorted(n for n, m in backbone.named_modules() if isinstance(m, LoraLayer))
    assert wrapped == ["encoder.1.attn.proj", "encoder.1.mlp.fc2"]  # not the input adapters' `proj` convs


def test_default_targets_fused_qkv_in_every_block(backbone):
    _lora(backbone)
    wrapped = sorted(n for n, m in backbone.named_modules() if isinstance(m, LoraLayer))
    assert wrapped == [f"encoder.{i}.attn.qkv" for i in range(DEPTH)]


def test_merged_equals_unmerged_and_unmerge_restores(backbone):
    tuner = _lora(backbone, targets=["qkv", "fc1"]).eval()
    _randomize_b(tuner)
    x = _inputs()
    qkv = backbone.encoder[0].attn.qkv.base_layer.weight
    original_weight, fingerprint = qkv.detach().clone(), backbone.fingerprint
    with torch.no_grad():
        unmerged = tuner(x)[0]
        tuner.merge()
        assert tuner.merged and not torch.equal(qkv, original_weight)
        merged = tuner(x)[0]
        tuner.unmerge()
        restored = tuner(x)[0]
    assert (merged - unmerged).abs().max() <= 1e-5
    assert not tuner.merged
    assert (qkv - original_weight).abs().max() <= 1e-6
    assert (restored - unmerged).abs().max() <= 1e-5
    assert tuner.base_fingerprint == fingerprint  # pinned before the first merge


def test_loading_state_into_a_merged_tuner_remerges_with_new_values(checkpoint, backbone):
    source = _lora(backbone)
    _randomize_b(source, seed=3)
    target = _lora(load_backbone(checkpoint, num_heads=4)).eval()
    target.merge()
    target.load_state_dict(source.state_dict())
    x = _inputs()
    with torch.no_grad():
        assert target.merged
        assert (target(x)[0] - source.eval()(x)[0]).abs().max() <= 1e-5


def test_peft_export_loads_with_peft_into_a_fresh_model(checkpoint, backbone, tmp_path):
    tuner = _lora(backbone, rank=4, alpha=8, targets=["qkv", "fc2"]).eval()
    _randomize_b(tuner)
    x = _inputs()
    with torch.no_grad():
        expected = tuner(x)[0]
    tuner.export_peft(tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["adapter_config.json", "adapter_model.safetensors"]
    config = json.loads((tmp_path / "adapter_config.json").read_text())
    assert config["peft_type"] == "LORA" and config["r"] == 4 and config["lora_alpha"] == 8

    # peft's low-level path: inject from the saved config, then set the saved weights
    fresh = load_backbone(checkpoint, num_heads=4)
    peft.inject_adapter_in_model(peft.LoraConfig.from_pretrained(str(tmp_path)), fresh)
    result = peft.set_peft_model_state_dict(fresh, peft.utils.load_peft_weights(str(tmp_path)))
    assert result.unexpected_keys == []
    # peft's high-level path
    wrapped = peft.PeftModel.from_pretrained(load_backbone(checkpoint, num_heads=4), str(tmp_path))
    with torch.no_grad():
        assert torch.equal(fresh.eval()(x), expected)
        assert torch.equal(wrapped.eval()(x), expected)


def test_b_starts_at_zero_so_a_gets_gradient_from_step_two(backbone):
    tuner = _lora(backbone, targets=["qkv", "fc1"])
    params = dict(tuner.trainable_parameters())
    optimizer = torch.optim.AdamW(params.values(), lr=1e-2)
    x = _inputs()
    for step in (1, 2):
        optimizer.zero_grad(set_to_none=True)
        tuner(x)[0].pow(2).mean().backward()
        for name, p in params.items():
            nonzero = p.grad is not None and p.grad.abs().sum() > 0
            expect = "lora_B" in name or step == 2  # dL/dA = B^T (...) = 0 while B = 0
            assert nonzero == expect, f"step {step}: {name}"
        optimizer.step()
    assert all(p.grad is None for p in backbone.base_state_dict().values())
    assert all(p.grad is None for p in backbone.parameters() if not p.requires_grad)


def test_state_dict_round_trip_and_strict_mismatch(checkpoint, backbone):
    source = _lora(backbone)
    _randomize_b(source)
    target = _lora(load_backbone(checkpoint, num_heads=4))
    target.load_state_dict(source.state_dict())
    saved, loaded = source.state_dict(), target.state_dict()
    assert list(saved) == list(loaded) and all(torch.equal(saved[k], loaded[k]) for k in saved)
    with pytest.raises(ArtifactError, match=r"shape mismatch: encoder\.0\.attn\.qkv\.lora_A\.weight"):
        _lora(load_backbone(checkpoint, num_heads=4), rank=2).load_state_dict(source.state_dict())
    partial = dict(list(source.state_dict().items())[1:])
    with pytest.raises(ArtifactError, match=r"missing: encoder\.0\.attn\.qkv\.lora_A\.weight"):
        target.load_state_dict(partial)
    assert target.load_state_dict(partial, strict=False).missing_keys == ["encoder.0.attn.qkv.lora_A.weight"]


@pytest.mark.parametrize(
    ("config", "field"),
    [
        ({"rank": 0}, "rank=0"),
        ({"alpha": -1}, "alpha=-1"),
        ({"dropout": 1.0}, "dropout=1.0"),
        ({"targets": ["q"]}, "targets"),
    ],
)
def test_bad_config_names_field_and_value(config, field):
    with pytest.raises(ConfigError, match=field):
        build("lora", **config)


def test_unknown_key_and_out_of_range_layers(backbone):
    with pytest.raises(ConfigError, match="Did you mean 'rank'"):
        build("lora", rnk=4)
    with pytest.raises(ConfigError, match="out of range"):
        _lora(backbone, layers=[5])
    with pytest.raises(ConfigError, match="names a block twice"):
        _lora(backbone, layers=[1, -1])


def test_module_apply_with_a_function_keeps_its_torch_meaning(backbone):
    tuner = _lora(backbone)
    visited = []
    assert tuner.apply(visited.append) is tuner  # nn.Module.apply(fn): fn on every submodule, backbone included
    assert backbone in visited and tuner in visited

"""The full tuner: every backbone weight trains except the fixed position tables; the base is pinned at apply."""

from __future__ import annotations

import pytest
import torch

from mmpt import load_backbone
from mmpt.errors import ArtifactError, ConfigError
from mmpt.testing import make_tiny_checkpoint
from mmpt.tuners import build, trainable_summary


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    return make_tiny_checkpoint(tmp_path_factory.mktemp("full") / "tiny.pth", dim=32, depth=2, num_heads=4)


@pytest.fixture
def backbone(checkpoint):
    return load_backbone(checkpoint, num_heads=4)


def _inputs():
    gen = torch.Generator().manual_seed(0)
    return {
        "rgb": torch.randn(2, 3, 64, 48, generator=gen),
        "depth": torch.randn(2, 1, 64, 48, generator=gen),
        "semseg": torch.randint(0, 133, (2, 16, 12), generator=gen),
    }


def _full(backbone, **config):
    tuner = build("full", **config)
    tuner.apply(backbone)
    return tuner


def test_everything_trains_except_the_position_tables(backbone):
    tuner = _full(backbone)
    base = backbone.base_state_dict()
    trainable = dict(tuner.trainable_parameters())
    assert set(trainable) == {k for k in base if not k.endswith(".pos_emb")}
    assert {k for k in base if k not in trainable} == {
        f"input_adapters.{d}.pos_emb" for d in ("rgb", "depth", "semseg")
    }
    params = dict(backbone.named_parameters())
    assert all(params[k].requires_grad == (k in trainable) for k in base)
    assert set(tuner.state_dict()) == set(trainable)  # official names
    total = sum(t.numel() for t in base.values())
    pos = sum(t.numel() for k, t in base.items() if k.endswith(".pos_emb"))
    assert trainable_summary(tuner, backbone).startswith(f"trainable params: {total - pos:,} || all params: {total:,}")


def test_every_trainable_tensor_gets_a_gradient_and_pos_tables_stay_fixed(backbone):
    tuner = _full(backbone)
    pos_before = {k: v.clone() for k, v in backbone.base_state_dict().items() if k.endswith(".pos_emb")}
    params = dict(tuner.trainable_parameters())
    optimizer = torch.optim.AdamW(params.values(), lr=1e-3)
    tuner(_inputs())[0].pow(2).mean().backward()
    assert [k for k, p in params.items() if p.grad is None or p.grad.abs().sum() == 0] == []
    optimizer.step()
    after = backbone.base_state_dict()
    assert all(torch.equal(after[k], v) for k, v in pos_before.items())
    assert all(after[k].grad is None for k in pos_before)


def test_fingerprint_is_captured_at_apply_and_survives_training(checkpoint, backbone):
    original = backbone.fingerprint
    tuner = _full(backbone)
    assert tuner.base_fingerprint == original
    optimizer = torch.optim.AdamW([p for _, p in tuner.trainable_parameters()], lr=1e-2)
    tuner(_inputs())[0].pow(2).mean().backward()
    optimizer.step()
    assert backbone.fingerprint != original  # the weights moved ...
    assert tuner.base_fingerprint == original  # ... the binding did not
    # and the trained weights transfer onto a fresh copy of the base
    fresh = load_backbone(checkpoint, num_heads=4)
    assert fresh.fingerprint == original
    copy = _full(fresh)
    copy.load_state_dict(tuner.state_dict())
    x = _inputs()
    with torch.no_grad():
        assert torch.equal(copy.eval()(x, layers=[0, 1])[1], tuner.eval()(x)[0])
    assert copy.base_fingerprint == original


def test_frozen_prefixes_stay_frozen_and_must_match(backbone):
    tuner = _full(backbone, frozen=["input_adapters.semseg", "encoder.0."])
    names = [k for k, _ in tuner.trainable_parameters()]
    assert names and not any(k.startswith(("input_adapters.semseg", "encoder.0.")) for k in names)
    assert any(k.startswith("encoder.1.") for k in names)
    with pytest.raises(ConfigError, match="match no backbone tensor"):
        _full(load_backbone(backbone.load_report.source, num_heads=4), frozen=["encoder.9."])


def test_strict_load_rejects_a_foreign_state(backbone):
    tuner = _full(backbone)
    state = tuner.state_dict()
    state["encoder.0.attn.qkv.weight"] = torch.zeros(3, 3)
    with pytest.raises(ArtifactError, match="shape mismatch"):
        tuner.load_state_dict(state)

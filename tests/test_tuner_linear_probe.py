"""Linear probe: graph-free frozen features at chosen layers, and a feature cache that runs the backbone once."""

from __future__ import annotations

import json

import pytest
import torch
from tuner_fixtures import make_inputs, tiny_backbone

import mmpt.tuners
from mmpt.errors import ConfigError
from mmpt.tuners.linear_probe import FeatureCache


def _probe(**config):
    probe = mmpt.tuners.build("linear_probe", **config)
    probe.apply(tiny_backbone())
    return probe


class ImageCounter:
    """Counts the images that enter the backbone's first block."""

    def __init__(self, backbone):
        self.images = 0
        backbone.encoder[0].register_forward_pre_hook(self)

    def __call__(self, module, args):
        self.images += args[0].shape[0]


def test_features_are_the_frozen_tokens_at_the_chosen_layers_without_a_graph():
    probe = _probe(layers=[0, -1])
    assert probe.layer_ids == [0, 2]
    inputs = make_inputs()
    with torch.enable_grad():
        features = probe(inputs)
    frozen = tiny_backbone()(inputs, return_all_layers=True)
    assert [f.shape for f in features] == [(2, 33, 32)] * 2
    assert torch.equal(features[0], frozen[0]) and torch.equal(features[1], frozen[2])
    assert all(f.grad_fn is None and not f.requires_grad for f in features)
    assert torch.equal(probe(inputs, layers=[1])[0], frozen[1])  # an explicit `layers` overrides the config


@pytest.mark.parametrize(("dtype", "exact"), [(torch.float32, True), (torch.float16, False)])
def test_in_memory_cache_returns_the_extracted_features(dtype, exact):
    probe = _probe(layers=[1, 2])
    inputs = make_inputs(batch=3)
    cache = FeatureCache(dtype=dtype)
    first = probe.features(["a", "b", "c"], inputs, cache)
    again = probe.features(["c", "a"], {d: x[[2, 0]] for d, x in inputs.items()}, cache)
    extracted = probe.extract(inputs)
    for got, want in zip(first, extracted, strict=True):
        assert got.dtype == torch.float32
        assert torch.equal(got, want if exact else want.half().float())
    assert torch.equal(again[0], first[0][[2, 0]]) and torch.equal(again[1], first[1][[2, 0]])


def test_the_backbone_runs_once_per_image_for_a_whole_run():
    probe = _probe()
    counter = ImageCounter(probe.backbone)
    batches = [(["0", "1"], make_inputs(batch=2, seed=0)), (["2", "3"], make_inputs(batch=2, seed=1))]
    cache = FeatureCache()
    for _epoch in range(3):
        for keys, inputs in batches:
            probe.features(keys, inputs, cache)
    assert counter.images == 4 and len(cache) == 4
    new = make_inputs(batch=2, seed=2)
    mixed = {d: torch.cat([batches[0][1][d][:1], new[d][:1]]) for d in new}  # a cached sample and a new one
    features = probe.features(["0", "4"], mixed, cache)[0]
    assert counter.images == 5  # only the new sample ran
    assert torch.equal(features[0], probe.features(["0"], {d: x[:1] for d, x in mixed.items()}, cache)[0][0])


def test_disk_cache_writes_fp16_shards_and_reopens_with_identical_features(tmp_path):
    probe = _probe(layers=[-1])
    inputs = make_inputs(batch=5)
    with FeatureCache(tmp_path / "features", shard_size=2) as cache:
        written = probe.features([10, 11, 12, 13, 14], inputs, cache)
    shards = sorted(p.name for p in (tmp_path / "features").glob("*.safetensors"))
    assert shards == ["shard-00000.safetensors", "shard-00001.safetensors", "shard-00002.safetensors"]
    index = json.loads((tmp_path / "features" / "index.json").read_text())
    assert index["binding"]["backbone_fingerprint"] == probe.backbone.fingerprint
    reopened = FeatureCache(tmp_path / "features")
    assert len(reopened) == 5 and 12 in reopened
    counter = ImageCounter(probe.backbone)
    again = probe.features([14, 10], {d: x[[4, 0]] for d, x in inputs.items()}, reopened)[0]
    assert counter.images == 0
    assert torch.equal(again, written[0][[4, 0]])
    assert torch.equal(written[0], probe.extract(inputs)[0].half().float())


def test_a_cache_built_for_another_setup_is_refused(tmp_path):
    with FeatureCache(tmp_path / "features") as cache:
        _probe(layers=[-1]).features([0, 1], make_inputs(), cache)
    with pytest.raises(ConfigError, match=r"different setup.*layers"):
        _probe(layers=[0]).features([0, 1], make_inputs(), FeatureCache(tmp_path / "features"))
    with pytest.raises(ConfigError, match=r"different setup.*inputs"):
        _probe(layers=[-1]).features([0, 1], make_inputs(("rgb",)), FeatureCache(tmp_path / "features"))
    backbone = tiny_backbone()
    with torch.no_grad():
        backbone.global_tokens.add_(1.0)  # another backbone: its fingerprint changes
    other = mmpt.tuners.build("linear_probe", layers=[-1])
    other.apply(backbone)
    with pytest.raises(ConfigError, match="backbone_fingerprint"):
        other.features([0, 1], make_inputs(), FeatureCache(tmp_path / "features"))


def test_nothing_in_the_probe_trains_and_its_state_is_empty():
    probe = _probe()
    assert list(probe.trainable_parameters()) == [] and probe.state_dict() == {}
    probe.load_state_dict({})
    assert not any(p.requires_grad for p in probe.backbone.parameters())


@pytest.mark.parametrize("layers", [None, [], "last"])
def test_bad_layers_name_the_field(layers):
    with pytest.raises(ConfigError, match=r"LinearProbeConfig\.layers"):
        mmpt.tuners.build("linear_probe", layers=layers)

"""The tuner contract (DESIGN.md), checked for every registered tuner on a tiny backbone.

The matrix runs over `mmpt.tuners.names()`, so a new tuner is covered as soon as it registers; it then needs
a closed-form trainable-parameter count in `expected_trainable` (the test says so if it is missing).
"""

from __future__ import annotations

import dataclasses
import functools
import json

import pytest
import torch
from torch import nn
from tuner_fixtures import DOMAINS, make_inputs, tiny_backbone

import mmpt.tuners
from mmpt.errors import ConfigError

# Tiny configurations per tuner; a registered tuner not listed here runs with its defaults.
CASES: dict[str, list[tuple[str, dict]]] = {
    "deep_prompt": [
        ("p4", {"num_tokens": 4}),
        ("gated", {"num_tokens": 4, "gated": True}),
        ("last2_dropout", {"num_tokens": 3, "layers": [-2, -1], "dropout": 0.1}),
    ],
    "prompt_pool": [
        ("shallow", {"pool_size": 4, "length": 2, "top_k": 2}),
        ("deep_global", {"pool_size": 4, "length": 2, "top_k": 2, "insert": "deep", "query": "frozen_global"}),
    ],
    "lora": [("r2_all", {"rank": 2, "targets": ["qkv", "proj", "fc1", "fc2"]})],
}

# Tensors that get a zero gradient at step 1 by design (they must still get one within STEPS steps).
STEP1_ZERO: dict[tuple[str, str], str] = {
    ("lora-r2_all", "lora_A"): "B = 0 at init, so dL/dA = B^T·(...) = 0 until B has moved",
    ("deep_prompt-gated", "prompts"): "closed gates: the output is the frozen model's for any prompt value, "
    "so dL/dprompts = 0 until a gate opens",
}
STEPS = 3
OUT_LAYERS = [1, 2]  # the head reads two blocks, so `layers` is exercised


def _cases():
    for name in mmpt.tuners.names():
        for case, config in CASES.get(name, [("default", {})]):
            yield pytest.param(name, f"{name}-{case}", config, id=f"{name}-{case}")


def identity_at_init(name: str, config: dict) -> bool:
    """Where the method allows it, the tuned model at init is the frozen one (LoRA B = 0; closed gates)."""
    return name in {"linear_probe", "full", "lora"} or (name == "deep_prompt" and config.get("gated", False))


def expected_trainable(name: str, config: dict, depth: int, dim: int, domain_channels: list[int], patch: int) -> int:
    """Closed-form trainable-parameter counts (tuner tensors only; the head is counted separately)."""
    if name == "deep_prompt":
        blocks = len(config.get("layers") or range(depth))
        return blocks * config.get("num_tokens", 10) * dim + (blocks if config.get("gated") else 0)  # L·P·D (+L)
    if name == "prompt_pool":
        m, length = config.get("pool_size", 10), config.get("length", 5)
        pools = 1 if config.get("insert", "shallow") == "shallow" else len(config.get("layers") or range(depth))
        return pools * m * length * dim + m * dim  # S·M·Lp·D + M·D
    if name == "linear_probe":
        return 0
    if name == "lora":
        fans = {"qkv": (dim, 3 * dim), "proj": (dim, dim), "fc1": (dim, 4 * dim), "fc2": (4 * dim, dim)}
        blocks = len(config.get("layers") or range(depth))
        return blocks * sum(config.get("rank", 8) * sum(fans[t]) for t in config.get("targets", ["qkv"]))
    if name == "full":  # every base tensor but the fixed sin-cos position tables
        adapters = sum(c * patch * patch * dim + dim for c in domain_channels)  # patch-embedding conv + bias
        block = 12 * dim * dim + 13 * dim  # qkv 3D²+3D, proj D²+D, fc1 4D²+4D, fc2 4D²+D, two norms 4D
        return adapters + dim + depth * block  # + one global token
    pytest.fail(f"tuner {name!r} has no closed-form trainable count: add it to expected_trainable")


def _build(name: str, config: dict, seed: int = 0):
    torch.manual_seed(seed)
    backbone = tiny_backbone()
    tuner = mmpt.tuners.build(name, **config)
    tuner.apply(backbone)
    return tuner, backbone


def _head_loss(tuner, head: nn.Module, inputs, target) -> torch.Tensor:
    tokens = tuner(inputs, layers=OUT_LAYERS)
    loss = sum((head(t) - target).pow(2).mean() for t in tokens)  # target (B, 1, 3): one value per sample
    extra = getattr(tuner, "extra_loss", lambda: None)()
    return loss if extra is None else loss + extra


@functools.cache
def _trained(name: str, config_json: str, domains: str):
    """STEPS AdamW steps on a fixed loss; records each trainable tensor's gradient norm per step."""
    config = json.loads(config_json)
    tuner, backbone = _build(name, config)
    base_before = {k: v.clone() for k, v in backbone.base_state_dict().items()}
    torch.manual_seed(1)
    head = nn.Linear(backbone.dim, 3)
    inputs = make_inputs(DOMAINS[domains], batch=3)
    target = torch.randn(3, 1, 3)
    trainable = dict(tuner.trainable_parameters())
    optimizer = torch.optim.AdamW([*trainable.values(), *head.parameters()], lr=1e-2, weight_decay=0.05)
    norms: dict[str, list[float]] = {n: [] for n in trainable}
    head_norms = []
    tuner.train()
    for _ in range(STEPS):
        optimizer.zero_grad(set_to_none=True)
        _head_loss(tuner, head, inputs, target).backward()
        for n, p in trainable.items():
            norms[n].append(0.0 if p.grad is None else p.grad.abs().sum().item())
        head_norms.append(head.weight.grad.abs().sum().item())
        optimizer.step()
    tuner.eval()
    return tuner, backbone, base_before, norms, head_norms, inputs


def trained(name, config, domains="rgbd"):
    return _trained(name, json.dumps(config, sort_keys=True), domains)


# ---- init ----------------------------------------------------------------------------------------
@pytest.mark.parametrize("domains", list(DOMAINS))
@pytest.mark.parametrize(("name", "case", "config"), list(_cases()))
def test_forward_at_init_equals_frozen_backbone_where_the_method_allows(name, case, config, domains):
    tuner, _ = _build(name, config)
    tuner.eval()
    inputs = make_inputs(DOMAINS[domains])
    frozen = tiny_backbone()
    with torch.no_grad():
        ours = tuner(inputs, layers=[0, 1, 2])
        reference = frozen(inputs, return_all_layers=True)
    assert [t.shape for t in ours] == [t.shape for t in reference]  # official layout, prompts stripped
    diff = max((a - b).abs().max().item() for a, b in zip(ours, reference, strict=True))
    if identity_at_init(name, config):
        assert diff <= 1e-6
    else:
        assert diff > 1e-4, "the tuner has no effect at init, but this method should change the output"


# ---- training ------------------------------------------------------------------------------------
@pytest.mark.parametrize("domains", list(DOMAINS))
@pytest.mark.parametrize(("name", "case", "config"), list(_cases()))
def test_every_trainable_tensor_gets_a_gradient_in_the_first_steps(name, case, config, domains):
    tuner, _, _, norms, head_norms, _ = trained(name, config, domains)
    assert all(n > 0 for n in head_norms)
    if not norms:  # nothing trains inside the tuner (linear probe): the head must, and the tokens carry no graph
        assert list(tuner.trainable_parameters()) == []
        assert not any(t.requires_grad for t in tuner(make_inputs(DOMAINS[domains])))
        return
    unfed = tuple(f"input_adapters.{d}." for d in DOMAINS["rgbd"] if d not in DOMAINS[domains])
    for param, per_step in norms.items():
        if param.startswith(unfed):  # an input adapter of a domain this batch does not have cannot get a gradient
            assert not any(per_step), f"{param} belongs to a domain that was not fed, yet got a gradient"
            continue
        reason = next((r for (c, part), r in STEP1_ZERO.items() if c == case and part in param), None)
        if reason is None:
            assert per_step[0] > 0, f"{param} got no gradient at step 1"
        else:
            assert per_step[0] == 0, f"{param} should be zero-grad at step 1 ({reason}); update STEP1_ZERO"
        assert any(n > 0 for n in per_step), f"{param} got no gradient in {STEPS} steps"


@pytest.mark.parametrize(("name", "case", "config"), list(_cases()))
def test_frozen_tensors_are_bit_identical_after_training_and_never_get_grad(name, case, config):
    tuner, backbone, base_before, _, _, _ = trained(name, config)
    trained_ids = {id(p) for _, p in tuner.trainable_parameters()}
    for key, param in backbone.named_parameters():
        if id(param) not in trained_ids:
            assert not param.requires_grad, f"{key} requires grad but is not a trainable parameter"
            assert param.grad is None, f"frozen {key} has a .grad: autograd computed its weight gradient"
    for key, value in backbone.base_state_dict().items():
        if id(backbone._base_tensors[key]) not in trained_ids:
            assert torch.equal(value, base_before[key]), f"frozen {key} changed during training"
    assert all(p.requires_grad for _, p in tuner.trainable_parameters())


@pytest.mark.parametrize(("name", "case", "config"), list(_cases()))
def test_trainable_count_matches_the_closed_form(name, case, config):
    tuner, backbone = _build(name, config)
    channels = [backbone.input_adapters[d].num_channels for d in backbone.domains]
    expected = expected_trainable(name, config, backbone.depth, backbone.dim, channels, backbone.patch_size)
    assert sum(p.numel() for _, p in tuner.trainable_parameters()) == expected
    summary = mmpt.tuners.trainable_summary(tuner, backbone)
    assert summary.startswith(f"trainable params: {expected:,} ||")


# ---- state ---------------------------------------------------------------------------------------
@pytest.mark.parametrize(("name", "case", "config"), list(_cases()))
def test_state_dict_holds_exactly_the_tuned_tensors(name, case, config):
    tuner, _, _, _, _, _ = trained(name, config)
    state = tuner.state_dict()
    assert set(state) == {n for n, _ in tuner.trainable_parameters()}
    assert not any(k.startswith(("tuner.", "backbone.")) for k in state)
    assert all(not t.requires_grad for t in state.values())


@pytest.mark.parametrize(("name", "case", "config"), list(_cases()))
def test_saved_state_on_a_fresh_backbone_reproduces_outputs_exactly(name, case, config):
    tuner, _, _, _, _, inputs = trained(name, config)
    state = {k: v.clone() for k, v in tuner.state_dict().items()}
    fresh, _ = _build(name, config, seed=123)  # another init, so only the load can make them equal
    fresh.load_state_dict(state)
    fresh.eval()
    with torch.no_grad():
        for a, b in zip(tuner(inputs, layers=OUT_LAYERS), fresh(inputs, layers=OUT_LAYERS), strict=True):
            assert torch.equal(a, b)


@pytest.mark.parametrize(("name", "case", "config"), list(_cases()))
def test_fp16_saved_state_round_trips_within_tolerance(name, case, config):
    tuner, _, _, _, _, inputs = trained(name, config)
    state = {k: v.half() for k, v in tuner.state_dict().items()}
    fresh, _ = _build(name, config, seed=123)
    fresh.load_state_dict(state)
    fresh.eval()
    assert all(p.dtype == torch.float32 for _, p in fresh.trainable_parameters())  # cast back on load
    with torch.no_grad():
        for a, b in zip(tuner(inputs, layers=OUT_LAYERS), fresh(inputs, layers=OUT_LAYERS), strict=True):
            assert (a - b).abs().max().item() <= 1e-2 * a.abs().max().item()


@pytest.mark.parametrize(("name", "case", "config"), list(_cases()))
def test_loading_a_state_with_a_foreign_key_fails_when_strict(name, case, config):
    tuner, _ = _build(name, config)
    state = {**tuner.state_dict(), "not_a_tuner_tensor": torch.zeros(1)}
    with pytest.raises(Exception, match="not_a_tuner_tensor"):
        tuner.load_state_dict(state)


# ---- configuration -------------------------------------------------------------------------------
@pytest.mark.parametrize("name", mmpt.tuners.names())
def test_unknown_config_key_gets_a_did_you_mean(name):
    config_class = mmpt.tuners.TUNERS.get(name).config_class
    field = dataclasses.fields(config_class)[0].name
    typo = field[:-2] + field[-1]  # drop the second-to-last letter
    with pytest.raises(ConfigError, match=f"Did you mean '{field}'") as error:
        mmpt.tuners.build(name, **{typo: 1})
    assert typo in str(error.value) and "valid keys" in str(error.value)


def test_unknown_tuner_name_gets_a_did_you_mean():
    with pytest.raises(ConfigError, match="Did you mean 'deep_prompt'") as error:
        mmpt.tuners.build("deep_promt")
    assert "linear_probe" in str(error.value)  # the valid names are listed


@pytest.mark.parametrize("name", mmpt.tuners.names())
def test_using_a_tuner_before_apply_is_a_clear_error(name):
    tuner = mmpt.tuners.build(name)
    with pytest.raises(ConfigError, match="apply"):
        list(tuner.trainable_parameters())


@pytest.mark.parametrize(("name", "case", "config"), list(_cases()))
def test_gradient_checkpointing_changes_neither_outputs_nor_gradients(name, case, config):
    tuner, backbone = _build(name, config)
    tuner.train()
    torch.manual_seed(1)
    head = nn.Linear(backbone.dim, 3)
    inputs, target = make_inputs(batch=2), torch.randn(2, 1, 3)
    results = []
    for checkpointing in (False, True):
        backbone.set_grad_checkpointing(checkpointing)
        params = [p for _, p in tuner.trainable_parameters()] + list(head.parameters())
        torch.manual_seed(2)  # the same dropout masks in both runs
        loss = _head_loss(tuner, head, inputs, target)
        results.append((loss.detach(), torch.autograd.grad(loss, params)))
    (loss_plain, grads_plain), (loss_ckpt, grads_ckpt) = results
    assert torch.allclose(loss_plain, loss_ckpt, rtol=1e-6, atol=1e-7)
    for a, b in zip(grads_plain, grads_ckpt, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-7)

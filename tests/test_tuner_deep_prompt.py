"""VPT-deep: prompt keys/values equal the literal concat-then-strip block, layer subsets, dropout, gates."""

from __future__ import annotations

import math

import pytest
import torch
from tuner_fixtures import DOMAINS, make_inputs, naive_prompted_block, tiny_backbone

import mmpt.tuners
from mmpt.errors import ConfigError
from mmpt.tuners.prefix import block_with_prefix


def _applied(**config):
    torch.manual_seed(0)
    tuner = mmpt.tuners.build("deep_prompt", **config)
    tuner.apply(tiny_backbone())
    return tuner


def naive_forward(tuner, inputs) -> list[torch.Tensor]:
    """VPT-deep as the paper's code writes it: before each prompted block, append that block's prompts (after
    the previous block's prompt outputs were dropped), run the whole block, strip the prompts. No hooks."""
    frozen = tiny_backbone()
    x = frozen.embed(inputs)
    outputs = []
    for index, block in enumerate(frozen.encoder):
        if index in tuner.layer_ids:
            x = naive_prompted_block(block, x, tuner.prompts[tuner.layer_ids.index(index)])
        else:
            x = block(x)
        outputs.append(x)
    return outputs


@pytest.mark.parametrize("layers", [None, [-2, -1], [0, 2]], ids=["all", "last2", "first_and_last"])
@pytest.mark.parametrize("domains", list(DOMAINS))
def test_prompt_keys_values_equal_the_naive_concat_then_strip_forward_and_gradients(layers, domains):
    tuner = _applied(num_tokens=5, layers=layers)
    with torch.no_grad():
        tuner.prompts.normal_()  # larger than the init, so the prompts clearly matter
    inputs = make_inputs(DOMAINS[domains])
    ours = tuner(inputs, layers=[0, 1, 2])
    reference = naive_forward(tuner, inputs)
    for a, b in zip(ours, reference, strict=True):
        assert a.shape == b.shape
        assert (a - b).abs().max().item() <= 1e-5
    (grad_ours,) = torch.autograd.grad(ours[-1].square().sum(), tuner.prompts)
    (grad_naive,) = torch.autograd.grad(reference[-1].square().sum(), tuner.prompts)
    assert grad_ours.abs().max() > 0
    torch.testing.assert_close(grad_ours, grad_naive, rtol=1e-4, atol=1e-5)


def test_per_sample_prompts_equal_the_naive_block():
    block = tiny_backbone().encoder[1]
    x, prompts = torch.randn(3, 10, 32), torch.randn(3, 4, 32)  # a different prompt set per sample
    assert (block_with_prefix(block, x, prompts) - naive_prompted_block(block, x, prompts)).abs().max() <= 1e-5


def test_blocks_before_the_first_prompted_block_are_untouched():
    tuner = _applied(num_tokens=4, layers=[-1])
    assert tuner.layer_ids == [2] and tuner.prompts.shape == (1, 4, 32)
    inputs = make_inputs()
    with torch.no_grad():
        ours, frozen = tuner(inputs, layers=[0, 1, 2]), tiny_backbone()(inputs, return_all_layers=True)
    assert torch.equal(ours[0], frozen[0]) and torch.equal(ours[1], frozen[1])
    assert not torch.equal(ours[2], frozen[2])


def test_prompts_are_stripped_so_every_layer_keeps_the_official_shape():
    tuner = _applied(num_tokens=7)
    inputs = make_inputs(("rgb", "depth"))
    shapes = [t.shape for t in tuner.backbone(inputs, return_all_layers=True)]
    assert shapes == [t.shape for t in tiny_backbone()(inputs, return_all_layers=True)] == [(2, 33, 32)] * 3


def test_vpt_init_is_uniform_within_the_xavier_patch_bound():
    tuner = _applied(num_tokens=50)
    bound = math.sqrt(6 / (3 * 8 * 8 + 32))  # patch 8, dim 32
    assert tuner.prompts.abs().max() <= bound
    assert tuner.prompts.abs().max() > 0.9 * bound and abs(tuner.prompts.mean()) < 0.05 * bound


def test_prompt_dropout_acts_only_in_train_mode():
    tuner = _applied(num_tokens=6, dropout=0.5)
    plain = _applied(num_tokens=6)  # same seed: same prompts, no dropout
    assert torch.equal(tuner.prompts, plain.prompts)
    inputs = make_inputs()
    with torch.no_grad():
        tuner.eval()
        assert torch.equal(tuner(inputs)[0], tuner(inputs)[0])
        assert torch.equal(tuner(inputs)[0], plain.eval()(inputs)[0])
        tuner.train()
        assert not torch.equal(tuner(inputs)[0], tuner(inputs)[0])


# ---- gates ---------------------------------------------------------------------------------------
def test_closed_gates_are_the_frozen_model_bit_for_bit_and_still_get_a_gradient():
    tuner = _applied(num_tokens=4, gated=True)
    with torch.no_grad():
        tuner.prompts.normal_()
    inputs = make_inputs()
    ours = tuner(inputs, layers=[0, 1, 2])
    for a, b in zip(ours, tiny_backbone()(inputs, return_all_layers=True), strict=True):
        assert torch.equal(a, b)
    ours[-1].square().sum().backward()
    assert (tuner.gates.grad != 0).all() and torch.isfinite(tuner.gates.grad).all()
    assert tuner.prompts.grad.abs().max() == 0  # closed gates: the output does not depend on the prompts


def test_a_gate_pushed_below_zero_stays_closed_but_can_reopen():
    tuner = _applied(num_tokens=4, gated=True)
    with torch.no_grad():
        tuner.gates.fill_(-0.3)
    inputs = make_inputs()
    out = tuner(inputs)[0]
    assert torch.equal(out, tiny_backbone()(inputs))
    out.square().sum().backward()
    assert (tuner.gates.grad != 0).all()  # straight-through: the gradient of opening it


def test_open_gates_equal_plain_prompts_and_train_the_prompts():
    gated, plain = _applied(num_tokens=4, gated=True), _applied(num_tokens=4)
    with torch.no_grad():
        gated.gates.fill_(1.0)  # g = 1: the prompts' softmax mass unweighted, i.e. plain VPT
    inputs = make_inputs()
    out = gated(inputs)[0]
    assert (out - plain(inputs)[0]).abs().max() <= 1e-5
    out.square().sum().backward()
    assert gated.prompts.grad.abs().amax(dim=(1, 2)).gt(0).all()


def test_half_open_gate_matches_the_gated_softmax_formula():
    block = tiny_backbone().encoder[0]
    x, prompts, g = torch.randn(2, 9, 32), torch.randn(3, 32), torch.tensor(0.4)
    # Reference: the explicit attention with the prompt keys' exp-weights scaled by g (one head at a time).
    attn = block.attn
    h = block.norm1(x)
    q, k, v = attn.qkv(h).reshape(2, 9, 3, 2, 16).permute(2, 0, 3, 1, 4)
    _, k_p, v_p = attn.qkv(block.norm1(prompts)).reshape(3, 3, 2, 16).permute(1, 2, 0, 3)
    logits = torch.cat([q @ k_p.transpose(-2, -1), q @ k.transpose(-2, -1)], dim=-1) * attn.scale
    weights = logits.exp() * torch.cat([g.expand(3), torch.ones(9)])
    out = (weights / weights.sum(-1, keepdim=True)) @ torch.cat([v_p.expand(2, -1, -1, -1), v], dim=2)
    y = x + attn.proj(out.transpose(1, 2).reshape(2, 9, 32))
    expected = y + block.mlp(block.norm2(y))
    assert (block_with_prefix(block, x, prompts, gate=g) - expected).abs().max() <= 1e-5


# ---- config --------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("config", "field"),
    [
        ({"num_tokens": 0}, "num_tokens"),
        ({"dropout": 1.0}, "dropout"),
        ({"layers": []}, "layers"),
        ({"layers": "last"}, "layers"),
        ({"gated": "yes"}, "gated"),
    ],
)
def test_bad_config_values_name_the_field(config, field):
    with pytest.raises(ConfigError, match=rf"DeepPromptConfig\.{field}"):
        mmpt.tuners.build("deep_prompt", **config)


@pytest.mark.parametrize("layers", [[3], [-4], [1, -2]], ids=["past_end", "before_start", "duplicate"])
def test_layers_outside_the_backbone_or_repeated_are_refused_at_apply(layers):
    tuner = mmpt.tuners.build("deep_prompt", layers=layers)
    with pytest.raises(ConfigError, match=r"out of range|twice"):
        tuner.apply(tiny_backbone())


def test_prompt_dropout_draws_one_mask_per_sample():
    tuner = _applied(num_tokens=6, dropout=0.5).train()
    same = {d: x[:1].expand(2, -1, -1, -1) for d, x in make_inputs().items()}  # two copies of one sample
    with torch.no_grad():
        out = tuner(same)[0]
    assert not torch.equal(out[0], out[1])


def test_two_prompt_kv_tuners_cannot_claim_the_same_block_but_compose_on_disjoint_ones():
    backbone = tiny_backbone()
    mmpt.tuners.build("deep_prompt", layers=[0, 1]).apply(backbone)
    with pytest.raises(ConfigError, match=r"blocks \[1\]"):
        mmpt.tuners.build("prompt_pool", pool_size=4, top_k=2, insert="deep", layers=[1, 2]).apply(backbone)
    last = mmpt.tuners.build("deep_prompt", num_tokens=3, layers=[2])
    last.apply(backbone)
    assert last.computes_blocks == {2}
    mmpt.tuners.build("prompt_pool", pool_size=4, top_k=2).apply(backbone)  # shallow: computes no block itself

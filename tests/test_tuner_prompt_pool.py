"""L2P prompt pool: per-sample top-k, shallow/deep insertion against literal references, usage, key pull."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from tuner_fixtures import DOMAINS, make_inputs, naive_prompted_block, tiny_backbone

import mmpt.tuners
from mmpt.errors import ConfigError


def _pool(**config):
    torch.manual_seed(0)
    pool = mmpt.tuners.build("prompt_pool", **{"pool_size": 4, "length": 2, "top_k": 2, **config})
    pool.apply(tiny_backbone())
    return pool


def _point_keys_at(pool, queries: torch.Tensor) -> None:
    """Keys 2i and 2i+1 point along sample i's query, so sample i selects exactly {2i, 2i+1}."""
    with torch.no_grad():
        pool.keys.copy_(torch.stack([queries[0], 2 * queries[0], queries[1], 3 * queries[1]]))


def naive_pool_forward(pool, inputs) -> list[torch.Tensor]:
    """L2P as written: frozen query, cosine top-k per sample, selected prompts concatenated; shallow prompts
    pass through every block, deep ones are appended before each pooled block and dropped after it."""
    frozen = tiny_backbone()
    x = frozen.embed(inputs)
    if pool.config.query == "embed_mean":  # the mean patch projection: tokens minus bias and position terms
        zero = frozen.embed({d: torch.zeros_like(v) for d, v in inputs.items()})
        query = (x - zero)[:, :-1].mean(dim=1)
    else:
        query = frozen(inputs)[:, -1]
    similarity = F.cosine_similarity(query[:, None], pool.keys[None], dim=-1)  # (B, M)
    index = similarity.topk(pool.config.top_k, dim=1).indices  # (B, k)
    prompts = pool.prompts[:, index].flatten(2, 3)  # (S, B, k·Lp, D)
    n, outputs = x.shape[1], []
    if pool.config.insert == "shallow":
        x = torch.cat([x, prompts[0]], dim=1)
        for block in frozen.encoder:
            x = block(x)
            outputs.append(x[:, :n])
        return outputs
    for i, block in enumerate(frozen.encoder):
        x = naive_prompted_block(block, x, prompts[pool.layer_ids.index(i)]) if i in pool.layer_ids else block(x)
        outputs.append(x)
    return outputs


@pytest.mark.parametrize(
    "config",
    [{}, {"insert": "deep"}, {"insert": "deep", "layers": [-1]}, {"query": "frozen_global"}],
    ids=["shallow", "deep", "deep_last", "shallow_global_query"],
)
@pytest.mark.parametrize("domains", list(DOMAINS))
def test_pool_forward_equals_the_literal_l2p_reference(config, domains):
    pool = _pool(**config)
    with torch.no_grad():
        pool.prompts.normal_()
    inputs = make_inputs(DOMAINS[domains], batch=3)
    ours = pool(inputs, layers=[0, 1, 2])
    reference = naive_pool_forward(pool, inputs)
    for a, b in zip(ours, reference, strict=True):
        assert a.shape == b.shape  # prompts stripped: the official layout at every block
        assert (a - b).abs().max() <= 1e-5
    (grad_ours,) = torch.autograd.grad(ours[-1].square().sum(), pool.prompts)
    (grad_reference,) = torch.autograd.grad(reference[-1].square().sum(), pool.prompts)
    assert grad_ours.abs().max() > 0
    torch.testing.assert_close(grad_ours, grad_reference, rtol=1e-4, atol=1e-5)


def test_queries_are_the_documented_frozen_features():
    inputs, frozen = make_inputs(), tiny_backbone()
    embed_mean, global_query = _pool(), _pool(query="frozen_global")
    # embed_mean is the mean patch projection without bias and positions: linear in the input.
    weights = {d: frozen.input_adapters[d].proj.weight for d in inputs}
    expected = sum(F.conv2d(x, weights[d], stride=8).sum(dim=(2, 3)) for d, x in inputs.items())
    torch.testing.assert_close(embed_mean.query(inputs), expected / 32, rtol=1e-5, atol=1e-6)  # 2 x 16 tokens
    assert torch.equal(global_query.query(inputs), frozen(inputs)[:, -1])
    assert not embed_mean.query(inputs).requires_grad


def test_each_sample_gets_its_own_top_k_and_its_output_does_not_depend_on_the_batch():
    pool = _pool().eval()
    inputs = make_inputs(batch=2)
    _point_keys_at(pool, pool.query(inputs))
    with torch.no_grad():
        both = pool(inputs)[0]
        assert pool.last_selection.sort(dim=1).values.tolist() == [[0, 1], [2, 3]]  # per sample, no majority vote
        alone = pool({d: x[1:] for d, x in inputs.items()})[0]
    assert pool.last_selection.sort(dim=1).values.tolist() == [[2, 3]]
    assert (both[1:] - alone).abs().max() <= 1e-5


def test_usage_counts_every_selection_and_its_entropy_shows_collapse():
    pool = _pool()
    inputs = make_inputs(batch=2)
    assert pool.extra_loss() is None  # nothing selected yet
    queries = pool.query(inputs)
    _point_keys_at(pool, queries)
    with torch.no_grad():
        pool(inputs)
    usage = pool.usage()
    assert usage["counts"] == [1, 1, 1, 1] and usage["selections"] == 4 and usage["entropy"] == pytest.approx(1.0)
    pool.reset_usage()
    assert pool.usage()["counts"] == [0, 0, 0, 0] and pool.usage()["entropy"] == 0.0
    shared = queries.sum(dim=0)
    with torch.no_grad():  # keys 0, 1 along both queries' sum, keys 2, 3 opposite: a collapsed pool
        pool.keys.copy_(torch.stack([shared, 2 * shared, -shared, -2 * shared]))
        pool(inputs)
    usage = pool.usage()
    assert usage["counts"] == [2, 2, 0, 0] and usage["frequencies"] == [0.5, 0.5, 0.0, 0.0]
    assert usage["entropy"] == pytest.approx(math.log(2) / math.log(4))


def test_key_pull_loss_moves_only_the_selected_keys_toward_the_queries():
    pool = _pool(pull_weight=0.5)
    inputs = make_inputs(batch=2)
    pool(inputs)
    selected = set(pool.last_selection.flatten().tolist())
    loss = pool.extra_loss()
    assert loss.item() > 0
    loss.backward()
    assert pool.prompts.grad is None  # the pull loss reaches the keys only
    assert {i for i in range(4) if pool.keys.grad[i].abs().max() > 0} == selected
    with torch.no_grad():
        pool.keys -= 0.1 * pool.keys.grad
        pool(inputs)
    assert pool.extra_loss().item() < loss.item()


def test_task_loss_trains_the_selected_prompts_and_no_backbone_tensor():
    pool = _pool()
    pool(make_inputs(batch=2))[0].square().mean().backward()
    used = set(pool.last_selection.flatten().tolist())
    assert {i for i in range(4) if pool.prompts.grad[0, i].abs().max() > 0} == used
    assert pool.keys.grad is None  # top-k passes no gradient; the keys learn from extra_loss
    assert all(p.grad is None for p in pool.backbone.parameters())


def test_deep_pool_has_one_prompt_set_per_block_and_one_key_set():
    pool = _pool(insert="deep", layers=[0, -1])
    assert pool.layer_ids == [0, 2]
    assert pool.prompts.shape == (2, 4, 2, 32) and pool.keys.shape == (4, 32)


@pytest.mark.parametrize(
    ("config", "field"),
    [
        ({"top_k": 5}, "top_k"),
        ({"pool_size": 0}, "pool_size"),
        ({"insert": "middle"}, "insert"),
        ({"query": "cls"}, "query"),
        ({"layers": [1]}, "layers"),
        ({"pull_weight": -1.0}, "pull_weight"),
    ],
)
def test_bad_config_values_name_the_field(config, field):
    with pytest.raises(ConfigError, match=rf"PromptPoolConfig\.{field}"):
        mmpt.tuners.build("prompt_pool", **{"pool_size": 4, "top_k": 2, **config})

"""Loading checkpoints: formats, key report, domains, errors, safety, registry downloads, fingerprint, CLI."""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import pickle

import pytest
import torch
from loopback import closed_port_url, loopback_server
from safetensors.torch import save_file
from typer.testing import CliRunner

from mmpt import CheckpointError, ConfigError, load_backbone
from mmpt.backbone import BACKBONES, BackboneSpec, save_safetensors
from mmpt.cli.app import app
from mmpt.download import sha256_file
from mmpt.testing import make_tiny_checkpoint


@pytest.fixture
def tiny(tmp_path):
    return make_tiny_checkpoint(tmp_path / "tiny.pth")


def test_release_layout_loads_and_reports_skipped_decoders(tiny):
    model = load_backbone(tiny, num_heads=4)
    report = model.load_report
    assert report.format == "multivit" and report.ok
    assert model.domains == ["rgb", "depth", "semseg"]
    decoders = report.skipped["pretraining decoder keys (output_adapters.*)"]
    assert len(decoders) == 4 * 49  # rgb, depth, semseg, norm_rgb decoders, 49 keys each (multimae.md §3.1)
    assert report.loaded == len(model.state_dict())
    assert report.sha256 == sha256_file(tiny)
    assert (model.config.dim, model.config.depth, model.config.patch_size) == (64, 2, 16)
    assert model.config.domains["semseg"].num_classes == 133


def test_every_parameter_is_frozen_unless_asked(tiny):
    assert not any(p.requires_grad for p in load_backbone(tiny, num_heads=4).parameters())
    trainable = load_backbone(tiny, num_heads=4, freeze=False)
    assert all(p.requires_grad for n, p in trainable.named_parameters() if not n.endswith("pos_emb"))


def test_num_heads_defaults_to_dim_over_64(tiny):
    model = load_backbone(tiny)
    assert model.config.num_heads == 1
    assert "assumed" in model.load_report.num_heads_from


def test_safetensors_round_trip_keeps_heads_and_outputs(tmp_path, tiny):
    model = load_backbone(tiny, num_heads=4)
    path = save_safetensors(model, tmp_path / "b.safetensors")
    again = load_backbone(path)
    assert again.config.num_heads == 4 and again.load_report.format == "safetensors"
    x = torch.randn(1, 3, 64, 96)
    assert torch.equal(model(x), again(x))
    assert again.fingerprint == model.fingerprint


def test_fp16_safetensors_loads_into_fp32(tmp_path, tiny):
    model = load_backbone(tiny, num_heads=4)
    half = load_backbone(save_safetensors(model, tmp_path / "h.safetensors", dtype=torch.float16))
    assert half.global_tokens.dtype == torch.float32
    x = torch.randn(1, 3, 32, 32)
    assert (half(x) - model(x)).abs().max() < 5e-2


def test_domains_limit_the_adapters_and_are_reported(tiny):
    model = load_backbone(tiny, num_heads=4, domains=["rgb"])
    assert model.domains == ["rgb"]
    skipped = model.load_report.skipped["input-adapter keys of unselected domains"]
    assert sorted(skipped) == sorted(
        [f"input_adapters.depth.{k}" for k in ("pos_emb", "proj.weight", "proj.bias")]
        + [f"input_adapters.semseg.{k}" for k in ("pos_emb", "class_emb.weight", "proj.weight", "proj.bias")]
    )
    with pytest.raises(ConfigError, match="have no input adapter"):
        model({"depth": torch.randn(1, 1, 32, 32)})


def test_unknown_domain_is_an_error_listing_the_available_ones(tiny):
    with pytest.raises(CheckpointError, match=r"no input adapter for \['normal'\].*'rgb', 'depth', 'semseg'"):
        load_backbone(tiny, domains=["rgb", "normal"])


def test_missing_and_mismatched_keys_are_reported(tmp_path, tiny):
    state = torch.load(tiny, weights_only=True)["model"]
    del state["encoder.1.norm2.bias"]
    state["encoder.0.attn.proj.bias"] = torch.zeros(3)
    bad = tmp_path / "bad.pth"
    torch.save({"model": state}, bad)
    with pytest.raises(CheckpointError) as info:
        load_backbone(bad, num_heads=4)
    message = str(info.value)
    assert "missing: encoder.1.norm2.bias" in message
    assert "shape mismatch: encoder.0.attn.proj.bias checkpoint [3] vs model [64]" in message


def test_unexpected_keys_are_an_error(tmp_path, tiny):
    state = torch.load(tiny, weights_only=True)["model"]
    state["encoder.0.extra.weight"] = torch.zeros(2)
    torch.save({"model": state}, tmp_path / "extra.pth")
    with pytest.raises(CheckpointError, match=r"unexpected: encoder\.0\.extra\.weight"):
        load_backbone(tmp_path / "extra.pth", num_heads=4)


def test_a_foreign_checkpoint_says_what_was_found_and_expected(tmp_path):
    torch.save({"model": {"fc.weight": torch.zeros(2, 2)}}, tmp_path / "resnet.pth")
    with pytest.raises(CheckpointError, match=r"not a MultiMAE checkpoint.*\['fc.weight'\].*expected"):
        load_backbone(tmp_path / "resnet.pth")
    save_file({"fc.weight": torch.zeros(2)}, str(tmp_path / "x.safetensors"))
    with pytest.raises(CheckpointError, match="not a MultiMAE checkpoint"):
        load_backbone(tmp_path / "x.safetensors")
    (tmp_path / "junk.pth").write_bytes(b"not a checkpoint")
    with pytest.raises(CheckpointError, match="not a readable PyTorch checkpoint"):
        load_backbone(tmp_path / "junk.pth")


def test_a_finetuning_output_with_python_objects_is_refused(tmp_path, tiny):
    state = torch.load(tiny, weights_only=True)["model"]
    torch.save({"model": state, "args": argparse.Namespace(lr=1e-4), "epoch": 3}, tmp_path / "ft.pth")
    with pytest.raises(CheckpointError, match="contains Python objects") as info:
        load_backbone(tmp_path / "ft.pth")
    assert "weights_only=False" in info.value.hint


class _RunsCode:
    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def test_a_pickle_that_carries_code_never_runs_it(tmp_path):
    payload = _RunsCode()
    payload.marker = tmp_path / "pwned"
    with open(tmp_path / "evil.pth", "wb") as f:
        pickle.dump({"model": payload}, f, protocol=2)
    with pytest.raises(CheckpointError):
        load_backbone(tmp_path / "evil.pth")
    assert not (tmp_path / "pwned").exists()


def test_image_size_must_be_a_multiple_of_the_patch(tiny):
    with pytest.raises(ConfigError, match="not a multiple of the checkpoint's patch size 16"):
        load_backbone(tiny, image_size=100)


def test_inputs_must_be_multiples_of_the_patch(tiny):
    model = load_backbone(tiny, num_heads=4)
    with pytest.raises(ConfigError, match="not divisible by the patch size 16"):
        model({"rgb": torch.randn(1, 3, 40, 32)})


def test_fingerprint_changes_when_one_weight_changes(tiny):
    a, b = load_backbone(tiny, num_heads=4), load_backbone(tiny, num_heads=4)
    assert a.fingerprint == b.fingerprint
    with torch.no_grad():
        b.encoder[1].mlp.fc2.bias[5] += 1e-3
    assert a.fingerprint != b.fingerprint
    b.requires_grad_(True)  # requires_grad is not part of the identity
    with torch.no_grad():
        b.encoder[1].mlp.fc2.bias[5] -= 1e-3
    assert b.fingerprint == a.fingerprint
    assert load_backbone(tiny, num_heads=2).fingerprint != a.fingerprint  # heads change the computation


# ---- registry names and URLs through a loopback server -------------------------------------------
@pytest.fixture
def served(tmp_path, monkeypatch):
    monkeypatch.setenv("MMPT_CACHE", str(tmp_path / "cache"))
    data = make_tiny_checkpoint(tmp_path / "tmp.pth", seed=1).read_bytes()
    digest = hashlib.sha256(data).hexdigest()
    name = f"multimae-tiny_multivit-{digest[:8]}.pth"
    with loopback_server({name: data}) as server:
        yield server.url, name, digest


def _register(monkeypatch, spec):
    monkeypatch.setitem(BACKBONES._items, spec.name, spec)


def test_registry_name_downloads_into_the_cache_and_verifies(served, monkeypatch, tmp_path):
    url, name, digest = served
    _register(monkeypatch, BackboneSpec("tiny-test", f"{url}/{name}", sha256=digest[:8]))
    model = load_backbone("tiny-test", num_heads=4)
    cached = tmp_path / "cache" / "checkpoints" / name
    assert cached.exists() and model.load_report.sha256 == digest
    assert model.source_name == "tiny-test"
    assert load_backbone("tiny-test", num_heads=4).fingerprint == model.fingerprint  # served from the cache


def test_registry_download_with_a_bad_hash_is_refused_and_deleted(served, monkeypatch, tmp_path):
    url, name, _ = served
    _register(monkeypatch, BackboneSpec("tiny-bad", f"{url}/{name}", sha256="deadbeef"))
    with pytest.raises(CheckpointError, match="does not match the expected deadbeef"):
        load_backbone("tiny-bad", num_heads=4)
    assert not (tmp_path / "cache" / "checkpoints" / name).exists()


def test_a_corrupted_cached_file_is_caught_at_load(served, monkeypatch, tmp_path):
    url, name, digest = served
    _register(monkeypatch, BackboneSpec("tiny-test", f"{url}/{name}", sha256=digest))
    load_backbone("tiny-test", num_heads=4)
    cached = tmp_path / "cache" / "checkpoints" / name
    data = bytearray(cached.read_bytes())
    data[-100] ^= 0xFF
    cached.write_bytes(bytes(data))
    with pytest.raises(CheckpointError, match=f"delete {cached}"):
        load_backbone("tiny-test", num_heads=4)


def test_url_source_checks_the_hash_in_its_name(served):
    url, name, digest = served
    assert load_backbone(f"{url}/{name}", num_heads=4).load_report.sha256 == digest


def test_offline_registry_name_explains_the_manual_download(monkeypatch, tmp_path):
    monkeypatch.setenv("MMPT_CACHE", str(tmp_path / "cache"))
    spec = BACKBONES.get("multimae-b")
    _register(monkeypatch, BackboneSpec("multimae-b", f"{closed_port_url()}/{spec.filename}", sha256=spec.sha256))
    with pytest.raises(CheckpointError) as info:
        load_backbone("multimae-b")
    assert "Could not download multimae-b" in info.value.message
    assert spec.filename in info.value.hint and "load_backbone('/path/to/" in info.value.hint
    assert str(tmp_path / "cache" / "checkpoints" / spec.filename) in info.value.hint


def test_the_official_release_is_registered_with_its_hash():
    spec = BACKBONES.get("multimae-b")
    assert spec.filename == "multimae-b_98_rgb+-depth-semseg_1600e_multivit-afff3f8c.pth"
    assert spec.sha256.startswith("afff3f8c") and spec.size == 394_406_915
    assert BACKBONES.get("mae-b").filename == "mae-b_dec512d8b_1600e_multivit-c477195b.pth"


# ---- CLI ---------------------------------------------------------------------------------------
def test_inspect_prints_the_architecture_and_report(tiny):
    result = CliRunner().invoke(app, ["inspect", str(tiny), "--num-heads", "4"], env={"COLUMNS": "300"})
    assert result.exit_code == 0, result.output
    for text in ("multivit format", "rgb (3 ch)", "64 / 2 / 4", "196 pretraining decoder keys", "fingerprint"):
        assert text in result.output


def test_inspect_json_is_machine_readable(tiny):
    result = CliRunner().invoke(app, ["inspect", str(tiny), "--num-heads", "4", "--json"])
    info = json.loads(result.output)
    model = load_backbone(tiny, num_heads=4)
    assert info["fingerprint"] == model.fingerprint and info["sha256"] == sha256_file(tiny)
    assert info["parameters"] == sum(p.numel() for p in model.parameters())
    assert info["skipped"] == {"pretraining decoder keys (output_adapters.*)": 196}


def test_inspect_errors_are_clean_panels_with_exit_codes(tmp_path):
    wide = {"COLUMNS": "300"}
    result = CliRunner().invoke(app, ["inspect", str(tmp_path / "none.pth")], env=wide)
    assert result.exit_code == 1 and "does not exist" in result.output and "Traceback" not in result.output
    result = CliRunner().invoke(app, ["inspect", "multimae-c"], env=wide)
    assert result.exit_code == 2 and "Did you mean 'multimae-b'" in result.output


def test_the_shipped_pretrained_backbone_loads_and_verifies():
    model = load_backbone("multimae-tiny-synth")
    shipped = BACKBONES.get("multimae-tiny-synth")
    assert model.source_name == "multimae-tiny-synth" and model.load_report.sha256 == shipped.sha256  # verified
    assert (model.config.dim, model.config.depth, model.config.num_heads, model.config.patch_size) == (192, 12, 3, 16)
    assert model.config.domains["semseg"].num_classes == 41
    out = model({"rgb": torch.randn(1, 3, 128, 160), "depth": torch.randn(1, 1, 128, 160)})
    assert out.shape == (1, 2 * 80 + 1, 192) and torch.isfinite(out).all()

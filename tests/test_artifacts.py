"""Artifacts: one .safetensors per tuned task — exact round trips, base binding, damage detection, atomic writes."""

from __future__ import annotations

import json
import struct
from dataclasses import dataclass
from datetime import datetime

import pytest
import torch
from safetensors.torch import load_file, safe_open, save_file
from torch import nn
from typer.testing import CliRunner

from mmpt import load_backbone
from mmpt.artifacts import ARTIFACT_VERSION, describe_artifact, is_artifact, load_artifact, save_artifact
from mmpt.artifacts import format as artifact_format
from mmpt.backbone import save_safetensors
from mmpt.cli.app import app
from mmpt.errors import ArtifactError, BaseMismatchError, ConfigError
from mmpt.heads import build_head
from mmpt.testing import make_tiny_checkpoint
from mmpt.tuners import build

DIM = 32
METADATA = artifact_format.REQUIRED_FIELDS


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    return make_tiny_checkpoint(tmp_path_factory.mktemp("art") / "tiny.pth", dim=DIM, depth=2, num_heads=4)


def _backbone(checkpoint):
    return load_backbone(checkpoint, num_heads=4)


def _inputs():
    gen = torch.Generator().manual_seed(0)
    return {"rgb": torch.randn(2, 3, 48, 64, generator=gen), "depth": torch.randn(2, 1, 48, 64, generator=gen)}


def _trained(checkpoint, name="lora", **config):
    """A tuner + head with non-trivial weights, as after training."""
    backbone = _backbone(checkpoint)
    tuner = build(name, **config)
    tuner.apply(backbone)
    head = build_head("linear", dim=DIM, patch_size=16, out_channels=40, layers=[0, 1], domains=["rgb", "depth"])
    gen = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for _, p in [*tuner.trainable_parameters(), *head.named_parameters()]:
            p.add_(torch.randn(p.shape, generator=gen) * 0.05)
    return backbone, tuner.eval(), head.eval()


def _predict(tuner, head, backbone, x):
    with torch.no_grad():
        return head(tuner(x, layers=head.layers), backbone.token_layout(x))


@pytest.fixture(scope="module")
def artifact(checkpoint, tmp_path_factory):
    backbone, tuner, head = _trained(checkpoint, targets=["qkv", "fc1"])
    path = tmp_path_factory.mktemp("saved") / "depth.safetensors"
    save_artifact(path, tuner, head, backbone, task="semseg", metrics={"miou": 0.25})
    return path, backbone, _predict(tuner, head, backbone, _inputs())


@pytest.mark.parametrize("name", ["lora", "full"])
def test_round_trip_onto_a_fresh_backbone_is_exact_in_fp32(checkpoint, tmp_path, name):
    backbone, tuner, head = _trained(checkpoint, name)
    x = _inputs()
    expected = _predict(tuner, head, backbone, x)
    path = save_artifact(tmp_path / "a.safetensors", tuner, head, backbone, task="semseg")
    fresh = _backbone(checkpoint)
    loaded = load_artifact(path, fresh)
    assert loaded.tuner.name == name and loaded.metadata["tuner"] == name
    assert torch.equal(_predict(loaded.tuner.eval(), loaded.head.eval(), fresh, x), expected)


def test_fp16_storage_halves_the_size_and_stays_close(checkpoint, tmp_path):
    backbone, tuner, head = _trained(checkpoint, targets=["qkv", "proj", "fc1", "fc2"])
    x = _inputs()
    expected = _predict(tuner, head, backbone, x)
    fp32 = save_artifact(tmp_path / "fp32.safetensors", tuner, head, backbone, task="semseg")
    fp16 = save_artifact(tmp_path / "fp16.safetensors", tuner, head, backbone, task="semseg", dtype=torch.float16)
    sizes = [describe_artifact(p)["sizes"] for p in (fp32, fp16)]
    assert sizes[1]["tuner"]["bytes"] * 2 == sizes[0]["tuner"]["bytes"]
    assert sizes[1]["head"]["bytes"] * 2 == sizes[0]["head"]["bytes"]
    fresh = _backbone(checkpoint)
    loaded = load_artifact(fp16, fresh)
    assert all(p.dtype == torch.float32 for _, p in loaded.tuner.trainable_parameters())
    got = _predict(loaded.tuner.eval(), loaded.head.eval(), fresh, x)
    assert not torch.equal(got, expected)
    assert (got - expected).abs().max() <= 2e-3 * expected.abs().max()


def test_metadata_fields_are_present_and_parse(artifact, checkpoint):
    path, backbone, _ = artifact
    with safe_open(str(path), framework="pt") as f:
        raw = f.metadata()
        keys = list(f.keys())
    assert set(METADATA) <= set(raw) and all(isinstance(v, str) for v in raw.values())
    assert raw["format"] == "pt" and raw["mmpt_artifact_version"] == str(ARTIFACT_VERSION)
    assert raw["tuner"] == "lora" and raw["task"] == "semseg"
    assert raw["backbone"] == backbone.source_name == "tiny.pth"
    assert raw["backbone_sha256"] == backbone.load_report.sha256 and len(raw["backbone_sha256"]) == 64
    assert raw["backbone_fingerprint"] == _backbone(checkpoint).fingerprint
    assert json.loads(raw["tuner_config"])["targets"] == ["qkv", "fc1"]
    assert json.loads(raw["head_config"])["name"] == "linear"
    assert json.loads(raw["domains"]) == ["rgb", "depth", "semseg"]
    assert json.loads(raw["image_size"]) == [224, 224]
    assert json.loads(raw["metrics"]) == {"miou": 0.25}
    assert datetime.fromisoformat(raw["created_at"]).tzinfo is not None
    assert all(k.startswith(("tuner.", "head.")) for k in keys)
    assert "tuner.encoder.0.attn.qkv.lora_A.weight" in keys and "head.proj.weight" in keys


def test_describe_lists_tensors_and_splits_sizes(artifact):
    path, _, _ = artifact
    info = describe_artifact(path)
    rows = {r["name"]: r for r in info["tensors"]}
    assert rows["head.proj.weight"] == {
        "name": "head.proj.weight",
        "part": "head",
        "shape": [40 * 256, 2 * 2 * DIM],
        "dtype": "F32",
        "parameters": 40 * 256 * 4 * DIM,
        "bytes": 40 * 256 * 4 * DIM * 4,
    }
    assert info["sizes"]["tuner"]["tensors"] == 8  # 2 blocks x (qkv, fc1) x (A, B)
    assert info["sizes"]["tuner"]["bytes"] + info["sizes"]["head"]["bytes"] + info["header_bytes"] == info["file_bytes"]
    assert info["metadata"]["metrics"] == {"miou": 0.25}


def test_a_different_base_is_refused_naming_both_fingerprints(artifact, tmp_path):
    path, backbone, _ = artifact
    other = load_backbone(make_tiny_checkpoint(tmp_path / "other.pth", dim=DIM, depth=2, seed=7), num_heads=4)
    with pytest.raises(BaseMismatchError) as error:
        load_artifact(path, other)
    message = str(error.value)
    assert backbone.fingerprint in message and other.fingerprint in message
    assert "'tiny.pth'" in message and "load_backbone(" in message
    loaded = load_artifact(path, other, allow_base_mismatch=True)  # the escape hatch for experiments
    assert loaded.tuner.backbone is other


def test_metrics_must_be_json_ready(checkpoint, tmp_path):
    backbone, tuner, head = _trained(checkpoint)
    with pytest.raises(ConfigError, match=r"\.item\(\)"):
        save_artifact(tmp_path / "m.safetensors", tuner, head, backbone, task="depth", metrics={"rmse": torch.ones(())})
    assert list(tmp_path.iterdir()) == []


def test_a_tuner_only_artifact_has_no_head(checkpoint, tmp_path):
    backbone, tuner, _ = _trained(checkpoint)
    path = save_artifact(tmp_path / "t.safetensors", tuner, None, backbone, task="depth")
    loaded = load_artifact(path, _backbone(checkpoint))
    assert loaded.head is None and loaded.metadata["head_config"] is None
    assert describe_artifact(path)["sizes"]["head"] == {"tensors": 0, "parameters": 0, "bytes": 0}


def _damaged(path, tmp_path, edit):
    data = bytearray(path.read_bytes())
    edit(data)
    out = tmp_path / "damaged.safetensors"
    out.write_bytes(bytes(data))
    return out


def _header_length(data) -> int:
    return struct.unpack("<Q", bytes(data[:8]))[0]


def _flip_metadata_digit(data):
    start = bytes(data).index(b'"image_size":"[') + len(b'"image_size":"[')
    data[start] = ord("3") if data[start] != ord("3") else ord("4")  # 224 -> 324: still valid JSON


@pytest.mark.parametrize(
    ("edit", "expected"),
    [
        (lambda d: d.__delitem__(slice(len(d) - 100, None)), "not a readable safetensors"),  # truncated
        (lambda d: d.__setitem__(8, ord("[")), "not a readable safetensors"),  # header's opening brace
        (lambda d: d.__setitem__(len(d) - 3, d[len(d) - 3] ^ 0x10), "content_sha256"),  # one bit of one weight
        (_flip_metadata_digit, "content_sha256"),  # a metadata value
    ],
    ids=["truncated", "flipped-header-byte", "flipped-data-bit", "edited-metadata"],
)
def test_damaged_files_raise_artifact_error(artifact, checkpoint, tmp_path, edit, expected):
    path, _, _ = artifact
    damaged = _damaged(path, tmp_path, edit)
    with pytest.raises(ArtifactError, match=expected):
        load_artifact(damaged, _backbone(checkpoint))


def test_foreign_and_non_safetensors_files_raise_artifact_error(checkpoint, tmp_path):
    backbone = _backbone(checkpoint)
    checkpoint_st = save_safetensors(backbone, tmp_path / "backbone.safetensors")
    plain = tmp_path / "plain.safetensors"
    save_file({"w": torch.zeros(2)}, str(plain))
    text = tmp_path / "notes.safetensors"
    text.write_text("not a safetensors file at all")
    for path, expected in [
        (checkpoint_st, "not an mmpt artifact"),
        (plain, "not an mmpt artifact"),
        (text, "not a readable safetensors"),
        (checkpoint, "not a readable safetensors"),  # a .pth (zip) file
        (tmp_path / "missing.safetensors", "does not exist"),
    ]:
        with pytest.raises(ArtifactError, match=expected):
            load_artifact(path, backbone)
        with pytest.raises(ArtifactError, match=expected):
            describe_artifact(path)
        assert not is_artifact(path)


def test_a_newer_artifact_version_asks_for_an_upgrade(artifact, checkpoint, tmp_path):
    path, _, _ = artifact
    with safe_open(str(path), framework="pt") as f:
        metadata = f.metadata()
    newer = tmp_path / "newer.safetensors"
    save_file(load_file(str(path)), str(newer), metadata={**metadata, "mmpt_artifact_version": "2"})
    assert is_artifact(newer)
    with pytest.raises(ArtifactError, match="artifact version 2") as error:
        load_artifact(newer, _backbone(checkpoint))
    assert "upgrade mmpt" in str(error.value)


def test_an_interrupted_write_leaves_the_destination_untouched(artifact, checkpoint, tmp_path, monkeypatch):
    path, _, _ = artifact
    backbone, tuner, head = _trained(checkpoint)

    def crash_midway(tensors, filename, metadata=None):
        with open(filename, "wb") as f:
            f.write(b"\x00" * 1000)  # part of a file ...
        raise OSError("No space left on device")  # ... then the disk fills up

    monkeypatch.setattr(artifact_format, "save_file", crash_midway)
    fresh = tmp_path / "new.safetensors"
    with pytest.raises(OSError, match="No space left"):
        save_artifact(fresh, tuner, head, backbone, task="depth")
    assert list(tmp_path.iterdir()) == []  # no partial destination, no temp file left behind
    existing = tmp_path / "existing.safetensors"
    existing.write_bytes(path.read_bytes())
    with pytest.raises(OSError, match="No space left"):
        save_artifact(existing, tuner, head, backbone, task="depth")
    assert existing.read_bytes() == path.read_bytes() and len(list(tmp_path.iterdir())) == 1


@dataclass
class _PromptConfig:
    num_tokens: int = 50

    def to_dict(self):
        return {"num_tokens": self.num_tokens}


class _DeepPromptSized(nn.Module):
    """Stand-in with deep_prompt's tensor set at ViT-B size: 50 prompts x 12 blocks x 768 dims."""

    name = "deep_prompt"

    def __init__(self):
        super().__init__()
        self.config = _PromptConfig()
        self.prompts = nn.Parameter(torch.randn(12, 50, 768) * 0.02)


def test_a_deep_prompt_sized_tuner_is_under_1_mb_in_fp16_without_head(checkpoint, tmp_path):
    path = save_artifact(
        tmp_path / "vpt.safetensors", _DeepPromptSized(), None, _backbone(checkpoint), task="depth", dtype=torch.float16
    )
    info = describe_artifact(path)
    assert info["sizes"]["tuner"] == {"tensors": 1, "parameters": 460_800, "bytes": 921_600}
    assert info["file_bytes"] == path.stat().st_size <= 1_000_000


def test_mmpt_inspect_shows_an_artifact_as_tables_and_json(artifact):
    path, backbone, _ = artifact
    shown = CliRunner().invoke(app, ["inspect", str(path)], env={"COLUMNS": "200"})
    assert shown.exit_code == 0, shown.output
    assert "mmpt artifact v1" in shown.output and backbone.fingerprint in shown.output
    assert "tuner.encoder.0.attn.qkv.lora_A.weight" in shown.output and "head.proj.weight" in shown.output
    as_json = CliRunner().invoke(app, ["inspect", str(path), "--json"])
    info = json.loads(as_json.output)
    assert info["tensors"][0]["part"] == "tuner" and info["sizes"] == describe_artifact(path)["sizes"]

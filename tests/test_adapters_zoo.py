"""The committed `adapters_zoo/`: every entry verifies, one changed byte is caught, and each artifact loads
onto the shipped backbone it names (so re-shipping `multimae-tiny-synth` without re-tuning the zoo fails)."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import torch

from mmpt.train.inference import load_tuned
from mmpt.zoo import load_zoo, verify_zoo

ZOO = Path(__file__).resolve().parent.parent / "adapters_zoo"


def test_the_committed_zoo_verifies_and_covers_both_tasks() -> None:
    assert verify_zoo(ZOO) == []
    entries = load_zoo(ZOO).entries
    assert {e.task for e in entries} == {"depth", "semseg"} and len({e.tuner for e in entries}) >= 2


def test_one_changed_byte_fails_verification(tmp_path: Path) -> None:
    copy = shutil.copytree(ZOO, tmp_path / "zoo")
    entry = load_zoo(copy).entries[0]
    path = copy / entry.path
    data = bytearray(path.read_bytes())
    data[-10] ^= 0x01  # inside the last tensor's bytes
    path.write_bytes(bytes(data))
    problems = verify_zoo(copy)
    assert problems and any(entry.name in p or str(entry.path) in p for p in problems)


@pytest.mark.parametrize("name", [e.name for e in load_zoo(ZOO).entries])
def test_each_artifact_runs_on_the_shipped_backbone(name: str) -> None:
    entry = load_zoo(ZOO).get(name)
    tuned = load_tuned(ZOO / entry.path)  # raises BaseMismatchError if the shipped backbone changed
    assert tuned.model.backbone.fingerprint == entry.backbone_fingerprint
    h, w = entry.image_size
    with torch.no_grad():
        out = tuned.model({"rgb": torch.randn(1, 3, h, w)})
    assert out.shape[-2:] == (h, w) and torch.isfinite(out).all()

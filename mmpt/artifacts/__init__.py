"""Tuned-task artifacts: one `.safetensors` file per task (tuner + head + metadata); see `format.py`."""

from mmpt.artifacts.format import (
    ARTIFACT_VERSION,
    Artifact,
    describe_artifact,
    is_artifact,
    load_artifact,
    read_metadata,
    save_artifact,
    verify_artifact,
)

__all__ = [
    "ARTIFACT_VERSION",
    "Artifact",
    "describe_artifact",
    "is_artifact",
    "load_artifact",
    "read_metadata",
    "save_artifact",
    "verify_artifact",
]

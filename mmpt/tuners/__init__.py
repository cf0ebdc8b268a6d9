"""Pluggable tuners: `build(name, **config)`, `names()`. One file per tuner; see `base.py` for the contract."""

from __future__ import annotations

from typing import Any

from mmpt.tuners.base import TUNERS, Tuner, TunerConfig, register, trainable_summary

# Importing a tuner module registers it.
from mmpt.tuners import deep_prompt, full, linear_probe, lora, prompt_pool  # noqa: F401  isort: skip


def names() -> list[str]:
    """Registered tuner names."""
    return TUNERS.names()


def build(name: str, **config: Any) -> Tuner:
    """Builds a tuner from its registry name and config values (unknown names/keys get a did-you-mean)."""
    cls = TUNERS.get(name)
    return cls(cls.config_class.from_dict(config))


__all__ = ["TUNERS", "Tuner", "TunerConfig", "build", "names", "register", "trainable_summary"]

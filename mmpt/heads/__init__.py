"""Task heads: `build_head(name, **config)`, `HEADS`. The contract is in `base.py`; one file per head."""

from __future__ import annotations

from typing import Any

from mmpt.heads.base import HEADS, Head, HeadConfig, Layout, domain_tokens, head_config_dict, register_head

# Importing a head module registers it.
from mmpt.heads import linear  # noqa: F401  isort: skip
from mmpt.heads import dpt  # noqa: F401  isort: skip


def build_head(name: str, **config: Any) -> Head:
    """Builds a head from its registry name and config values (unknown names/keys get a did-you-mean).

    Example:
        >>> head = build_head("linear", dim=backbone.dim, patch_size=backbone.patch_size, out_channels=40)
    """
    cls = HEADS.get(name)
    return cls(cls.config_class.from_dict(config))


__all__ = ["HEADS", "Head", "HeadConfig", "Layout", "build_head", "domain_tokens", "head_config_dict", "register_head"]

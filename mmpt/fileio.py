"""Atomic file writes: a temp file next to the destination, flushed to disk, then renamed onto it.

A crash or a full disk never leaves a half-written results file, index or artifact copy behind.
"""

from __future__ import annotations

import json
import os
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any


def atomic_write(dest: str | os.PathLike, write: Callable[[Path], object]) -> Path:
    """Runs `write(tmp)` on a temp file next to `dest`, then renames it onto `dest`: never a partial `dest`."""
    dest = Path(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = dest.with_name(f".{dest.name}.{uuid.uuid4().hex[:8]}.tmp")
    try:
        write(tmp)
        with open(tmp, "rb+") as f:  # on disk before the rename makes it visible
            os.fsync(f.fileno())
        os.replace(tmp, dest)
    finally:
        tmp.unlink(missing_ok=True)
    return dest


def write_json_atomic(path: str | os.PathLike, data: Any) -> Path:
    """`data` as indented JSON (non-JSON values as `str`), written atomically."""
    text = json.dumps(data, indent=2, default=str) + "\n"
    return atomic_write(path, lambda tmp: tmp.write_text(text, encoding="utf-8"))

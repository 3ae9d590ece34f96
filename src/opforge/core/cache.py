"""The opforge cache folder: plans, compiled objects, TensorRT headers and tuning records, shared by runs."""

from __future__ import annotations

import os
from pathlib import Path


def default_cache_dir() -> Path:
    """OPFORGE_CACHE, else ~/.cache/opforge."""
    return Path(os.environ.get("OPFORGE_CACHE", Path.home() / ".cache" / "opforge"))

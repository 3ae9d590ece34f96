"""The opforge cache folder: plans, compiled objects, TensorRT headers and tuning records, shared by runs."""

from __future__ import annotations

import os
from pathlib import Path


def default_cache_dir() -> Path:
    """OPFORGE_CACHE, else ~/.cache/opforge."""
    return Path(os.environ.get("OPFORGE_CACHE", Path.home() / ".cache" / "opforge"))


def writable_cache_dir() -> Path:
    """The cache folder, created and checked writable: an OpforgeError (one line, naming it) otherwise."""
    import tempfile

    from opforge.core.errors import OpforgeError

    try:
        path = default_cache_dir()
        path.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=path, prefix=".write-test-"):
            pass
    except (OSError, RuntimeError) as e:  # RuntimeError: Path.home() without a home
        where = os.environ.get("OPFORGE_CACHE") or "~/.cache/opforge"
        why = getattr(e, "strerror", None) or str(e)
        raise OpforgeError(
            f"cache folder {where}: cannot write there ({why}): set OPFORGE_CACHE to a writable folder"
        ) from None
    return path

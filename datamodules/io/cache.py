"""The cache folder every fetch uses: example recordings, wheels, staged remote shards."""

from __future__ import annotations

import os
from pathlib import Path

CACHE_ENV = "NEUROTRAIN_CACHE"


def cache_root() -> Path:
    """``$NEUROTRAIN_CACHE`` if set, else ``~/.cache/neurotrain``."""
    env = os.environ.get(CACHE_ENV)
    return Path(env).expanduser() if env else Path.home() / ".cache" / "neurotrain"

"""Where dodai keeps things: the per-user cache (models, corpora) and run folders."""

from __future__ import annotations

import os
from pathlib import Path


def cache_dir() -> Path:
    """The per-user cache folder: $DODAI_CACHE, else $XDG_CACHE_HOME/dodai, else ~/.cache/dodai."""
    env = os.environ.get("DODAI_CACHE")
    if env:
        return Path(env).expanduser()
    xdg = os.environ.get("XDG_CACHE_HOME")
    base = Path(xdg).expanduser() if xdg else Path.home() / ".cache"
    return base / "dodai"

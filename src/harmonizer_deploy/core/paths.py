"""Where the tool keeps what it builds for the user: one cache root, overridable."""

from __future__ import annotations

import os
from pathlib import Path


def cache_root() -> Path:
    """`$HARMONIZER_DEPLOY_CACHE`, else `$XDG_CACHE_HOME/harmonizer-deploy`, else `~/.cache/harmonizer-deploy`."""
    env = os.environ.get("HARMONIZER_DEPLOY_CACHE")
    if env:
        return Path(env)
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "harmonizer-deploy"

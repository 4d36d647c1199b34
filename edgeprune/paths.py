"""Where edgeprune keeps a user's data: never inside the installed package, which may be read-only or shared.

The XDG base directory rules, written out rather than a dependency: edgeprune runs where TVM runs (Linux, macOS),
and its data is a few LUTs and tuning logs that need no platform-specific placement beyond that.
"""

from __future__ import annotations

import os
from pathlib import Path


def user_data_dir() -> Path:
    """`$XDG_DATA_HOME/edgeprune`, else `~/.local/share/edgeprune` (the XDG default); not created here."""
    base = os.environ.get("XDG_DATA_HOME", "")
    # XDG: a relative value is invalid and must be ignored
    root = Path(base) if base and Path(base).is_absolute() else Path.home() / ".local" / "share"
    return root / "edgeprune"


def user_cache_dir() -> Path:
    """`$EDGEPRUNE_CACHE_DIR`, else `$XDG_CACHE_HOME/edgeprune`, else `~/.cache/edgeprune`: what can be fetched or
    built again (the emulated board's root filesystem, a board's wheels); not created here."""
    env = os.environ.get("EDGEPRUNE_CACHE_DIR")
    if env:
        return Path(env).expanduser()
    xdg = os.environ.get("XDG_CACHE_HOME")
    return (Path(xdg).expanduser() if xdg else Path.home() / ".cache") / "edgeprune"

"""File-system questions that answer False instead of raising for a path that cannot exist.

``Path.is_file()`` raises for a name longer than NAME_MAX (ENAMETOOLONG) or a permission error on
a parent; a profile value must never turn into a traceback, so the core asks through these.
"""
from __future__ import annotations

import os
from pathlib import Path


def is_file(path: str | os.PathLike[str]) -> bool:
    try:
        return Path(path).is_file()
    except (OSError, ValueError):
        return False


def is_dir(path: str | os.PathLike[str]) -> bool:
    try:
        return Path(path).is_dir()
    except (OSError, ValueError):
        return False

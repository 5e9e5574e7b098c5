"""Old run directories: one per profile and port set accumulates logs and configs (225 MB after a
day of testing). The newest few per profile are kept; older ones go, never one that is in use."""
from __future__ import annotations

import logging
import shutil
from collections import defaultdict
from pathlib import Path

from stackpanel.core.supervise.runlock import RunDirLocked, RunLock

log = logging.getLogger("stackpanel.supervise")

KEEP_PER_PROFILE = 3


def _profile_of(run_dir: Path) -> str:
    """`nginx-uvicorn-1a2b3c4d` → `nginx-uvicorn` (the digest tells port sets apart)."""
    head, _, digest = run_dir.name.rpartition("-")
    return head if head and len(digest) == 8 else run_dir.name


def _size(path: Path) -> int:
    total = 0
    for p in path.rglob("*"):
        try:
            if p.is_file() and not p.is_symlink():
                total += p.stat().st_size
        except OSError:
            continue
    return total


def run_dirs_usage(root: Path) -> tuple[int, int]:
    """(how many run directories, their bytes) under `root`."""
    dirs = [d for d in root.iterdir() if d.is_dir()] if root.is_dir() else []
    return len(dirs), sum(_size(d) for d in dirs)


def prune_run_dirs(root: Path, keep: int = KEEP_PER_PROFILE, spare: Path | None = None) -> list[Path]:
    """Remove all but the `keep` most recently used run directories of each profile (by the mtime
    of their logs), skipping `spare` and any directory a live run holds. Returns what was removed."""
    if not root.is_dir():
        return []
    groups: dict[str, list[Path]] = defaultdict(list)
    for d in root.iterdir():
        if d.is_dir():
            groups[_profile_of(d)].append(d)
    removed: list[Path] = []
    for dirs in groups.values():
        dirs.sort(key=lambda d: max((p.stat().st_mtime for p in [d, *d.glob("logs/*")] if p.exists()), default=0),
                  reverse=True)
        for old in dirs[keep:]:
            if spare is not None and old.resolve() == spare.resolve():
                continue
            lock = RunLock(old)
            try:
                lock.acquire()  # a live run holds it: leave that one alone
            except (RunDirLocked, OSError):
                continue
            try:
                shutil.rmtree(old, ignore_errors=True)
                removed.append(old)
            finally:
                lock.release()
    if removed:
        log.info("removed %d old run directories under %s", len(removed), root)
    return removed

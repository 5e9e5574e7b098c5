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
#: earlier runs' logs kept beside the current ones (logs.1 is the last run's)
KEEP_PREVIOUS_LOGS = 3


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


def archive_logs(logs_dir: Path, keep: int = KEEP_PREVIOUS_LOGS) -> Path | None:
    """Before a start: move the last run's logs to ``logs.1`` (``logs.1`` to ``logs.2`` ...; older
    than `keep` are removed), so every run starts from an empty log and its counts from zero."""
    if not logs_dir.is_dir() or not any(p.is_file() and p.stat().st_size for p in logs_dir.iterdir()):
        return None
    oldest = logs_dir.with_name(f"{logs_dir.name}.{keep}")
    if oldest.exists():
        shutil.rmtree(oldest, ignore_errors=True)
    for n in range(keep - 1, 0, -1):
        older = logs_dir.with_name(f"{logs_dir.name}.{n}")
        if older.exists():
            older.rename(logs_dir.with_name(f"{logs_dir.name}.{n + 1}"))
    previous = logs_dir.with_name(f"{logs_dir.name}.1")
    logs_dir.rename(previous)
    return previous

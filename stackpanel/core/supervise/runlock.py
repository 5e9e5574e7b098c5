"""One run per run directory: an exclusive flock the kernel releases when its owner dies.

Two starts of the same profile at the same offset once both reported "up", each owning half the
processes and overwriting one run record. The run record's own check could not see a run that
had not started a process yet; a lock taken before anything else closes that gap, and a crash of
the owner (even kill -9) frees it, so there is never a stale lock to clean up.
"""
from __future__ import annotations

import fcntl
import os
import sys
from pathlib import Path

from stackpanel.core.supervise.spawner import SuperviseError

LOCK_NAME = "run.lock"


class RunDirLocked(SuperviseError):
    """Another live stackpanel owns this run directory."""


class RunLock:
    def __init__(self, run_dir: Path):
        self.path = Path(run_dir) / LOCK_NAME
        self._fd: int | None = None

    @property
    def held(self) -> bool:
        return self._fd is not None

    def acquire(self) -> None:
        """Take the lock or raise RunDirLocked naming the holder. Idempotent for the holder."""
        if self._fd is not None:
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 200, 0).decode("utf-8", "replace").strip() or "another process"
            os.close(fd)
            raise RunDirLocked(f"this stack is already running from {self.path.parent} ({holder}); stop it "
                               "there first, or start this one with another --port-offset") from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"stackpanel pid {os.getpid()}: {' '.join(sys.argv)[:160]}\n".encode(), 0)
        self._fd = fd

    def release(self) -> None:
        if self._fd is not None:
            fd, self._fd = self._fd, None
            os.close(fd)  # closing drops the flock

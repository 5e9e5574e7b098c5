"""Running probe processes and finding executables (``$PATH``, then the sbin and Homebrew dirs)."""
from __future__ import annotations

import logging
import os
import shlex
import shutil
import subprocess
from collections.abc import Iterable, Mapping
from pathlib import Path

log = logging.getLogger("stackpanel.discovery")

#: Directories searched after $PATH (servers live in sbin, which a normal user's PATH may lack).
EXTRA_BIN_DIRS: tuple[str, ...] = (
    "/usr/sbin", "/usr/local/sbin", "/sbin", "/usr/bin", "/usr/local/bin",
    "/opt/homebrew/bin", "/opt/homebrew/sbin", "/opt/local/sbin", "/opt/local/bin",
)

#: How long one probe process may take before we give up on it.
PROBE_TIMEOUT_S = 10.0


def _run(argv: list[str], env: Mapping[str, str] | None = None, cwd: str | None = None) -> tuple[int, str, str]:
    """Run a probe; (returncode, stdout, stderr), or (-1, "", reason) when it could not run."""
    try:
        proc = subprocess.run(
            argv, check=False, capture_output=True, text=True, errors="replace", timeout=PROBE_TIMEOUT_S,
            env=dict(env) if env is not None else None, cwd=cwd, stdin=subprocess.DEVNULL,
        )
    except (OSError, subprocess.SubprocessError) as exc:
        log.warning("could not run %s: %s", _describe(argv), exc)
        return -1, "", str(exc)
    log.debug("%s -> %d", _describe(argv), proc.returncode)
    return proc.returncode, proc.stdout, proc.stderr


def _describe(argv: list[str]) -> str:
    """The command line for a log message, with inline scripts elided."""
    return shlex.join(a if "\n" not in a else "<script>" for a in argv)


def _search_dirs(search_path: str | None) -> list[str]:
    if search_path is not None:
        dirs = search_path.split(os.pathsep)
    else:
        dirs = os.environ.get("PATH", os.defpath).split(os.pathsep) + list(EXTRA_BIN_DIRS)
    unique: list[str] = []
    for d in dirs:
        if d and d not in unique:
            unique.append(d)
    return unique


def find_executable(names: Iterable[str], search_path: str | None = None) -> Path | None:
    """First executable called one of ``names``, directory by directory.

    ``search_path`` (``os.pathsep``-joined) replaces the default search: ``$PATH`` followed by
    :data:`EXTRA_BIN_DIRS` (sbin and Homebrew directories).
    """
    wanted = tuple(names)
    for directory in _search_dirs(search_path):
        for name in wanted:
            found = shutil.which(name, path=directory)
            if found:
                return Path(found)
    return None

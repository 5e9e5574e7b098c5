"""Per-process log files that stay bounded, and cheap reads of their last lines.

Children write straight to an ``O_APPEND`` file descriptor (see the spawner), so the file
cannot be renamed away under them.  :class:`LogRotator` therefore copy-truncates: when a file
is over ``max_bytes`` it copies the newest ``keep_bytes`` (starting at a line boundary) to
``<file>.1`` and truncates the file to 0; an ``O_APPEND`` writer simply continues at the new
end.  Lines written between the copy and the truncate (microseconds) are lost; that is the
price of copytruncate and acceptable for server logs.

Threading: ``LogRotator`` is thread-safe; call :meth:`LogRotator.check` periodically from one
background thread.  ``tail_lines`` is a pure read and safe anywhere but the GUI thread.
"""

from __future__ import annotations

import contextlib
import logging
import os
import threading
from collections.abc import Iterable
from pathlib import Path

log = logging.getLogger("stackpanel.supervise")

__all__ = ["DEFAULT_MAX_BYTES", "LogRotator", "rotate_file", "tail_lines"]

DEFAULT_MAX_BYTES = 5 * 1024 * 1024
_CHUNK = 64 * 1024


def _backup_path(path: Path) -> Path:
    return path.with_name(path.name + ".1")


def rotate_file(path: str | os.PathLike[str], keep_bytes: int) -> int:
    """Copy the newest ``keep_bytes`` of ``path`` to ``<path>.1`` and truncate ``path`` to 0.

    Returns the size the file had.  The backup is written atomically and starts at a line
    boundary (unless a single line is longer than ``keep_bytes``).
    """
    p = Path(path)
    backup = _backup_path(p)
    tmp = p.with_name(f".{p.name}.1.tmp")
    with open(p, "r+b") as f:
        size = os.fstat(f.fileno()).st_size
        start = max(0, size - keep_bytes)
        if start > 0:
            # Skip the partial line at the cut, if there is a newline to cut at.
            head = os.pread(f.fileno(), min(keep_bytes, 64 * 1024), start - 1)
            nl = head.find(b"\n")
            if nl != -1:
                start = start - 1 + nl + 1
        with open(tmp, "wb") as out:
            pos = start
            # Copy up to the current end: it may have grown since the fstat.
            while True:
                chunk = os.pread(f.fileno(), _CHUNK, pos)
                if not chunk:
                    break
                out.write(chunk)
                pos += len(chunk)
            os.ftruncate(f.fileno(), 0)
        os.replace(tmp, backup)
    return size


class LogRotator:
    """Keeps a set of log files below ``max_bytes`` each (copy-truncate into ``<file>.1``)."""

    def __init__(self, max_bytes: int = DEFAULT_MAX_BYTES, keep_bytes: int | None = None) -> None:
        if max_bytes <= 0:
            raise ValueError(f"max_bytes must be positive, got {max_bytes}")
        self.max_bytes = max_bytes
        #: How much of the newest content goes to ``<file>.1`` (default: up to ``max_bytes``).
        self.keep_bytes = max_bytes if keep_bytes is None else keep_bytes
        self._lock = threading.Lock()
        self._paths: dict[Path, None] = {}

    def add(self, path: str | os.PathLike[str]) -> None:
        with self._lock:
            self._paths[Path(path)] = None

    def add_all(self, paths: Iterable[str | os.PathLike[str]]) -> None:
        for p in paths:
            self.add(p)

    def remove(self, path: str | os.PathLike[str]) -> None:
        with self._lock:
            self._paths.pop(Path(path), None)

    @property
    def paths(self) -> tuple[Path, ...]:
        with self._lock:
            return tuple(self._paths)

    def check(self) -> list[Path]:
        """Rotate every watched file that is over the limit; return the ones rotated.

        Errors on one file are logged and do not stop the others; a missing file is skipped.
        """
        rotated: list[Path] = []
        with self._lock:
            paths = list(self._paths)
            for p in paths:
                try:
                    if p.stat().st_size <= self.max_bytes:
                        continue
                    size = rotate_file(p, self.keep_bytes)
                except FileNotFoundError:
                    continue
                except OSError as exc:
                    log.warning("cannot rotate log %s: %s", p, exc)
                    continue
                log.debug("rotated log %s (%d bytes)", p, size)
                rotated.append(p)
        return rotated


def tail_lines(
    path: str | os.PathLike[str], n: int, *, max_bytes: int = 4 * 1024 * 1024, encoding: str = "utf-8"
) -> list[str]:
    """The last ``n`` lines of a file, reading backwards from the end (never the whole file).

    A last line without a newline (still being written) is included.  Undecodable bytes are
    replaced, line endings stripped.  At most ``max_bytes`` are read: with lines longer than
    that, the first returned line may be cut.  A missing file gives [].
    """
    if n <= 0:
        return []
    try:
        f = open(path, "rb")  # noqa: SIM115 - closed below
    except FileNotFoundError:
        return []
    with contextlib.closing(f):
        fd = f.fileno()
        end = os.fstat(fd).st_size
        pos = end
        chunks: list[bytes] = []
        newlines = 0
        read = 0
        # n lines need n newlines before them, plus possibly the trailing one.
        while pos > 0 and newlines <= n and read < max_bytes:
            size = min(_CHUNK, pos, max_bytes - read)
            pos -= size
            chunk = os.pread(fd, size, pos)
            if len(chunk) < size:  # truncated under us: start over from the new end
                return tail_lines(path, n, max_bytes=max_bytes, encoding=encoding)
            chunks.append(chunk)
            newlines += chunk.count(b"\n")
            read += size
    data = b"".join(reversed(chunks))
    lines = data.split(b"\n")
    if lines and lines[-1] == b"":
        lines.pop()  # the file ends with a newline
    return [ln.rstrip(b"\r").decode(encoding, errors="replace") for ln in lines[-n:]]

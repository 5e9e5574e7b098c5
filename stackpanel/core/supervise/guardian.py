"""A tiny watchdog process that kills a stack's process groups when stackpanel dies.

PR_SET_PDEATHSIG kills the servers' *leaders* when stackpanel dies, but not their workers: an
nginx worker whose master was SIGKILLed goes on serving, and so do Apache children. The guardian
closes that gap. It is a separate process (its own session, so neither Ctrl-C nor a hangup
reaches it) that reads process-group ids from a pipe; when the pipe reaches EOF — stackpanel
exited, however it exited — it SIGKILLs every group it still knows and exits.

Normal stops remove the groups first ("-PGID"), so the guardian then has nothing to do.
"""
from __future__ import annotations

import logging
import os
import subprocess
import sys
import threading

log = logging.getLogger("stackpanel.supervise")

# Runs under `python -I -S`: no site, no stackpanel import, starts in ~10 ms.
_GUARDIAN_CODE = r"""
import os, signal, sys
signal.signal(signal.SIGINT, signal.SIG_IGN)
signal.signal(signal.SIGHUP, signal.SIG_IGN)
groups = set()
for line in sys.stdin:
    line = line.strip()
    if line.startswith("+"):
        groups.add(int(line[1:]))
    elif line.startswith("-"):
        groups.discard(int(line[1:]))
for pgid in groups:
    try:
        os.killpg(pgid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass
"""


class Guardian:
    """Owner side of the watchdog. Thread-safe; cheap to call for every spawn and stop."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._proc = subprocess.Popen(
            [sys.executable, "-I", "-S", "-c", _GUARDIAN_CODE],
            stdin=subprocess.PIPE, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
            start_new_session=True, close_fds=True, text=True, bufsize=1,
        )
        log.debug("guardian pid %d watches this stack's process groups", self._proc.pid)

    @property
    def pid(self) -> int:
        return self._proc.pid

    def _send(self, line: str) -> None:
        with self._lock:
            if self._proc.stdin is None or self._proc.stdin.closed:
                return
            try:
                self._proc.stdin.write(line + "\n")
                self._proc.stdin.flush()
            except (BrokenPipeError, ValueError):
                log.warning("the guardian process is gone; a crash of stackpanel could now orphan servers")

    def watch(self, pgid: int) -> None:
        self._send(f"+{pgid}")

    def forget(self, pgid: int) -> None:
        self._send(f"-{pgid}")

    def close(self) -> None:
        """Close the pipe. The guardian kills only the groups not forgotten, then exits."""
        with self._lock:
            if self._proc.stdin is not None and not self._proc.stdin.closed:
                try:
                    self._proc.stdin.close()
                except BrokenPipeError:
                    pass
        try:
            self._proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            os.kill(self._proc.pid, 9)
            self._proc.wait()

"""One long-lived thread that performs every ``subprocess.Popen`` for stackpanel.

Why a dedicated thread: on Linux every child gets ``PR_SET_PDEATHSIG(SIGKILL)`` so that it
dies with stackpanel, even when stackpanel is killed with ``kill -9``.  The kernel delivers
that signal when the *thread* that forked the child exits, not the process.  Spawning from a
short-lived worker thread (a thread pool, a Qt worker, an asyncio executor) would therefore
kill the servers the moment that thread goes away.  This module keeps exactly one spawner
thread alive for the lifetime of the process; callers hand it requests through a queue and
get the ``Popen`` (or the exception) back through a ``Future``.

Threading rules: :meth:`Spawner.submit` and :meth:`Spawner.spawn` may be called from any
thread.  Never stop the spawner thread while children it started are meant to keep running.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import logging
import os
import queue
import signal
import subprocess
import sys
import threading
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import Future
from dataclasses import dataclass
from pathlib import Path

from stackpanel.core.errors import StackpanelError

log = logging.getLogger("stackpanel.supervise")

__all__ = [
    "SpawnError",
    "SpawnRequest",
    "Spawner",
    "SuperviseError",
    "default_spawner",
    "pdeathsig_supported",
]

PR_SET_PDEATHSIG = 1

_LIBC: ctypes.CDLL | None = None
if sys.platform.startswith("linux"):
    try:
        # Loaded once, in the parent: the child must not load libraries between fork and exec.
        _LIBC = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
        _PRCTL: Callable[..., int] | None = _LIBC.prctl
    except (OSError, AttributeError):  # pragma: no cover - exotic libc
        _LIBC = None
        _PRCTL = None
else:  # pragma: no cover - not Linux
    _PRCTL = None


class SuperviseError(StackpanelError):
    """Base class of every error raised by the supervise layer; ``str()`` is meant for people."""


class SpawnError(SuperviseError):
    """A child process could not be started."""


def pdeathsig_supported() -> bool:
    """True when children can be tied to our lifetime with ``PR_SET_PDEATHSIG`` (Linux)."""
    return _PRCTL is not None


@dataclass(frozen=True)
class SpawnRequest:
    """Everything needed to start one child. ``stderr_path=None`` sends stderr to ``log_path``."""

    argv: tuple[str, ...]
    log_path: Path
    env: Mapping[str, str] | None = None
    cwd: Path | None = None
    stderr_path: Path | None = None
    #: open descriptors the child inherits under the same numbers (listening sockets we hand over)
    pass_fds: tuple[int, ...] = ()


def _make_preexec(expected_parent: int, use_pdeathsig: bool) -> Callable[[], None] | None:
    """Build the function run in the child between fork and exec.

    It runs in a forked copy of a multi-threaded process, so it only makes raw syscalls:
    ``prctl`` through the already-loaded libc, ``getppid`` and ``_exit``.
    """
    prctl = _PRCTL
    if not use_pdeathsig or prctl is None:
        return None
    sigkill = int(signal.SIGKILL)

    def _child_setup() -> None:
        if prctl(PR_SET_PDEATHSIG, sigkill, 0, 0, 0) != 0:
            os.write(2, b"stackpanel: prctl(PR_SET_PDEATHSIG) failed; this child may outlive stackpanel\n")
        # If stackpanel died between fork and prctl, the signal will never come: we were
        # already re-parented. Do not start a server nobody supervises.
        if os.getppid() != expected_parent:
            os._exit(70)

    return _child_setup


def _describe_oserror(req: SpawnRequest, exc: OSError) -> str:
    exe = req.argv[0] if req.argv else "<empty argv>"
    filename = getattr(exc, "filename", None)
    if isinstance(exc, FileNotFoundError):
        if req.cwd is not None and filename is not None and Path(str(filename)) == Path(req.cwd):
            return f"cannot start {exe!r}: working directory {str(req.cwd)!r} does not exist"
        return (
            f"cannot start {exe!r}: executable not found "
            "(is it installed and on PATH, or give an absolute path)"
        )
    if isinstance(exc, PermissionError):
        return f"cannot start {exe!r}: permission denied ({exc.strerror}); check that it is executable"
    return f"cannot start {exe!r}: {exc.strerror or exc}"


class Spawner:
    """Owns the one thread that forks children.  Usually use :func:`default_spawner`.

    ``pdeathsig=True`` (default) ties each child's life to this process on Linux.
    The thread is a daemon thread that is never stopped: see the module docstring.
    """

    def __init__(self, *, pdeathsig: bool = True, name: str = "stackpanel-spawner") -> None:
        self._use_pdeathsig = pdeathsig
        self._queue: queue.SimpleQueue[tuple[SpawnRequest, Future[subprocess.Popen[bytes]]]] = (
            queue.SimpleQueue()
        )
        self._owner_pid = os.getpid()
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self._thread.start()

    @property
    def thread(self) -> threading.Thread:
        return self._thread

    @property
    def owner_pid(self) -> int:
        return self._owner_pid

    def submit(
        self,
        argv: Sequence[str],
        *,
        log_path: str | os.PathLike[str],
        env: Mapping[str, str] | None = None,
        cwd: str | os.PathLike[str] | None = None,
        stderr_path: str | os.PathLike[str] | None = None,
        pass_fds: Sequence[int] = (),
    ) -> Future[subprocess.Popen[bytes]]:
        """Queue a spawn; the Future resolves to the ``Popen`` or raises :class:`SpawnError`."""
        if not argv:
            raise SpawnError("cannot start a process with an empty command line")
        if os.getpid() != self._owner_pid:
            raise SpawnError("this Spawner belongs to another process (used after fork); create a new one")
        req = SpawnRequest(
            argv=tuple(str(a) for a in argv),
            log_path=Path(log_path),
            env=dict(env) if env is not None else None,
            cwd=Path(cwd) if cwd is not None else None,
            stderr_path=Path(stderr_path) if stderr_path is not None else None,
            pass_fds=tuple(pass_fds),
        )
        fut: Future[subprocess.Popen[bytes]] = Future()
        if threading.current_thread() is self._thread:
            # Called from the spawner thread itself (should not happen): run inline, no deadlock.
            self._handle(req, fut)
        else:
            self._queue.put((req, fut))
        return fut

    def spawn(
        self,
        argv: Sequence[str],
        *,
        log_path: str | os.PathLike[str],
        env: Mapping[str, str] | None = None,
        cwd: str | os.PathLike[str] | None = None,
        stderr_path: str | os.PathLike[str] | None = None,
        pass_fds: Sequence[int] = (),
        timeout: float = 30.0,
    ) -> subprocess.Popen[bytes]:
        """Start a child and wait for the ``Popen``. Raises :class:`SpawnError`."""
        fut = self.submit(argv, log_path=log_path, env=env, cwd=cwd, stderr_path=stderr_path, pass_fds=pass_fds)
        return fut.result(timeout=timeout)

    # -- spawner thread -------------------------------------------------------------------
    def _run(self) -> None:
        while True:
            req, fut = self._queue.get()
            if not fut.set_running_or_notify_cancel():
                continue
            self._handle(req, fut)

    def _handle(self, req: SpawnRequest, fut: Future[subprocess.Popen[bytes]]) -> None:
        try:
            fut.set_result(self._popen(req))
        except BaseException as exc:
            fut.set_exception(exc)

    def _popen(self, req: SpawnRequest) -> subprocess.Popen[bytes]:
        exe = req.argv[0]
        try:
            out = open(req.log_path, "ab")  # noqa: SIM115 - closed below, after the fork
        except OSError as exc:
            raise SpawnError(
                f"cannot start {exe!r}: cannot open its log file {str(req.log_path)!r}: {exc.strerror or exc}"
            ) from exc
        err_file = None
        try:
            if req.stderr_path is not None:
                try:
                    err_file = open(req.stderr_path, "ab")  # noqa: SIM115
                except OSError as exc:
                    raise SpawnError(
                        f"cannot start {exe!r}: cannot open its stderr log {str(req.stderr_path)!r}: "
                        f"{exc.strerror or exc}"
                    ) from exc
            try:
                popen = subprocess.Popen(
                    list(req.argv),
                    stdin=subprocess.DEVNULL,
                    stdout=out,
                    stderr=err_file if err_file is not None else subprocess.STDOUT,
                    env=dict(req.env) if req.env is not None else None,
                    cwd=req.cwd,
                    close_fds=True,
                    pass_fds=req.pass_fds,
                    start_new_session=True,
                    preexec_fn=_make_preexec(os.getpid(), self._use_pdeathsig),  # noqa: PLW1509 - raw syscalls only
                )
            except OSError as exc:
                raise SpawnError(_describe_oserror(req, exc)) from exc
            except subprocess.SubprocessError as exc:
                raise SpawnError(f"cannot start {exe!r}: {exc}") from exc
        finally:
            out.close()
            if err_file is not None:
                err_file.close()
        log.debug("spawned pid %d: %s (log %s)", popen.pid, " ".join(req.argv), req.log_path)
        return popen


_default_lock = threading.Lock()
_default: Spawner | None = None


def default_spawner() -> Spawner:
    """The process-wide spawner (created on first use; recreated in a forked child)."""
    global _default
    with _default_lock:
        if _default is None or _default.owner_pid != os.getpid():
            _default = Spawner()
        return _default

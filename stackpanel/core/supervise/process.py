"""Managed child processes: event-driven exit detection and group-wide, escalating stop.

Threading rules
---------------
* :class:`ExitWatcher` runs one daemon thread (``stackpanel-exit-watcher``) that waits on a
  ``pidfd`` per child with a selector.  It reaps the child and then calls the exit callback
  **on that watcher thread**.  Callbacks must be cheap and must not block (enqueue and
  return); a slow callback delays exit detection for every other child.
* Without ``os.pidfd_open`` (kernel < 5.3 or not Linux) it falls back to one waiting thread
  per child; the callback then runs on that child's waiting thread.
* :class:`ManagedProcess` methods are safe to call from any thread.  ``stop`` blocks for up
  to ``timeout + kill_timeout`` seconds: call it from a worker thread, never from a GUI thread
  or an exit callback.
"""

from __future__ import annotations

import contextlib
import logging
import os
import selectors
import signal as _signal
import subprocess
import threading
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import psutil

from stackpanel.core.supervise.spawner import Spawner, SuperviseError, default_spawner

log = logging.getLogger("stackpanel.supervise")

__all__ = [
    "ExitCallback",
    "ExitWatcher",
    "ManagedProcess",
    "ProcessExitedError",
    "StopResult",
    "alive_pids",
    "default_watcher",
    "pidfd_supported",
    "session_members",
]

#: ``on_exit(proc, returncode, monotonic_time)``; runs on the watcher thread.
ExitCallback = Callable[["ManagedProcess", int, float], None]
_RawExitCallback = Callable[[int, float], None]

#: SIGKILLed processes normally vanish within milliseconds; this bounds the wait after SIGKILL.
DEFAULT_KILL_TIMEOUT = 5.0


class ProcessExitedError(SuperviseError):
    """An operation needs a running process, but it has already exited."""


def pidfd_supported() -> bool:
    """True when ``os.pidfd_open`` exists and works on this kernel."""
    if not hasattr(os, "pidfd_open"):
        return False
    try:
        fd = os.pidfd_open(os.getpid())
    except OSError:
        return False
    os.close(fd)
    return True


# ---------------------------------------------------------------------------------------
# Exit watcher
# ---------------------------------------------------------------------------------------
@dataclass
class _Watch:
    popen: subprocess.Popen[bytes]
    callback: _RawExitCallback
    pidfd: int | None


class ExitWatcher:
    """Notices child exits within milliseconds and reaps them.

    ``use_pidfd=None`` picks pidfd when the kernel supports it, else one thread per child.
    """

    def __init__(self, *, use_pidfd: bool | None = None, name: str = "stackpanel-exit-watcher") -> None:
        self._use_pidfd = pidfd_supported() if use_pidfd is None else use_pidfd
        self._name = name
        self._lock = threading.Lock()
        self._pending: list[_Watch] = []
        self._thread: threading.Thread | None = None
        self._closed = False
        self._owner_pid = os.getpid()
        self._wake_r = self._wake_w = -1
        self._selector: selectors.BaseSelector | None = None

    @property
    def owner_pid(self) -> int:
        return self._owner_pid

    def watch(self, popen: subprocess.Popen[bytes], callback: _RawExitCallback) -> None:
        """Reap ``popen`` when it exits and call ``callback(returncode, monotonic_time)``."""
        if self._closed:
            raise SuperviseError("the exit watcher was closed; create a new one")
        if not self._use_pidfd:
            t = threading.Thread(
                target=self._wait_one, args=(popen, callback), name=f"{self._name}-{popen.pid}", daemon=True
            )
            t.start()
            return
        pidfd: int | None
        try:
            pidfd = os.pidfd_open(popen.pid)
        except ProcessLookupError:
            pidfd = None  # already reaped by someone; deliver its return code below
        if pidfd is not None and popen.returncode is not None:
            os.close(pidfd)  # reaped before we opened: the pidfd might name a recycled pid
            pidfd = None
        with self._lock:
            self._ensure_thread()
            self._pending.append(_Watch(popen, callback, pidfd))
        self._wake()

    def close(self) -> None:
        """Stop the watcher thread (tests). Children still being watched are no longer reaped."""
        with self._lock:
            self._closed = True
            thread = self._thread
        if thread is not None:
            self._wake()
            thread.join(timeout=2.0)

    # -- internals -----------------------------------------------------------------------
    def _ensure_thread(self) -> None:
        if self._thread is not None:
            return
        self._wake_r, self._wake_w = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
        self._selector = selectors.DefaultSelector()
        self._selector.register(self._wake_r, selectors.EVENT_READ, None)
        self._thread = threading.Thread(target=self._run, name=self._name, daemon=True)
        self._thread.start()

    def _wake(self) -> None:
        with contextlib.suppress(BlockingIOError, OSError):
            os.write(self._wake_w, b"\0")

    def _run(self) -> None:
        sel = self._selector
        assert sel is not None
        try:
            while True:
                for key, _ in sel.select():
                    now = time.monotonic()
                    if key.data is None:
                        self._drain_wake()
                        if self._closed:
                            return
                        self._take_pending(sel)
                    else:
                        watch: _Watch = key.data
                        sel.unregister(key.fd)
                        os.close(key.fd)
                        self._deliver(watch, now)
        finally:
            for key in list(sel.get_map().values()):
                if key.data is not None:
                    os.close(key.fd)
            sel.close()
            os.close(self._wake_r)
            os.close(self._wake_w)

    def _drain_wake(self) -> None:
        with contextlib.suppress(BlockingIOError):
            while os.read(self._wake_r, 512):
                pass

    def _take_pending(self, sel: selectors.BaseSelector) -> None:
        with self._lock:
            pending, self._pending = self._pending, []
        for watch in pending:
            if watch.pidfd is None:
                self._deliver(watch, time.monotonic())
            else:
                sel.register(watch.pidfd, selectors.EVENT_READ, watch)

    @staticmethod
    def _deliver(watch: _Watch, detected_at: float) -> None:
        try:
            rc = watch.popen.wait()  # the pidfd is readable: the child is a zombie, this is instant
        except Exception:
            log.exception("could not reap pid %d", watch.popen.pid)
            rc = watch.popen.returncode if watch.popen.returncode is not None else -1
        try:
            watch.callback(rc, detected_at)
        except Exception:
            log.exception("exit callback for pid %d failed", watch.popen.pid)

    @staticmethod
    def _wait_one(popen: subprocess.Popen[bytes], callback: _RawExitCallback) -> None:
        rc = popen.wait()
        try:
            callback(rc, time.monotonic())
        except Exception:
            log.exception("exit callback for pid %d failed", popen.pid)


_watcher_lock = threading.Lock()
_default_watcher: ExitWatcher | None = None


def default_watcher() -> ExitWatcher:
    """The process-wide exit watcher (created on first use; recreated in a forked child)."""
    global _default_watcher
    with _watcher_lock:
        if _default_watcher is None or _default_watcher.owner_pid != os.getpid():
            _default_watcher = ExitWatcher()
        return _default_watcher


# ---------------------------------------------------------------------------------------
# Process-group / session helpers
# ---------------------------------------------------------------------------------------
def _proc_stat(pid: int) -> tuple[bytes, int] | None:
    """(state letter, start time in clock ticks) of a process, or None when it is gone."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            data = f.read()
        fields = data[data.rindex(b")") + 2 :].split()
        return fields[0], int(fields[19])
    except FileNotFoundError:
        return None
    except (OSError, ValueError, IndexError):  # no procfs (not Linux): ask psutil
        try:
            proc = psutil.Process(pid)
            state = b"Z" if proc.status() == psutil.STATUS_ZOMBIE else b"S"
            return state, int(proc.create_time() * 100)
        except psutil.Error:
            return None


def _is_zombie(pid: int) -> bool:
    st = _proc_stat(pid)
    return st is None or st[0] in (b"Z", b"X")


def alive_pids(pids: Iterable[int]) -> list[int]:
    """The pids that still run (a zombie awaiting its reaper counts as gone)."""
    out = []
    for pid in pids:
        try:
            if psutil.Process(pid).status() != psutil.STATUS_ZOMBIE:
                out.append(pid)
        except psutil.Error:
            pass
    return out


def session_members(pgid: int, sid: int | None = None, *, exclude: Sequence[int] = ()) -> list[int]:
    """Pids of live (non-zombie) processes in process group ``pgid`` or session ``sid``."""
    me = os.getpid()
    skip = set(exclude)
    skip.add(me)
    found: list[int] = []
    for pid in psutil.pids():
        if pid in skip:
            continue
        try:
            if os.getpgid(pid) != pgid and (sid is None or os.getsid(pid) != sid):
                continue
        except OSError:
            continue
        if not _is_zombie(pid):
            found.append(pid)
    return found


# ---------------------------------------------------------------------------------------
# ManagedProcess
# ---------------------------------------------------------------------------------------
@dataclass(frozen=True)
class StopResult:
    """How a stop went. ``killed``: SIGKILL was needed. ``survivors``: pids still alive at the end."""

    name: str
    pid: int
    was_running: bool
    signal_sent: int | None
    killed: bool
    duration: float
    returncode: int | None
    survivors: tuple[int, ...] = ()

    @property
    def clean(self) -> bool:
        """Stopped by the graceful signal alone and nothing is left."""
        return not self.killed and not self.survivors

    def describe(self) -> str:
        if not self.was_running:
            text = f"{self.name} (pid {self.pid}) had already exited with code {self.returncode}"
            if self.signal_sent is not None:
                how = "killed with SIGKILL" if self.killed else "stopped"
                text += f"; its leftover workers were {how} after {self.duration:.2f} s"
            if self.survivors:
                text += f"; still alive: {', '.join(map(str, self.survivors))} (stuck in the kernel?)"
            return text
        how = "killed with SIGKILL" if self.killed else "stopped"
        text = f"{self.name} (pid {self.pid}) {how} after {self.duration:.2f} s"
        if self.survivors:
            text += f"; still alive: {', '.join(map(str, self.survivors))} (stuck in the kernel?)"
        return text


class ManagedProcess:
    """One child started by stackpanel: the leader of its own session and process group.

    Build it with :meth:`start` (spawns through the spawner thread) or wrap an existing
    ``Popen`` that was started with ``start_new_session=True``.  It registers itself with
    the exit watcher at once; ``on_exit(proc, returncode, monotonic_time)`` then runs on the
    watcher thread when the leader exits.
    """

    def __init__(
        self,
        name: str,
        popen: subprocess.Popen[bytes],
        *,
        stop_signal: int = _signal.SIGTERM,
        log_path: Path | None = None,
        on_exit: ExitCallback | None = None,
        watcher: ExitWatcher | None = None,
    ) -> None:
        self.name = name
        self.stop_signal = int(stop_signal)
        self.log_path = log_path
        self._popen = popen
        self.pid: int = popen.pid
        args = popen.args
        self.argv: tuple[str, ...] = (
            tuple(str(a) for a in args) if isinstance(args, list | tuple) else (str(args),)
        )
        self.started_at: float = time.monotonic()
        self.pgid: int = self.pid  # start_new_session=True: leader of its group and session
        self.sid: int = self.pid
        try:
            self._psproc: psutil.Process | None = psutil.Process(self.pid)
            self.create_time: float = self._psproc.create_time()
            with contextlib.suppress(OSError):
                self.pgid = os.getpgid(self.pid)
                self.sid = os.getsid(self.pid)
        except psutil.Error:  # pragma: no cover - cannot happen before reaping
            self._psproc = None
            self.create_time = time.time()
        self._on_exit = on_exit
        self._exited = threading.Event()
        self._returncode: int | None = None
        self._exit_time: float | None = None
        self._stop_lock = threading.Lock()
        self._stop_result: StopResult | None = None
        self._stop_requested = False
        self._desc_lock = threading.Lock()
        self._desc_cache: dict[tuple[int, int], psutil.Process] = {}
        (watcher or default_watcher()).watch(popen, self._handle_exit)

    @classmethod
    def start(
        cls,
        name: str,
        argv: Sequence[str],
        *,
        log_path: str | os.PathLike[str],
        env: Mapping[str, str] | None = None,
        cwd: str | os.PathLike[str] | None = None,
        stderr_path: str | os.PathLike[str] | None = None,
        stop_signal: int = _signal.SIGTERM,
        on_exit: ExitCallback | None = None,
        spawner: Spawner | None = None,
        watcher: ExitWatcher | None = None,
        pass_fds: Sequence[int] = (),
    ) -> ManagedProcess:
        """Spawn ``argv`` through the spawner thread and watch it. Raises ``SpawnError``."""
        sp = spawner or default_spawner()
        popen = sp.spawn(argv, log_path=log_path, env=env, cwd=cwd, stderr_path=stderr_path, pass_fds=pass_fds)
        proc = cls(
            name, popen, stop_signal=stop_signal, log_path=Path(log_path), on_exit=on_exit, watcher=watcher
        )
        log.info("started %s (pid %d): %s", name, proc.pid, " ".join(proc.argv))
        return proc

    def __repr__(self) -> str:
        state = "running" if self.is_running else f"exited {self._returncode}"
        return f"<ManagedProcess {self.name} pid={self.pid} {state}>"

    # -- state ---------------------------------------------------------------------------
    @property
    def popen(self) -> subprocess.Popen[bytes]:
        return self._popen

    @property
    def returncode(self) -> int | None:
        """None while running; negative -N when killed by signal N (as ``Popen``)."""
        return self._returncode

    @property
    def exit_time(self) -> float | None:
        """``time.monotonic()`` when the exit was noticed."""
        return self._exit_time

    @property
    def is_running(self) -> bool:
        return not self._exited.is_set()

    @property
    def stop_requested(self) -> bool:
        """True once :meth:`stop` was called: lets an exit callback tell a stop from a crash."""
        return self._stop_requested

    def wait(self, timeout: float | None = None) -> int | None:
        """Block until the leader has exited (and was reaped); return its code or None on timeout."""
        self._exited.wait(timeout)
        return self._returncode

    def _handle_exit(self, returncode: int, detected_at: float) -> None:
        self._returncode = returncode
        self._exit_time = detected_at
        self._exited.set()
        log.debug("%s (pid %d) exited with %d", self.name, self.pid, returncode)
        if self._on_exit is not None:
            self._on_exit(self, returncode, detected_at)

    # -- signals -------------------------------------------------------------------------
    def signal(self, sig: int) -> None:
        """Send ``sig`` to the leader (e.g. SIGHUP to reload). Raises ProcessExitedError."""
        if not self.is_running:
            raise ProcessExitedError(
                f"cannot send {_signal.Signals(sig).name} to {self.name} (pid {self.pid}): "
                f"it has already exited with code {self._returncode}"
            )
        # Until the watcher reaps it the pid stays ours (a zombie at worst): no recycling race.
        try:
            os.kill(self.pid, sig)
        except ProcessLookupError as exc:  # pragma: no cover - reaped in between
            raise ProcessExitedError(f"{self.name} (pid {self.pid}) has just exited") from exc

    # -- process tree --------------------------------------------------------------------
    def descendants(self) -> list[psutil.Process]:
        """The live processes of this child's session/process group: its workers.

        That is every descendant that stayed in the session (the workers of nginx, apache,
        gunicorn and uvicorn all do) plus orphaned ones whose parent died; not the leader.
        Cheap enough to call every 100 ms for several masters: two syscalls per system pid
        plus one /proc read per member (~0.4 ms with 100 processes; psutil's recursive
        ``children()`` reads every /proc/PID/stat and took ~3 ms here).
        The same ``psutil.Process`` object is returned for a process across calls, so callers
        can use ``cpu_percent(None)`` on it; a recycled pid gets a new object.
        """
        result: list[psutil.Process] = []
        with self._desc_lock:
            fresh: dict[tuple[int, int], psutil.Process] = {}
            for pid in self.group_members():
                st = _proc_stat(pid)
                if st is None or st[0] in (b"Z", b"X"):
                    continue
                key = (pid, st[1])
                proc = self._desc_cache.get(key)
                if proc is None:
                    try:
                        proc = psutil.Process(pid)
                    except psutil.Error:
                        continue
                fresh[key] = proc
                result.append(proc)
            self._desc_cache = fresh
        return result

    def group_members(self) -> list[int]:
        """Pids of live processes (not the leader) in this child's process group or session."""
        return session_members(self.pgid, self.sid, exclude=(self.pid,))

    # -- stop ----------------------------------------------------------------------------
    def stop(
        self,
        signal_: int | None = None,
        timeout: float = 10.0,
        *,
        kill_timeout: float = DEFAULT_KILL_TIMEOUT,
    ) -> StopResult:
        """Stop the leader and everything in its group/session; idempotent.

        Sends ``signal_`` (default: ``stop_signal``) to the leader, waits up to ``timeout``
        for the leader and all group/session members to go, then SIGKILLs the whole group,
        session members and recorded descendants, and waits up to ``kill_timeout`` more.
        Concurrent or repeated calls return the first call's result.
        """
        with self._stop_lock:
            if self._stop_result is not None:
                return self._stop_result
            self._stop_requested = True
            result = self._do_stop(
                self.stop_signal if signal_ is None else int(signal_), timeout, kill_timeout
            )
            self._stop_result = result
        # info either way: the owner says it to people (the supervisor warns with an event), once
        log.info("%s", result.describe())
        return result

    def _remaining(self, extra: list[psutil.Process]) -> list[int]:
        pids = set(self.group_members())
        for p in extra:
            try:
                if p.is_running() and p.status() != psutil.STATUS_ZOMBIE:
                    pids.add(p.pid)
            except psutil.Error:
                pass
        pids.discard(self.pid)
        return sorted(pids)

    def _wait_all_gone(self, deadline: float, extra: list[psutil.Process]) -> list[int]:
        """Wait for the leader (event-driven) then poll the group; return what is left."""
        self._exited.wait(max(0.0, deadline - time.monotonic()))
        delay = 0.005
        while True:
            left = self._remaining(extra)
            if self.is_running:
                left = [self.pid, *left]
            if not left or time.monotonic() >= deadline:
                return left
            time.sleep(min(delay, max(0.0, deadline - time.monotonic())))
            delay = min(delay * 2, 0.05)

    def _do_stop(self, sig: int, timeout: float, kill_timeout: float) -> StopResult:
        t0 = time.monotonic()
        was_running = self.is_running
        # Remember descendants now: one that left our session (double fork) is still ours.
        extra: list[psutil.Process] = []
        if was_running and self._psproc is not None:
            with contextlib.suppress(psutil.Error):
                extra = self._psproc.children(recursive=True)
        sent: int | None = None
        if was_running:
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.pid, sig)
                sent = sig
        elif self._remaining(extra):
            # Leader is gone but its workers are orphaned: nobody will pass the signal on.
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(self.pgid, sig)
                sent = sig
        else:
            return StopResult(self.name, self.pid, False, None, False, 0.0, self._returncode)

        left = self._wait_all_gone(t0 + timeout, extra)
        killed = False
        if left:
            killed = True
            log.warning(
                "%s (pid %d) still has %d process(es) after %.1f s: sending SIGKILL",
                self.name,
                self.pid,
                len(left),
                timeout,
            )
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(self.pgid, _signal.SIGKILL)
            if self.is_running:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(self.pid, _signal.SIGKILL)
            for pid in self.group_members():  # session members in other groups
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.kill(pid, _signal.SIGKILL)
            for p in extra:  # psutil checks the create time: never a recycled pid
                with contextlib.suppress(psutil.Error):
                    p.kill()
            left = self._wait_all_gone(time.monotonic() + kill_timeout, extra)
        return StopResult(
            name=self.name,
            pid=self.pid,
            was_running=was_running,
            signal_sent=sent,
            killed=killed,
            duration=time.monotonic() - t0,
            returncode=self._returncode,
            survivors=tuple(left),
        )

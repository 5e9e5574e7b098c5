"""Per-process CPU and memory sampling with psutil.

:class:`ProcessSampler` keeps one cached :class:`psutil.Process` per PID and, on every
:meth:`~ProcessSampler.sample`, reads ``cpu_times`` and ``memory_info`` inside ``oneshot()``.
CPU % is computed here from the ``user + system`` CPU-time delta over the monotonic wall time
between this process's two readings (100 % = one full core), so it is exact over the interval
(to the kernel's tick, 10 ms). The first reading of a PID:

* if the process was created after the previous sample, its whole life lies within the
  interval: CPU % = CPU time / age;
* otherwise (a process we just started watching) there is no baseline yet: ``cpu_percent`` is
  ``None`` and the next sample has a value.

A PID that vanished, turned zombie, or is not readable is dropped cleanly: it is listed in
:attr:`ProcessSampler.last_dropped` and not retried until the node's PID set is changed.

On Linux the sampler reads ``/proc/<pid>/stat`` itself through a file descriptor it keeps open
per process: one ``pread`` gives state, ``utime``/``stime``, start time and RSS (the same kernel
values psutil reports from ``stat`` and ``statm``) at about a quarter of the cost of psutil's
``oneshot()`` (two opens and Python-level parsing per process). The descriptor stays bound to the
process it was opened for: after that process has been reaped, reads fail (``ESRCH``) even if the
PID is reused, so a reused PID is never mistaken for the old worker. Elsewhere, or if
``/proc`` is not readable, psutil is used.

Thread-safety: :meth:`set_node` / :meth:`remove_node` may be called from any thread;
:meth:`sample` from one thread at a time. Call :meth:`close` to release the descriptors (the
engine does); they are also closed as processes are forgotten.
"""
from __future__ import annotations

import logging
import os
import sys
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Literal

import psutil

log = logging.getLogger("stackpanel.metrics")

Role = Literal["master", "worker"]

#: Below this age a brand-new process's CPU % is too noisy (10 ms ticks) to report.
MIN_FIRST_SAMPLE_AGE_S = 0.05

_GONE = (psutil.NoSuchProcess, psutil.AccessDenied)  # ZombieProcess is a NoSuchProcess

_USE_PROC = sys.platform.startswith("linux") and os.path.isdir("/proc/self")
_CLK_TCK = float(os.sysconf("SC_CLK_TCK")) if _USE_PROC else 100.0
_PAGE = os.sysconf("SC_PAGE_SIZE") if _USE_PROC else 4096
_O_FLAGS = os.O_RDONLY | getattr(os, "O_CLOEXEC", 0)


class _Gone(Exception):
    pass


def _read_stat(fd: int) -> tuple[bytes, float, float, int]:
    """``(state, cpu_seconds, start_since_boot, rss_bytes)`` from an open ``/proc/<pid>/stat``."""
    try:
        data = os.pread(fd, 4096, 0)
    except OSError as e:  # ESRCH once the process has been reaped
        raise _Gone from e
    # comm (field 2) may contain spaces and parentheses: fields after the *last* ")"
    f = data[data.rfind(b")") + 2 :].split()
    if len(f) < 22:
        raise _Gone
    return f[0], (int(f[11]) + int(f[12])) / _CLK_TCK, int(f[19]) / _CLK_TCK, int(f[21]) * _PAGE


@dataclass(frozen=True)
class ProcessSample:
    node: str
    pid: int
    role: Role
    #: CPU % over the interval since the previous sample (100 = one core); None without baseline
    cpu_percent: float | None
    rss_bytes: int
    #: cumulative user + system CPU seconds
    cpu_seconds: float
    #: monotonic time of the reading
    monotonic: float


@dataclass
class _Tracked:
    proc: psutil.Process | None  # None when read through ``fd``
    start_since_boot: float
    fd: int = -1
    cpu_seconds: float | None = None
    monotonic: float | None = None


@dataclass(frozen=True)
class _Members:
    master: int | None
    workers: tuple[int, ...]

    def roles(self) -> Iterable[tuple[int, Role]]:
        if self.master is not None:
            yield self.master, "master"
        for pid in self.workers:
            if pid != self.master:
                yield pid, "worker"


class ProcessSampler:
    """Samples the master and worker processes of every registered node."""

    def __init__(self, *, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        # Process start times are kept as seconds since boot (what /proc/<pid>/stat says, exact to
        # the tick); psutil adds boot_time() to make them wall times, so subtract it back.
        self._boot = psutil.boot_time()
        self._since_boot: Callable[[], float] = (
            (lambda: time.clock_gettime(time.CLOCK_BOOTTIME))
            if hasattr(time, "CLOCK_BOOTTIME")
            else (lambda: time.time() - self._boot)
        )
        self._lock = threading.Lock()
        self._nodes: dict[str, _Members] = {}
        self._dead: dict[str, set[int]] = {}
        self._procs: dict[int, _Tracked] = {}
        self._last_boot: float | None = None
        #: (node, pid) dropped during the last :meth:`sample` (vanished, zombie, access denied)
        self.last_dropped: tuple[tuple[str, int], ...] = ()

    # -- membership (any thread) --------------------------------------------------------------------

    def set_node(self, node: str, master_pid: int | None, worker_pids: Iterable[int]) -> None:
        """Replace the PIDs of ``node``. PIDs no longer listed anywhere are forgotten."""
        members = _Members(master_pid, tuple(dict.fromkeys(worker_pids)))
        with self._lock:
            self._nodes[node] = members
            wanted = {pid for pid, _ in members.roles()}
            self._dead[node] = self._dead.get(node, set()) & wanted

    def remove_node(self, node: str) -> None:
        with self._lock:
            self._nodes.pop(node, None)
            self._dead.pop(node, None)

    def nodes(self) -> dict[str, tuple[int | None, tuple[int, ...]]]:
        with self._lock:
            return {n: (m.master, m.workers) for n, m in self._nodes.items()}

    # -- sampling (one thread) ----------------------------------------------------------------------

    def sample(self) -> tuple[ProcessSample, ...]:
        """Read every live PID once; never raises for processes that went away."""
        with self._lock:
            nodes = dict(self._nodes)
            dead = {n: set(d) for n, d in self._dead.items()}
        prev_boot = self._last_boot
        self._last_boot = self._since_boot()
        out: list[ProcessSample] = []
        dropped: list[tuple[str, int]] = []
        seen: set[int] = set()
        for node, members in nodes.items():
            node_dead = dead.get(node, set())
            for pid, role in members.roles():
                if pid in node_dead or pid in seen:
                    continue
                seen.add(pid)
                s = self._sample_one(node, pid, role, prev_boot)
                if s is None:
                    dropped.append((node, pid))
                else:
                    out.append(s)
        # forget processes no longer listed or gone
        for pid in [p for p in self._procs if p not in seen]:
            _close(self._procs.pop(pid))
        if dropped:
            with self._lock:
                for node, pid in dropped:
                    if node in self._dead:
                        self._dead[node].add(pid)
                    tr = self._procs.pop(pid, None)
                    if tr is not None:
                        _close(tr)
            log.debug("dropped vanished processes: %s", dropped)
        self.last_dropped = tuple(dropped)
        return tuple(out)

    def close(self) -> None:
        """Release the per-process descriptors (sampling again reopens them)."""
        for tr in self._procs.values():
            _close(tr)
        self._procs.clear()

    def __del__(self) -> None:
        try:
            self.close()
        except Exception:
            pass

    def _sample_one(self, node: str, pid: int, role: Role, prev_boot: float | None) -> ProcessSample | None:
        tr = self._procs.get(pid)
        if _USE_PROC and (tr is None or tr.proc is None):
            try:
                if tr is None:
                    try:
                        fd = os.open(f"/proc/{pid}/stat", _O_FLAGS)
                    except OSError:
                        return None
                    tr = _Tracked(None, 0.0, fd)
                    self._procs[pid] = tr  # dropped (and closed) by sample() if gone below
                    state, cpu_s, tr.start_since_boot, rss = _read_stat(fd)
                else:
                    state, cpu_s, _, rss = _read_stat(tr.fd)
            except (_Gone, ValueError):
                return None
            if state == b"Z":
                return None
            return self._finish(tr, node, pid, role, prev_boot, cpu_s, rss, self._clock())
        try:
            if tr is None:
                proc = psutil.Process(pid)
                tr = _Tracked(proc, proc.create_time() - self._boot)
                self._procs[pid] = tr
            proc = tr.proc
            assert proc is not None
            with proc.oneshot():
                if proc.status() == psutil.STATUS_ZOMBIE:
                    return None
                ct = proc.cpu_times()
                rss = proc.memory_info().rss
            mono = self._clock()
        except _GONE:
            return None
        return self._finish(tr, node, pid, role, prev_boot, ct.user + ct.system, rss, mono)

    def _finish(self, tr: _Tracked, node: str, pid: int, role: Role, prev_boot: float | None,
                cpu_s: float, rss: int, mono: float) -> ProcessSample:
        cpu: float | None = None
        if tr.monotonic is not None and tr.cpu_seconds is not None and cpu_s >= tr.cpu_seconds:
            dt = mono - tr.monotonic
            if dt > 0:
                cpu = (cpu_s - tr.cpu_seconds) / dt * 100.0
        elif tr.monotonic is None and prev_boot is not None and tr.start_since_boot >= prev_boot - 0.01:
            # born during the interval: its whole life is the baseline
            age = self._since_boot() - tr.start_since_boot
            if age >= MIN_FIRST_SAMPLE_AGE_S:
                cpu = cpu_s / age * 100.0
        # (cpu_s < previous means the PID was reused: no value this time, new baseline)
        tr.cpu_seconds = cpu_s
        tr.monotonic = mono
        return ProcessSample(node, pid, role, cpu, int(rss), cpu_s, mono)


def _close(tr: _Tracked) -> None:
    if tr.fd >= 0:
        try:
            os.close(tr.fd)
        except OSError:
            pass
        tr.fd = -1

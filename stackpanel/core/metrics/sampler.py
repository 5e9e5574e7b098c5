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

Thread-safety: :meth:`set_node` / :meth:`remove_node` may be called from any thread;
:meth:`sample` from one thread at a time.
"""
from __future__ import annotations

import logging
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
    proc: psutil.Process
    start_since_boot: float
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
            del self._procs[pid]
        if dropped:
            with self._lock:
                for node, pid in dropped:
                    if node in self._dead:
                        self._dead[node].add(pid)
                    self._procs.pop(pid, None)
            log.debug("dropped vanished processes: %s", dropped)
        self.last_dropped = tuple(dropped)
        return tuple(out)

    def _sample_one(self, node: str, pid: int, role: Role, prev_boot: float | None) -> ProcessSample | None:
        tr = self._procs.get(pid)
        try:
            if tr is None:
                proc = psutil.Process(pid)
                tr = _Tracked(proc, proc.create_time() - self._boot)
                self._procs[pid] = tr
            proc = tr.proc
            with proc.oneshot():
                if proc.status() == psutil.STATUS_ZOMBIE:
                    return None
                ct = proc.cpu_times()
                rss = proc.memory_info().rss
            mono = self._clock()
        except _GONE:
            return None
        cpu_s = ct.user + ct.system
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

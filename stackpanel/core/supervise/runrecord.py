"""The run record: which processes a stackpanel run started, so a later run can clean up.

A JSON file in the run directory lists, per started process: node name, pid, psutil
``create_time``, argv and process group id, plus who owns the run (pid and create time of the
stackpanel process) and the kernel boot id.  It is rewritten atomically (temp file +
``os.replace``) on every start/stop, so a crash at any moment leaves a complete old or new
version, never a torn one.

If stackpanel was killed in a way that even ``PR_SET_PDEATHSIG`` could not cover (another
OS, a child that reset it, a server that daemonised), :func:`find_leftovers` finds what is
still alive **and** has the recorded create time (a recycled pid is never touched), plus the
members of its process group; :func:`clean_leftovers` stops them.

Thread-safe: :class:`RunRecord` methods lock internally.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import signal
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import psutil

from stackpanel.core.supervise.spawner import SuperviseError

log = logging.getLogger("stackpanel.supervise")

__all__ = [
    "RECORD_FILENAME",
    "CleanupResult",
    "Leftover",
    "RecordedProcess",
    "RunInUseError",
    "RunRecord",
    "RunRecordError",
    "clean_leftovers",
    "find_leftovers",
    "read_record",
    "record_path",
]

RECORD_FILENAME = "processes.json"
RECORD_VERSION = 1
#: psutil create times have a 10 ms resolution and round-trip exactly through JSON; this only
#: absorbs float noise.  A pid recycled within 50 ms of the original start is not realistic.
CREATE_TIME_TOLERANCE = 0.05


class RunRecordError(SuperviseError):
    """The run record cannot be read or written."""


class RunInUseError(SuperviseError):
    """The run record belongs to a stackpanel process that is still running."""


class _ProcessLike(Protocol):
    pid: int
    create_time: float
    argv: tuple[str, ...]
    pgid: int


@dataclass(frozen=True)
class RecordedProcess:
    node: str
    pid: int
    create_time: float
    argv: tuple[str, ...]
    pgid: int

    def to_json(self) -> dict[str, Any]:
        return {
            "node": self.node,
            "pid": self.pid,
            "create_time": self.create_time,
            "argv": list(self.argv),
            "pgid": self.pgid,
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> RecordedProcess:
        return cls(
            node=str(data["node"]),
            pid=int(data["pid"]),
            create_time=float(data["create_time"]),
            argv=tuple(str(a) for a in data.get("argv", ())),
            pgid=int(data.get("pgid", data["pid"])),
        )


@dataclass(frozen=True)
class RecordFile:
    """The parsed content of a run record file."""

    path: Path
    owner_pid: int | None
    owner_create_time: float | None
    boot_id: str | None
    written_at: float | None
    processes: tuple[RecordedProcess, ...]


def record_path(run_dir: str | os.PathLike[str]) -> Path:
    """Where the run record of ``run_dir`` lives."""
    return Path(run_dir) / RECORD_FILENAME


def _boot_id() -> str | None:
    try:
        return Path("/proc/sys/kernel/random/boot_id").read_text().strip()
    except OSError:
        return None


def _create_time(pid: int) -> float | None:
    try:
        return psutil.Process(pid).create_time()
    except psutil.Error:
        return None


class RunRecord:
    """The record of the current run; every change is written to disk at once."""

    def __init__(self, run_dir: str | os.PathLike[str], *, owner_pid: int | None = None) -> None:
        self.path = record_path(run_dir)
        self._owner_pid = os.getpid() if owner_pid is None else owner_pid
        self._owner_ctime = _create_time(self._owner_pid)
        self._boot_id = _boot_id()
        self._lock = threading.Lock()
        self._entries: dict[int, RecordedProcess] = {}

    @property
    def entries(self) -> tuple[RecordedProcess, ...]:
        with self._lock:
            return tuple(self._entries.values())

    def add(self, entry: RecordedProcess) -> None:
        with self._lock:
            self._entries[entry.pid] = entry
            self._write_locked()

    def add_process(self, node: str, proc: _ProcessLike) -> RecordedProcess:
        """Record a started process (e.g. a ``ManagedProcess``) and write the file."""
        entry = RecordedProcess(node, proc.pid, proc.create_time, tuple(proc.argv), proc.pgid)
        self.add(entry)
        return entry

    def remove(self, pid: int) -> None:
        """Forget a process that has stopped (no error if unknown) and write the file."""
        with self._lock:
            self._entries.pop(pid, None)
            self._write_locked()

    def clear(self) -> None:
        """Forget everything (all stopped) and write the now empty record."""
        with self._lock:
            self._entries.clear()
            self._write_locked()

    def write(self) -> None:
        with self._lock:
            self._write_locked()

    def _write_locked(self) -> None:
        data = {
            "version": RECORD_VERSION,
            "owner": {"pid": self._owner_pid, "create_time": self._owner_ctime},
            "boot_id": self._boot_id,
            "written_at": time.time(),
            "processes": [e.to_json() for e in self._entries.values()],
        }
        tmp = self.path.with_name(f".{self.path.name}.{os.getpid()}.tmp")
        try:
            with open(tmp, "w", encoding="utf-8") as f:
                json.dump(data, f, indent=2)
                f.write("\n")
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, self.path)
        except OSError as exc:
            with contextlib.suppress(OSError):
                tmp.unlink()
            raise RunRecordError(
                f"cannot write the run record {str(self.path)!r}: {exc.strerror or exc}; "
                "check that the run directory exists and is writable"
            ) from exc


def read_record(path: str | os.PathLike[str]) -> RecordFile | None:
    """Parse a run record; None when the file does not exist. Raises RunRecordError if corrupt."""
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8")
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise RunRecordError(f"cannot read the run record {str(p)!r}: {exc.strerror or exc}") from exc
    try:
        data = json.loads(text)
        owner = data.get("owner") or {}
        return RecordFile(
            path=p,
            owner_pid=owner.get("pid"),
            owner_create_time=owner.get("create_time"),
            boot_id=data.get("boot_id"),
            written_at=data.get("written_at"),
            processes=tuple(RecordedProcess.from_json(e) for e in data.get("processes", [])),
        )
    except (ValueError, KeyError, TypeError, AttributeError) as exc:
        raise RunRecordError(
            f"the run record {str(p)!r} is damaged ({exc}); check for leftover servers by hand "
            "(ps -ef) and delete the file"
        ) from exc


@dataclass(frozen=True)
class Leftover:
    """A live process from an old run. ``recorded``: listed in the record (vs. a group member)."""

    node: str
    pid: int
    name: str
    cmdline: str
    create_time: float
    pgid: int
    recorded: bool
    process: psutil.Process = field(compare=False, repr=False)

    def describe(self) -> str:
        return f"{self.node} {self.pid}" if self.recorded else f"{self.node} child {self.pid}"


def _same_time(a: float | None, b: float | None) -> bool:
    return a is not None and b is not None and abs(a - b) <= CREATE_TIME_TOLERANCE


def _leftover(node: str, proc: psutil.Process, pgid: int, recorded: bool) -> Leftover | None:
    try:
        with proc.oneshot():
            if proc.status() == psutil.STATUS_ZOMBIE:
                return None
            name = proc.name()
            try:
                cmd = " ".join(proc.cmdline())
            except psutil.Error:
                cmd = name
            return Leftover(node, proc.pid, name, cmd, proc.create_time(), pgid, recorded, proc)
    except psutil.Error:
        return None


def _group_pids(pgid: int) -> list[int]:
    found = []
    for pid in psutil.pids():
        try:
            if os.getpgid(pid) == pgid or os.getsid(pid) == pgid:
                found.append(pid)
        except OSError:
            continue
    return found


def find_leftovers(path: str | os.PathLike[str]) -> list[Leftover]:
    """Processes of an old run (record at ``path``) that are still alive, plus their group members.

    A recorded pid counts only if its create time matches the record (a recycled pid is
    never reported).  Returns [] when there is no record or it is from before a reboot.
    Raises :class:`RunInUseError` when the stackpanel process that owns the record is still
    running (and is not this process), :class:`RunRecordError` when the record is damaged.
    """
    rec = read_record(path)
    if rec is None or not rec.processes:
        return []
    if rec.boot_id is not None and _boot_id() not in (None, rec.boot_id):
        log.info("run record %s is from before the last reboot: nothing can be left over", path)
        return []
    me = os.getpid()
    if (
        rec.owner_pid is not None
        and rec.owner_pid != me
        and _same_time(_create_time(rec.owner_pid), rec.owner_create_time)
    ):
        raise RunInUseError(
            f"the run in {str(Path(path).parent)!r} belongs to a stackpanel that is still running "
            f"(pid {rec.owner_pid})"
        )
    result: dict[int, Leftover] = {}
    for entry in rec.processes:
        if entry.pid == me:
            continue
        leader_ok = False
        try:
            proc = psutil.Process(entry.pid)
            if _same_time(proc.create_time(), entry.create_time):
                lo = _leftover(entry.node, proc, entry.pgid, True)
                if lo is not None:
                    result[lo.pid] = lo
                    leader_ok = True
            else:
                log.info(
                    "pid %d of %s now belongs to another process (%s); not touching it",
                    entry.pid,
                    entry.node,
                    proc.name(),
                )
        except psutil.Error:
            pass
        # The group id stays reserved while any member lives, so orphaned workers of a dead
        # leader still carry it; but if a *different* process now leads that group, skip it.
        group_leader_ctime = _create_time(entry.pgid)
        if (
            not leader_ok
            and group_leader_ctime is not None
            and not (entry.pgid == entry.pid and _same_time(group_leader_ctime, entry.create_time))
        ):
            continue
        for pid in _group_pids(entry.pgid):
            if pid in result or pid == me:
                continue
            try:
                member = psutil.Process(pid)
                if member.create_time() + CREATE_TIME_TOLERANCE < entry.create_time:
                    continue  # older than our process: cannot be one of its children
            except psutil.Error:
                continue
            lo = _leftover(entry.node, member, entry.pgid, False)
            if lo is not None:
                result[lo.pid] = lo
    return sorted(result.values(), key=lambda lo: (not lo.recorded, lo.node, lo.pid))


@dataclass(frozen=True)
class CleanupResult:
    """What :func:`clean_leftovers` did; ``summary`` (and ``str()``) is for people."""

    stopped: tuple[Leftover, ...]
    killed: tuple[Leftover, ...]
    survivors: tuple[Leftover, ...]
    summary: str

    def __str__(self) -> str:
        return self.summary


def _gone(proc: psutil.Process) -> bool:
    try:
        return not proc.is_running() or proc.status() == psutil.STATUS_ZOMBIE
    except psutil.Error:
        return True


def _wait_gone(procs: Sequence[Leftover], timeout: float) -> list[Leftover]:
    deadline = time.monotonic() + timeout
    alive = list(procs)
    while True:
        alive = [lo for lo in alive if not _gone(lo.process)]
        if not alive or time.monotonic() >= deadline:
            return alive
        time.sleep(0.02)


def _send(lo: Leftover, sig: int) -> None:
    with contextlib.suppress(psutil.Error):  # psutil re-checks the create time before signalling
        lo.process.send_signal(sig)


def clean_leftovers(
    leftovers: Sequence[Leftover], *, term_timeout: float = 3.0, kill_timeout: float = 2.0
) -> CleanupResult:
    """Stop leftovers: SIGTERM, wait up to ``term_timeout``, SIGKILL the rest, wait again."""
    if not leftovers:
        return CleanupResult((), (), (), "no leftover processes from a previous run")
    for lo in leftovers:
        _send(lo, signal.SIGTERM)
    alive = _wait_gone(leftovers, term_timeout)
    killed = tuple(alive)
    for lo in alive:
        _send(lo, signal.SIGKILL)
    survivors = tuple(_wait_gone(alive, kill_timeout)) if alive else ()
    stopped = tuple(lo for lo in leftovers if lo not in survivors)
    n = len(stopped)
    parts = []
    if stopped:
        parts.append(
            f"stopped {n} leftover process{'es' if n != 1 else ''} of a crashed run: "
            + ", ".join(lo.describe() for lo in stopped)
        )
        if killed:
            parts.append(f"{len(killed)} needed SIGKILL")
    if survivors:
        parts.append(
            "could not stop "
            + ", ".join(f"{lo.describe()} ({lo.cmdline})" for lo in survivors)
            + "; stop them by hand (kill -9 PID) or check permissions"
        )
    summary = "; ".join(parts)
    log.info("%s", summary)  # the caller tells people (the supervisor: an event); said once
    return CleanupResult(stopped, killed, survivors, summary)

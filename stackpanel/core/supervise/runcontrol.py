"""How `stackpanel reload` reaches a running `stackpanel up`: two small files in its run directory.

``control.json`` (written by ``up`` once the stack is up, removed when it stops) names the owning
process (pid and create time, so a recycled pid is never signalled), the profile file it re-reads
and its port offset. ``reload.json`` holds the outcome of the latest reload with a sequence number.
The IPC is the one people already use by hand: SIGHUP to ``up`` re-reads the profile; the caller
then waits for the sequence to move and prints what ``up`` wrote.
"""
from __future__ import annotations

import json
import os
import signal
import time
from dataclasses import dataclass
from pathlib import Path

import psutil

from stackpanel.core.supervise.spawner import SuperviseError

CONTROL_FILE = "control.json"
RESULT_FILE = "reload.json"
#: psutil create times round-trip exactly through JSON; this absorbs float noise only
_CREATE_TIME_TOLERANCE = 0.05


class RunControlError(SuperviseError):
    """No running `up` to reload, or it did not answer."""


@dataclass(frozen=True)
class ControlledRun:
    run_dir: Path
    pid: int
    profile: Path
    port_offset: int
    name: str

    def describe(self) -> str:
        offset = f" --port-offset {self.port_offset}" if self.port_offset else ""
        return f"{self.name} ({self.profile}{offset}, stackpanel up pid {self.pid})"


@dataclass(frozen=True)
class ReloadOutcome:
    seq: int
    ok: bool
    text: str


def _write_json(path: Path, data: dict[str, object]) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(data) + "\n", encoding="utf-8")
    os.replace(tmp, path)  # a reader sees the old or the new file, never half of one


def announce(run_dir: Path, profile: Path, port_offset: int, name: str) -> None:
    """Called by `up` once its stack is up: from now on `stackpanel reload` finds it."""
    me = psutil.Process()
    _write_json(Path(run_dir) / CONTROL_FILE, {"pid": me.pid, "create_time": me.create_time(),
                                               "profile": str(profile), "port_offset": port_offset, "name": name})


def withdraw(run_dir: Path) -> None:
    (Path(run_dir) / CONTROL_FILE).unlink(missing_ok=True)


def last_outcome(run_dir: Path) -> ReloadOutcome | None:
    try:
        data = json.loads((Path(run_dir) / RESULT_FILE).read_text(encoding="utf-8"))
        return ReloadOutcome(int(data["seq"]), bool(data["ok"]), str(data["text"]))
    except (OSError, ValueError, KeyError, TypeError):
        return None


def record_outcome(run_dir: Path, ok: bool, text: str) -> None:
    """Called by `up` after each reload (applied or refused)."""
    last = last_outcome(run_dir)
    _write_json(Path(run_dir) / RESULT_FILE, {"seq": (last.seq if last else 0) + 1, "ok": ok, "text": text})


def _read_control(run_dir: Path) -> ControlledRun | None:
    """The run's owner when it is alive and is the process that wrote the file."""
    try:
        data = json.loads((run_dir / CONTROL_FILE).read_text(encoding="utf-8"))
        pid, created = int(data["pid"]), float(data["create_time"])
        run = ControlledRun(run_dir, pid, Path(data["profile"]), int(data["port_offset"]), str(data["name"]))
    except (OSError, ValueError, KeyError, TypeError):
        return None
    try:
        if abs(psutil.Process(pid).create_time() - created) > _CREATE_TIME_TOLERANCE:
            return None  # the pid was recycled: not ours to signal
    except psutil.Error:
        return None
    return run


def controlled_runs(runs_root: Path) -> list[ControlledRun]:
    """Every run directory under `runs_root` whose `up` is alive."""
    if not runs_root.is_dir():
        return []
    found = (_read_control(d) for d in sorted(runs_root.iterdir()) if d.is_dir())
    return [run for run in found if run is not None]


def controlled_run(run_dir: Path) -> ControlledRun | None:
    return _read_control(Path(run_dir))


def request_reload(run: ControlledRun, timeout: float = 120.0) -> ReloadOutcome:
    """SIGHUP to the run's `up`, then wait (polling its result file) until it has answered."""
    before = last_outcome(run.run_dir)
    seq = before.seq if before else 0
    try:
        os.kill(run.pid, signal.SIGHUP)
    except ProcessLookupError:
        raise RunControlError(f"{run.describe()} has stopped") from None
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        outcome = last_outcome(run.run_dir)
        if outcome is not None and outcome.seq > seq:
            return outcome
        if not psutil.pid_exists(run.pid):
            raise RunControlError(f"{run.describe()} stopped before it answered")
        time.sleep(0.1)
    raise RunControlError(f"{run.describe()} did not answer within {timeout:g} s; see its output")


"""Run records and log rotation with real child processes (spawned through ManagedProcess)."""
from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path

import psutil
import pytest

from stackpanel.core.supervise.logfiles import LogRotator, tail_lines
from stackpanel.core.supervise.process import ManagedProcess
from stackpanel.core.supervise.runrecord import (
    RunInUseError,
    RunRecord,
    clean_leftovers,
    find_leftovers,
    record_path,
)

pytestmark = pytest.mark.integration


def _alive(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


@pytest.mark.integration
def test_live_child_is_found_and_cleaned(tmp_path: Path) -> None:
    # A leader that ignores TERM and a worker in its group: clean must escalate to KILL.
    ready = tmp_path / "ready"
    code = (
        "import os, pathlib, signal, time\n"
        "signal.signal(signal.SIGTERM, signal.SIG_IGN)\n"
        f"if os.fork() == 0: pathlib.Path({str(ready)!r}).write_text(str(os.getpid()))\n"
        "time.sleep(60)\n"
    )
    p = ManagedProcess.start("nginx", [sys.executable, "-c", code], log_path=tmp_path / "n.log")
    try:
        deadline = time.monotonic() + 5
        while not (ready.exists() and ready.read_text()) and time.monotonic() < deadline:
            time.sleep(0.01)
        worker = int(ready.read_text())
        rec = RunRecord(tmp_path)
        rec.add_process("nginx", p)
        raw = json.loads(record_path(tmp_path).read_text())
        assert raw["processes"][0]["create_time"] == p.create_time
        assert raw["processes"][0]["pgid"] == p.pid

        found = find_leftovers(record_path(tmp_path))
        assert [(lo.pid, lo.recorded) for lo in found] == [(p.pid, True), (worker, False)]
        assert found[0].node == "nginx" and found[0].create_time == p.create_time

        result = clean_leftovers(found, term_timeout=0.3, kill_timeout=2)
        assert result.survivors == ()
        assert {lo.pid for lo in result.killed} == {p.pid, worker}
        assert result.summary.startswith(
            f"stopped 2 leftover processes of a crashed run: nginx {p.pid}, nginx child {worker}"
        )
        assert p.wait(2) is not None
        assert not _alive(worker)
        assert find_leftovers(record_path(tmp_path)) == []
    finally:
        p.stop(timeout=0.2)


@pytest.mark.integration
def test_recycled_pid_is_not_touched(tmp_path: Path) -> None:
    p = ManagedProcess.start("victim", ["sleep", "60"], log_path=tmp_path / "v.log")
    try:
        RunRecord(tmp_path).add_process("uvicorn", p)
        path = record_path(tmp_path)
        data = json.loads(path.read_text())
        data["processes"][0]["create_time"] -= 1000.0  # the recorded process started long ago
        path.write_text(json.dumps(data))
        assert find_leftovers(path) == []
        time.sleep(0.1)
        assert p.is_running
    finally:
        p.stop(timeout=0.5)


@pytest.mark.integration
def test_record_of_a_live_supervisor_is_refused(tmp_path: Path) -> None:
    other = ManagedProcess.start("other-stackpanel", ["sleep", "60"], log_path=tmp_path / "o.log")
    try:
        rec = RunRecord(tmp_path, owner_pid=other.pid)
        rec.add_process("nginx", other)
        with pytest.raises(RunInUseError, match=f"still running \\(pid {other.pid}\\)"):
            find_leftovers(record_path(tmp_path))
        assert other.is_running
    finally:
        other.stop(timeout=0.5)


@pytest.mark.integration
def test_orphaned_workers_of_a_dead_leader_are_found(tmp_path: Path) -> None:
    # Like nginx workers after their master was kill -9ed: the leader is gone, the group lives.
    ready = tmp_path / "ready"
    code = (
        "import os, pathlib, time\n"
        "if os.fork() == 0:\n"
        f"    pathlib.Path({str(ready)!r}).write_text(str(os.getpid())); time.sleep(60)\n"
        "else:\n"
        "    time.sleep(60)\n"
    )
    p = ManagedProcess.start("nginx", [sys.executable, "-c", code], log_path=tmp_path / "n.log")
    try:
        deadline = time.monotonic() + 5
        while not (ready.exists() and ready.read_text()) and time.monotonic() < deadline:
            time.sleep(0.01)
        worker = int(ready.read_text())
        RunRecord(tmp_path).add_process("nginx", p)
        os.kill(p.pid, 9)
        assert p.wait(2) == -9
        found = find_leftovers(record_path(tmp_path))
        assert [(lo.pid, lo.recorded) for lo in found] == [(worker, False)]
        result = clean_leftovers(found, term_timeout=2)
        assert result.killed == () and result.survivors == ()
        assert result.summary == f"stopped 1 leftover process of a crashed run: nginx child {worker}"
        assert not _alive(worker)
    finally:
        p.stop(timeout=0.2)


@pytest.mark.integration
def test_rotation_bounds_file_while_child_appends(tmp_path: Path) -> None:
    """The child writes in steps the test releases one at a time (a file per step), so the bound
    holds on any machine: a check between steps keeps the file within one step of the limit."""
    log_path = tmp_path / "child.log"
    steps, lines_per_step = 40, 500  # 500 lines of 62 bytes: 31 KB a step, 1.24 MB in all
    code = (
        "import os, sys, time\n"
        f"for k in range({steps}):\n"
        f"    for i in range({lines_per_step}):\n"
        "        sys.stdout.write('line %06d %s\\n' % (i, 'z' * 50)); sys.stdout.flush()\n"
        f"    open({str(tmp_path)!r} + '/done.%d' % k, 'w').close()\n"
        f"    while not os.path.exists({str(tmp_path)!r} + '/go.%d' % k): time.sleep(0.001)\n"
        "print('DONE', flush=True)\n"
    )
    max_bytes = 64 * 1024
    step_bytes = lines_per_step * 62
    rot = LogRotator(max_bytes=max_bytes)
    rot.add(log_path)
    p = ManagedProcess.start("writer", [sys.executable, "-c", code], log_path=log_path)
    peak = 0
    rotations = 0
    try:
        for k in range(steps):
            deadline = time.monotonic() + 30  # the child says when its step is written
            while not (tmp_path / f"done.{k}").exists() and time.monotonic() < deadline:
                time.sleep(0.001)
            peak = max(peak, log_path.stat().st_size)
            rotations += len(rot.check())
            (tmp_path / f"go.{k}").touch()
        assert p.wait(30) == 0
    finally:
        p.stop(timeout=0.5)
    rotations += len(rot.check())
    assert rotations >= 3, "the file never grew past the limit: the test proves nothing"
    # Bounded: a check between steps keeps the file within one step of the limit.
    assert peak <= max_bytes + step_bytes < steps * step_bytes
    assert log_path.stat().st_size <= max_bytes
    backup = tmp_path / "child.log.1"
    assert backup.stat().st_size <= max_bytes
    # The child kept writing at the new end (O_APPEND): no hole of NUL bytes after truncation.
    content = log_path.read_bytes()
    assert b"\0" not in content
    # The last line is in the live file, or in the backup if the final check rotated it.
    assert (tail_lines(log_path, 1) or tail_lines(backup, 1)) == ["DONE"]
    assert all(ln.startswith(("line ", "DONE")) for ln in tail_lines(backup, 50))

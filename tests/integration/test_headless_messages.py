"""What `stackpanel up` prints (#18.6): a port conflict, leftovers of a crashed run and a second start
of a running stack are each said once, not as a log warning and an event, nor twice in one line."""
from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
from pathlib import Path

import psutil
import pytest

from stackpanel.core.supervise.runrecord import RunRecord

from .conftest import free_offset
from .test_headless_failure import Output

pytestmark = pytest.mark.integration


def up(*args: str) -> subprocess.Popen[str]:
    """stdout and stderr together: a log warning would show there as well."""
    return subprocess.Popen([sys.executable, "-m", "stackpanel", "up", *args], stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)


def test_a_port_conflict_is_said_once(tmp_path: Path) -> None:
    offset = free_offset()
    with socket.create_server(("127.0.0.1", 8000 + offset)):
        proc = up("uvicorn-workers", "--port-offset", str(offset), "--run-dir", str(tmp_path / "run"))
        out, _ = proc.communicate(timeout=60)
    assert proc.returncode == 1, out
    assert out.count(f"port {8000 + offset} on 127.0.0.1 is taken by pid {os.getpid()}") == 1, out
    assert out.count("--port-offset N") == 1, out
    assert "the stack did not come up (above)" in out


class _Recorded:
    """What a run record keeps of a process (pid, start time, command line, group)."""

    def __init__(self, proc: subprocess.Popen[bytes]) -> None:
        self.pid = self.pgid = proc.pid
        self.create_time = psutil.Process(proc.pid).create_time()
        self.argv = tuple(str(a) for a in proc.args)  # type: ignore[union-attr]


def test_leftovers_of_a_crashed_run_are_said_once(tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    gone = subprocess.Popen(["true"])
    gone.wait()  # the crashed stackpanel: its pid is dead
    leftover = subprocess.Popen(["sleep", "300"], start_new_session=True)
    try:
        RunRecord(run_dir, owner_pid=gone.pid).add_process("app", _Recorded(leftover))
        proc = up("uvicorn-workers", "--port-offset", str(free_offset()), "--run-dir", str(run_dir))
        output = Output(proc)
        output.wait_for("is up: open", timeout=60)
        proc.send_signal(signal.SIGINT)
        proc.wait(timeout=30)
        text = "".join(output.lines)
        assert leftover.poll() is not None, "the leftover was not stopped"
        assert text.count(f"stopped 1 leftover process of a crashed run: app {leftover.pid}") == 1, text
    finally:
        if leftover.poll() is None:
            leftover.kill()


def test_a_second_start_of_a_running_stack_is_refused_once(tmp_path: Path) -> None:
    args = ("uvicorn-workers", "--port-offset", str(free_offset()), "--run-dir", str(tmp_path / "run"))
    first = up(*args)
    try:
        Output(first).wait_for("is up: open", timeout=60)
        second = up(*args)
        out, _ = second.communicate(timeout=60)
        assert second.returncode == 1, out
        assert out.count("this stack is already running from") == 1, out
        assert out.count("another --port-offset") == 1, out
    finally:
        first.send_signal(signal.SIGINT)
        first.wait(timeout=30)

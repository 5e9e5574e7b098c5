"""`stackpanel up` when a node has failed for good: it says so and exits 1 (never a 502 edge
"degraded" forever); with --keep-going it stays up with what still works."""
from __future__ import annotations

import signal
import subprocess
import sys
import threading
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from tests.conftest import free_ports

pytestmark = pytest.mark.integration

CRASHING_APP = """\
import os


async def app(scope, receive, send):
    if scope["type"] != "http":
        return
    if scope["path"] == "/die":
        os._exit(3)
    await send({"type": "http.response.start", "status": 200, "headers": []})
    await send({"type": "http.response.body", "body": b"ok"})
"""


def _profile(tmp_path: Path) -> tuple[str, int]:
    (tmp_path / "crashy.py").write_text(CRASHING_APP)
    port = free_ports(1)[0]
    return f"""\
version: 1
name: crashy
nodes:
  app:
    kind: uvicorn
    port: {port}
    app: {{module: "crashy:app", working_dir: "."}}
    availability: {{restart: on-failure, backoff_seconds: 0, max_restarts: 1, restart_window_seconds: 600}}
""", port


def _kill_through_request(port: int) -> None:
    try:
        urllib.request.urlopen(f"http://127.0.0.1:{port}/die", timeout=5)
    except (urllib.error.URLError, ConnectionError, OSError):
        pass  # the worker died mid-request: that is the point


class Output:
    """The lines of a child's stdout, read on a thread; wait for one that contains a text."""

    def __init__(self, proc: subprocess.Popen[str]) -> None:
        self.lines: list[str] = []
        self._cond = threading.Condition()
        threading.Thread(target=self._read, args=(proc,), daemon=True).start()

    def _read(self, proc: subprocess.Popen[str]) -> None:
        assert proc.stdout is not None
        for line in proc.stdout:
            with self._cond:
                self.lines.append(line)
                self._cond.notify_all()

    def wait_for(self, text: str, count: int = 1, timeout: float = 30) -> None:
        with self._cond:
            ok = self._cond.wait_for(lambda: sum(text in ln for ln in self.lines) >= count, timeout)
        assert ok, "".join(self.lines)


@pytest.mark.parametrize("keep_going", [False, True])
def test_a_node_that_failed_for_good_ends_the_run(tmp_path: Path, keep_going: bool) -> None:
    text, port = _profile(tmp_path)
    (tmp_path / "p.yaml").write_text(text)
    argv = [sys.executable, "-m", "stackpanel", "up", str(tmp_path / "p.yaml"), "--run-dir", str(tmp_path / "run")]
    proc = subprocess.Popen(argv + (["--keep-going"] if keep_going else []), stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)
    out = Output(proc)
    try:
        out.wait_for("is up: open")
        _kill_through_request(port)  # crash 1: restarted at once
        out.wait_for("stack      running", count=2)  # back up after the first crash
        _kill_through_request(port)  # crash 2: max_restarts 1 within the window → failed for good
        out.wait_for("gave up after 1 restarts")
        if keep_going:
            with pytest.raises(subprocess.TimeoutExpired):
                proc.wait(1.0)  # still up, degraded, as asked
            proc.send_signal(signal.SIGTERM)
            assert proc.wait(30) == 0
        else:
            assert proc.wait(30) == 1
            out.wait_for("has failed for good")
            assert any("--keep-going" in ln for ln in out.lines)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()

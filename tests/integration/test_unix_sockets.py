"""App servers on Unix sockets with the real servers: `up` says where they listen, a stale socket
file is replaced, one another process listens on is refused by name, and the liveness probe
reaches a node through its socket."""
from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import threading
import urllib.request
from pathlib import Path

import pytest
import yaml

from stackpanel.core.profiles.library import builtin_dir
from stackpanel.core.profiles.loader import load_profile_text
from stackpanel.core.render.common import RunPaths
from stackpanel.core.session import StackSession
from stackpanel.core.supervise.events import NodeState, NodeStateChanged
from stackpanel.core.supervise.supervisor import StartError

from .conftest import free_offset, read_until

pytestmark = pytest.mark.integration


def test_up_listens_on_sockets_and_replaces_a_stale_one(tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    stale = RunPaths(run_dir).unix_socket("app1")
    stale.parent.mkdir(parents=True)
    left = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    left.bind(str(stale))  # what a killed server leaves: the file, nobody accepting
    left.close()
    offset = free_offset()
    up = subprocess.Popen([sys.executable, "-m", "stackpanel", "up", "nginx-balanced", "--port-offset", str(offset),
                           "--run-dir", str(run_dir)], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        lines = "".join(read_until(up, "is up: open", timeout=60.0))
        assert f"from unix:{stale}/healthz" in lines, lines
        assert f"from unix:{RunPaths(run_dir).unix_socket('app2')}/healthz" in lines, lines
        for _ in range(4):
            with urllib.request.urlopen(f"http://127.0.0.1:{8080 + offset}/api/hello", timeout=10) as answer:
                assert answer.status == 200
        up.send_signal(signal.SIGINT)
        rest, _ = up.communicate(timeout=60)
        assert up.returncode == 0, rest
    finally:
        if up.poll() is None:
            up.kill()
            up.wait()


def _variant(**app1: object):
    data = yaml.safe_load((builtin_dir() / "nginx-balanced.yaml").read_text())
    data["nodes"]["app1"].update(app1)
    return load_profile_text(yaml.safe_dump(data), builtin_dir() / "variant.yaml", port_offset=free_offset())


def test_a_socket_another_process_listens_on_is_refused_by_name(tmp_path: Path) -> None:
    profile = _variant()
    path = RunPaths(tmp_path / "run").unix_socket("app1")
    path.parent.mkdir(parents=True)
    holder = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    holder.bind(str(path))
    holder.listen()
    session = StackSession(profile, run_dir=tmp_path / "run", metrics_mode="manual")
    try:
        with pytest.raises(StartError, match=f"another process listens on {path}"):
            session.start()
        assert path.is_socket()  # never removed from under its owner
    finally:
        holder.close()
        session.close()


def test_liveness_probe_reaches_the_node_through_its_socket(tmp_path: Path) -> None:
    """SIGSTOP app1's process group: the liveness probe over the socket times out, the node is
    killed and restarted, and answers again."""
    profile = _variant(liveness_probe={"http_get": {"path": "/healthz"}, "period_seconds": 0.2,
                                       "timeout_seconds": 0.5, "failure_threshold": 2})
    session = StackSession(profile, run_dir=tmp_path / "run", metrics_mode="manual")
    back = threading.Event()
    seen: list[NodeStateChanged] = []

    def on_event(event) -> None:
        if isinstance(event, NodeStateChanged) and event.node == "app1":
            seen.append(event)
            if event.state == NodeState.READY and any(s.state == NodeState.CRASHED for s in seen):
                back.set()

    session.subscribe(on_event)
    try:
        session.start()
        assert session.stack.nodes["app1"].unix_socket is not None
        pid = session.snapshot().node("app1").pid
        assert pid is not None
        os.killpg(os.getpgid(pid), signal.SIGSTOP)
        assert back.wait(60), [(s.state, s.reason) for s in seen]
        assert session.snapshot().node("app1").pid != pid
        with urllib.request.urlopen(profile.entry_url + "api/hello", timeout=10) as answer:
            assert answer.status == 200
    finally:
        session.close()

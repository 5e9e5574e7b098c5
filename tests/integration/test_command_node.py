"""Command nodes (#13.9): any program that listens on a port, run from its argv list, supervised,
probed, restarted, stopped and routed to like the servers (real processes on loopback)."""
from __future__ import annotations

import os
import signal
import sys
import textwrap
import threading
import urllib.request
from pathlib import Path

import pytest

from stackpanel.core.profiles.loader import load_profile_text
from stackpanel.core.session import StackSession
from stackpanel.core.supervise.events import NodeState, NodeStateChanged
from stackpanel.core.supervise.supervisor import PortConflictError

from .conftest import free_offset, wait_gone

pytestmark = pytest.mark.integration

MAIN_PY = textwrap.dedent("""\
    # What many projects do: the app starts its own server (as the uvicorn docs show).
    import os

    import uvicorn


    async def app(scope, receive, send):
        assert scope["type"] == "http"
        body = f"hello from main.py pid {os.getpid()} env {os.environ.get('GREETING')}".encode()
        await send({"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"text/plain")]})
        await send({"type": "http.response.body", "body": body})


    if __name__ == "__main__":
        uvicorn.run(app, host=os.environ["HOST"], port=int(os.environ["PORT"]), log_level="info")
""")


def get(url: str) -> tuple[int, str]:
    with urllib.request.urlopen(url, timeout=10) as response:
        return response.status, response.read().decode()


def _profile(tmp_path: Path, offset: int, extra: str = "") -> str:
    (tmp_path / "site").mkdir(exist_ok=True)
    (tmp_path / "site" / "index.html").write_text("static index\n")
    (tmp_path / "main.py").write_text(MAIN_PY)
    return textwrap.dedent(f"""\
        version: 1
        name: commands
        nodes:
          edge:
            kind: nginx
            port: {18080 + offset}
            routes:
              - {{path: /main, to: main, strip_prefix: true}}
              - {{path: /files, to: files, strip_prefix: true}}
          main:
            kind: command
            port: {18000 + offset}
            command: [python, main.py]
            env: {{GREETING: "hi; $(rm -rf /) `x`"}}
            availability: {{restart: on-failure, backoff_seconds: 0.1}}
            shutdown: {{timeout_seconds: 3}}
          files:
            kind: command
            port: {18001 + offset}
            command: [python, -m, http.server, --bind, 127.0.0.1, "{18001 + offset}", --directory, site]
            readiness_probe: {{tcp_socket: {{}}}}
            liveness_probe: {{tcp_socket: {{}}, period_seconds: 0.5}}
        """) + extra


def test_command_nodes_run_probe_route_restart_and_stop(tmp_path: Path) -> None:
    offset = free_offset((18000, 18001, 18080))
    profile = load_profile_text(_profile(tmp_path, offset), tmp_path / "p.yaml")
    assert profile.entry == "edge"
    with StackSession(profile, run_dir=tmp_path / "run") as session:
        events: list[NodeStateChanged] = []
        session.subscribe(lambda e: events.append(e) if isinstance(e, NodeStateChanged) else None)
        session.start()
        snap = session.snapshot()
        main_pid = snap.node("main").pid
        assert snap.node("main").kind == "command" and snap.node("main").state == NodeState.READY
        # routed through nginx; the environment reached the program as one value, never a shell's
        status, body = get(f"http://127.0.0.1:{18080 + offset}/main/")
        assert status == 200 and f"pid {main_pid}" in body and "env hi; $(rm -rf /) `x`" in body
        assert get(f"http://127.0.0.1:{18080 + offset}/files/index.html") == (200, "static index\n")
        # its output is in its log (the log view follows it)
        out = (session.run_dir / "logs" / "main.out.log").read_text()
        assert "Uvicorn running on" in out and str(18000 + offset) in out
        assert session.stack.nodes["main"].argv == (sys.executable, "main.py")  # `python` is the node's python

        # a crash restarts it per its policy
        ready_again = threading.Event()
        session.subscribe(lambda e: ready_again.set() if isinstance(e, NodeStateChanged) and e.node == "main"
                          and e.state == NodeState.READY else None)
        os.kill(main_pid, signal.SIGKILL)
        assert ready_again.wait(30), [str(e) for e in events if e.node == "main"]
        assert session.snapshot().node("main").pid not in (None, main_pid)
        assert session.snapshot().node("main").restarts == 1
        assert get(f"http://127.0.0.1:{18080 + offset}/main/")[0] == 200
        pids = {n.pid for n in session.snapshot().nodes if n.pid}
        session.stop()
    assert not wait_gone(pids, timeout=5)  # stopped with its shutdown timeout, nothing left


def test_a_command_node_port_is_checked_before_anything_starts(tmp_path: Path) -> None:
    import socket

    offset = free_offset((18000, 18001, 18080))
    profile = load_profile_text(_profile(tmp_path, offset), tmp_path / "p.yaml")
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 18001 + offset))
        taken.listen()
        with StackSession(profile, run_dir=tmp_path / "run") as session, pytest.raises(PortConflictError) as info:
            session.start()
    assert str(18001 + offset) in str(info.value)
    assert not (tmp_path / "run" / "logs" / "main.out.log").exists()  # nothing was launched


def test_a_command_that_never_listens_fails_its_start_with_its_output(tmp_path: Path) -> None:
    from stackpanel.core.supervise.supervisor import StartError

    text = textwrap.dedent(f"""\
        version: 1
        name: silent
        nodes:
          job:
            kind: command
            port: {18002 + free_offset((18002,))}
            command: [python, -c, "import sys; print('no port today'); sys.exit(3)"]
            availability: {{restart: "no"}}
        """)
    profile = load_profile_text(text, tmp_path / "p.yaml")
    with StackSession(profile, run_dir=tmp_path / "run") as session, pytest.raises(StartError) as info:
        session.start()
    assert info.value.node == "job" and "exited with status 3" in info.value.reason
    assert "no port today" in "\n".join(info.value.last_lines)


def test_the_editors_demo_command_serves_behind_nginx(tmp_path: Path) -> None:
    from stackpanel.core.profiles.edit import ProfileDocument

    offset = free_offset((18080, 19000))
    doc = ProfileDocument(f"version: 1\nname: demo\nnodes:\n  edge: {{kind: nginx, port: {18080 + offset}, "
                          "routes: [{path: /, static: site}]}\n")
    (tmp_path / "site").mkdir()
    name = doc.add_node("command", behind="edge", port_free=lambda p: p >= 19000 + offset)
    profile = load_profile_text(doc.text, tmp_path / "p.yaml")
    with StackSession(profile, run_dir=tmp_path / "run") as session:
        session.start()
        status, body = get(f"http://127.0.0.1:{18080 + offset}/{name}/")
        assert status == 200 and f"pid {session.snapshot().node(name).pid}" in body

"""The supervisor owns the listening sockets (#18.4): a master killed under load refuses no connection,
they wait in the backlog and the restarted master serves them. Without the handoff the same kill is
refused, which shows the load sees the gap."""
from __future__ import annotations

import http.server
import os
import signal
import socket
import threading
import time
from collections.abc import Callable
from pathlib import Path

import psutil
import pytest

from stackpanel.core.loadgen import LoadConfig, LoadResult, run_load
from stackpanel.core.profiles.loader import load_profile_text
from stackpanel.core.render import render_stack
from stackpanel.core.supervise.events import NodeState, NodeStateChanged
from stackpanel.core.supervise.supervisor import PortConflictError, StartError, Supervisor

from .conftest import builtin, free_offset, port_free
from .test_supervisor import Recorder

pytestmark = pytest.mark.integration

APPS = """\
async def app(scope, receive, send):
    if scope["type"] != "http":
        return
    await send({"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"text/plain")]})
    await send({"type": "http.response.body", "body": b"ok"})


def wsgi(environ, start_response):
    start_response("200 OK", [("Content-Type", "text/plain")])
    return [b"ok"]
"""


def app_profile(tmp_path: Path, kind: str, workers: int = 1) -> str:
    (tmp_path / "tiny.py").write_text(APPS)
    module, interface = ("tiny:app", "asgi") if kind == "uvicorn" else ("tiny:wsgi", "wsgi")
    return f"""\
version: 1
name: handoff
nodes:
  app:
    kind: {kind}
    port: 8000
    workers: {workers}
    app: {{module: "{module}", interface: {interface}, working_dir: "."}}
    readiness_probe: {{period_seconds: 0.05}}
"""


def kill_master(sup: Supervisor) -> None:
    pid = sup.snapshot().node("app").pid
    assert pid is not None
    os.kill(pid, signal.SIGKILL)


def kill_master_under_load(sup: Supervisor, url: str, connections: int = 8,
                           fault: Callable[[Supervisor], None] = kill_master) -> tuple[LoadResult, float]:
    """Constant load on `url`; kill -9 the app's master (or another `fault`); return the load's result
    and the seconds from the fault to the node's readiness again."""
    rec = Recorder(sup)
    served = threading.Condition()
    ok = [0]

    def progress(p) -> None:
        with served:
            ok[0] = p.requests_ok
            served.notify_all()

    def wait_served(n: int) -> None:
        with served:
            assert served.wait_for(lambda: ok[0] >= n, timeout=15), f"only {ok[0]} requests served"

    stop = threading.Event()
    out: list[LoadResult] = []
    config = LoadConfig(url=url, connections=connections, duration_s=60, timeout_s=10, give_up_after_s=None,
                        progress_interval_s=0.05)
    worker = threading.Thread(target=lambda: out.append(run_load(config, progress, stop_event=stop)), daemon=True)
    worker.start()
    wait_served(100)
    killed_at = time.time()
    fault(sup)
    ready = rec.wait_for(lambda e: isinstance(e, NodeStateChanged) and e.node == "app"
                         and e.state == NodeState.READY and e.at > killed_at, timeout=20)
    wait_served(ok[0] + 200)  # the restarted master serves the load
    stop.set()
    worker.join(15)
    return out[0], ready.at - killed_at


@pytest.mark.parametrize(("kind", "workers"), [("uvicorn", 1), ("uvicorn", 2), ("gunicorn", 2)])
def test_a_killed_master_refuses_no_connection_under_load(tmp_path: Path, kind: str, workers: int) -> None:
    profile = load_profile_text(app_profile(tmp_path, kind, workers), tmp_path / "p.yaml", port_offset=free_offset())
    sup = Supervisor(render_stack(profile, tmp_path / "run"))
    try:
        sup.start()
        result, recovery = kill_master_under_load(sup, profile.entry_url)
    finally:
        sup.close()
    assert result.errors["connect_refused"] == 0, result.errors
    assert result.errors["http_5xx"] == 0, result.errors
    # only connections the dead processes held may fail: requests in flight, and keep-alive ones the
    # orphaned workers (--workers 2) close as they are stopped while a request is on its way (resets)
    assert result.errors_total <= 2 * 8, result.errors
    assert recovery < 5.0  # ≤ 1 s + app import on a quiet box; BENCHMARKS.md has the medians
    assert result.requests_ok > 100


def proxied_profile(tmp_path: Path, kind: str) -> str:
    """nginx in front of the tiny app, which listens on a Unix socket (`listen: auto` behind nginx)."""
    app = app_profile(tmp_path, kind, workers=2).split("nodes:\n", 1)[1]
    return f"""\
version: 1
name: handoff behind nginx
nodes:
  web:
    kind: nginx
    port: 8080
    routes: [{{path: /, to: app}}]
    readiness_probe: {{period_seconds: 0.05}}
{app}"""


@pytest.mark.parametrize("kind", ["uvicorn", "gunicorn"])
def test_behind_nginx_a_killed_master_on_a_unix_socket_fails_no_request(tmp_path: Path, kind: str) -> None:
    profile = load_profile_text(proxied_profile(tmp_path, kind), tmp_path / "p.yaml", port_offset=free_offset())
    stack = render_stack(profile, tmp_path / "run")
    path = stack.nodes["app"].unix_socket
    assert path is not None
    sup = Supervisor(stack)
    try:
        sup.start()
        app = psutil.Process(sup.snapshot().node("app").pid)
        assert str(path) not in " ".join(app.cmdline())  # it serves our socket, by fd
        result, _ = kill_master_under_load(sup, profile.entry_url)
        # a graceful restart: gunicorn unlinks the name it was handed, nginx's stays
        after, _ = kill_master_under_load(sup, profile.entry_url, fault=lambda s: s.restart_node("app"))
        assert path.is_socket()
    finally:
        sup.close()
    assert not os.path.lexists(path)
    # every stop was clean: a gunicorn whose handed-over name was already gone fails its stop
    logs = " ".join(f.read_text(errors="replace") for f in (tmp_path / "run" / "logs").glob("app*"))
    assert "Traceback" not in logs and "FileNotFoundError" not in logs
    for r in (result, after):
        assert r.errors["connect_refused"] == 0, r.errors
        # at most the requests in flight in the 2 workers the killed master leaves (they are stopped)
        assert r.errors["http_5xx"] <= 2, r.errors
        assert r.errors_total <= 2 * 8, r.errors


def test_a_restart_from_the_panel_keeps_the_socket(tmp_path: Path) -> None:
    profile = load_profile_text(app_profile(tmp_path, "uvicorn"), tmp_path / "p.yaml", port_offset=free_offset())
    sup = Supervisor(render_stack(profile, tmp_path / "run"))
    try:
        sup.start()
        result, _ = kill_master_under_load(sup, profile.entry_url, fault=lambda s: s.restart_node("app"))
    finally:
        sup.close()
    assert result.errors["connect_refused"] == 0, result.errors


def test_without_the_handoff_the_same_kill_is_refused(tmp_path: Path) -> None:
    profile = load_profile_text(app_profile(tmp_path, "uvicorn"), tmp_path / "p.yaml", port_offset=free_offset())
    sup = Supervisor(render_stack(profile, tmp_path / "run"), socket_handoff=False)
    try:
        sup.start()
        result, _ = kill_master_under_load(sup, profile.entry_url)
    finally:
        sup.close()
    assert result.errors["connect_refused"] > 0, result.errors


def test_the_socket_is_ours_while_running_and_free_after_stop(tmp_path: Path) -> None:
    profile = load_profile_text(app_profile(tmp_path, "uvicorn"), tmp_path / "p.yaml", port_offset=free_offset())
    sup = Supervisor(render_stack(profile, tmp_path / "run"))
    port = profile.nodes["app"].port
    try:
        sup.start()
        mine = {c.laddr.port for c in psutil.Process().net_connections(kind="tcp") if c.status == "LISTEN"}
        assert port in mine  # the supervisor holds it
        app = psutil.Process(sup.snapshot().node("app").pid)
        assert "--fd" in app.cmdline() and "--port" not in app.cmdline()  # uvicorn serves it
    finally:
        sup.close()
    assert port_free(port)


def test_a_taken_port_fails_at_our_bind_naming_its_holder(tmp_path: Path) -> None:
    profile = load_profile_text(app_profile(tmp_path, "gunicorn"), tmp_path / "p.yaml", port_offset=free_offset())
    port = profile.nodes["app"].port
    with socket.create_server(("127.0.0.1", port)):
        sup = Supervisor(render_stack(profile, tmp_path / "run"))
        try:
            with pytest.raises(PortConflictError, match=rf"port {port} on 127.0.0.1 is taken by pid {os.getpid()}"):
                sup.start()
        finally:
            sup.close()
    assert port_free(port)


class _Answer(http.server.BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        self.send_response(200)
        self.end_headers()
        self.wfile.write(b"not apache")

    def log_message(self, *args: object) -> None:
        pass


def test_apache_probe_answered_by_a_foreign_listener_fails_naming_it(tmp_path: Path) -> None:
    """Apache binds its own port (it cannot take ours): a program that takes the port after the port
    check (when the backend starts, before Apache does) answers Apache's readiness probe. That answer
    must not count."""
    profile = builtin("apache-uvicorn")
    port = profile.nodes["web"].port
    sup = Supervisor(render_stack(profile, tmp_path / "run"))
    servers: list[http.server.HTTPServer] = []

    def squat(event: object) -> None:
        if isinstance(event, NodeStateChanged) and event.node == "app" and event.state == NodeState.STARTING:
            server = http.server.HTTPServer(("127.0.0.1", port), _Answer)
            servers.append(server)
            threading.Thread(target=server.serve_forever, daemon=True).start()

    sup.subscribe(squat)
    try:
        with pytest.raises(StartError, match=rf"port {port} on 127.0.0.1 answered, but it is held by "
                                             rf"pid {os.getpid()} \(python"):
            sup.start()
    finally:
        for server in servers:
            server.shutdown()
            server.server_close()
        sup.close()
    assert servers, "the squatter never ran"
    assert sup.snapshot().node("web").state != NodeState.READY

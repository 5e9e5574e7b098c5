"""The supervisor with the real servers: every topology up and down, crashes, orphans, conflicts."""
from __future__ import annotations

import dataclasses
import os
import signal
import socket
import ssl
import subprocess
import sys
import textwrap
import threading
import time
import urllib.request
from pathlib import Path

import psutil
import pytest

from stackpanel.core.errors import StackpanelError
from stackpanel.core.profiles.library import list_profiles
from stackpanel.core.profiles.loader import load_profile_text
from stackpanel.core.render import render_stack
from stackpanel.core.supervise.events import (
    NodeState,
    NodeStateChanged,
    StackMessage,
    StackState,
    WorkersChanged,
)
from stackpanel.core.supervise.supervisor import PortConflictError, ReloadError, StartError, Supervisor
from stackpanel.core.tls import ca_dir

from .conftest import alive, builtin, free_offset, ports_free, read_until, wait_gone

pytestmark = pytest.mark.integration

BUILTINS = sorted(e.name for e in list_profiles() if e.builtin)


def get(url: str, timeout: float = 5.0) -> tuple[int, bytes]:
    """GET; an https URL is verified against stackpanel's local CA."""
    context = ssl.create_default_context(cafile=str(ca_dir() / "ca.pem")) if url.startswith("https:") else None
    with urllib.request.urlopen(url, timeout=timeout, context=context) as response:
        return response.status, response.read()


class Recorder:
    """Collects events; lets a test wait for one."""

    def __init__(self, sup: Supervisor) -> None:
        self.events: list = []
        self._cond = threading.Condition()
        sup.subscribe(self._on)

    def _on(self, event) -> None:
        with self._cond:
            self.events.append(event)
            self._cond.notify_all()

    def wait_for(self, predicate, timeout: float = 15.0):
        deadline = time.monotonic() + timeout
        with self._cond:
            while True:
                for e in self.events:
                    if predicate(e):
                        return e
                left = deadline - time.monotonic()
                if left <= 0:
                    raise AssertionError(f"event not seen in {timeout} s; got {self.events[-10:]}")
                self._cond.wait(left)


def all_pids(sup: Supervisor) -> set[int]:
    snap = sup.snapshot()
    return {p for n in snap.nodes for p in (n.pid, *n.worker_pids) if p}


@pytest.fixture
def supervisor_factory(tmp_path: Path):
    made: list[Supervisor] = []

    def make(profile, name: str = "run") -> Supervisor:
        sup = Supervisor(render_stack(profile, tmp_path / name))
        made.append(sup)
        return sup

    yield make
    for sup in made:
        sup.close()


@pytest.mark.parametrize("name", BUILTINS)
def test_every_builtin_profile_comes_up_answers_and_stops_clean(name: str, supervisor_factory) -> None:
    profile = builtin(name)
    sup = supervisor_factory(profile)
    sup.start()
    assert sup.state == StackState.RUNNING
    status, body = get(profile.browser_url + "api/pid")  # https where the profile has tls
    assert status == 200 and b"pid" in body
    pids = all_pids(sup)
    assert len(pids) >= len(profile.nodes)
    sup.stop()
    assert sup.state == StackState.STOPPED
    assert wait_gone(pids) == []
    assert ports_free(profile)
    assert all(n.state == NodeState.STOPPED for n in sup.snapshot().nodes)


def test_one_node_can_start_a_run_by_itself(supervisor_factory) -> None:
    """Starting a node before the stack ever ran writes the run directory and takes the run lock."""
    profile = builtin("nginx-uvicorn")
    sup = supervisor_factory(profile)
    sup.start_node("app")
    assert sup.snapshot().node("app").state == NodeState.READY  # its probe passed (over its Unix socket)
    with pytest.raises(StackpanelError, match="already running"):
        supervisor_factory(profile, "run").start()  # the same run directory is ours now
    sup.start()  # the rest of the stack joins the running node
    assert get(profile.entry_url + "api/hello")[0] == 200
    pids = all_pids(sup)
    sup.stop()
    assert wait_gone(pids) == [] and ports_free(profile)


def test_killed_worker_is_replaced_and_reported(supervisor_factory) -> None:
    profile = builtin("nginx-gunicorn-uvicorn")
    sup = supervisor_factory(profile)
    rec = Recorder(sup)
    sup.start()
    rec.wait_for(lambda e: isinstance(e, WorkersChanged) and e.node == "app" and len(e.worker_pids) == 4)
    victim = sup.workers("app")[0]
    os.kill(victim, signal.SIGKILL)
    event = rec.wait_for(lambda e: (isinstance(e, WorkersChanged) and e.node == "app" and victim in e.removed)
                         or (isinstance(e, WorkersChanged) and e.node == "app" and e.added and victim
                             not in e.worker_pids and len(e.worker_pids) == 4))
    rec.wait_for(lambda e: isinstance(e, WorkersChanged) and e.node == "app" and len(e.worker_pids) == 4
                 and victim not in e.worker_pids and e.at >= event.at)
    assert victim not in sup.workers("app") and len(sup.workers("app")) == 4
    assert sup.snapshot().node("app").state == NodeState.READY  # the master handled it
    assert get(profile.entry_url + "api/hello")[0] == 200


@pytest.mark.parametrize("node", ["app", "web"])
def test_killed_master_is_restarted_and_the_stack_answers_again(node: str, supervisor_factory) -> None:
    profile = builtin("nginx-uvicorn")
    sup = supervisor_factory(profile)
    rec = Recorder(sup)
    sup.start()
    old = sup.snapshot().node(node)
    killed_at = time.time()
    os.kill(old.pid, signal.SIGKILL)
    crash = rec.wait_for(lambda e: isinstance(e, NodeStateChanged) and e.node == node
                         and e.state == NodeState.CRASHED)
    assert crash.reason == "killed by SIGKILL"
    assert crash.at - killed_at < 0.5  # event-driven; the benchmark measures it properly
    rec.wait_for(lambda e: isinstance(e, NodeStateChanged) and e.node == node and e.state == NodeState.READY
                 and e.at > crash.at, timeout=20)
    new = sup.snapshot().node(node)
    assert new.pid != old.pid and new.restarts == 1
    assert alive(old.worker_pids) == []  # orphaned workers of the dead master were cleaned up
    assert get(profile.entry_url + "api/hello")[0] == 200
    assert sup.state == StackState.RUNNING


def test_port_conflict_names_the_holder_and_starts_nothing(supervisor_factory) -> None:
    profile = builtin("nginx-uvicorn")
    holder = socket.socket()
    holder.bind(("127.0.0.1", profile.nodes["web"].port))
    holder.listen()
    try:
        sup = supervisor_factory(profile)
        with pytest.raises(PortConflictError) as info:
            sup.start()
        text = str(info.value)
        assert f"port {profile.nodes['web'].port}" in text and f"pid {os.getpid()}" in text
        assert "--port-offset" in text
        assert all(n.pid is None and n.state == NodeState.STOPPED for n in sup.snapshot().nodes)
        assert sup.state == StackState.FAILED
    finally:
        holder.close()


def test_node_that_never_gets_ready_is_named_and_nothing_is_left(tmp_path: Path, supervisor_factory) -> None:
    (tmp_path / "sick.py").write_text(textwrap.dedent("""\
        import sys
        print("sick app: every request fails", file=sys.stderr, flush=True)
        async def app(scope, receive, send):
            if scope["type"] != "http":
                return
            await send({"type": "http.response.start", "status": 503, "headers": []})
            await send({"type": "http.response.body", "body": b"not today"})
    """))
    offset = free_offset()
    text = textwrap.dedent(f"""\
        version: 1
        name: sick
        nodes:
          web:
            kind: nginx
            port: {8080 + offset}
            routes: [{{path: /, to: app}}]
          app:
            kind: uvicorn
            port: {8000 + offset}
            app: {{module: "sick:app"}}
            readiness_probe: {{timeout_seconds: 2}}
    """)
    profile = load_profile_text(text, tmp_path / "sick.yaml")
    sup = supervisor_factory(profile)
    with pytest.raises(StartError) as info:
        sup.start()
    assert info.value.node == "app"
    assert "not ready after 2 s" in str(info.value) and "HTTP 503" in str(info.value)
    assert any("sick app" in line for line in info.value.last_lines)
    assert sup.state == StackState.FAILED
    assert all(n.pid is None for n in sup.snapshot().nodes)
    assert ports_free(profile)


def test_app_that_crashes_on_start_reports_its_last_lines(tmp_path: Path, supervisor_factory) -> None:
    (tmp_path / "broken.py").write_text("raise RuntimeError('database is on fire')\n")
    offset = free_offset()
    text = f"version: 1\nname: b\nnodes:\n  app:\n    kind: uvicorn\n    port: {8000 + offset}\n" \
           "    app: {module: 'broken:app'}\n"
    sup = supervisor_factory(load_profile_text(text, tmp_path / "b.yaml"))
    with pytest.raises(StartError) as info:
        sup.start()
    assert "exited with status 1 while starting" in str(info.value)
    assert any("database is on fire" in line for line in info.value.last_lines)


def test_two_stacks_run_side_by_side(supervisor_factory) -> None:
    a = builtin("nginx-uvicorn")
    b = builtin("nginx-uvicorn", offset=free_offset())
    sup_a, sup_b = supervisor_factory(a, "a"), supervisor_factory(b, "b")
    sup_a.start()
    sup_b.start()
    assert get(a.entry_url + "api/hello")[0] == 200
    assert get(b.entry_url + "api/hello")[0] == 200
    assert not all_pids(sup_a) & all_pids(sup_b)
    sup_a.stop()
    assert get(b.entry_url + "api/hello")[0] == 200  # stopping one leaves the other alone
    sup_b.stop()


def test_reload_applies_a_good_config_and_refuses_a_bad_one(supervisor_factory, tmp_path: Path) -> None:
    profile = builtin("nginx-uvicorn")
    sup = supervisor_factory(profile)
    rec = Recorder(sup)
    sup.start()
    web_pid = sup.snapshot().node("web").pid
    two_workers = profile.model_copy(update={"nodes": {**profile.nodes, "web": profile.nodes["web"].model_copy(
        update={"workers": 2})}})
    new_stack = render_stack(two_workers, sup.stack.paths.root)
    assert sup.reload(new_stack) == ["app", "web"]  # the app's code too: uvicorn's rolling HUP
    rec.wait_for(lambda e: isinstance(e, WorkersChanged) and e.node == "web" and len(e.worker_pids) == 2)
    assert sup.snapshot().node("web").pid == web_pid  # graceful reload, same master
    assert get(profile.entry_url + "api/hello")[0] == 200

    web = new_stack.nodes["web"]
    conf = web.config_file
    broken = dataclasses.replace(web, files={conf: web.files[conf].replace("events {", "events {{")})
    bad_stack = dataclasses.replace(new_stack, nodes={**new_stack.nodes, "web": broken})
    good_text = conf.read_text()
    with pytest.raises(ReloadError) as info:
        sup.reload(bad_stack)
    assert "refused" in str(info.value)
    assert conf.read_text() == good_text  # the running config was not touched
    assert get(profile.entry_url + "api/hello")[0] == 200


def _up(args: list[str], **kw) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "stackpanel", "up", *args], stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, **kw)


def _stack_processes(run_dir: Path, exclude: int) -> list[int]:
    """Every server whose command line mentions the run dir, and their session members."""
    pids = set()
    for p in psutil.process_iter(["pid", "cmdline"]):
        if p.pid != exclude and any(str(run_dir) in part for part in p.info["cmdline"] or ()):
            pids.add(p.pid)
            try:
                sid = os.getsid(p.pid)
            except ProcessLookupError:
                continue
            pids |= {q.pid for q in psutil.process_iter() if _sid(q.pid) == sid}
    return sorted(pids)


def _sid(pid: int) -> int | None:
    try:
        return os.getsid(pid)
    except (ProcessLookupError, PermissionError):
        return None


def test_kill_9_of_stackpanel_up_leaves_no_server_and_next_start_is_clean(tmp_path: Path) -> None:
    offset = free_offset()
    run_dir = tmp_path / "run"
    args = ["nginx-gunicorn-uvicorn", "--port-offset", str(offset), "--run-dir", str(run_dir)]
    up = _up(args)
    try:
        read_until(up, "is up: open")
        servers = _stack_processes(run_dir, exclude=up.pid)
        assert len(servers) >= 2 + 4  # nginx master+worker, gunicorn master+4 workers
        up.kill()
        up.wait()
        assert wait_gone(servers) == [], "servers outlived a kill -9 of stackpanel"
    finally:
        if up.poll() is None:
            up.kill()
    again = _up(args)
    try:
        lines = read_until(again, "is up: open")
        assert any("clean slate" in line for line in lines)
        again.send_signal(signal.SIGINT)
        rest, _ = again.communicate(timeout=30)
        assert again.returncode == 0
        assert "stack      stopped" in rest
    finally:
        if again.poll() is None:
            again.kill()


def test_up_with_a_taken_port_exits_non_zero_naming_the_holder(tmp_path: Path) -> None:
    offset = free_offset()
    holder = socket.socket()
    holder.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # a TIME_WAIT left on the port is no holder
    holder.bind(("127.0.0.1", 8000 + offset))
    holder.listen()
    try:
        up = _up(["uvicorn-workers", "--port-offset", str(offset), "--run-dir", str(tmp_path / "r")])
        out, _ = up.communicate(timeout=30)
    finally:
        holder.close()
    assert up.returncode == 1
    assert f"port {8000 + offset} on 127.0.0.1 is taken by pid {os.getpid()}" in out


def test_events_say_clean_slate_or_leftovers(supervisor_factory) -> None:
    sup = supervisor_factory(builtin("uvicorn-workers"))
    rec = Recorder(sup)
    sup.start()
    assert isinstance(rec.wait_for(lambda e: isinstance(e, StackMessage)), StackMessage)


def test_stopping_during_start_aborts_promptly(supervisor_factory) -> None:
    sup = supervisor_factory(builtin("nginx-gunicorn-uvicorn"))
    rec = Recorder(sup)
    errors: list[BaseException] = []

    def run() -> None:
        try:
            sup.start()
        except StackpanelError as exc:  # pragma: no cover - would fail the assert below
            errors.append(exc)

    t = threading.Thread(target=run)
    t.start()
    # the first node is spawned and being probed: a stop now lands in the middle of the start
    rec.wait_for(lambda e: isinstance(e, NodeStateChanged) and e.state == NodeState.STARTING)
    t0 = time.monotonic()
    sup.stop()
    t.join(15)
    assert not t.is_alive() and not errors
    assert time.monotonic() - t0 < 10
    assert sup.state == StackState.STOPPED
    assert not any(isinstance(e, NodeStateChanged) and e.state == NodeState.READY and e.node == "web"
                   for e in rec.events)  # the entry never came up


def test_a_stop_before_the_start_starts_nothing_and_the_next_start_runs(supervisor_factory) -> None:
    profile = builtin("uvicorn-workers")
    sup = supervisor_factory(profile)
    rec = Recorder(sup)
    sup.request_stop()  # e.g. Ctrl-C while `up` is still loading, or Stop clicked with Start queued
    sup.start()
    assert sup.state == StackState.STOPPED
    assert not any(isinstance(e, NodeStateChanged) and e.state == NodeState.STARTING for e in rec.events)
    sup.stop()  # honours the request
    sup.start()
    assert sup.state == StackState.RUNNING
    assert get(profile.entry_url + "api/pid")[0] == 200


def test_sighup_reloads_an_edited_profile_and_refuses_a_broken_one(tmp_path: Path) -> None:
    from stackpanel.core.profiles.library import builtin_dir

    site = builtin_dir().parent / "apps" / "site"
    source = (builtin_dir() / "nginx-uvicorn.yaml").read_text().replace("../apps/site", str(site))
    path = tmp_path / "mine.yaml"
    path.write_text(source.replace("app:\n      module", f"app:\n      working_dir: {builtin_dir()}\n      module"))
    offset = free_offset()
    up = _up([str(path), "--port-offset", str(offset), "--run-dir", str(tmp_path / "run")])
    try:
        read_until(up, "is up: open")
        path.write_text(path.read_text().replace("    workers: 1\n", "    workers: 2\n", 1))
        up.send_signal(signal.SIGHUP)
        read_until(up, "reloaded: app, web")
        assert get(f"http://127.0.0.1:{8080 + offset}/api/hello")[0] == 200
        path.write_text(path.read_text().replace("kind: nginx", "kind: nginx\n    colour: red"))
        up.send_signal(signal.SIGHUP)
        read_until(up, "reload refused")
        read_until(up, "unknown key 'colour' in nodes.web")
        assert get(f"http://127.0.0.1:{8080 + offset}/api/hello")[0] == 200  # still serving
        up.send_signal(signal.SIGINT)
        up.communicate(timeout=30)
        assert up.returncode == 0
    finally:
        if up.poll() is None:
            up.kill()


def test_one_run_per_run_directory(supervisor_factory, tmp_path: Path) -> None:
    """Two starts of the same stack in one run directory: the second is refused and names the first;
    the kernel's lock goes with the first's stop (or its death), and then the second may start."""
    from stackpanel.core.supervise.runlock import RunDirLocked

    profile = builtin("uvicorn-workers")
    first = supervisor_factory(profile, name="shared")
    second = supervisor_factory(profile, name="shared")
    first.start()
    with pytest.raises(RunDirLocked, match=r"already running from .*shared \(stackpanel pid \d+"):
        second.start()
    assert first.state == StackState.RUNNING  # the refused start touched nothing of the first
    assert get(profile.entry_url + "pid")[0] == 200
    first.stop()
    second.start()
    assert second.state == StackState.RUNNING
    second.stop()


def test_the_run_lock_dies_with_its_owner(tmp_path: Path) -> None:
    import subprocess
    import sys

    from stackpanel.core.supervise.runlock import RunDirLocked, RunLock

    code = ("import sys; from pathlib import Path; from stackpanel.core.supervise.runlock import RunLock; "
            "RunLock(Path(sys.argv[1])).acquire(); print('locked', flush=True); sys.stdin.read()")
    owner = subprocess.Popen([sys.executable, "-c", code, str(tmp_path)], stdin=subprocess.PIPE,
                             stdout=subprocess.PIPE, text=True)
    try:
        assert owner.stdout is not None and owner.stdout.readline() == "locked\n"
        with pytest.raises(RunDirLocked, match=f"stackpanel pid {owner.pid}"):
            RunLock(tmp_path).acquire()
    finally:
        owner.kill()
        owner.wait()
    lock = RunLock(tmp_path)
    lock.acquire()  # kill -9 released it: no stale lock to clean up
    assert lock.held
    lock.release()


def test_a_hung_backend_is_found_by_its_liveness_probe_and_restarted(supervisor_factory, tmp_path: Path) -> None:
    """SIGSTOP leaves the port accepting connections and nothing answering: once readiness passed,
    the liveness probe notices within its threshold, the node is killed and restarted."""
    from stackpanel.core.profiles.loader import load_profile_text
    from tests.conftest import free_ports

    port = free_ports(1)[0]
    text = f"""\
version: 1
name: hung
nodes:
  app:
    kind: uvicorn
    port: {port}
    app: {{module: stackpanel.apps.fastapi_demo:app}}
    readiness_probe: {{http_get: {{path: /healthz}}}}
    liveness_probe: {{http_get: {{path: /healthz}}, period_seconds: 0.2, timeout_seconds: 0.3, failure_threshold: 2}}
"""
    sup = supervisor_factory(load_profile_text(text, tmp_path / "p.yaml"))
    rec = Recorder(sup)
    sup.start()
    hung = sup.snapshot().node("app").pid
    assert hung is not None
    os.kill(hung, signal.SIGSTOP)
    rec.wait_for(lambda e: isinstance(e, StackMessage) and "is unhealthy" in e.text, timeout=10)
    rec.wait_for(lambda e: isinstance(e, NodeStateChanged) and e.node == "app" and e.state == NodeState.READY
                 and e.pid != hung, timeout=20)
    assert get(f"http://127.0.0.1:{port}/healthz")[0] == 200
    assert wait_gone([hung]) == []


@pytest.mark.parametrize(("kind", "module", "declared", "actual"), [
    ("uvicorn", "stackpanel.apps.flask_demo:app", "asgi", "wsgi"),
    ("gunicorn", "stackpanel.apps.fastapi_demo:app", "wsgi", "asgi"),
])
def test_the_wrong_interface_is_named_at_the_first_failed_probe(supervisor_factory, tmp_path: Path, kind: str,
                                                                 module: str, declared: str, actual: str) -> None:
    """A WSGI app on uvicorn (or an ASGI app on gunicorn sync) answers 500 to every probe: that
    once cost the whole 30 s readiness timeout before a TypeError; now the first 500 says which."""
    from stackpanel.core.profiles.loader import load_profile_text
    from tests.conftest import free_ports

    text = f"""\
version: 1
name: wrong interface
nodes:
  app:
    kind: {kind}
    port: {free_ports(1)[0]}
    app: {{module: "{module}", interface: {declared}}}
    readiness_probe: {{http_get: {{path: /healthz}}, timeout_seconds: 60}}
"""
    sup = supervisor_factory(load_profile_text(text, tmp_path / "p.yaml"))
    started = time.monotonic()
    with pytest.raises(StartError, match=f"looks like an? {actual.upper()} app.*write `interface: {actual}`"):
        sup.start()
    assert time.monotonic() - started < 20  # not the 60 s timeout


def test_a_storm_of_signals_never_hangs_up(tmp_path: Path) -> None:
    """Signal handlers run between two bytecodes, even inside another handler: `up`'s take no lock,
    so hundreds of SIGHUPs and then Ctrl-C end the run (handlers that set Events hung it)."""
    offset = free_offset((8000,))
    up = _up(["uvicorn-workers", "--port-offset", str(offset), "--run-dir", str(tmp_path / "r")])
    try:
        read_until(up, "is up")
        for _ in range(300):
            up.send_signal(signal.SIGHUP)
        up.send_signal(signal.SIGINT)
        assert up.wait(timeout=60) == 0
    finally:
        if up.poll() is None:
            up.kill()
            up.wait()

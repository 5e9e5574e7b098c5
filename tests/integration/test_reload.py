"""Reload without a failed request (#13.4): wrk through the edge while the stack is reloaded three
times (the app's code, a worker count up, a config change or a count down): zero non-2xx answers
and zero socket errors, with the real nginx, gunicorn and uvicorn."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import psutil
import pytest

from stackpanel.core.loadgen import LoadResult, run_wrk, wrk_available
from stackpanel.core.profiles.schema import Profile
from stackpanel.core.session import StackSession
from stackpanel.core.supervise import runcontrol

from .conftest import MetricsWaiter, builtin, free_offset

pytestmark = [pytest.mark.integration, pytest.mark.skipif(not wrk_available(), reason="wrk not installed")]

WRK_SECONDS = 40  # a bound: the three reloads must all be done before it ends (asserted)


def _with(profile: Profile, node: str, **update: object) -> Profile:
    nodes = {**profile.nodes, node: profile.nodes[node].model_copy(update=update)}
    shifted = profile.model_copy(update={"nodes": nodes})
    shifted._port_offset = profile.port_offset
    return shifted


def _under_load(session: StackSession, url: str, reloads: list[Profile]) -> tuple[LoadResult, list[list[str]]]:
    """wrk on `url` (8 connections) while `reloads` are applied one after the other; the reloads
    start once the edge has served requests and must all end while wrk still runs."""
    result: list[LoadResult] = []
    load = threading.Thread(target=lambda: result.append(run_wrk(url, connections=8, duration_s=WRK_SECONDS,
                                                                threads=2, timeout_s=10)))
    waiter = MetricsWaiter(session)
    started = time.monotonic()
    load.start()
    try:
        waiter.wait_for(lambda snap: any(n.requests_total > 100 for n in snap.nodes), timeout=15)
        applied = [session.reload(profile) for profile in reloads]
        assert time.monotonic() - started < WRK_SECONDS - 1, "the reloads outlasted the load: nothing proven"
    finally:
        load.join(WRK_SECONDS + 30)
        waiter.close()
    return result[0], applied


def _assert_no_failure(result: LoadResult) -> None:
    assert result.aborted is None, result.aborted
    assert result.errors["http_error"] == 0, f"{result.errors['http_error']} non-2xx answers during the reloads"
    failed = {k: v for k, v in result.errors.items() if v}
    assert not failed, f"socket errors during the reloads: {failed}"
    assert result.requests_ok > 1000, result


def test_gunicorn_behind_nginx_reloads_three_times_without_a_failed_request(tmp_path: Path) -> None:
    base = _with(builtin("nginx-gunicorn-uvicorn"), "app", workers=2)
    with StackSession(base, run_dir=tmp_path / "run") as session:
        session.start()
        master = session.snapshot().node("app").pid
        first = set(session.workers("app"))
        three = _with(base, "app", workers=3)
        tuned = _with(three, "app", timeout_seconds=20)
        result, applied = _under_load(session, base.entry_url + "hello", [base, three, tuned])
        _assert_no_failure(result)
        assert applied == [["app"], ["app"], ["app"]]
        assert session.snapshot().node("app").pid == master  # never restarted
        assert len(session.workers("app")) == 3 and not first & set(session.workers("app"))
        settings = (session.run_dir / "conf" / "gunicorn-app.conf.py").read_text()
        assert "workers = 3\n" in settings and "timeout = 20\n" in settings  # what the HUP re-read


def test_uvicorn_workers_behind_nginx_reload_three_times_without_a_failed_request(tmp_path: Path) -> None:
    base = builtin("nginx-uvicorn")  # uvicorn --workers 2 behind nginx
    assert base.nodes["app"].workers == 2
    with StackSession(base, run_dir=tmp_path / "run") as session:
        session.start()
        master = session.snapshot().node("app").pid
        first = set(session.workers("app"))
        three = _with(base, "app", workers=3)
        # the code (a rolling HUP), a worker more (TTIN), a worker less (TTOU)
        result, applied = _under_load(session, base.entry_url + "api/hello", [base, three, base])
        _assert_no_failure(result)
        assert applied == [["app"], ["app"], ["app"]]
        assert session.snapshot().node("app").pid == master
        assert len(session.workers("app")) == 2 and not first & set(session.workers("app"))


@pytest.mark.parametrize("name", ["nginx-uvicorn", "apache-uvicorn"])
def test_a_proxy_reloads_after_its_config_test_and_answers_every_request(tmp_path: Path, name: str) -> None:
    """nginx HUP / Apache graceful (USR1), each after the server's own test of the new config: no
    request answered with an error. The old workers close their idle keep-alive connections to the
    client as they retire; a client whose next request is already on the wire sees that connection
    close unanswered (wrk counts a read error; browsers retry an idempotent request there), at most
    once per connection and reload."""
    # one uvicorn worker behind: it keeps running (a reload replaces multi-worker app servers too, and
    # Apache does not retry a pooled connection a retiring worker closed: see the README)
    base = _with(builtin(name), "app", workers=1)
    path = "api/hello" if name == "nginx-uvicorn" else "hello"
    with StackSession(base, run_dir=tmp_path / "run") as session:
        session.start()
        master = session.snapshot().node("web").pid
        wider = _with(base, "web", keepalive_timeout_seconds=4, workers=2)
        result, applied = _under_load(session, base.entry_url + path, [wider, base])
        assert applied == [["web"], ["web"]]
        assert session.snapshot().node("web").pid == master  # reloaded, never restarted
        assert result.errors["http_error"] == 0 and result.errors["connect"] == 0 and result.errors["timeout"] == 0
        assert result.errors["reset"] <= 8 * 2, result.errors  # connections × reloads
        assert result.requests_ok > 1000


def test_a_single_uvicorn_worker_keeps_running_and_says_why(tmp_path: Path) -> None:
    base = _with(builtin("uvicorn-workers"), "app", workers=1)
    with StackSession(base, run_dir=tmp_path / "run") as session:
        messages: list[str] = []
        session.subscribe(lambda e: messages.append(getattr(e, "text", "")))
        session.start()
        pid = session.snapshot().node("app").pid
        assert session.reload(base) == []
        assert session.snapshot().node("app").pid == pid
        assert any("single uvicorn worker has no graceful reload" in m for m in messages), messages
        assert session.reload(_with(base, "app", port=base.nodes["app"].port + 1)) == ["app"]
        assert any("port changed: restarted" in m for m in messages), messages


def test_stackpanel_reload_refuses_a_broken_profile_then_applies_a_good_one(tmp_path: Path) -> None:
    from stackpanel.core.profiles.library import builtin_dir

    path = tmp_path / "mine.yaml"
    source = (builtin_dir() / "nginx-gunicorn-uvicorn.yaml").read_text()
    path.write_text(source.replace("    workers: 4\n", "    workers: 2\n").replace(
        "module: stackpanel.apps", f"working_dir: {builtin_dir()}\n      module: stackpanel.apps"))
    offset, run = free_offset(), tmp_path / "run"
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[2])}
    up = subprocess.Popen([sys.executable, "-m", "stackpanel", "up", str(path), "--port-offset", str(offset),
                           "--run-dir", str(run)], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env)
    try:
        assert up.stdout is not None
        for line in up.stdout:
            if "is up: open" in line:
                break
        deadline = time.monotonic() + 10
        while runcontrol.controlled_run(run) is None:  # written right after the banner
            assert time.monotonic() < deadline, "up never announced itself"
            time.sleep(0.05)
        workers = psutil.Process(runcontrol.controlled_run(run).pid).children(recursive=True)  # type: ignore[union-attr]
        reload = [sys.executable, "-m", "stackpanel", "reload", str(path), "--run-dir", str(run)]

        path.write_text(path.read_text().replace("kind: gunicorn", "kind: gunicorn\n    wokers: 3"))
        refused = subprocess.run(reload, capture_output=True, text=True, env=env, timeout=60)
        assert refused.returncode == 1
        assert f"{path}:" in refused.stderr and "unknown key 'wokers'" in refused.stderr
        assert runcontrol.last_outcome(run) is None  # refused before anything was sent

        path.write_text(path.read_text().replace("    wokers: 3\n", "").replace("workers: 2", "workers: 3"))
        applied = subprocess.run(reload, capture_output=True, text=True, env=env, timeout=120)
        assert applied.returncode == 0, applied.stderr
        assert "app: 2 → 3 workers with TTIN" in applied.stdout and "reloaded: app" in applied.stdout
        assert all(p.is_running() for p in workers)  # nothing was restarted
        up.send_signal(signal.SIGINT)
        up.communicate(timeout=60)
        assert up.returncode == 0
        assert runcontrol.controlled_run(run) is None  # withdrawn when it stopped
    finally:
        if up.poll() is None:
            up.kill()

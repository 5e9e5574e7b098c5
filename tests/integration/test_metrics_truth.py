"""Metrics that add up exactly: N requests through the edge = N on every tier, per worker and per edge."""
from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest

from stackpanel.core.loadgen import LoadConfig, run_load
from stackpanel.core.session import StackSession

from .conftest import MetricsWaiter, builtin, free_offset

pytestmark = pytest.mark.integration

N = 10_000


def watch(session: StackSession) -> MetricsWaiter:
    """Metrics at 10 Hz from the engine's own thread, snapshots waited for, never slept for."""
    waiter = MetricsWaiter(session)
    session.start_metrics(10)
    return waiter


def totals_reach(expected: dict[str, int]):
    return lambda snap: all(snap.node(name).requests_total >= n for name, n in expected.items())


def delta(after: dict, before: dict) -> dict:
    return {k: v - before.get(k, 0) for k, v in after.items() if v - before.get(k, 0)}


@pytest.mark.parametrize("name", ["nginx-apache-uvicorn", "nginx-gunicorn-uvicorn"])
def test_request_counts_add_up_exactly_on_every_tier(name: str, tmp_path: Path) -> None:
    profile = builtin(name)
    session = StackSession(profile, run_dir=tmp_path / "run", metrics_mode="manual")
    try:
        session.start()
        metrics = watch(session)
        base = metrics.wait_quiet()  # the readiness probes' own requests, once logged
        result = run_load(LoadConfig(url=profile.entry_url + "api/hello", connections=8, requests=N,
                                     duration_s=120))
        assert result.requests_ok == N and sum(result.errors.values()) == 0
        metrics.wait_for(totals_reach({n: base.node(n).requests_total + N for n in profile.nodes}))
        snap = metrics.wait_quiet()  # and nothing more comes
        for node in profile.nodes:
            metrics, before = snap.node(node), base.node(node)
            assert metrics.requests_total - before.requests_total == N, node
            by_pid = delta(dict(metrics.requests_by_pid), dict(before.requests_by_pid))
            assert sum(by_pid.values()) == N
            assert metrics.status_totals.get("2xx", 0) - before.status_totals.get("2xx", 0) == N
            assert metrics.unparseable_total == 0
            # every pid that served requests is one the supervisor reported for that node
            known = set(session.workers(node)) | {session.snapshot().node(node).pid}
            assert set(by_pid) <= known
        for edge in profile.edges():
            now, then = snap.edge(edge.source, edge.target), base.edge(edge.source, edge.target)
            assert now.requests_total - (then.requests_total if then else 0) == N
    finally:
        session.close()


def test_split_routes_count_per_edge(tmp_path: Path) -> None:
    profile = builtin("nginx-split")
    session = StackSession(profile, run_dir=tmp_path / "run", metrics_mode="manual")
    try:
        session.start()
        metrics = watch(session)
        base = metrics.wait_quiet()
        api = run_load(LoadConfig(url=profile.entry_url + "api/hello", connections=4, requests=1500, duration_s=60))
        site = run_load(LoadConfig(url=profile.entry_url + "index.html", connections=4, requests=700, duration_s=60))
        assert api.requests_ok == 1500 and site.requests_ok == 700
        expected = {"edge": 2200, "app": 1500, "site": 700}
        metrics.wait_for(totals_reach({n: base.node(n).requests_total + c for n, c in expected.items()}))
        snap = metrics.wait_quiet()

        def edge_delta(source: str, target: str) -> int:
            then = base.edge(source, target)
            return snap.edge(source, target).requests_total - (then.requests_total if then else 0)

        assert edge_delta("edge", "app") == 1500
        assert edge_delta("edge", "site") == 700
        assert edge_delta("site", "static") == 700
    finally:
        session.close()


def test_cpu_of_a_burning_worker_matches_proc(tmp_path: Path) -> None:
    """CPU % of a worker serving the CPU endpoint reads within 10 points of /proc over the interval."""
    profile = builtin("uvicorn-workers")
    session = StackSession(profile, run_dir=tmp_path / "run", metrics_mode="manual")
    try:
        session.start()
        workers = session.workers("app")
        procs = {pid: psutil.Process(pid) for pid in workers}
        session.tick_metrics()
        before = {pid: sum(p.cpu_times()[:2]) for pid, p in procs.items()}
        t0 = time.monotonic()
        run_load(LoadConfig(url=profile.entry_url + "api/cpu?ms=20", connections=2, duration_s=2.0))
        snap = session.tick_metrics()
        elapsed = time.monotonic() - t0
        for pid, p in procs.items():
            truth = (sum(p.cpu_times()[:2]) - before[pid]) / elapsed * 100
            measured = next(w.cpu_percent for w in snap.workers_of("app") if w.pid == pid)
            assert measured is not None
            assert abs(measured - truth) <= 10, f"pid {pid}: engine {measured:.1f} % vs /proc {truth:.1f} %"
        assert max(w.cpu_percent or 0 for w in snap.workers_of("app")) > 20  # someone really burned CPU
    finally:
        session.close()


def test_up_metrics_json_writes_one_object_per_second(tmp_path: Path) -> None:
    offset = free_offset()
    out = tmp_path / "m.jsonl"
    up = subprocess.Popen([sys.executable, "-m", "stackpanel", "up", "uvicorn-workers", "--port-offset", str(offset),
                           "--run-dir", str(tmp_path / "run"), "--metrics-json", str(out)],
                          stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        deadline = time.monotonic() + 40
        while time.monotonic() < deadline:
            if out.exists() and len(out.read_text().splitlines()) >= 3:
                break
            time.sleep(0.2)
        records = [json.loads(line) for line in out.read_text().splitlines()]
        assert len(records) >= 3
        workers = records[-1]["workers"]
        assert {w["node"] for w in workers} == {"app"}
        assert {"pid", "cpu", "rss", "rps"} <= set(workers[0])
        assert len({w["pid"] for w in workers}) == 5  # master + 4 workers
    finally:
        up.send_signal(2)
        up.communicate(timeout=30)
    assert up.returncode == 0


def test_every_start_counts_from_zero_and_keeps_the_last_runs_logs(tmp_path: Path) -> None:
    """A second start of the same session shows only its own requests and log lines (the Node tab
    once showed the previous stack's last lines); the last run's logs are kept in logs.1."""
    import urllib.request

    profile = builtin("nginx-uvicorn")
    session = StackSession(profile, run_dir=tmp_path / "run", metrics_mode="manual")
    try:
        for run, count in enumerate((7, 3)):
            session.start()
            metrics = watch(session)  # stop() stopped the engine's thread with the stack
            for _ in range(count):
                urllib.request.urlopen(profile.entry_url + "api/hello", timeout=10).read()
            metrics.wait_for(totals_reach({"app": count}))
            snap = metrics.wait_quiet()
            # this run's log, this run's count: its requests and the readiness probe, not 7 + 3 + 2
            lines = session.stack.paths.access_log("app").read_text().splitlines()
            assert snap.node("app").requests_total == len(lines) == count + 1, (run, lines)
            session.stop()
        previous = session.stack.paths.logs_dir.with_name("logs.1") / "app.access.log"
        assert len(previous.read_text().splitlines()) >= 7
    finally:
        session.close()

"""Metrics against real (idle or busy) child processes: the sampler's CPU and ages, the engine's per-pid figures."""
from __future__ import annotations

import os
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest

from stackpanel.core.metrics.engine import (
    MetricsEngine,
)
from stackpanel.core.metrics.sampler import ProcessSampler
from stackpanel.core.metrics.synthetic import access_line, random_lines

pytestmark = pytest.mark.integration

CLK_TCK = os.sysconf("SC_CLK_TCK")


def write(path: Path, lines: list[str]) -> None:
    with open(path, "a") as f:
        f.write("".join(line + "\n" for line in lines))



BURN = [sys.executable, "-c", "while True: pass"]
IDLE = [sys.executable, "-c", "import time; time.sleep(60)"]


def _stat_fields(pid: int) -> list[bytes]:
    """/proc/<pid>/stat fields from field 3 (state) on."""
    with open(f"/proc/{pid}/stat", "rb") as f:
        return f.read().rsplit(b")", 1)[1].split()


def proc_stat_cpu_seconds(pid: int) -> float:
    """utime + stime (fields 14, 15) of /proc/<pid>/stat, in seconds."""
    rest = _stat_fields(pid)
    return (int(rest[11]) + int(rest[12])) / CLK_TCK


def proc_stat_age(pid: int) -> float:
    """Seconds since the process started: CLOCK_BOOTTIME - starttime (field 22)."""
    return time.clock_gettime(time.CLOCK_BOOTTIME) - int(_stat_fields(pid)[19]) / CLK_TCK


@pytest.fixture
def spawn() -> Iterator[list[subprocess.Popen[bytes]]]:
    procs: list[subprocess.Popen[bytes]] = []
    yield procs
    for p in procs:
        if p.poll() is None:
            p.kill()
        p.wait(5)


def test_cpu_percent_of_busy_child_matches_proc_stat(spawn: list[subprocess.Popen[bytes]]) -> None:
    child = subprocess.Popen(BURN)
    spawn.append(child)
    time.sleep(0.1)
    sampler = ProcessSampler()
    sampler.set_node("app", None, [child.pid])
    first = sampler.sample()
    t0, c0 = time.monotonic(), proc_stat_cpu_seconds(child.pid)
    assert [s.pid for s in first] == [child.pid]
    assert first[0].cpu_percent is None  # watched for the first time: no baseline yet
    assert first[0].rss_bytes > 1_000_000
    time.sleep(0.6)
    (second,) = sampler.sample()
    t1, c1 = time.monotonic(), proc_stat_cpu_seconds(child.pid)
    truth = (c1 - c0) / (t1 - t0) * 100.0
    assert second.cpu_percent is not None
    assert abs(second.cpu_percent - truth) < 10.0, (second.cpu_percent, truth)
    assert second.cpu_percent > 5.0  # it does burn (how much depends on the machine's load)
    assert second.role == "worker"


def test_worker_born_between_samples_gets_a_value(spawn: list[subprocess.Popen[bytes]]) -> None:
    sampler = ProcessSampler()
    sampler.set_node("app", os.getpid(), [])
    sampler.sample()
    child = subprocess.Popen(BURN)
    spawn.append(child)
    sampler.set_node("app", os.getpid(), [child.pid])
    time.sleep(0.5)
    samples = {s.pid: s for s in sampler.sample()}
    cpu_s, age = proc_stat_cpu_seconds(child.pid), proc_stat_age(child.pid)
    s = samples[child.pid]
    assert s.cpu_percent is not None  # its whole life lies in the interval: a value at once
    assert abs(s.cpu_percent - cpu_s / age * 100.0) < 10.0, (s.cpu_percent, cpu_s / age * 100.0)
    assert s.cpu_percent > 5.0
    assert s.cpu_seconds == pytest.approx(cpu_s, abs=0.05)
    assert samples[os.getpid()].role == "master"
    assert samples[os.getpid()].cpu_percent is not None


def test_vanished_and_zombie_workers_are_dropped(spawn: list[subprocess.Popen[bytes]]) -> None:
    a, b, c = (subprocess.Popen(IDLE) for _ in range(3))
    spawn.extend([a, b, c])
    sampler = ProcessSampler()
    sampler.set_node("app", a.pid, [b.pid, c.pid])
    assert {s.pid for s in sampler.sample()} == {a.pid, b.pid, c.pid}
    b.kill()
    b.wait()  # gone
    c.kill()  # not reaped: a zombie
    deadline = time.monotonic() + 5
    while Path(f"/proc/{c.pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z":
        assert time.monotonic() < deadline
        time.sleep(0.01)
    samples = sampler.sample()
    assert {s.pid for s in samples} == {a.pid}
    assert set(sampler.last_dropped) == {("app", b.pid), ("app", c.pid)}
    assert sampler.sample()[0].pid == a.pid  # not retried, nothing raised
    assert sampler.last_dropped == ()
    sampler.set_node("app", a.pid, [])  # the supervisor removes them
    assert len(sampler.sample()) == 1
    sampler.remove_node("app")
    assert sampler.sample() == ()


def test_pid_that_never_existed_is_dropped() -> None:
    p = subprocess.Popen([sys.executable, "-c", "pass"])
    p.wait()
    sampler = ProcessSampler()
    sampler.set_node("x", p.pid, [p.pid])
    assert sampler.sample() == ()
    assert sampler.last_dropped == (("x", p.pid),)


@pytest.fixture
def workers() -> Iterator[list[int]]:
    procs = [subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"]) for _ in range(3)]
    yield [p.pid for p in procs]
    for p in procs:
        p.kill()
        p.wait(5)


def test_totals_are_exact_and_consistent(tmp_path: Path, workers: list[int]) -> None:
    nginx_log, app_log = tmp_path / "nginx.log", tmp_path / "app.log"
    master, w1, w2 = os.getpid(), workers[0], workers[1]
    eng = MetricsEngine(clock=lambda: 0.0)
    eng.register_node("edge", "nginx", nginx_log, routes=["apache", "static"])
    eng.register_node("app", "gunicorn", app_log, routes=["-"])
    eng.set_workers("edge", master, [w1, w2])
    eng.set_workers("app", workers[2], [workers[2]])
    eng.tick(0.0)

    recs = list(random_lines(3000, pids={"nginx": (w1, w2, 999_999)}, seed=1, error_rate=0.1))  # type: ignore[dict-item]
    write(nginx_log, [r[4] for r in recs])
    write(app_log, [access_line("gunicorn", workers[2], 200, 0.002, "-")] * 40)
    snap = eng.tick(2.0)
    eng.close()

    edge = snap.node("edge")
    assert edge is not None
    assert edge.requests_total == 3000
    assert sum(edge.requests_by_pid.values()) == 3000  # includes 999999, a pid no longer listed
    assert dict(edge.requests_by_pid) == dict(Counter(r[1] for r in recs))
    assert sum(edge.status_totals.values()) == 3000
    assert edge.rps == pytest.approx(1500.0)
    assert snap.interval == 2.0
    by_pid = {w.pid: w for w in snap.workers_of("edge")}
    assert set(by_pid) == {master, w1, w2}
    assert by_pid[master].role == "master" and by_pid[master].requests_total == 0
    assert by_pid[w1].requests_total == edge.requests_by_pid[w1]
    assert by_pid[w1].rps == pytest.approx(edge.requests_by_pid[w1] / 2.0)
    routes = Counter(r[3] for r in recs)
    errors = Counter(r[3] for r in recs if r[2] >= 500)
    for route in ("apache", "static"):
        e = snap.edge("edge", route)
        assert e is not None
        assert e.requests_total == routes[route]
        assert e.errors_total == errors[route]
        assert e.rps == pytest.approx(routes[route] / 2.0)
    assert sum(e.requests_total for e in snap.edges_of("edge")) == 3000
    app = snap.node("app")
    assert app is not None and app.requests_total == 40
    assert app.latency_p50 == pytest.approx(0.002)
    (aw,) = snap.workers_of("app")
    assert aw.role == "master" and aw.requests_total == 40  # single-process node serves itself


def test_vanished_worker_is_dropped_and_config_errors(tmp_path: Path) -> None:
    p = subprocess.Popen([sys.executable, "-c", "pass"])
    p.wait()
    eng = MetricsEngine()
    eng.register_node("g", "gunicorn", None)
    eng.set_workers("g", os.getpid(), [p.pid])
    snap = eng.tick()
    assert [w.pid for w in snap.workers] == [os.getpid()]
    with pytest.raises(ValueError):
        eng.register_node("g", "gunicorn", None)
    with pytest.raises(KeyError):
        eng.set_workers("nope", 1, [])
    with pytest.raises(ValueError):
        eng.run_in_thread(20)
    eng.unregister_node("g")
    assert eng.tick().nodes == ()


def test_sampler_keeps_one_descriptor_per_live_process() -> None:
    procs = [subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"]) for _ in range(4)]
    fds_before = len(os.listdir("/proc/self/fd"))
    sampler = ProcessSampler()
    try:
        sampler.set_node("n", procs[0].pid, [p.pid for p in procs[1:]])
        for _ in range(3):
            assert len(sampler.sample()) == 4
        with_all = len(os.listdir("/proc/self/fd"))
        procs[3].kill()
        procs[3].wait()  # reaped: its /proc descriptor now fails and is closed
        sampler.sample()
        assert sampler.last_dropped == (("n", procs[3].pid),)
        sampler.set_node("n", procs[0].pid, [procs[1].pid])  # procs[2] no longer listed
        sampler.sample()
        assert len(os.listdir("/proc/self/fd")) == with_all - 2
        sampler.close()
        assert len(os.listdir("/proc/self/fd")) == fds_before
    finally:
        for p in procs:
            p.kill()
            p.wait()

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from stackpanel.core.metrics.sampler import ProcessSampler

CLK_TCK = os.sysconf("SC_CLK_TCK")
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

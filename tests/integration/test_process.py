"""Real child processes: spawner, exit detection, stop/escalation, pdeathsig, ports."""

from __future__ import annotations

import logging
import os
import signal
import socket
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import psutil
import pytest

from stackpanel.core.supervise.ports import check_ports_free, find_port_holders, wait_ports_free
from stackpanel.core.supervise.process import (
    ExitWatcher,
    ManagedProcess,
    ProcessExitedError,
    session_members,
)
from stackpanel.core.supervise.spawner import SpawnError, default_spawner

pytestmark = pytest.mark.integration
log = logging.getLogger("stackpanel.tests")

PY = sys.executable


def _alive(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def _wait_for(cond, timeout: float = 5.0, interval: float = 0.01) -> bool:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if cond():
            return True
        time.sleep(interval)
    return bool(cond())


def _wait_file(path: Path, timeout: float = 5.0) -> str:
    assert _wait_for(lambda: path.exists() and path.read_text().strip() != "", timeout), (
        f"{path} never written"
    )
    return path.read_text()


@pytest.fixture
def procs():  # type: ignore[no-untyped-def]
    started: list[ManagedProcess] = []
    yield started
    for p in started:
        p.stop(timeout=0.5)


def _start(procs: list[ManagedProcess], tmp_path: Path, name: str, code: str, **kw) -> ManagedProcess:  # type: ignore[no-untyped-def]
    p = ManagedProcess.start(name, [PY, "-c", textwrap.dedent(code)], log_path=tmp_path / f"{name}.log", **kw)
    procs.append(p)
    return p


# -- spawner ------------------------------------------------------------------------------
def test_spawn_env_cwd_log_and_session(tmp_path: Path, procs: list[ManagedProcess]) -> None:
    log_path = tmp_path / "out.log"
    log_path.write_text("previous run\n")
    p = ManagedProcess.start(
        "echo",
        [PY, "-c", "import os,sys; print(os.environ['SP_TEST'], os.getcwd()); print('err', file=sys.stderr)"],
        log_path=log_path,
        env={**os.environ, "SP_TEST": "hello"},
        cwd=tmp_path,
    )
    procs.append(p)
    assert p.wait(5) == 0
    text = log_path.read_text()
    assert text.startswith("previous run\n"), "log must be opened in append mode"
    assert f"hello {tmp_path}" in text and "err" in text
    assert p.pgid == p.pid and p.sid == p.pid
    assert p.create_time == pytest.approx(time.time(), abs=30)


def test_spawn_errors_are_actionable(tmp_path: Path) -> None:
    with pytest.raises(SpawnError, match="executable not found"):
        default_spawner().spawn(["/nonexistent/nginx"], log_path=tmp_path / "x.log")
    with pytest.raises(SpawnError, match="working directory"):
        default_spawner().spawn([PY, "-c", "pass"], log_path=tmp_path / "x.log", cwd=tmp_path / "nope")
    with pytest.raises(SpawnError, match="log file"):
        default_spawner().spawn([PY, "-c", "pass"], log_path=tmp_path / "nodir" / "x.log")


def test_spawns_from_any_thread_happen_on_the_spawner_thread(tmp_path: Path) -> None:
    sp = default_spawner()
    results: list[subprocess.Popen[bytes]] = []

    def worker() -> None:
        results.append(sp.spawn([PY, "-c", "import os; print(os.getppid())"], log_path=tmp_path / "t.log"))

    threads = [threading.Thread(target=worker) for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    # The workers are gone; children spawned "for" them must not have been pdeathsig-killed.
    for popen in results:
        assert popen.wait(5) == 0
    assert sp.thread.is_alive()


# -- exit detection -----------------------------------------------------------------------
@pytest.mark.parametrize("use_pidfd", [True, False], ids=["pidfd", "thread-per-child"])
def test_exit_detected_quickly_after_kill9(tmp_path: Path, use_pidfd: bool) -> None:
    watcher = ExitWatcher(use_pidfd=use_pidfd)
    try:
        got = threading.Event()
        seen: list[tuple[ManagedProcess, int, float, str]] = []

        def on_exit(proc: ManagedProcess, rc: int, t: float) -> None:
            seen.append((proc, rc, t, threading.current_thread().name))
            got.set()

        p = ManagedProcess.start(
            "sleeper", ["sleep", "60"], log_path=tmp_path / "s.log", on_exit=on_exit, watcher=watcher
        )
        time.sleep(0.05)
        t0 = time.monotonic()
        os.kill(p.pid, signal.SIGKILL)
        assert got.wait(2)
        latency = seen[0][2] - t0
        log.warning("exit detection latency (%s): %.2f ms", "pidfd" if use_pidfd else "thread", latency * 1e3)
        assert seen[0][0] is p and seen[0][1] == -signal.SIGKILL
        assert latency < 0.5
        assert seen[0][3].startswith("stackpanel-exit-watcher")
        assert p.returncode == -9 and not p.is_running and p.exit_time == seen[0][2]
        assert not psutil.pid_exists(p.pid) or psutil.Process(p.pid).ppid() != os.getpid(), "not reaped"
        with pytest.raises(ProcessExitedError, match="already exited"):
            p.signal(signal.SIGHUP)
    finally:
        watcher.close()


def test_many_children_one_watcher(tmp_path: Path) -> None:
    codes: dict[int, int] = {}
    done = threading.Event()
    procs = [
        ManagedProcess.start(
            f"c{i}",
            [PY, "-c", f"import sys; sys.exit({i})"],
            log_path=tmp_path / "c.log",
            on_exit=lambda p, rc, t: (codes.__setitem__(p.pid, rc), len(codes) == 5 and done.set()),
        )
        for i in range(5)
    ]
    assert done.wait(10)
    assert sorted(codes[p.pid] for p in procs) == [0, 1, 2, 3, 4]
    assert all(p.stop().was_running is False for p in procs)


def test_signal_reaches_leader(tmp_path: Path, procs: list[ManagedProcess]) -> None:
    flag = tmp_path / "hup"
    p = _start(
        procs,
        tmp_path,
        "hup",
        f"""
        import signal, time, pathlib
        signal.signal(signal.SIGHUP, lambda *a: pathlib.Path({str(flag)!r}).write_text("reloaded"))
        pathlib.Path({str(flag) + ".ready"!r}).write_text("1")
        time.sleep(30)
    """,
    )
    _wait_file(Path(str(flag) + ".ready"))
    p.signal(signal.SIGHUP)
    assert _wait_file(flag) == "reloaded"
    assert p.is_running


# -- stop ---------------------------------------------------------------------------------
def test_stop_graceful(tmp_path: Path, procs: list[ManagedProcess]) -> None:
    ready = tmp_path / "ready"
    p = _start(
        procs,
        tmp_path,
        "graceful",
        f"""
        import pathlib, signal, sys, time
        signal.signal(signal.SIGTERM, lambda *a: sys.exit(0))
        pathlib.Path({str(ready)!r}).write_text("1")
        time.sleep(30)
    """,
    )
    _wait_file(ready)
    res = p.stop(signal.SIGTERM, timeout=5)
    assert res.was_running and not res.killed and res.clean
    assert res.signal_sent == signal.SIGTERM and res.returncode == 0
    assert res.duration < 2
    assert p.stop_requested
    assert p.stop() is res, "stop is idempotent"


def test_stop_uses_configured_signal(tmp_path: Path, procs: list[ManagedProcess]) -> None:
    ready = tmp_path / "ready"
    p = _start(
        procs,
        tmp_path,
        "quitter",
        f"""
        import pathlib, signal, sys, time
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        signal.signal(signal.SIGQUIT, lambda *a: sys.exit(3))
        pathlib.Path({str(ready)!r}).write_text("1")
        time.sleep(30)
    """,
        stop_signal=signal.SIGQUIT,
    )
    _wait_file(ready)
    res = p.stop(timeout=5)
    assert not res.killed and res.returncode == 3 and res.signal_sent == signal.SIGQUIT


def test_stop_escalates_to_sigkill_for_whole_group(tmp_path: Path, procs: list[ManagedProcess]) -> None:
    ready = tmp_path / "ready"
    # Leader and a forked worker both ignore TERM.
    p = _start(
        procs,
        tmp_path,
        "stubborn",
        f"""
        import os, pathlib, signal, time
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        if os.fork() == 0:
            pathlib.Path({str(ready)!r}).write_text(str(os.getpid()))
        time.sleep(60)
    """,
    )
    worker = int(_wait_file(ready))
    assert worker in session_members(p.pgid, p.sid)
    workers = p.descendants()
    assert [c.pid for c in workers] == [worker]
    assert p.descendants()[0] is workers[0], "same psutil.Process across calls (cpu_percent needs it)"
    t0 = time.monotonic()
    res = p.stop(signal.SIGTERM, timeout=0.3)
    assert res.killed and res.returncode == -signal.SIGKILL and res.survivors == ()
    assert 0.3 <= res.duration < 2.0
    assert time.monotonic() - t0 < 2.5
    assert not _alive(worker) and not _alive(p.pid)
    assert session_members(p.pgid, p.sid) == []


def test_stop_waits_for_workers_outliving_the_master(tmp_path: Path, procs: list[ManagedProcess]) -> None:
    ready = tmp_path / "ready"
    # On TERM the master exits at once; its worker finishes a "request" for 0.3 s, then exits.
    p = _start(
        procs,
        tmp_path,
        "master",
        f"""
        import os, pathlib, signal, sys, time
        pid = os.fork()
        if pid == 0:
            signal.signal(signal.SIGTERM, lambda *a: (time.sleep(0.3), os._exit(0)))
            pathlib.Path({str(ready)!r}).write_text(str(os.getpid()))
            time.sleep(60)
            os._exit(1)
        def stop(*a):
            os.kill(pid, signal.SIGTERM)
            sys.exit(0)
        signal.signal(signal.SIGTERM, stop)
        time.sleep(60)
    """,
    )
    worker = int(_wait_file(ready))
    res = p.stop(timeout=5)
    assert not res.killed and res.survivors == ()
    assert res.duration >= 0.25, "stop returned before the worker was gone"
    assert not _alive(worker)


def test_stop_grandchild_in_same_group_is_gone(tmp_path: Path, procs: list[ManagedProcess]) -> None:
    ready = tmp_path / "ready"
    # The grandchild ignores TERM and nobody passes the signal on; stop must still clear it.
    p = _start(
        procs,
        tmp_path,
        "parent",
        f"""
        import os, pathlib, signal, subprocess, sys, time
        gc = subprocess.Popen([sys.executable, "-c",
            "import signal,time; signal.signal(signal.SIGTERM, signal.SIG_IGN); time.sleep(60)"])
        pathlib.Path({str(ready)!r}).write_text(str(gc.pid))
        time.sleep(60)
    """,
    )
    grandchild = int(_wait_file(ready))
    assert os.getpgid(grandchild) == p.pgid
    res = p.stop(timeout=0.5)
    assert res.killed and res.survivors == ()
    assert not _alive(grandchild)


def test_stop_after_leader_died_clears_orphaned_workers(tmp_path: Path, procs: list[ManagedProcess]) -> None:
    ready = tmp_path / "ready"
    p = _start(
        procs,
        tmp_path,
        "crasher",
        f"""
        import os, pathlib, time
        if os.fork() == 0:
            pathlib.Path({str(ready)!r}).write_text(str(os.getpid()))
            time.sleep(60)
            os._exit(0)
        time.sleep(0.2)
        os._exit(7)
    """,
    )
    worker = int(_wait_file(ready))
    assert p.wait(5) == 7
    assert _alive(worker)
    res = p.stop(timeout=2)
    assert not res.was_running and res.signal_sent == signal.SIGTERM and res.survivors == ()
    assert "leftover workers were stopped" in res.describe()
    assert not _alive(worker)


# -- pdeathsig ------------------------------------------------------------------------------
FAKE_SUPERVISOR = """
import sys, threading, time
from stackpanel.core.supervise.process import ManagedProcess

def start():
    # Spawn from a short-lived thread: pdeathsig must follow the spawner thread, not this one.
    p = ManagedProcess.start("sleeper", ["sleep", "60"], log_path=sys.argv[1])
    print(p.pid, flush=True)

t = threading.Thread(target=start)
t.start()
t.join()
time.sleep(60)
"""


def test_children_die_with_a_kill9ed_supervisor(tmp_path: Path) -> None:
    script = tmp_path / "fake_supervisor.py"
    script.write_text(FAKE_SUPERVISOR)
    sup = subprocess.Popen([PY, str(script), str(tmp_path / "child.log")], stdout=subprocess.PIPE, text=True)
    try:
        assert sup.stdout is not None
        child = int(sup.stdout.readline())
        time.sleep(0.3)
        assert _alive(child), "the child died with the spawning (non-spawner) thread"
        sup.kill()
        sup.wait(5)
        t0 = time.monotonic()
        assert _wait_for(lambda: not _alive(child), 2.0), "child survived its supervisor's kill -9"
        log.warning("child gone %.1f ms after the supervisor was kill -9ed", (time.monotonic() - t0) * 1e3)
    finally:
        sup.kill()
        sup.wait(5)


# -- ports with a real server ---------------------------------------------------------------
def test_http_server_port_holder_and_release(
    tmp_path: Path, procs: list[ManagedProcess], free_port: int
) -> None:
    port = free_port
    assert check_ports_free([("127.0.0.1", port)]) == []
    p = ManagedProcess.start(
        "http",
        [PY, "-m", "http.server", "--bind", "127.0.0.1", str(port)],
        log_path=tmp_path / "http.log",
        cwd=tmp_path,
    )
    procs.append(p)
    assert _wait_for(lambda: bool(check_ports_free([("127.0.0.1", port)])), 10)
    (conflict,) = check_ports_free([("127.0.0.1", port)])
    assert conflict.holders[0].pid == p.pid
    assert f"port {port} on 127.0.0.1 is taken by pid {p.pid}" in conflict.message
    assert "http.server" in conflict.message
    assert [h.pid for h in find_port_holders("127.0.0.1", port)] == [p.pid]
    with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
        s.sendall(b"GET / HTTP/1.0\r\n\r\n")
        assert s.recv(12).startswith(b"HTTP/1.0 200")
    res = p.stop(timeout=5)
    assert res.survivors == ()
    assert wait_ports_free([("127.0.0.1", port)], timeout=2) == []


def test_port_holder_is_the_master_not_a_worker(
    tmp_path: Path, procs: list[ManagedProcess], free_port: int
) -> None:
    # Like nginx: the master listens, forks workers that inherit the socket. psutil names one
    # arbitrary pid per socket; the conflict must name the master.
    ready = tmp_path / "ready"
    p = _start(
        procs,
        tmp_path,
        "prefork",
        f"""
        import os, pathlib, socket, time
        s = socket.socket()
        s.bind(("127.0.0.1", {free_port}))
        s.listen()
        kids = [pid for pid in (os.fork(), os.fork()) if pid]
        if len(kids) == 2:
            time.sleep(0.2)
            pathlib.Path({str(ready)!r}).write_text("1")
        time.sleep(60)
        """,
    )
    _wait_file(ready)
    (conflict,) = check_ports_free([("127.0.0.1", free_port)])
    pids = [h.pid for h in conflict.holders]
    assert pids[0] == p.pid
    assert sorted(pids[1:]) == sorted(c.pid for c in p.descendants())
    assert conflict.message.startswith(f"port {free_port} on 127.0.0.1 is taken by pid {p.pid} (")
    assert "more of its processes" in conflict.message

from __future__ import annotations

import os
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from stackpanel.core.profiles.library import builtin_dir
from stackpanel.core.profiles.loader import load_profile
from stackpanel.core.profiles.schema import Profile
from stackpanel.core.supervise.ports import free_port_offset
from stackpanel.core.supervise.process import alive_pids

BUILTIN_PORTS = (8000, 8001, 8002, 8080, 8081)


def port_free(port: int) -> bool:
    with socket.socket() as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def free_offset(ports: tuple[int, ...] = BUILTIN_PORTS) -> int:
    """A random offset under which every built-in port is free (parallel runs rarely collide)."""
    return free_port_offset(ports)


def builtin(name: str, offset: int | None = None) -> Profile:
    return load_profile(builtin_dir() / f"{name}.yaml", port_offset=free_offset() if offset is None else offset)


alive = alive_pids


def ports_free(profile: Profile) -> bool:
    return all(port_free(port) for n in profile.nodes.values() for _host, port in n.listen_addresses)


@pytest.fixture(scope="session", autouse=True)
def _private_user_data(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    """The local CA (HTTPS profiles) is made in the user's data dir: never the real one in tests."""
    previous = os.environ.get("XDG_DATA_HOME")
    os.environ["XDG_DATA_HOME"] = str(tmp_path_factory.mktemp("user-data"))
    yield
    if previous is None:
        os.environ.pop("XDG_DATA_HOME", None)
    else:
        os.environ["XDG_DATA_HOME"] = previous


@pytest.fixture
def run_dir(tmp_path: Path) -> Path:
    return tmp_path / "run"


def wait_gone(pids: set[int] | list[int], timeout: float = 2.0) -> list[int]:
    """Wait until none of ``pids`` is alive (psutil waits on the processes); returns those left."""
    import psutil

    procs = []
    for pid in pids:
        try:
            procs.append(psutil.Process(pid))
        except psutil.NoSuchProcess:
            pass
    _, left = psutil.wait_procs(procs, timeout=timeout)
    return alive_pids({p.pid for p in left})


class MetricsWaiter:
    """Collects a session's metrics snapshots; a test waits for one that satisfies a condition."""

    def __init__(self, session) -> None:
        import threading

        self.latest = None
        self._cond = threading.Condition()
        self._unsubscribe = session.subscribe_metrics(self._on)

    def _on(self, snap) -> None:
        with self._cond:
            self.latest = snap
            self._cond.notify_all()

    def wait_for(self, predicate, timeout: float = 10.0):
        """The first snapshot (from now on) for which ``predicate(snap)`` holds."""
        import time

        deadline = time.monotonic() + timeout
        with self._cond:
            while True:
                if self.latest is not None and predicate(self.latest):
                    return self.latest
                left = deadline - time.monotonic()
                if left <= 0:
                    raise AssertionError(f"no snapshot met the condition in {timeout} s")
                self._cond.wait(left)

    def wait_quiet(self, quiet_s: float = 1.2, timeout: float = 10.0):
        """A snapshot after which no node's request count changed for ``quiet_s`` (nginx flushes
        its access log once a second): the counts then include everything served so far."""
        state: dict = {}

        def quiet(snap) -> bool:
            totals = {n.name: n.requests_total for n in snap.nodes}
            if totals != state.get("totals"):
                state["totals"], state["since"] = totals, snap.time
                return False
            return snap.time - state["since"] >= quiet_s

        return self.wait_for(quiet, timeout)

    def close(self) -> None:
        self._unsubscribe()


def send_tagged(profile: Profile, path: str, ids: list[str]) -> None:
    """One GET of `path` per request id, each tagged with it (X-Request-ID), through the entry;
    the edge hands the id back in its answer."""
    import urllib.request

    for rid in ids:
        req = urllib.request.Request(profile.entry_url + path.lstrip("/"), headers={"X-Request-ID": rid})
        with urllib.request.urlopen(req, timeout=10) as response:
            assert response.status == 200 and response.headers["X-Request-ID"] == rid


def read_until(proc: subprocess.Popen, needle: str, timeout: float = 30.0) -> list[str]:
    """The lines `proc` prints until one holds `needle` (AssertionError with what came, otherwise)."""
    lines: list[str] = []
    deadline = time.monotonic() + timeout
    assert proc.stdout is not None
    while time.monotonic() < deadline:
        line = proc.stdout.readline()
        if not line:
            break
        lines.append(line)
        if needle in line:
            return lines
    raise AssertionError(f"{needle!r} not printed; got:\n{''.join(lines)}")

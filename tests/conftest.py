from __future__ import annotations

import shutil
import socket
import tempfile
from pathlib import Path

import pytest


def pytest_configure(config: pytest.Config) -> None:
    """Each session gets a basetemp of its own outside /tmp/pytest-of-<user>: as root, the
    proxies' workers (nobody) connect to app sockets in run directories under it, and every
    pytest session that starts resets /tmp/pytest-of-<user> to 0700, which they then cannot
    traverse. Removed after a passing session; a failing one leaves it for a look."""
    if config.option.basetemp is None:
        config.option.basetemp = tempfile.mkdtemp(prefix="stackpanel-tests-")
        config.stash[_OWN_BASETEMP] = Path(config.option.basetemp)


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    own = session.config.stash.get(_OWN_BASETEMP, None)
    if own is not None and exitstatus == 0:
        shutil.rmtree(own, ignore_errors=True)


_OWN_BASETEMP = pytest.StashKey[Path]()


def free_ports(count: int, host: str = "127.0.0.1") -> list[int]:
    """Ports the kernel just handed out as free; held open together so they are distinct."""
    socks = []
    try:
        for _ in range(count):
            s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            s.bind((host, 0))
            socks.append(s)
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


@pytest.fixture
def free_port() -> int:
    return free_ports(1)[0]

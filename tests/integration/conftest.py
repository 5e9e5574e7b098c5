from __future__ import annotations

import socket
from pathlib import Path

import pytest

from stackpanel.core.profiles.library import builtin_dir
from stackpanel.core.profiles.loader import load_profile
from stackpanel.core.profiles.schema import Profile
from stackpanel.core.supervise.ports import free_port_offset
from stackpanel.core.supervise.process import alive_pids

BUILTIN_PORTS = (8000, 8080, 8081)


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
    return all(port_free(n.port) for n in profile.nodes.values())


@pytest.fixture
def run_dir(tmp_path: Path) -> Path:
    return tmp_path / "run"

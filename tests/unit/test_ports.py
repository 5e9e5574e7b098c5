from __future__ import annotations

import errno
import os
import socket
import threading
import time

import pytest

from stackpanel.core.supervise.ports import check_ports_free, find_port_holders, wait_ports_free
from tests.conftest import free_ports


def _listen(host: str, port: int) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    s = socket.socket(family, socket.SOCK_STREAM)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.bind((host, port))
    s.listen()
    return s


def test_free_port_has_no_conflict(free_port: int) -> None:
    assert check_ports_free([("127.0.0.1", free_port)]) == []
    assert find_port_holders("127.0.0.1", free_port) == []


def test_held_port_names_this_process(free_port: int) -> None:
    with _listen("127.0.0.1", free_port):
        (conflict,) = check_ports_free([("127.0.0.1", free_port)])
        assert conflict.port == free_port and conflict.errno == errno.EADDRINUSE
        assert conflict.holders[0].pid == os.getpid()
        assert conflict.message.startswith(f"port {free_port} on 127.0.0.1 is taken by pid {os.getpid()} (")
        assert "python" in conflict.message.lower()
        assert "--port-offset" in conflict.remedy and "stop it" in conflict.remedy
        assert str(conflict) == f"{conflict.message}; {conflict.remedy}"


def test_only_failing_addresses_are_reported() -> None:
    busy, free = free_ports(2)
    with _listen("127.0.0.1", busy):
        conflicts = check_ports_free([("127.0.0.1", free), ("127.0.0.1", busy)])
    assert [c.port for c in conflicts] == [busy]


def test_wildcard_listener_blocks_loopback_and_is_found(free_port: int) -> None:
    # Binding 0.0.0.0 would expose the port beyond loopback; a listener on the wildcard is
    # emulated by asking for the wildcard while a loopback listener holds the port.
    with _listen("127.0.0.1", free_port):
        holders = find_port_holders("0.0.0.0", free_port)
        # first = the process to stop; a child forked meanwhile may share the socket (seen once in CI)
        assert holders[0].pid == os.getpid()
        assert holders[0].local_address == f"127.0.0.1:{free_port}"


def test_localhost_name_resolves(free_port: int) -> None:
    with _listen("127.0.0.1", free_port):
        assert find_port_holders("localhost", free_port)[0].pid == os.getpid()
        assert len(check_ports_free([("localhost", free_port)])) == 1


def test_non_local_address_explains_itself(free_port: int) -> None:
    (conflict,) = check_ports_free([("192.0.2.1", free_port)])  # TEST-NET: never configured here
    assert conflict.errno == errno.EADDRNOTAVAIL
    assert "not an address of this machine" in conflict.message


def test_wait_ports_free_returns_when_released(free_port: int) -> None:
    s = _listen("127.0.0.1", free_port)
    timer = threading.Timer(0.2, s.close)
    timer.start()
    t0 = time.monotonic()
    try:
        assert wait_ports_free([("127.0.0.1", free_port)], timeout=3) == []
        assert 0.15 <= time.monotonic() - t0 < 2
    finally:
        timer.cancel()
        s.close()


def test_wait_ports_free_times_out_with_holder(free_port: int) -> None:
    with _listen("127.0.0.1", free_port):
        t0 = time.monotonic()
        (conflict,) = wait_ports_free([("127.0.0.1", free_port)], timeout=0.2)
        assert time.monotonic() - t0 == pytest.approx(0.2, abs=0.3)
        assert conflict.holders[0].pid == os.getpid()


def test_smallest_free_offset_skips_a_taken_port(monkeypatch) -> None:
    from stackpanel.core.supervise import ports

    taken = {8180}  # 8080 + 100 is taken: the next multiple of 100 is the answer
    monkeypatch.setattr(ports, "_bindable", lambda port, host: port not in taken)
    assert ports.free_port_offset([8000, 8080], step=100, smallest=True) == 200


def test_the_suggested_offset_moves_on_from_the_one_in_use() -> None:
    """At --port-offset 4600 the conflict once suggested --port-offset 100 (back down, not on)."""
    import socket

    from stackpanel.core.supervise.ports import check_ports_free

    with socket.socket() as held:
        held.bind(("127.0.0.1", 0))
        held.listen()
        port = held.getsockname()[1]
        [conflict] = check_ports_free([("127.0.0.1", port)], offset=4600)
    assert "--port-offset 4700" in conflict.remedy and f"-> {port + 100}" in conflict.remedy

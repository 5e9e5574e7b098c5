"""Load balancing through the real proxies: requests spread by the method, per-backend edges add up,
and a backend killed under load is routed around and comes back into the pool."""
from __future__ import annotations

import http.client
import json
import os
import signal
import threading
import urllib.request
from pathlib import Path
from typing import Any

import pytest
import yaml

from stackpanel.core.loadgen import LoadConfig, run_load
from stackpanel.core.profiles.library import builtin_dir
from stackpanel.core.profiles.loader import load_profile_text
from stackpanel.core.profiles.schema import Profile
from stackpanel.core.session import StackSession
from stackpanel.core.supervise.events import NodeState, NodeStateChanged

from .conftest import MetricsWaiter, free_offset

pytestmark = pytest.mark.integration

N = 600  # requests per spread test
BACKENDS = ("app1", "app2")


def balanced(proxy: str = "nginx", listen: str = "auto", **route: Any) -> Profile:
    """The built-in nginx-balanced profile, with another proxy kind, listener or route settings."""
    data = yaml.safe_load((builtin_dir() / "nginx-balanced.yaml").read_text())
    data["nodes"]["web"]["kind"] = proxy
    data["nodes"]["web"]["routes"][0].update(route)
    for name in BACKENDS:
        data["nodes"][name]["listen"] = listen
    return load_profile_text(yaml.safe_dump(data), builtin_dir() / "variant.yaml", port_offset=free_offset())


def edge_counts(snap, base) -> dict[str, int]:
    def total(s, b: str) -> int:
        edge = s.edge("web", b)
        return edge.requests_total if edge else 0
    return {b: total(snap, b) - total(base, b) for b in BACKENDS}


def node_counts(snap, base) -> dict[str, int]:
    return {b: snap.node(b).requests_total - base.node(b).requests_total for b in BACKENDS}


def started(profile: Profile, tmp_path: Path) -> tuple[StackSession, MetricsWaiter]:
    session = StackSession(profile, run_dir=tmp_path / "run", metrics_mode="manual")
    session.start()
    waiter = MetricsWaiter(session)
    session.start_metrics(10)
    return session, waiter


@pytest.mark.parametrize(("proxy", "method", "listen"), [
    ("nginx", "round_robin", "auto"), ("nginx", "least_conn", "tcp"), ("apache", "round_robin", "unix"),
    ("apache", "least_conn", "auto"),
])
def test_requests_spread_evenly_and_each_backend_edge_counts_its_own(proxy: str, method: str, listen: str,
                                                                      tmp_path: Path) -> None:
    """Round robin (and least_conn with equal backends) splits about evenly; the proxy's edge to
    each backend counts exactly the requests that backend's own access log has."""
    profile = balanced(proxy, listen, balance=method)
    session, metrics = started(profile, tmp_path)
    try:
        # listen: auto is a socket behind nginx, TCP behind Apache (BENCHMARKS.md)
        on_socket = listen == "unix" or (listen == "auto" and proxy == "nginx")
        assert all((session.stack.nodes[b].unix_socket is not None) == on_socket for b in BACKENDS)
        # the client's address reaches the app through the proxy, over a socket as over TCP
        with urllib.request.urlopen(profile.entry_url + "api/headers", timeout=10) as answer:
            assert json.load(answer)["client"] == "127.0.0.1"
        base = metrics.wait_quiet()
        result = run_load(LoadConfig(url=profile.entry_url + "api/hello", connections=4, requests=N, duration_s=60))
        assert result.requests_ok == N and result.errors_total == 0
        metrics.wait_for(lambda s: sum(node_counts(s, base).values()) >= N)
        snap = metrics.wait_quiet()
        edges, nodes = edge_counts(snap, base), node_counts(snap, base)
        assert edges == nodes and sum(edges.values()) == N, (edges, nodes)
        assert all(0.35 * N <= c <= 0.65 * N for c in edges.values()), edges
        shares = {e.route: e.share for e in snap.edges_of("web")}
        assert abs(shares["app1"] + shares["app2"] - 1.0) < 1e-9 and 0.35 <= shares["app1"] <= 0.65, shares
    finally:
        session.close()


def test_ip_hash_sends_one_client_to_one_backend(tmp_path: Path) -> None:
    profile = balanced("nginx", balance="ip_hash")
    session, metrics = started(profile, tmp_path)
    try:
        base = metrics.wait_quiet()
        result = run_load(LoadConfig(url=profile.entry_url + "api/hello", connections=4, requests=N, duration_s=60))
        assert result.requests_ok == N
        metrics.wait_for(lambda s: sum(node_counts(s, base).values()) >= N)
        edges = edge_counts(metrics.wait_quiet(), base)
        assert sorted(edges.values()) == [0, N], edges
    finally:
        session.close()


def test_apache_sticky_cookie_pins_a_client_to_its_backend(tmp_path: Path) -> None:
    profile = balanced("apache", balance="sticky")
    session, metrics = started(profile, tmp_path)
    try:
        base = metrics.wait_quiet()
        entry = profile.nodes["web"]
        conn = http.client.HTTPConnection(entry.host, entry.port, timeout=10)
        conn.request("GET", "/api/hello")
        first = conn.getresponse()
        first.read()
        cookie = first.getheader("Set-Cookie", "")
        name, _, value = cookie.split(";")[0].partition("=")
        assert name == "sp_lb0" and value.lstrip(".") in BACKENDS, cookie
        for _ in range(40):
            conn.request("GET", "/api/hello", headers={"Cookie": f"{name}={value}"})
            answer = conn.getresponse()
            answer.read()
            assert answer.status == 200 and answer.getheader("Set-Cookie") is None
        conn.request("GET", "/balancer-manager")  # the manager page is never exposed
        manager = conn.getresponse()
        assert manager.status == 404 and b"Load Balancer Manager" not in manager.read()
        conn.close()
        metrics.wait_for(lambda s: sum(node_counts(s, base).values()) >= 41)
        edges = edge_counts(metrics.wait_quiet(), base)
        assert edges[value.lstrip(".")] == 41 and sum(edges.values()) == 41, edges
    finally:
        session.close()


@pytest.mark.parametrize("proxy", ["nginx", "apache"])
def test_a_backend_killed_under_load_is_routed_around_and_returns_to_the_pool(proxy: str, tmp_path: Path) -> None:
    """kill -9 app1's master while a load runs: the proxy answers from app2 (failed requests are
    counted and reported), the supervisor restarts app1 and requests reach it again."""
    profile = balanced(proxy, fail_timeout_seconds=1)
    session, metrics = started(profile, tmp_path)
    states: list[NodeStateChanged] = []
    ready_again = threading.Event()

    def on_event(event) -> None:
        if isinstance(event, NodeStateChanged) and event.node == "app1":
            states.append(event)
            if event.state == NodeState.READY and any(s.state == NodeState.CRASHED for s in states):
                ready_again.set()

    session.subscribe(on_event)
    stop = threading.Event()
    try:
        base = metrics.wait_quiet()
        results = []
        load = threading.Thread(target=lambda: results.append(run_load(
            LoadConfig(url=profile.entry_url + "api/hello", connections=4, duration_s=60), stop_event=stop)))
        load.start()
        metrics.wait_for(lambda s: edge_counts(s, base)["app1"] >= 100, timeout=20)
        victim = session.snapshot().node("app1").pid
        assert victim is not None
        os.kill(victim, signal.SIGKILL)
        assert ready_again.wait(30), [(s.state, s.reason) for s in states]
        restarted = metrics.wait_for(lambda s: True)  # the load still runs: the counts at the restart
        # back in the pool: new requests reach the restarted app1 (after its fail_timeout of 1 s)
        metrics.wait_for(lambda s: edge_counts(s, restarted)["app1"] >= 50, timeout=20)
        stop.set()
        load.join(30)
        result = results[0]
        print(f"\n{proxy}: {result.requests_ok} ok, {result.errors_total} failed {result.errors} "
              f"while app1 (pid {victim}) was killed and restarted")
        # at least the 100 app1 served before the kill and the 50 after its return (app2's on top);
        # how many more depends on how fast the restart was, not on the balancing
        assert result.requests_ok >= 150
        # nginx retries idempotent GETs on app2 (measured: none failed); Apache fails the requests in
        # flight on app1's connections, when its master dies and when its workers are reaped (measured:
        # 3-6 of ~5,000): under 1 %
        assert result.errors_total <= max(8, result.requests_total // 100), result.errors
        if proxy == "nginx":  # only a response cut after nginx began to send it cannot be retried
            assert result.errors_total <= 4, result.errors
        assert session.snapshot().node("app2").restarts == 0
    finally:
        stop.set()
        session.close()

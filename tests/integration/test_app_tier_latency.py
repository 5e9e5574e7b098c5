"""Every app tier logs each request's duration and request id (#13.5): uvicorn alone, gunicorn with
UvicornWorker and gunicorn sync, behind nginx; a request id from the client reaches every tier."""
from __future__ import annotations

import time
from pathlib import Path

import pytest

from stackpanel.core.session import StackSession
from tests.integration.conftest import builtin, send_tagged

pytestmark = pytest.mark.integration


@pytest.mark.parametrize("name", ["nginx-uvicorn", "nginx-gunicorn-uvicorn", "nginx-gunicorn-flask"])
def test_the_app_tier_logs_duration_and_request_id(name: str, tmp_path: Path) -> None:
    profile = builtin(name)
    session = StackSession(profile, run_dir=tmp_path / "run")
    try:
        session.start()
        ids = [f"trace-{name}-{i}" for i in range(10)]
        send_tagged(profile, "api/wait?ms=20", ids)
        app_log = session.stack.paths.access_log("app")

        def logged() -> dict[str, list[str]]:
            return {line.split(" ")[4]: line.split(" ") for line in app_log.read_text().splitlines()}

        # a tier writes its line after it sent the response: wait for the last one to land
        deadline = time.monotonic() + 10
        while not set(ids) <= set(lines := logged()) and time.monotonic() < deadline:
            time.sleep(0.02)
        assert all(len([ln for ln in app_log.read_text().splitlines() if rid in ln]) == 1 for rid in ids)
        for rid in ids:
            pid, status, seconds, route = lines[rid][:4]
            assert status == "200" and route == "-" and int(pid) > 0
            assert 0.015 <= float(seconds) < 5, lines[rid]  # the app waited 20 ms
    finally:
        session.close()


def test_chunked_responses_do_not_wait_for_nagle_with_several_uvicorn_workers(tmp_path: Path) -> None:
    """uvicorn#3149: with --workers ≥ 2 and the asyncio loop, accepted sockets lacked TCP_NODELAY and
    a response in several chunks waited ~40 ms per request on nginx's pooled connections (measured
    here: median 48 ms before the access wrapper's fix, 1.9 ms after). The margin is wide: a machine
    slow enough to take 20 ms for a 4-chunk local response would fail every other test too."""
    import http.client
    import statistics
    import time

    from stackpanel.core.profiles.loader import load_profile_text
    from tests.conftest import free_ports

    edge, app = free_ports(2)
    text = f"""\
version: 1
name: nagle
nodes:
  edge: {{kind: nginx, port: {edge}, routes: [{{path: /api, to: app}}]}}
  app: {{kind: uvicorn, port: {app}, workers: 2, loop: asyncio, app: {{module: stackpanel.apps.fastapi_demo:app}},
        readiness_probe: {{http_get: {{path: /healthz}}}}}}
"""
    session = StackSession(load_profile_text(text, tmp_path / "p.yaml"), run_dir=tmp_path / "run")
    try:
        session.start()
        conn = http.client.HTTPConnection("127.0.0.1", edge, timeout=10)
        took = []
        for _ in range(40):
            start = time.perf_counter()
            conn.request("GET", "/api/stream?n=4&ms=0")
            response = conn.getresponse()
            assert response.read() == b"".join(f"chunk {i}\n".encode() for i in range(4))
            took.append(time.perf_counter() - start)
        assert statistics.median(took[10:]) < 0.020, took
    finally:
        session.close()

"""Every app tier logs each request's duration and request id (#13.5): uvicorn alone, gunicorn with
UvicornWorker and gunicorn sync, behind nginx; a request id from the client reaches every tier."""
from __future__ import annotations

import urllib.request
from pathlib import Path

import pytest

from stackpanel.core.session import StackSession
from tests.integration.conftest import builtin

pytestmark = pytest.mark.integration


@pytest.mark.parametrize("name", ["nginx-uvicorn", "nginx-gunicorn-uvicorn", "nginx-gunicorn-flask"])
def test_the_app_tier_logs_duration_and_request_id(name: str, tmp_path: Path) -> None:
    profile = builtin(name)
    session = StackSession(profile, run_dir=tmp_path / "run")
    try:
        session.start()
        ids = [f"trace-{name}-{i}" for i in range(10)]
        for rid in ids:
            req = urllib.request.Request(profile.entry_url + "api/wait?ms=20", headers={"X-Request-ID": rid})
            with urllib.request.urlopen(req, timeout=10) as response:
                assert response.status == 200
        app_log = session.stack.paths.access_log("app")
        lines = {line.split(" ")[4]: line.split(" ") for line in app_log.read_text().splitlines()}
        for rid in ids:
            pid, status, seconds, route = lines[rid][:4]
            assert status == "200" and route == "-" and int(pid) > 0
            assert 0.015 <= float(seconds) < 5, lines[rid]  # the app waited 20 ms
    finally:
        session.close()

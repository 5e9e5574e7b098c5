"""The proxy path (issue 12) with the real servers: Apache with mpm: worker."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from stackpanel.core.profiles.library import builtin_dir
from stackpanel.core.profiles.loader import load_profile_text
from stackpanel.core.render import render_stack
from stackpanel.core.supervise.supervisor import Supervisor
from tests.integration.conftest import free_offset, ports_free, wait_gone
from tests.integration.test_edge import request

pytestmark = pytest.mark.integration


def test_apache_with_mpm_worker_proxies_logs_and_stops_clean(tmp_path: Path) -> None:
    text = (builtin_dir() / "apache-uvicorn.yaml").read_text().replace("kind: apache\n",
                                                                        "kind: apache\n    mpm: worker\n")
    profile = load_profile_text(text, builtin_dir() / "apache-uvicorn.yaml", port_offset=free_offset())
    sup = Supervisor(render_stack(profile, tmp_path / "run"))
    try:
        sup.start()  # apache2 -t passed on the rendered config first
        port = profile.nodes["web"].port
        for _ in range(3):
            status, headers, body, _ = request(port, "GET", "/api/hello")
            assert status == 200 and json.loads(body)["app"] == "fastapi"
        assert "x-request-id" in headers
        pids = {p for n in sup.snapshot().nodes for p in (n.pid, *n.worker_pids) if p}
        conf = (tmp_path / "run" / "conf" / "httpd-web.conf").read_text()
        assert "mod_mpm_worker.so" in conf and "mod_mpm_event.so" not in conf
        lines = (tmp_path / "run" / "logs" / "web.access.log").read_text().splitlines()
        assert sum('"/api/hello"' in line for line in lines) == 3
    finally:
        sup.close()
    assert wait_gone(pids) == [] and ports_free(profile)

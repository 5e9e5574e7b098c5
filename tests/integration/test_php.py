"""PHP behind Apache with the real servers: php-fpm as the apache node's companion, the built-in
nginx-php-uvicorn profile end to end, traversal attempts, crashes and a clean stop."""
from __future__ import annotations

import json
import re
import signal
from collections.abc import Iterator
from pathlib import Path

import psutil
import pytest

from stackpanel.core import discovery
from stackpanel.core.profiles.loader import load_profile_text
from stackpanel.core.render import render_stack
from stackpanel.core.session import StackSession
from stackpanel.core.supervise.events import NodeState, NodeStateChanged, StackMessage
from stackpanel.core.supervise.supervisor import StartError, Supervisor
from tests.integration.conftest import MetricsWaiter, builtin, free_offset, read_until, wait_gone
from tests.integration.test_edge import request
from tests.integration.test_supervisor import Recorder, _up

pytestmark = pytest.mark.integration


def fpm_pids(run_dir: Path) -> set[int]:
    """php-fpm processes of this run (master and pool workers), found by their config's path."""
    conf = str(run_dir / "conf")
    masters = [p for p in psutil.process_iter(["cmdline"]) if any(conf in a for a in p.info["cmdline"] or [])
               and "php-fpm" in " ".join(p.info["cmdline"] or [])]
    return {p.pid for m in masters for p in (m, *m.children())}


def now_of(body: bytes) -> float:
    match = re.search(rb'id="now">([\d.]+)<', body)
    assert match, body[:300]
    return float(match.group(1))


@pytest.fixture(scope="module")
def php_stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[StackSession, int]]:
    profile = builtin("nginx-php-uvicorn")
    session = StackSession(profile, run_dir=tmp_path_factory.mktemp("php") / "run")
    try:
        session.start()
        yield session, profile.nodes["edge"].port
    finally:
        session.close()


def test_the_builtin_profile_runs_php_behind_apache_and_the_api_on_uvicorn(php_stack) -> None:
    session, port = php_stack
    status, headers, first, _ = request(port, "GET", "/index.php")
    assert status == 200 and b"(fpm-fcgi)" in first, first[:300]
    assert "x-powered-by" not in headers  # expose_php off
    _, _, second, _ = request(port, "GET", "/")  # DirectoryIndex index.php
    assert now_of(second) > now_of(first)  # computed per request: PHP ran, twice
    pid = int(re.search(rb'id="pid">(\d+)<', second).group(1))  # type: ignore[union-attr]
    assert pid in fpm_pids(session.run_dir)  # ... in one of this run's php-fpm workers
    status, _, body, _ = request(port, "GET", "/api/hello")
    assert status == 200 and json.loads(body)["app"] == "fastapi"


def test_php_requests_are_in_apaches_access_log_and_metrics(php_stack) -> None:
    session, port = php_stack
    waiter = MetricsWaiter(session)
    try:
        before = waiter.wait_quiet().nodes
        site_before = next(n for n in before if n.name == "site").requests_total
        for _ in range(5):
            assert request(port, "GET", "/index.php")[0] == 200
        after = waiter.wait_for(lambda s: next(n for n in s.nodes if n.name == "site").requests_total
                                >= site_before + 5)
    finally:
        waiter.close()
    site = next(n for n in after.nodes if n.name == "site")
    assert sum(site.requests_by_pid.values()) == site.requests_total
    lines = (session.run_dir / "logs" / "site.access.log").read_text().splitlines()
    php_lines = [line for line in lines if '"/index.php"' in line]
    assert len(php_lines) >= 5
    # the shared format: pid status duration route request-id method "path" finish-time
    assert re.match(r'^\d+ 200 \d+us static [\w@-]+ GET "/index.php" [\d.]+$', php_lines[-1]), php_lines[-1]


PHP_PROFILE = """\
version: 1
name: php alone
nodes:
  web:
    kind: apache
    port: {port}
    php_workers: 1
    routes:
      - path: /
        static: site
        php: true
    readiness_probe:
      http_get: {{path: /index.php}}
"""


@pytest.fixture
def php_site(tmp_path: Path) -> Iterator[tuple[Supervisor, int, Path]]:
    """Apache with php: true on tmp/site; beside the site, a script that must never run."""
    site = tmp_path / "site"
    site.mkdir()
    (site / "index.php").write_text("<?php echo 'INDEX-' . getmypid();\n")
    (site / "read.php").write_text("<?php var_dump(@file_get_contents($_GET['f']));\n")
    (tmp_path / "outside.php").write_text("<?php echo 'RAN-OUTSIDE';\n")
    (site / "link.php").symlink_to(tmp_path / "outside.php")
    port = 8081 + free_offset()
    profile = load_profile_text(PHP_PROFILE.format(port=port), tmp_path / "p.yaml")
    sup = Supervisor(render_stack(profile, tmp_path / "run"))
    try:
        sup.start()
        yield sup, port, tmp_path
    finally:
        sup.close()


TRAVERSALS = ["/../outside.php", "/%2e%2e/outside.php", "/%2E%2E%2Foutside.php", "/..%2foutside.php",
              "/index.php/../../outside.php", "/link.php", "/site/../outside.php", "//../outside.php",
              "/%2e%2e/%2e%2e/%2e%2e/%2e%2e/%2e%2e/%2e%2e/etc/passwd", "/outside.php", "/index.php%00.txt"]


@pytest.mark.parametrize("target", TRAVERSALS)
def test_no_php_outside_the_directory_runs_or_is_served(php_site, target: str) -> None:
    _sup, port, _ = php_site
    status, _, body, _ = request(port, "GET", target)
    assert status in (400, 403, 404), (target, status, body[:200])
    assert b"RAN-OUTSIDE" not in body and b"<?php" not in body and b"root:" not in body


def test_scripts_cannot_read_outside_their_directory(php_site) -> None:
    _sup, port, tmp = php_site
    status, _, body, _ = request(port, "GET", "/read.php?f=/etc/passwd")
    assert status == 200 and body.strip() == b"bool(false)"  # open_basedir
    status, _, body, _ = request(port, "GET", f"/read.php?f={tmp}/outside.php")
    assert status == 200 and body.strip() == b"bool(false)"
    status, _, body, _ = request(port, "GET", "/read.php?f=index.php")
    assert status == 200 and b"INDEX-" in body  # its own directory is readable


def test_a_killed_php_fpm_restarts_the_node_and_stop_leaves_no_php_fpm(php_site) -> None:
    sup, port, tmp = php_site
    run_dir = tmp / "run"
    recorder = Recorder(sup)
    master = next(p for p in map(psutil.Process, fpm_pids(run_dir)) if p.ppid() not in fpm_pids(run_dir))
    master.send_signal(signal.SIGKILL)
    recorder.wait_for(lambda e: isinstance(e, StackMessage) and "its php-fpm killed by SIGKILL" in e.text)
    ready = recorder.wait_for(lambda e: isinstance(e, NodeStateChanged) and e.node == "web"
                              and e.state == NodeState.READY and e.previous == NodeState.STARTING)
    assert ready is not None
    status, _, body, _ = request(port, "GET", "/index.php")
    assert status == 200 and body.startswith(b"INDEX-")
    pids = fpm_pids(run_dir)
    assert master.pid not in pids and len(pids) == 2  # a new master and its one worker
    sup.stop()
    assert wait_gone(pids) == [] and fpm_pids(run_dir) == set()


def test_doctor_finds_this_machines_php_fpm() -> None:
    report = discovery.run_doctor({"php"})
    php = report.get("php")
    assert php.usable, php
    banner = psutil.Popen([php.path or "", "-v"], stdout=-1).communicate()[0].decode()
    assert php.version and f"PHP {php.version}" in banner


def test_a_php_fpm_that_cannot_start_fails_the_start_naming_the_node_and_leaves_nothing(tmp_path: Path) -> None:
    site = tmp_path / "site"
    site.mkdir()
    (site / "index.php").write_text("<?php echo 1;\n")
    port = 8081 + free_offset()
    profile = load_profile_text(PHP_PROFILE.format(port=port), tmp_path / "p.yaml")
    sup = Supervisor(render_stack(profile, tmp_path / "run"))
    (tmp_path / "run" / "run" / "web.fpm").mkdir(parents=True)  # fpm cannot bind its socket there
    try:
        with pytest.raises(StartError) as info:
            sup.start()
        assert info.value.node == "web" and "its php-fpm exited" in str(info.value), str(info.value)
        assert any("web.fpm" in line for line in info.value.last_lines), info.value.last_lines  # fpm's own words
    finally:
        sup.close()
    assert fpm_pids(tmp_path / "run") == set()


def test_up_and_kill_9_of_stackpanel_leave_no_php_fpm(tmp_path: Path) -> None:
    """The built-in profile through `stackpanel up`: Ctrl-C stops php-fpm with the rest, and a
    killed stackpanel takes it down too (the guardian kills every group it started)."""
    run_dir = tmp_path / "run"
    offset = free_offset()
    args = ["nginx-php-uvicorn", "--port-offset", str(offset), "--run-dir", str(run_dir)]
    for how in (signal.SIGINT, signal.SIGKILL):
        up = _up(args)
        try:
            read_until(up, "is up: open")
            pids = fpm_pids(run_dir)
            assert len(pids) == 3  # master + php_workers: 2
            status, _, body, _ = request(8080 + offset, "GET", "/index.php")
            assert status == 200 and b"fpm-fcgi" in body
            up.send_signal(how)
            up.wait(timeout=30)
            assert wait_gone(pids, timeout=10) == [], f"php-fpm outlived {how.name} of stackpanel up"
        finally:
            if up.poll() is None:
                up.kill()


def test_a_changed_php_pool_is_applied_by_reload(php_site) -> None:
    sup, port, tmp = php_site
    run_dir = tmp / "run"
    assert len(fpm_pids(run_dir)) == 2  # master + php_workers: 1
    text = PHP_PROFILE.format(port=port).replace("php_workers: 1", "php_workers: 3")
    changed = sup.reload(render_stack(load_profile_text(text, tmp / "p.yaml"), run_dir))
    assert changed == ["web"]
    assert len(fpm_pids(run_dir)) == 4
    assert "pm.max_children = 3" in (run_dir / "conf" / "php-fpm-web.conf").read_text()
    status, _, body, _ = request(port, "GET", "/index.php")
    assert status == 200 and body.startswith(b"INDEX-")

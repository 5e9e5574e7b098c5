"""The exporters' own logic, without servers or tools: what each export says about the profile.

The tools that read the exports (docker-compose, nginx -t, apache2 -t, systemd-analyze) are run in
tests/integration/test_export_tools.py; here: addresses, paths, ordering, policies, quoting.
"""
from __future__ import annotations

import re
import signal
from pathlib import Path

import pytest
import yaml

from stackpanel.core.export import ExportError, export_compose, export_systemd
from stackpanel.core.export.common import RENDER_ROOT, relocate, slug
from stackpanel.core.export.compose import CONTAINER_ROOT, healthcheck, restart_policy
from stackpanel.core.export.process_compose import process_compose_document
from stackpanel.core.profiles.library import builtin_dir, list_profiles
from stackpanel.core.profiles.loader import load_profile, load_profile_text
from tests.unit.test_render import APACHE, NGINX

# Fixed server layouts, shared with the renderer's tests: exports must not depend on this machine.
BUILTINS = [e for e in list_profiles() if e.builtin and e.name != "nginx-php-uvicorn"]  # exports refuse php (test_php)


def _profile(name: str):  # -> Profile
    return load_profile(builtin_dir() / f"{name}.yaml")


def _compose(name: str) -> tuple[dict, dict[str, str]]:
    plan = export_compose(_profile(name), name)
    return yaml.safe_load(plan.files["compose.yaml"]), plan.files


def test_relocate_takes_the_longest_whole_segment_prefix() -> None:
    mapping = {"": "/state", "/run": "/run/p", "/run/tls-web": "/etc/p/tls/web", "/conf": "/etc/p"}
    text = (f'pid "{RENDER_ROOT}/run/web.pid"; ssl "{RENDER_ROOT}/run/tls-web/cert.pem"; '
            f'x {RENDER_ROOT}/runner; shmcb:{RENDER_ROOT}/run/ssl_scache(512000) -p {RENDER_ROOT}/')
    assert relocate(text, mapping) == ('pid "/run/p/web.pid"; ssl "/etc/p/tls/web/cert.pem"; '
                                       'x /state/runner; shmcb:/run/p/ssl_scache(512000) -p /state/')


@pytest.mark.parametrize("entry", BUILTINS, ids=[e.name for e in BUILTINS])
def test_compose_export_names_services_and_leaves_no_host_path(entry) -> None:
    profile = load_profile(entry.path)
    plan = export_compose(profile, entry.name)
    doc = yaml.safe_load(plan.files["compose.yaml"])
    assert list(doc["services"]) == profile.start_order()
    for rel, text in plan.files.items():
        assert str(RENDER_ROOT) not in text, rel
        if rel == "compose.yaml":
            assert str(builtin_dir().parent) not in text
        if rel.startswith("conf/"):
            assert "127.0.0.1:" not in text, f"{rel} still names a loopback address"
            # the static site, the app and the run dir were host paths: none is left
            assert str(builtin_dir().parent) not in text, rel
            for path in re.findall(r'"(/srv[^"]*)"', text):
                assert path == CONTAINER_ROOT or path.startswith(CONTAINER_ROOT + "/"), (rel, path)
    for name, service in doc["services"].items():
        node = profile.nodes[name]
        assert service["stop_grace_period"] == f"{node.shutdown.timeout_seconds + 2:g}s"
        deps = profile.dependencies(name)
        assert service.get("depends_on", {}) == {d: {"condition": "service_healthy"} for d in deps}
        assert ("ports" in service) == (name == profile.entry)


def test_compose_proxies_address_backends_by_service_name() -> None:
    doc, files = _compose("nginx-split")
    nginx = files["conf/nginx-edge.conf"]
    assert "server app:8000 max_fails=0;" in nginx and "server site:8081 max_fails=0;" in nginx
    assert "listen 0.0.0.0:8080" in nginx
    assert "keepalive 128;" in nginx and "keepalive_timeout 4s;" in nginx  # the same pool as the local run
    apache = _compose("nginx-apache-uvicorn")[1]["conf/httpd-web.conf"]
    assert '"http://app:8000/' in apache and "Listen 0.0.0.0:8081" in apache
    assert "/usr/local/apache2/modules/mod_proxy_http.so" in apache
    assert doc["services"]["edge"]["ports"] == ["127.0.0.1:8080:8080"]
    assert doc["services"]["app"]["expose"] == ["8000"]
    assert f"./static/site-0:{CONTAINER_ROOT}/static/site-0:ro" in doc["services"]["site"]["volumes"]


def test_compose_app_server_is_built_with_its_app_and_pinned_servers() -> None:
    doc, files = _compose("nginx-gunicorn-uvicorn")
    app = doc["services"]["app"]
    assert app["build"] == {"context": "./build/app"} and app["command"][0] == "python"
    assert app["command"][app["command"].index("--forwarded-allow-ips") + 1] == "*"
    reqs = files["build/app/requirements.txt"].splitlines()
    assert any(r.startswith("gunicorn==") for r in reqs) and any(r.startswith("uvicorn-worker==") for r in reqs)
    assert any(r.startswith("fastapi==") for r in reqs)
    assert "COPY src/ /app/" in files["build/app/Dockerfile"] and "USER app" in files["build/app/Dockerfile"]


def test_compose_tls_entry_publishes_both_ports_and_mounts_its_certificate() -> None:
    doc, files = _compose("nginx-tls-uvicorn")
    web = doc["services"]["web"]
    assert web["ports"] == ["127.0.0.1:8080:8080", "127.0.0.1:8443:8443"]
    assert f"./tls/web:{CONTAINER_ROOT}/tls/web:ro" in web["volumes"]
    assert f'ssl_certificate "{CONTAINER_ROOT}/tls/web/cert.pem";' in files["conf/nginx-web.conf"]
    assert "tls/web/README.md" in files


def test_healthcheck_and_restart_follow_the_profile() -> None:
    text = """version: 1
name: t
nodes:
  app:
    kind: uvicorn
    port: 8000
    app: {module: stackpanel.apps.fastapi_demo:app}
    readiness_probe: {http_get: {path: /healthz}, initial_delay_seconds: 2, period_seconds: 0.5, timeout_seconds: 20}
    availability: {restart: always}
"""
    node = load_profile_text(text, builtin_dir() / "t.yaml").nodes["app"]
    check = healthcheck(node)
    assert "GET /healthz HTTP/1.0" in check["test"][-1] and "$$code" in check["test"][-1]
    assert check["start_period"] == "22s" and check["interval"] == "1s"
    assert restart_policy(node) == "unless-stopped"
    assert restart_policy(node.model_copy(update={"availability": node.availability.model_copy(
        update={"restart": "on-failure", "max_restarts": 0})})) == "no"


def test_systemd_units_order_and_stop_like_the_supervisor() -> None:
    profile = _profile("nginx-split")
    plan = export_systemd(profile, "nginx-split", nginx=NGINX, apache=APACHE, probe_python="/usr/bin/python3")
    edge = plan.files["units/stackpanel-nginx-split-edge.service"]
    assert "Requires=stackpanel-nginx-split-app.service stackpanel-nginx-split-site.service" in edge
    assert "After=network.target stackpanel-nginx-split-app.service stackpanel-nginx-split-site.service" in edge
    assert "KillSignal=SIGQUIT" in edge and "TimeoutStopSec=12s" in edge and "Restart=on-failure" in edge
    assert '"-c" "/etc/stackpanel/nginx-split/nginx-edge.conf"' in edge
    assert "ExecReload=/bin/kill -HUP $MAINPID" in edge and "ProtectSystem=strict" in edge
    site = plan.files["units/stackpanel-nginx-split-site.service"]
    assert "KillSignal=SIGWINCH" in site and "Requires=" not in site
    app = plan.files["units/stackpanel-nginx-split-app.service"]
    assert "User=stackpanel" in app and "CapabilityBoundingSet=\n" in app
    assert '"http://127.0.0.1:8000/healthz"' in app
    target = plan.files["units/stackpanel-nginx-split.target"]
    assert all(f"stackpanel-nginx-split-{n}.service" in target for n in profile.nodes)
    conf = plan.files["etc/nginx-edge.conf"]
    assert 'pid "/run/stackpanel/nginx-split/edge/edge.pid";' in conf
    assert '"/var/log/stackpanel/nginx-split/edge/edge.access.log"' in conf
    assert '"/var/cache/stackpanel/nginx-split/edge/proxy"' in conf
    httpd = plan.files["etc/httpd-site.conf"]
    assert 'DocumentRoot "/usr/share/stackpanel/nginx-split/static/site-0"' in httpd
    assert "share/static/site-0" in plan.trees


def test_systemd_quotes_percent_and_dollar() -> None:
    plan = export_systemd(_profile("nginx-gunicorn-flask"), "flask", nginx=NGINX, apache=APACHE)
    app = plan.files["units/stackpanel-flask-app.service"]
    start = next(line for line in app.splitlines() if line.startswith("ExecStart="))
    assert "%%(s)s" in start and '\\"%%(U)s\\"' in start


def test_process_compose_uses_its_own_vocabulary(tmp_path: Path) -> None:
    profile = _profile("nginx-uvicorn")
    doc = process_compose_document(profile, tmp_path / "run")
    web, app = doc["processes"]["web"], doc["processes"]["app"]
    assert web["depends_on"] == {"app": {"condition": "process_healthy"}}
    assert app["readiness_probe"]["http_get"] == {"host": "127.0.0.1", "scheme": "http", "path": "/healthz",
                                                  "port": 8000}
    assert web["shutdown"] == {"signal": int(signal.SIGQUIT), "timeout_seconds": 12}
    assert app["availability"]["restart"] == "on_failure"
    assert (tmp_path / "run" / "conf" / "nginx-web.conf").is_file()


def test_names_become_slugs() -> None:
    assert slug("Nginx → Uvicorn") == "nginx-uvicorn"
    with pytest.raises(ExportError):
        slug("→")


def test_an_app_in_its_working_dir_is_copied_whole_with_its_requirements(tmp_path: Path) -> None:
    src = tmp_path / "src"
    (src / "shop").mkdir(parents=True)
    (src / "shop" / "__init__.py").write_text("", encoding="utf-8")
    (src / "shop" / "main.py").write_text("from fastapi import FastAPI\napp = FastAPI()\n", encoding="utf-8")
    (src / "requirements.txt").write_text("# pinned by the team\nfastapi>=0.100\n", encoding="utf-8")
    text = f"""version: 1
name: Shop
nodes:
  web:
    kind: nginx
    port: 8080
    routes: [{{path: /, to: api}}]
  api:
    kind: uvicorn
    port: 8000
    app: {{module: shop.main:app, working_dir: {src}}}
"""
    profile = load_profile_text(text, tmp_path / "shop.yaml", check_files=False)
    plan = export_compose(profile, "shop")
    assert plan.trees["build/api/src"] == src
    reqs = plan.files["build/api/requirements.txt"].splitlines()
    assert "fastapi>=0.100" in reqs and any(r.startswith("uvicorn==") for r in reqs)
    out = tmp_path / "out"
    plan.write(out)
    assert (out / "build/api/src/shop/main.py").is_file() and (out / "compose.yaml").is_file()


def test_a_node_name_with_underscore_becomes_a_valid_service_host_name(tmp_path: Path) -> None:
    text = """version: 1
name: Underscore
nodes:
  front_door:
    kind: apache
    port: 8080
    routes: [{path: /, to: my_api}]
  my_api:
    kind: uvicorn
    port: 8000
    app: {module: stackpanel.apps.fastapi_demo:app}
"""
    plan = export_compose(load_profile_text(text, builtin_dir() / "u.yaml"), "u")
    doc = yaml.safe_load(plan.files["compose.yaml"])
    assert set(doc["services"]) == {"front-door", "my-api"}
    assert doc["services"]["front-door"]["depends_on"] == {"my-api": {"condition": "service_healthy"}}
    assert '"http://my-api:8000/' in plan.files["conf/httpd-front_door.conf"]


@pytest.mark.parametrize("entry", BUILTINS, ids=[e.name for e in BUILTINS])
def test_systemd_every_writable_path_is_a_directory_the_unit_owns(entry) -> None:
    """ProtectSystem=strict leaves only the unit's own Logs/Runtime/State/Cache directories
    writable: every log, pid, socket and temp path the unit or its config names must be inside
    them, and every config it reads inside /etc/stackpanel/<name>."""
    plan = export_systemd(load_profile(entry.path), entry.name, nginx=NGINX, apache=APACHE)
    for rel, unit in plan.files.items():
        if not rel.endswith(".service"):
            continue
        node = rel.removeprefix(f"units/stackpanel-{slug(entry.name)}-").removesuffix(".service")
        owned = [f"/{base}/{value}" for key, base in (("LogsDirectory", "var/log"), ("RuntimeDirectory", "run"),
                                                      ("StateDirectory", "var/lib"), ("CacheDirectory", "var/cache"))
                 for line in unit.splitlines() if line.startswith(key + "=") for value in [line.split("=", 1)[1]]]
        assert len(owned) == 4
        texts = [unit] + [t for r, t in plan.files.items() if r.startswith("etc/") and f"-{node}." in r]
        for text in texts:
            for path in re.findall(r"(?<![\w/])(/(?:var/log|run|var/cache|var/lib)/stackpanel/[^\s\"'(),;]*)", text):
                assert any(path == d or path.startswith(d + "/") for d in owned), (rel, path, owned)
        for path in re.findall(r"(/etc/stackpanel/[^\s\"'(),;]*)", unit):
            etc = f"/etc/stackpanel/{slug(entry.name)}"
            assert path == etc or path.startswith(etc + "/"), (rel, path)


def test_cli_exports_compose_and_reports_a_bad_profile(tmp_path: Path, capsys) -> None:
    import argparse

    from stackpanel.export_command import add_export_parser, cmd_export

    parser = argparse.ArgumentParser()
    add_export_parser(parser.add_subparsers(dest="command"))
    out = tmp_path / "deploy"
    assert cmd_export(parser.parse_args(["export", "compose", "nginx-split", str(out), "--publish", "0.0.0.0"])) == 0
    doc = yaml.safe_load((out / "compose.yaml").read_text(encoding="utf-8"))
    assert doc["services"]["edge"]["ports"] == ["0.0.0.0:8080:8080"]
    assert (out / "README.md").is_file() and (out / "static/site-0/index.html").is_file()
    assert cmd_export(parser.parse_args(["export", "compose", str(tmp_path / "missing.yaml"), str(out)])) == 1
    assert "no such profile" in capsys.readouterr().err


def test_a_tcp_socket_probe_exports_as_a_connect_not_a_get(tmp_path: Path) -> None:
    """process-compose has exec and http_get probes only; compose's healthcheck is a bash line: a node
    probed with a TCP connect (no HTTP) gets a connect in both, never a GET it would fail."""
    text = ("version: 1\nname: tcp\nnodes:\n  db:\n    kind: command\n    port: 8001\n"
            "    command: [python, -m, http.server, '8001', --bind, 127.0.0.1]\n"
            "    readiness_probe: {tcp_socket: {}}\n")
    profile = load_profile_text(text, tmp_path / "p.yaml")
    probe = process_compose_document(profile, tmp_path / "run")["processes"]["db"]["readiness_probe"]
    assert probe["exec"] == {"command": "exec 3<>/dev/tcp/127.0.0.1/8001"} and "http_get" not in probe
    assert healthcheck(profile.nodes["db"])["test"] == ["CMD", "bash", "-c", "exec 3<>/dev/tcp/127.0.0.1/8001"]
    # an HTTP probe keeps its GET
    app = _profile("nginx-uvicorn").nodes["app"]
    assert "GET /healthz HTTP/1.0" in healthcheck(app)["test"][-1]

"""What each profile must render, and that no profile value can change a config's structure."""
from __future__ import annotations

import dataclasses
import json
import re
import shlex
import signal
from pathlib import Path

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from stackpanel.core import logformat
from stackpanel.core.discovery import ApacheInfo, NginxInfo, PhpFpmInfo
from stackpanel.core.errors import ProfileError, RenderError
from stackpanel.core.profiles.library import builtin_dir
from stackpanel.core.profiles.loader import load_profile, load_profile_text
from stackpanel.core.render import render_stack
from tests import hostile

# Fixed server layouts: rendering is pure and must not depend on what this machine has installed.
NGINX = NginxInfo(path=Path("/usr/sbin/nginx"), version="1.22.1", conf_path=None, mime_types=None, modules_path=None)
APACHE = ApacheInfo(
    path=Path("/usr/sbin/apache2"), version="2.4.57", server_root=Path("/etc/apache2"),
    modules_dir=Path("/usr/lib/apache2/modules"),
    compiled_in=("core", "so", "watchdog", "http_core", "log_config", "logio", "version", "unixd"),
    available=frozenset({"mpm_event", "authz_core", "mime", "dir", "alias", "setenvif", "proxy", "proxy_http",
                         "headers", "unique_id", "env", "reqtimeout", "filter", "deflate", "ssl", "socache_shmcb",
                         "http2", "slotmem_shm", "proxy_balancer", "lbmethod_byrequests", "lbmethod_bybusyness",
                         "proxy_fcgi"}),
    mime_types=Path("/etc/mime.types"),
)
PHP = PhpFpmInfo(path=Path("/usr/sbin/php-fpm8.2"), version="8.2.36")


def render_builtin(name: str, tmp_path: Path, as_root: bool = False, offset: int = 0):
    profile = load_profile(builtin_dir() / f"{name}.yaml", port_offset=offset)
    return render_stack(profile, tmp_path / "run", as_root=as_root, nginx=NGINX, apache=APACHE)


def conf_text(node) -> str:
    return next(iter(node.files.values()))


def test_nginx_uvicorn_fast_proxy_path(tmp_path: Path) -> None:
    stack = render_builtin("nginx-uvicorn", tmp_path)
    assert list(stack.nodes) == ["app", "web"]  # backends first
    conf = conf_text(stack.nodes["web"])
    assert "daemon off;" in conf
    # upstream keepalive needs all three: pool, HTTP/1.1, and a cleared Connection header
    # the app behind nginx listens on a Unix socket in the run directory (listen: auto)
    sock = stack.paths.unix_socket("app")
    assert stack.nodes["app"].unix_socket == sock and ("--uds", str(sock)) == stack.nodes["app"].argv[4:6]
    assert re.search(r'upstream sp_app \{\s+server "unix:' + re.escape(str(sock)) + r'";\s+# .*\n\s+keepalive \d+;',
                     conf)
    assert "proxy_http_version 1.1;" in conf
    # ... cleared for plain requests by the upgrade map (WebSockets get "upgrade")
    assert "proxy_set_header Connection $sp_connection_upgrade;" in conf
    assert re.search(r'map \$http_upgrade \$sp_connection_upgrade \{\s+default upgrade;\s+"" "";', conf)
    # pooled idle timeout below uvicorn's keep-alive (5 s) → no 502 from a connection being closed
    assert "keepalive_timeout 4s;" in conf
    for header in ("X-Forwarded-For", "X-Forwarded-Proto", "X-Request-ID"):
        assert f"proxy_set_header {header} " in conf
    assert f"log_format stackpanel '{logformat.NGINX_LOG_FORMAT}';" in conf
    run = stack.paths.root
    assert f'pid "{run}/run/web.pid";' in conf
    assert f'access_log "{run}/logs/web.access.log" stackpanel' in conf
    assert f'proxy_temp_path "{run}/tmp/web/proxy";' in conf
    assert f'root "{builtin_dir().parent / "apps" / "site"}";' in conf
    assert "user " not in conf  # not root: no user switching


def test_nginx_as_root_switches_workers_to_nobody(tmp_path: Path) -> None:
    stack = render_builtin("nginx-uvicorn", tmp_path, as_root=True)
    assert re.search(r"^user nobody \w+;$", conf_text(stack.nodes["web"]), re.M)
    assert stack.nodes["web"].writable_dirs  # temp dirs get chowned on write


def test_nginx_command_lines(tmp_path: Path) -> None:
    web = render_builtin("nginx-uvicorn", tmp_path).nodes["web"]
    conf = next(iter(web.files))
    assert web.argv[:5] == ("/usr/sbin/nginx", "-p", f"{tmp_path / 'run'}/", "-c", str(conf))
    assert web.config_test_argv is not None and "-t" in web.config_test_argv
    assert web.stop_signal == signal.SIGQUIT and web.reload_signal == signal.SIGHUP


def test_apache_uvicorn(tmp_path: Path) -> None:
    web = render_builtin("apache-uvicorn", tmp_path).nodes["web"]
    conf = conf_text(web)
    assert "LoadModule proxy_http_module /usr/lib/apache2/modules/mod_proxy_http.so" in conf
    assert "LoadModule log_config_module" not in conf  # compiled in: loading it again is an error
    # behind Apache an app stays on TCP (a socket measured no faster there)
    assert 'ProxyPass "/" "http://127.0.0.1:8000/" ttl=4' in conf
    assert "Listen 127.0.0.1:8080" in conf
    assert f'LogFormat "{logformat.APACHE_LOG_FORMAT.replace(chr(34), chr(92) + chr(34))}" stackpanel' in conf
    assert "User " not in conf
    assert web.argv[-1] == "-DFOREGROUND" and web.stop_signal == signal.SIGWINCH


def test_apache_as_root_sets_user_and_group(tmp_path: Path) -> None:
    conf = conf_text(render_builtin("apache-uvicorn", tmp_path, as_root=True).nodes["web"])
    assert re.search(r"^User nobody$", conf, re.M) and re.search(r"^Group \w+$", conf, re.M)


def test_nginx_split_routes_and_route_tags(tmp_path: Path) -> None:
    stack = render_builtin("nginx-split", tmp_path)
    edge = conf_text(stack.nodes["edge"])
    # /api is anchored: the exact path and everything below /api/, never /apiary
    assert 'location = "/api" {\n            set $sp_route app;\n            proxy_pass http://sp_app;' in edge
    assert 'location "/api/" {\n            set $sp_route app;\n            proxy_pass http://sp_app;' in edge
    assert "location \"/\" {\n            set $sp_route site;\n            proxy_pass http://sp_site;" in edge
    site = conf_text(stack.nodes["site"])
    assert "ProxyPass" not in site and "LoadModule proxy_module" not in site
    assert 'SetEnvIf Request_URI "^/" SP_ROUTE=static' in site
    assert f'DocumentRoot "{builtin_dir().parent / "apps" / "site"}"' in site


def test_nginx_apache_uvicorn_chain(tmp_path: Path) -> None:
    stack = render_builtin("nginx-apache-uvicorn", tmp_path)
    assert list(stack.nodes) == ["app", "web", "edge"]
    assert "server 127.0.0.1:8081;" in conf_text(stack.nodes["edge"])
    # apache's KeepAliveTimeout is 5 s, so nginx keeps its pooled connections 4 s at most
    assert "keepalive_timeout 4s;" in conf_text(stack.nodes["edge"])


def test_gunicorn_with_uvicorn_workers(tmp_path: Path) -> None:
    app = render_builtin("nginx-gunicorn-uvicorn", tmp_path).nodes["app"]
    argv = list(app.argv)
    # the app runs inside the access wrapper (durations and request ids in the access log)
    assert argv[1:4] == ["-m", "gunicorn", "stackpanel_access:app"]
    assert app.env["STACKPANEL_APP"] == "stackpanel.apps.fastapi_demo:app"
    assert argv[argv.index("--worker-class") + 1] == "uvicorn_worker.UvicornWorker"
    assert argv[argv.index("--workers") + 1] == "4"
    run = tmp_path / "run"
    assert argv[argv.index("--control-socket") + 1] == str(run / "run" / "gunicorn-app.ctl")
    assert argv[argv.index("--keep-alive") + 1] == "5"
    log_conf = json.loads(next(iter(app.files.values())))
    # the wrapper's lines go to the access log as they are; uvicorn's own access lines are off
    assert log_conf["loggers"]["stackpanel.access"]["handlers"] == ["wrapped_access"]
    assert log_conf["handlers"]["wrapped_access"]["filename"] == str(run / "logs" / "app.access.log")
    assert log_conf["loggers"]["uvicorn.access"]["handlers"] == []


def test_gunicorn_sync_flask(tmp_path: Path) -> None:
    app = render_builtin("nginx-gunicorn-flask", tmp_path).nodes["app"]
    argv = list(app.argv)
    assert argv[argv.index("--worker-class") + 1] == "sync"
    assert argv[argv.index("--access-logformat") + 1] == logformat.GUNICORN_ACCESS_FORMAT
    log_conf = json.loads(next(iter(app.files.values())))
    assert log_conf["formatters"]["access"]["format"] == logformat.GUNICORN_FORMATTER


def test_uvicorn_workers_and_reload(tmp_path: Path) -> None:
    argv = list(render_builtin("uvicorn-workers", tmp_path).nodes["app"].argv)
    assert argv[argv.index("--workers") + 1] == "4"
    assert argv[argv.index("--timeout-keep-alive") + 1] == "5"
    assert "--reload" not in argv
    dev = render_builtin("uvicorn-dev", tmp_path / "dev").nodes["app"]
    assert "--reload" in dev.argv and "--workers" not in dev.argv
    assert dev.argv[dev.argv.index("--reload-dir") + 1] == str(builtin_dir().parent / "apps")


def test_port_offset_reaches_every_rendered_address(tmp_path: Path) -> None:
    stack = render_builtin("nginx-apache-uvicorn", tmp_path, offset=100)
    assert "listen 127.0.0.1:8180;" in conf_text(stack.nodes["edge"])
    assert "server 127.0.0.1:8181;" in conf_text(stack.nodes["edge"])
    assert 'ProxyPass "/" "http://127.0.0.1:8100/"' in conf_text(stack.nodes["web"])
    assert "8100" in stack.nodes["app"].argv


def test_command_line_is_copy_pasteable(tmp_path: Path) -> None:
    app = render_builtin("nginx-gunicorn-flask", tmp_path).nodes["app"]
    cd, _, rest = app.command_line.partition(" && ")
    assert cd == f"cd {shlex.quote(str(app.cwd))}"
    assert shlex.split(rest)[-len(app.argv):] == list(app.argv)


def test_write_creates_the_run_directory(tmp_path: Path) -> None:
    stack = render_builtin("nginx-split", tmp_path)
    stack.write()
    for node in stack.nodes.values():
        for path in node.files:
            assert path.is_file() and path.is_relative_to(stack.paths.root)
    assert (stack.paths.tmp_dir / "edge" / "proxy").is_dir()
    assert stack.paths.logs_dir.is_dir() and stack.paths.state_dir.is_dir()


# ----------------------------------------------------------------- hostile values (property-based)

def _render(data: dict, directory: Path):
    text = yaml.safe_dump(data, allow_unicode=True)
    profile = load_profile_text(text, directory / "p.yaml", check_files=False)
    return render_stack(profile, directory / "run", as_root=True, nginx=NGINX, apache=APACHE)


_baselines: dict[Path, object] = {}


def _baseline(directory: Path):  # the same for every example of one test run
    if directory not in _baselines:
        _baselines[directory] = _render(hostile.BASE, directory)
    return _baselines[directory]


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(field=st.sampled_from(hostile.LEAVES), value=hostile.hostile_value)
def test_hostile_values_never_change_config_structure(tmp_path: Path, field: tuple, value: object) -> None:
    """Any value at any field of every node kind: refused with a ProfileError, or rendered with the
    same directives, the same argv shape and no server-control variable in the environment."""
    baseline = _baseline(tmp_path)
    if field[-1] == "path" and isinstance(value, str):
        value = "/x" + value + "y"  # a sub-path (not "/", no trailing slash): only injection could change it
    try:
        stack = _render(hostile.put(hostile.BASE, field, value), tmp_path)
    except (ProfileError, RenderError):
        return  # refused with a message: nothing rendered
    for node in stack.nodes.values():
        assert all(isinstance(a, str) and "\x00" not in a for a in node.argv)
        env = node.environment({"GUNICORN_CMD_ARGS": "--daemon", "UVICORN_PORT": "1", "NGINX": "3;"})
        assert not {"GUNICORN_CMD_ARGS", "UVICORN_PORT", "NGINX"} & set(env), field
    if not hostile.only_injection_could_change_structure(field, value):
        return
    for name, skeleton in (("edge", hostile.skeleton_nginx), ("mid", hostile.skeleton_apache)):
        before, after = conf_text(baseline.nodes[name]), conf_text(stack.nodes[name])
        assert skeleton(after) == skeleton(before), f"{field}={value!r} changed {name}'s structure"
    for name in ("app", "fast"):  # argv items stay single arguments; env stays out of argv entirely
        assert len(stack.nodes[name].argv) == len(baseline.nodes[name].argv), f"{field}={value!r}"


# ----------------------------------------------------------------- missing servers


def test_missing_nginx_names_the_install_command(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from stackpanel.core import discovery
    from stackpanel.core.errors import RenderError

    monkeypatch.setattr(discovery, "find_nginx", lambda *a, **k: None)
    profile = load_profile(builtin_dir() / "nginx-uvicorn.yaml")
    with pytest.raises(RenderError) as info:
        render_stack(profile, tmp_path, apache=APACHE)
    assert "needs nginx, which is not installed" in str(info.value)
    assert "install -y nginx" in str(info.value)


def test_missing_app_server_package_names_the_pip_command(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from stackpanel.core import discovery
    from stackpanel.core.errors import RenderError

    real = discovery.python_env(None)
    without_worker = dataclasses.replace(
        real, packages=tuple((k, None if k == "uvicorn_worker" else v) for k, v in real.packages))
    monkeypatch.setattr(discovery, "python_env", lambda *a, **k: without_worker)
    profile = load_profile(builtin_dir() / "nginx-gunicorn-uvicorn.yaml")
    with pytest.raises(RenderError) as info:
        render_stack(profile, tmp_path, nginx=NGINX, apache=APACHE)
    assert "needs uvicorn-worker" in str(info.value) and "-m pip install uvicorn-worker" in str(info.value)


def test_app_server_keys_reach_the_command_line(tmp_path: Path) -> None:
    text = """\
version: 1
name: keys
nodes:
  fast: {kind: uvicorn, port: 18001, factory: true, limit_concurrency: 50, http: h11, loop: asyncio,
         root_path: /sub, args: [--backlog, "64"], app: {module: "stackpanel.apps.fastapi_demo:app"}}
  sync: {kind: gunicorn, port: 18002, preload: true, max_requests: 1000, max_requests_jitter: 50,
         args: [--backlog=64], app: {module: "stackpanel.apps.flask_demo:app", interface: wsgi}}
  edge: {kind: nginx, port: 18080, routes: [{path: /a, to: fast}, {path: /b, to: sync}]}
"""
    stack = render_stack(load_profile_text(text, tmp_path / "p.yaml"), tmp_path / "run", nginx=NGINX, apache=APACHE)
    fast = " ".join(stack.nodes["fast"].argv)
    assert "--root-path /sub --limit-concurrency 50 --http h11 --loop asyncio --backlog 64" in fast
    assert stack.nodes["fast"].env["STACKPANEL_APP_FACTORY"] == "1"  # the access wrapper calls the factory
    sync = " ".join(stack.nodes["sync"].argv)
    assert "--preload --max-requests 1000 --max-requests-jitter 50 --backlog=64" in sync
    assert f"--config {stack.paths.conf_dir / 'gunicorn-sync.conf.py'}" in sync  # a stray gunicorn.conf.py never runs

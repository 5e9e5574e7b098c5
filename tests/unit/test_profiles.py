"""Schema, loader and validators: every rule has a test that pins its message and its line."""
from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

from stackpanel.core.errors import ProfileError
from stackpanel.core.profiles.library import builtin_dir, list_profiles, resolve_profile
from stackpanel.core.profiles.loader import load_profile, load_profile_text
from stackpanel.core.profiles.schema import GunicornNode, UvicornNode

BUILTIN_NAMES = {
    "apache-uvicorn", "nginx-apache-uvicorn", "nginx-split", "nginx-uvicorn",
    "nginx-gunicorn-uvicorn", "nginx-gunicorn-flask", "uvicorn-workers", "uvicorn-dev", "nginx-tls-uvicorn",
    "nginx-balanced", "nginx-php-uvicorn",
}

GOOD = """\
version: 1
name: test
nodes:
  web:
    kind: nginx
    port: 18080
    routes:
      - path: /api
        to: app
      - path: /
        static: site
  app:
    kind: uvicorn
    port: 18000
    workers: 2
    app:
      module: stackpanel.apps.fastapi_demo:app
"""


@pytest.fixture
def profile_dir(tmp_path: Path) -> Path:
    (tmp_path / "site").mkdir()
    return tmp_path


def load(text: str, directory: Path, **kw) -> object:
    path = directory / "p.yaml"
    path.write_text(textwrap.dedent(text))
    return load_profile(path, **kw)


def problems(text: str, directory: Path, **kw) -> list[tuple[int, str, str]]:
    with pytest.raises(ProfileError) as info:
        load(text, directory, **kw)
    return [(p.line, p.message, p.hint) for p in info.value.problems]


def test_builtin_profiles_all_load_and_have_the_expected_names() -> None:
    names = {e.name for e in list_profiles() if e.builtin}
    assert names == BUILTIN_NAMES
    for entry in list_profiles():
        profile = load_profile(entry.path)
        assert profile.version == 1
        assert profile.entry in profile.nodes


def test_builtin_topologies_have_the_documented_shape() -> None:
    def load_builtin(name: str):
        return load_profile(builtin_dir() / f"{name}.yaml")

    split = load_builtin("nginx-split")
    assert [(e.source, e.target, e.path) for e in split.edges()] == [
        ("edge", "app", "/api"), ("edge", "site", "/"), ("site", "static", "/")]
    assert split.start_order() == ["app", "site", "edge"]

    gu = load_builtin("nginx-gunicorn-uvicorn").nodes["app"]
    assert isinstance(gu, GunicornNode) and gu.workers == 4 and gu.effective_worker_class == "uvicorn"
    gf = load_builtin("nginx-gunicorn-flask").nodes["app"]
    assert isinstance(gf, GunicornNode) and gf.effective_worker_class == "sync" and gf.app.interface == "wsgi"
    dev = load_builtin("uvicorn-dev").nodes["app"]
    assert isinstance(dev, UvicornNode) and dev.reload and dev.availability.restart == "no"
    assert load_builtin("uvicorn-workers").nodes["app"].workers == 4
    assert load_builtin("nginx-apache-uvicorn").start_order() == ["app", "web", "edge"]


def test_good_profile_resolves_paths_and_defaults(profile_dir: Path) -> None:
    p = load(GOOD, profile_dir)
    assert p.entry == "web"
    assert p.entry_url == "http://127.0.0.1:18080/"
    route = p.nodes["web"].routes[1]
    assert route.static == str(profile_dir / "site")
    app = p.nodes["app"].app
    assert app.working_dir == str(profile_dir)  # defaults to the profile's directory
    assert p.nodes["app"].availability.restart == "on-failure"


def test_port_offset_shifts_every_port(profile_dir: Path) -> None:
    p = load(GOOD, profile_dir, port_offset=7)
    assert (p.nodes["web"].port, p.nodes["app"].port) == (18087, 18007)


def test_port_offset_past_65535_is_an_error_at_the_port(profile_dir: Path) -> None:
    found = problems(GOOD, profile_dir, port_offset=60000)
    assert (6, "port 78080 (port 18080 + offset 60000) is outside 1..65535", "use a smaller --port-offset") in found


def test_unknown_key_names_line_and_suggests(profile_dir: Path) -> None:
    text = GOOD.replace("    workers: 2\n", "    wokers: 2\n")
    [(line, message, hint)] = problems(text, profile_dir)
    assert line == 15
    assert message == "unknown key 'wokers' in nodes.app"
    assert hint.startswith("did you mean 'workers'?")
    assert "reload" in hint  # lists what a uvicorn node accepts


def test_key_that_belongs_to_another_kind_is_unknown(profile_dir: Path) -> None:
    text = GOOD.replace("    port: 18080\n", "    port: 18080\n    reload: true\n")
    [(line, message, _)] = problems(text, profile_dir)
    assert (line, message) == (7, "unknown key 'reload' in nodes.web")


def test_wrong_type_names_the_value(profile_dir: Path) -> None:
    text = GOOD.replace("port: 18000", "port: lots")
    [(line, message, hint)] = problems(text, profile_dir)
    assert line == 14
    assert "nodes.app.port" in message and "'lots'" in message
    assert hint == "write a whole number"


def test_unknown_kind_suggests_the_right_one(profile_dir: Path) -> None:
    text = GOOD.replace("kind: nginx", "kind: ngnix")
    [(line, message, hint)] = problems(text, profile_dir)
    assert (line, message) == (5, "unknown node kind 'ngnix'")
    assert hint.startswith("did you mean 'nginx'?")


def test_missing_required_key(profile_dir: Path) -> None:
    text = GOOD.replace("    port: 18000\n", "")
    [(line, message, hint)] = problems(text, profile_dir)
    assert (line, message, hint) == (13, "missing required key 'port' in nodes.app", "add `port: ...`")


def test_duplicate_yaml_key(profile_dir: Path) -> None:
    text = GOOD.replace("    workers: 2\n", "    workers: 2\n    workers: 3\n")
    [(line, message, _)] = problems(text, profile_dir)
    assert (line, message) == (16, "duplicate key 'workers'")


def test_invalid_yaml_points_at_the_spot(profile_dir: Path) -> None:
    text = GOOD.replace("    workers: 2\n", "    workers: [2\n")
    [(line, message, _)] = problems(text, profile_dir)
    assert message.startswith("not valid YAML")
    assert line >= 15


def test_duplicate_ports(profile_dir: Path) -> None:
    text = GOOD.replace("port: 18000", "port: 18080")
    [(line, message, _)] = problems(text, profile_dir)
    assert (line, message) == (14, "port 18080 is already used by node 'web'")


def test_route_to_unknown_node(profile_dir: Path) -> None:
    text = GOOD.replace("to: app", "to: api")
    [(line, message, hint)] = problems(text, profile_dir)
    assert (line, message) == (9, "route '/api' goes to unknown node 'api'")
    assert hint == "use one of: web, app"


def test_cycle_is_reported(profile_dir: Path) -> None:
    text = """\
    version: 1
    name: loop
    nodes:
      front:
        kind: nginx
        port: 18080
        routes: [{path: /, to: a}]
      a:
        kind: nginx
        port: 18081
        routes: [{path: /, to: b}]
      b:
        kind: apache
        port: 18082
        routes: [{path: /, to: a}]
    """
    [(line, message, _)] = problems(text, profile_dir)
    assert message == "the request path loops: a → b → a"
    assert line == 8


def test_unreached_node(profile_dir: Path) -> None:
    text = GOOD + "  spare:\n    kind: uvicorn\n    port: 18001\n    app: {module: 'x:app'}\n"
    [(line, message, hint)] = problems(text, profile_dir)
    assert (line, message) == (18, "node 'spare' is not reached by any route (the entry node is 'web')")
    assert "add a route" in hint


def test_privileged_port_when_not_root(profile_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("os.geteuid", lambda: 1000)
    text = GOOD.replace("port: 18080", "port: 80")
    [(line, message, hint)] = problems(text, profile_dir)
    assert (line, message) == (6, "port 80 is privileged and needs root")
    assert "8080" in hint


def test_privileged_port_allowed_for_root(profile_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("os.geteuid", lambda: 0)
    assert load(GOOD.replace("port: 18080", "port: 80"), profile_dir).nodes["web"].port == 80


def test_missing_static_directory(profile_dir: Path) -> None:
    text = GOOD.replace("static: site", "static: nowhere")
    [(line, message, _)] = problems(text, profile_dir)
    assert line == 11
    assert message == f"static directory {profile_dir / 'nowhere'} does not exist"


def test_app_module_that_cannot_be_found(profile_dir: Path) -> None:
    text = GOOD.replace("stackpanel.apps.fastapi_demo:app", "no_such_pkg.main:app")
    [(line, message, hint)] = problems(text, profile_dir)
    assert line == 17
    assert message.startswith("module 'no_such_pkg.main' cannot be found")
    assert "working_dir" in hint


def test_app_module_in_working_dir_is_found(profile_dir: Path) -> None:
    (profile_dir / "myapp.py").write_text("app = None\n")
    text = GOOD.replace("stackpanel.apps.fastapi_demo:app", "myapp:app")
    assert load(text, profile_dir).nodes["app"].app.module == "myapp:app"


def test_module_must_name_an_attribute(profile_dir: Path) -> None:
    [(_, message, _)] = problems(GOOD.replace("fastapi_demo:app", "fastapi_demo"), profile_dir)
    assert "package.module:attribute" in message


def test_gunicorn_worker_class_must_match_interface(profile_dir: Path) -> None:
    text = GOOD.replace("kind: uvicorn", "kind: gunicorn\n    worker_class: sync")
    [(_, message, _)] = problems(text, profile_dir)
    assert "worker_class 'sync' cannot run a asgi app; use worker_class: uvicorn" in message


def test_reload_needs_a_single_worker(profile_dir: Path) -> None:
    text = GOOD.replace("    workers: 2\n", "    workers: 2\n    reload: true\n")
    [(_, message, _)] = problems(text, profile_dir)
    assert "--reload runs a single worker" in message


def test_restart_no_unquoted_means_no(profile_dir: Path) -> None:
    text = GOOD + "    availability:\n      restart: no\n"
    assert load(text, profile_dir).nodes["app"].availability.restart == "no"


def test_route_needs_exactly_one_target(profile_dir: Path) -> None:
    text = GOOD.replace("        to: app\n", "        to: app\n        static: site\n")
    [(line, message, _)] = problems(text, profile_dir)
    assert line == 8
    assert "exactly one of" in message


@pytest.mark.parametrize("path", ["/api;", "/a{b}", "/x y", "api", "/$host", "/a//b", "/../etc", "/a\nb"])
def test_hostile_route_paths_are_refused(profile_dir: Path, path: str) -> None:
    text = GOOD.replace("path: /api", f"path: {path!r}".replace("'", '"') if "\n" in path else f"path: '{path}'")
    found = problems(text, profile_dir)
    assert found and found[0][0] == 8


@pytest.mark.parametrize("bad", ['si"te', "si;te", "si{te", "si$te", "si\\te", "si%te"])
def test_hostile_static_paths_are_refused(profile_dir: Path, bad: str) -> None:
    text = GOOD.replace("static: site", f"static: '{bad}'")
    [(line, message, _)] = problems(text, profile_dir)
    assert line == 11
    assert "configs cannot carry safely" in message


def test_host_must_be_an_ip(profile_dir: Path) -> None:
    text = GOOD.replace("    port: 18080\n", "    host: 'evil.com; root /'\n    port: 18080\n")
    [(line, message, _)] = problems(text, profile_dir)
    assert line == 6 and "not an IP address" in message


def test_localhost_means_loopback(profile_dir: Path) -> None:
    p = load(GOOD.replace("    port: 18080\n", "    host: localhost\n    port: 18080\n"), profile_dir)
    assert p.nodes["web"].host == "127.0.0.1"


def test_ipv6_loopback_address_is_bracketed(profile_dir: Path) -> None:
    p = load(GOOD.replace("    port: 18080\n", "    host: '::1'\n    port: 18080\n"), profile_dir)
    assert p.nodes["web"].address == "[::1]:18080"


def test_reserved_and_malformed_node_names(profile_dir: Path) -> None:
    def renamed(name: str) -> str:
        return GOOD.replace("  app:\n    kind", f"  {name}:\n    kind").replace("to: app", f"to: {name}")

    [(_, message, _)] = problems(renamed("static"), profile_dir)
    assert "reserved" in message
    [(_, message, _)] = problems(renamed("App;x"), profile_dir)
    assert "must start with a lowercase letter" in message


def test_every_problem_is_reported_at_once(profile_dir: Path) -> None:
    text = GOOD.replace("workers: 2", "workers: 0").replace("kind: nginx", "kind: nginx\n    colour: red")
    assert len(problems(text, profile_dir)) == 2


def test_empty_file_and_non_mapping(profile_dir: Path) -> None:
    assert problems("", profile_dir)[0][1] == "the file is empty"
    assert problems("- a\n- b\n", profile_dir)[0][1] == "a profile must be a mapping"


def test_resolve_profile_by_name_and_unknown_name() -> None:
    assert resolve_profile("nginx-uvicorn") == builtin_dir() / "nginx-uvicorn.yaml"
    with pytest.raises(ProfileError) as info:
        resolve_profile("no-such-profile")
    assert "nginx-uvicorn" in info.value.problems[0].hint


def test_text_loader_reports_the_given_file_name() -> None:
    with pytest.raises(ProfileError) as info:
        load_profile_text("version: 2\nname: x\nnodes: {}\n", Path("/somewhere/x.yaml"))
    assert all(str(p.file) == "/somewhere/x.yaml" for p in info.value.problems)
    assert str(info.value).startswith("/somewhere/x.yaml:1:10:")


def test_tilde_of_an_unknown_user_is_a_clear_error(profile_dir: Path) -> None:
    [(line, message, _)] = problems(GOOD.replace("static: site", "static: '~nosuchuser0/site'"), profile_dir)
    assert line == 11 and "names no user of this machine" in message


# ----------------------------------------------------------------- hardening: hosts, binds, files, env


def test_ipv6_zone_id_is_refused_at_its_line(profile_dir: Path) -> None:
    text = GOOD.replace("    port: 18080", "    port: 18080\n    host: 'fe80::1%x;Listen 0.0.0.0:9'")
    [(line, message, _)] = problems(text, profile_dir)
    assert line == 7 and "zone id" in message and "127.0.0.1" in message


def test_ipv4_mapped_loopback_is_written_as_ipv4(profile_dir: Path) -> None:
    profile = load(GOOD.replace("    port: 18080", "    port: 18080\n    host: '::ffff:127.0.0.1'"), profile_dir)
    assert profile.nodes["web"].host == "127.0.0.1"


@pytest.mark.parametrize("host", ["0.0.0.0", "::", "192.168.1.5", "8.8.8.8"])
def test_non_loopback_bind_needs_expose(profile_dir: Path, host: str) -> None:
    [(line, message, hint)] = problems(GOOD.replace("    port: 18080", f"    port: 18080\n    host: '{host}'"),
                                       profile_dir)
    assert line == 7 and f"host {host} listens on" in message and "expose: true" in hint


def test_exposed_nodes_are_warned_about(profile_dir: Path) -> None:
    from stackpanel.core.profiles.exposure import exposure_warnings

    text = GOOD.replace("    port: 18080", "    port: 18080\n    host: 0.0.0.0\n    expose: true")
    text = text.replace("    port: 18000", "    port: 18000\n    host: 0.0.0.0\n    expose: true")
    warnings = exposure_warnings(load(text, profile_dir))
    assert len(warnings) == 2
    assert "node 'web' listens on every network interface (port 18080)" in warnings[0]
    assert "server_names" in warnings[0]
    assert "behind 'web'" in warnings[1] and "bypasses that proxy" in warnings[1]
    assert exposure_warnings(load(GOOD, profile_dir)) == []


@pytest.mark.parametrize("static", ["/", "/etc", "/etc/nginx", "/usr", "/proc/self", "'~'"])
def test_static_route_refuses_system_and_home_directories(profile_dir: Path, static: str) -> None:
    [(line, message, _)] = problems(GOOD.replace("static: site", f"static: {static}"), profile_dir,
                                    check_files=False)
    assert line == 11 and ("system directory" in message or "home directory" in message)


def test_follow_symlinks_belongs_to_static_routes(profile_dir: Path) -> None:
    [(line, message, _)] = problems(GOOD.replace("        to: app", "        to: app\n        follow_symlinks: true"),
                                    profile_dir)
    assert line == 8 and "static routes only" in message


@pytest.mark.parametrize("name", ["GUNICORN_CMD_ARGS", "UVICORN_PORT", "WEB_CONCURRENCY", "NGINX", "LISTEN_FDS"])
def test_environment_that_changes_a_command_line_is_refused(profile_dir: Path, name: str) -> None:
    text = GOOD + f"      env: {{{name}: '--daemon'}}\n"
    [(line, message, _)] = problems(text, profile_dir)
    assert line == 18 and name in message and "behind the profile's back" in message


def test_server_names_are_host_names(profile_dir: Path) -> None:
    text = GOOD.replace("    port: 18080", "    port: 18080\n    server_names: [MyApp.localhost, '*.dev.test']")
    profile = load(text, profile_dir)
    assert profile.accepted_host_names("web") == ["localhost", "*.localhost", "127.0.0.1", "[::1]",
                                                  "myapp.localhost", "*.dev.test"]
    [(line, message, _)] = problems(GOOD.replace("    port: 18080", "    port: 18080\n    server_names: ['a b;']"),
                                    profile_dir)
    assert line == 7 and "is not a host name" in message


# ----------------------------------------------------------------- app servers: interpreter, keys, args


def _fake_venv(root: Path) -> Path:
    """A venv's layout: bin/python is a symbolic link to the base interpreter."""
    import sys

    (root / "bin").mkdir(parents=True)
    (root / "bin" / "python").symlink_to(sys.executable)
    (root / "pyvenv.cfg").write_text("home = /usr/bin\n")
    return root


@pytest.mark.parametrize("form", ["interpreter", "directory"])
def test_a_venv_interpreter_is_kept_as_given(profile_dir: Path, form: str) -> None:
    venv = _fake_venv(profile_dir / "venv")
    given = venv / "bin" / "python" if form == "interpreter" else venv
    profile = load(GOOD + f"      python: {given}\n", profile_dir, check_files=False)
    assert profile.nodes["app"].app.interpreter == str(venv / "bin" / "python")  # not the link's target


def test_a_dot_venv_in_the_app_directory_is_used(profile_dir: Path) -> None:
    venv = _fake_venv(profile_dir / ".venv")
    profile = load(GOOD, profile_dir, check_files=False)
    assert profile.nodes["app"].app.interpreter == str(venv / "bin" / "python")


def test_app_server_keys_and_args(profile_dir: Path) -> None:
    text = GOOD.replace("    workers: 2\n", "    workers: 2\n    factory: true\n    limit_concurrency: 100\n"
                        "    http: h11\n    loop: asyncio\n    root_path: /sub/\n    args: [--backlog, '64']\n")
    node = load(text, profile_dir).nodes["app"]
    assert isinstance(node, UvicornNode) and node.root_path == "/sub" and node.args == ["--backlog", "64"]


@pytest.mark.parametrize("arg", ["--port=9", "--host", "--workers", "--uds=/tmp/x", "--reload"])
def test_args_may_not_set_what_stackpanel_owns_uvicorn(profile_dir: Path, arg: str) -> None:
    [(line, message, _)] = problems(GOOD.replace("    workers: 2\n", f"    workers: 2\n    args: ['{arg}']\n"),
                                    profile_dir)
    assert line == 16 and arg.split("=", maxsplit=1)[0] in message and "set by stackpanel" in message


@pytest.mark.parametrize("arg", ["-b", "--bind=0.0.0.0:1", "-D", "--daemon", "-c", "--config=x.py", "-w3", "--pid"])
def test_args_may_not_set_what_stackpanel_owns_gunicorn(profile_dir: Path, arg: str) -> None:
    text = GOOD.replace("kind: uvicorn", "kind: gunicorn")
    text = text.replace("    workers: 2\n", f"    workers: 2\n    args: ['{arg}']\n")
    [(_line, message, _)] = problems(text, profile_dir)
    assert "set by stackpanel" in message


def test_user_profiles_may_end_in_yml(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path))
    udir = tmp_path / "stackpanel" / "profiles"
    udir.mkdir(parents=True)
    (udir / "mine.yml").write_text(GOOD.replace("static: site", f"static: {tmp_path}"))
    assert [e.name for e in list_profiles() if not e.builtin] == ["mine"]
    assert resolve_profile("mine") == udir / "mine.yml"


def test_a_probe_path_may_carry_a_plain_query(profile_dir: Path) -> None:
    probe = '    readiness_probe: {http_get: {path: "/socket.io/?EIO=4&transport=polling"}}\n'
    profile = load(GOOD + probe, profile_dir)
    assert profile.nodes["app"].readiness_probe.http_get.path == "/socket.io/?EIO=4&transport=polling"
    for bad in ("/x?a=%41", "/x?a='b'", "/x?a b", "/../x?a=1"):
        [(line, message, _hint)] = problems(GOOD + probe.replace("/socket.io/?EIO=4&transport=polling", bad),
                                            profile_dir)
        assert line == 18 and "readiness_probe.http_get.path" in message


def test_a_proxy_is_probed_through_to_its_root_backend_unless_it_says_otherwise(profile_dir: Path) -> None:
    chain = load_profile(builtin_dir() / "nginx-apache-uvicorn.yaml")
    assert {n: node.readiness_probe.http_get.path for n, node in chain.nodes.items()} == {
        "edge": "/healthz", "web": "/healthz", "app": "/healthz"}
    static_root = load(GOOD, profile_dir)  # `/` is static: the proxy answers it itself
    assert static_root.nodes["web"].readiness_probe.http_get.path == "/"
    own = GOOD.replace("      - path: /api\n        to: app\n      - path: /\n        static: site\n",
                       "      - path: /\n        to: app\n") + "    readiness_probe: {http_get: {path: /ready}}\n"
    own = own.replace("    routes:\n", "    readiness_probe: {http_get: {path: /mine}}\n    routes:\n")
    profile = load(own, profile_dir)
    assert profile.nodes["web"].readiness_probe.http_get.path == "/mine"
    inherited = load(own.replace("    readiness_probe: {http_get: {path: /mine}}\n", ""), profile_dir)
    assert inherited.nodes["web"].readiness_probe.http_get.path == "/ready"
    assert inherited.with_port_offset(5).nodes["web"].readiness_probe.http_get.path == "/ready"

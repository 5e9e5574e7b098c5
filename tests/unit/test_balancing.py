"""Balanced routes and Unix-socket listeners: the schema, located errors, what the proxies render,
stale sockets, probes over a socket, and each backend's share of a route in the metrics."""
from __future__ import annotations

import http.server
import re
import socketserver
import textwrap
import threading
from pathlib import Path

import pytest

from stackpanel.core.errors import ProfileError, RenderError
from stackpanel.core.metrics.engine import MetricsEngine
from stackpanel.core.profiles.loader import load_profile
from stackpanel.core.render import render_stack
from stackpanel.core.render.common import literal_regex
from stackpanel.core.supervise.ports import clear_stale_socket
from stackpanel.core.supervise.supervisor import probe_http
from tests.unit.test_render import APACHE, NGINX, conf_text

BALANCED = """\
version: 1
name: balanced
nodes:
  web:
    kind: {proxy}
    port: 18080
    routes:
      - path: /api
        to: [app1, app2]
{route}
      - path: /
        static: site
  app1:
    kind: uvicorn
    port: 18001
    workers: 2
{listen}
    app:
      module: stackpanel.apps.fastapi_demo:app
  app2:
    kind: gunicorn
    port: 18002
    app:
      module: stackpanel.apps.fastapi_demo:app
"""


def write(tmp_path: Path, proxy: str = "nginx", route: str = "", listen: str = "") -> Path:
    (tmp_path / "site").mkdir(exist_ok=True)
    path = tmp_path / "p.yaml"
    text = BALANCED.format(proxy=proxy, route=textwrap.indent(route, " " * 8), listen=textwrap.indent(listen, " " * 4))
    path.write_text(text)
    return path


def problems(path: Path) -> list[tuple[int, int, str, str]]:
    with pytest.raises(ProfileError) as info:
        load_profile(path, check_files=False)
    return [(p.line, p.column, p.message, p.hint) for p in info.value.problems]


def render(path: Path, run_dir: Path):
    return render_stack(load_profile(path, check_files=False), run_dir, nginx=NGINX, apache=APACHE, as_root=False)


# ------------------------------------------------------------------------------------- the profile


def test_a_balanced_route_is_one_edge_per_backend_and_both_start_first(tmp_path: Path) -> None:
    profile = load_profile(write(tmp_path), check_files=False)
    route = profile.nodes["web"].routes[0]
    assert route.backends == ("app1", "app2") and route.is_balanced and route.balance_method == "round_robin"
    assert [(e.source, e.target) for e in profile.edges()] == [("web", "app1"), ("web", "app2"), ("web", "static")]
    assert profile.start_order() == ["app1", "app2", "web"]
    # a single name stays a single backend
    single = load_profile(write(tmp_path).parent / "p.yaml", check_files=False).nodes["web"].routes[1]
    assert single.backends == () and single.targets == ("static",)


def test_unknown_backend_is_located_at_its_item(tmp_path: Path) -> None:
    path = write(tmp_path)
    path.write_text(path.read_text().replace("to: [app1, app2]", "to: [app1, api2]"))
    [(line, col, message, hint)] = problems(path)
    assert (line, col, message) == (9, 20, "route '/api' goes to unknown node 'api2'")
    assert hint == "use one of: web, app1, app2"


def test_duplicate_backend_and_proxy_backend_are_refused(tmp_path: Path) -> None:
    path = write(tmp_path)
    path.write_text(path.read_text().replace("to: [app1, app2]", "to: [app1, app1]"))
    [(line, _, message, hint)] = problems(path)
    assert (line, message, hint) == (9, "route '/api' lists node 'app1' twice", "name each backend once")
    text = path.read_text().replace("to: [app1, app1]", "to: [app1, mid]") + textwrap.indent(textwrap.dedent("""\
        mid:
          kind: apache
          port: 18081
          routes:
            - path: /
              to: app2
    """), "  ")
    path.write_text(text)
    [(line, _, message, hint)] = problems(path)
    assert line == 9 and "balances over 'mid', a apache proxy" in message
    assert hint == "list gunicorn or uvicorn nodes here, or write `to: mid` alone"


@pytest.mark.parametrize(("proxy", "method", "fix"), [
    ("apache", "ip_hash", "write `balance: sticky`"), ("nginx", "sticky", "write `balance: ip_hash`"),
])
def test_a_method_the_proxy_cannot_render_says_what_to_write(tmp_path: Path, proxy: str, method: str,
                                                             fix: str) -> None:
    [(line, col, message, hint)] = problems(write(tmp_path, proxy, f"balance: {method}"))
    assert (line, col, message) == (10, 18, f"{proxy} cannot balance with {method!r}")
    assert fix in hint


def test_apache_has_no_failure_count(tmp_path: Path) -> None:
    [(line, _, message, hint)] = problems(write(tmp_path, "apache", "max_fails: 3"))
    assert line == 10 and "no failure count" in message and "fail_timeout_seconds" in hint


def test_balance_keys_need_several_backends_and_an_empty_list_is_refused(tmp_path: Path) -> None:
    path = write(tmp_path, route="balance: least_conn")
    path.write_text(path.read_text().replace("to: [app1, app2]", "to: [app1]"))
    [(_, _, message, _)] = problems(path)
    assert "apply to a route with several backends" in message
    path.write_text(path.read_text().replace("to: [app1]", "to: []").replace("balance: least_conn", ""))
    assert any("names no node" in m for _, _, m, _ in problems(path))
    path.write_text(path.read_text().replace("to: []", "to: {app1: 1}"))
    [(line, _, message, _)] = problems(path)
    assert line == 9 and "is not a node name: write `to: app`, or `to: [app1, app2]`" in message


def test_unix_listen_on_the_entry_or_an_exposed_node_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "p.yaml"
    path.write_text(textwrap.dedent("""\
        version: 1
        name: direct
        nodes:
          app:
            kind: uvicorn
            port: 18000
            listen: unix
            app: {module: stackpanel.apps.fastapi_demo:app}
    """))
    [(line, _, message, hint)] = problems(path)
    assert line == 7 and "is the entry" in message and hint.startswith("write `listen: tcp`")
    [(line, _, message, _)] = problems(write(tmp_path, listen="listen: unix\nhost: 0.0.0.0\nexpose: true"))
    assert "not reachable from the network" in message


def test_listen_auto_is_a_socket_behind_nginx_only(tmp_path: Path) -> None:
    profile = load_profile(write(tmp_path, listen="listen: tcp"), check_files=False)
    assert not profile.listens_on_unix("app1") and profile.listens_on_unix("app2") and not profile.listens_on_unix(
        "web")
    behind_apache = load_profile(write(tmp_path, "apache"), check_files=False)
    assert not behind_apache.listens_on_unix("app1") and not behind_apache.listens_on_unix("app2")
    exposed = load_profile(write(tmp_path, listen="host: 0.0.0.0\nexpose: true"), check_files=False)
    assert not exposed.listens_on_unix("app1") and exposed.listens_on_unix("app2")


# ------------------------------------------------------------------------------------- rendering


def test_nginx_upstream_balances_with_passive_health_and_logs_the_answering_backend(tmp_path: Path) -> None:
    stack = render(write(tmp_path, route="balance: least_conn\nmax_fails: 2\nfail_timeout_seconds: 3",
                         listen="listen: tcp"), tmp_path / "run")
    conf = conf_text(stack.nodes["web"])
    sock = stack.paths.unix_socket("app2")
    assert re.search(r"upstream sp-lb0 \{\n(\s+#.*\n)\s+least_conn;\n\s+server 127\.0\.0\.1:18001 max_fails=2 "
                     r'fail_timeout=3s;\n\s+server "unix:' + re.escape(str(sock)) + '" max_fails=2 fail_timeout=3s;'
                     r"\n(\s+#.*\n)*\s+keepalive 128;", conf), conf
    assert "proxy_pass http://sp-lb0;" in conf
    assert "proxy_next_upstream error timeout;" in conf and "proxy_next_upstream_tries 2;" in conf
    assert "non_idempotent" not in conf
    assert '"~(^|[ ])127[.]0[.]0[.]1:18001$" app1;' in conf
    assert f'"~(^|[ ])unix:{literal_regex(sock)}$" app2;' in conf
    assert "$sp_edge" in conf and "map $upstream_addr $sp_edge {\n        default $sp_route;" in conf
    assert stack.nodes["app2"].argv[stack.nodes["app2"].argv.index("--bind") + 1] == f"unix:{sock}"


def test_nginx_ip_hash_and_round_robin(tmp_path: Path) -> None:
    conf = conf_text(render(write(tmp_path, route="balance: ip_hash"), tmp_path / "a").nodes["web"])
    assert re.search(r"upstream sp-lb0 \{\n\s+#.*\n\s+ip_hash;\n", conf)
    conf = conf_text(render(write(tmp_path), tmp_path / "b").nodes["web"])
    assert not re.search(r"^\s+(ip_hash|least_conn);", conf, flags=re.M)
    assert "max_fails=1 fail_timeout=10s;" in conf  # nginx's own defaults, written out


def test_apache_balancer_members_sticky_cookie_and_no_manager(tmp_path: Path) -> None:
    path = write(tmp_path, "apache", "balance: sticky\nfail_timeout_seconds: 4", "listen: unix")
    stack = render(path, tmp_path / "r")
    conf = conf_text(stack.nodes["web"])
    sock = stack.paths.unix_socket("app1")
    assert '<Proxy "balancer://sp-lb0">' in conf
    assert f'BalancerMember "unix:{sock}|http://app1" route=app1 retry=4 ttl=4 ' in conf
    assert 'BalancerMember "http://127.0.0.1:18002" route=app2 retry=4 ttl=4 ' in conf  # behind Apache: TCP
    assert "ProxySet lbmethod=byrequests stickysession=sp_lb0" in conf
    assert 'Header add Set-Cookie "sp_lb0=.%{BALANCER_WORKER_ROUTE}e; Path=/; HttpOnly; SameSite=Lax" ' \
           "env=BALANCER_ROUTE_CHANGED" in conf
    assert 'ProxyPass "/api" "balancer://sp-lb0/api"\n' in conf
    assert "balancer-manager" not in conf.replace("No balancer-manager handler", "")
    for module in ("slotmem_shm", "proxy_balancer", "lbmethod_byrequests"):
        assert f"LoadModule {module}_module " in conf
    assert "%{BALANCER_WORKER_ROUTE}e" in conf and "env=SP_BALANCED" in conf
    assert 'SetEnvIf Request_URI "^/api(/|$)" SP_ROUTE=app1 SP_BALANCED=1' in conf
    assert 'SetEnvIf Request_URI "^/" SP_ROUTE=static !SP_BALANCED' in conf
    least = conf_text(render(write(tmp_path, "apache", "balance: least_conn"), tmp_path / "l").nodes["web"])
    assert "ProxySet lbmethod=bybusyness\n" in least and "LoadModule lbmethod_bybusyness_module" in least


def test_a_socket_path_over_sun_path_falls_back_to_tcp_or_is_an_error(tmp_path: Path) -> None:
    deep = tmp_path / ("d" * 100)
    stack = render(write(tmp_path), deep)
    assert stack.nodes["app1"].unix_socket is None and "--port" in stack.nodes["app1"].argv
    assert "server 127.0.0.1:18001 " in conf_text(stack.nodes["web"])
    with pytest.raises(RenderError, match=r"over the system's limit of 10[37]; use a run directory with a shorter"):
        render(write(tmp_path, listen="listen: unix"), deep)


def test_literal_regex_writes_metacharacters_as_classes_and_refuses_the_rest() -> None:
    assert literal_regex("[::1]:8001") == "[[]::1[]]:8001"
    assert literal_regex("unix:/a b/c.sock") == "unix:/a[ ]b/c[.]sock"
    for bad in ('a"b', "a\\b", "a^b", "a$b"):
        with pytest.raises(RenderError):
            literal_regex(bad)


# ------------------------------------------------------------------------------------- sockets at run time


class _UnixHTTPServer(socketserver.ThreadingMixIn, socketserver.UnixStreamServer):
    daemon_threads = True


class _Handler(http.server.BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        self.send_response(204 if self.path == "/healthz" else 503)
        self.end_headers()

    def log_message(self, *args: object) -> None:
        pass

    def address_string(self) -> str:
        return "unix"


def test_probe_over_a_socket_and_stale_socket_files(tmp_path: Path) -> None:
    path = tmp_path / "app.sock"
    assert clear_stale_socket(path) is None  # nothing there
    server = _UnixHTTPServer(str(path), _Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        assert probe_http("127.0.0.1", 1, "/healthz", 2.0, path) == (True, "HTTP 204")
        assert probe_http("127.0.0.1", 1, "/other", 2.0, path) == (False, "HTTP 503")
        assert "another process listens on" in (clear_stale_socket(path) or "")
    finally:
        server.shutdown()
        server.server_close()
    # a server gone (or killed) leaves its socket file: nothing accepts on it, so it is removed
    assert path.is_socket() and clear_stale_socket(path) is None and not path.exists()
    ok, detail = probe_http("127.0.0.1", 1, "/healthz", 1.0, path)
    assert not ok and "FileNotFoundError" in detail
    path.write_text("not a socket")
    assert "is not a socket" in (clear_stale_socket(path) or "")


# ------------------------------------------------------------------------------------- shares


def test_each_backend_edge_reports_its_share_of_the_route(tmp_path: Path) -> None:
    log = tmp_path / "web.access.log"
    log.write_text("")
    engine = MetricsEngine(rate_hz=10)
    engine.register_node("web", "nginx", log, routes=["app1", "app2", "static"], balanced=[("app1", "app2")])
    lines = ["10 200 0.001 app1 - GET \"/api\" 1.0"] * 3 + ["10 200 0.001 app2 - GET \"/api\" 1.0"] \
        + ["10 200 0.001 static - GET \"/\" 1.0"] * 5
    log.write_text("\n".join(lines) + "\n")
    snap = engine.tick()
    shares = {e.route: e.share for e in snap.edges_of("web")}
    assert shares == {"app1": 0.75, "app2": 0.25, "static": None}
    engine.close()

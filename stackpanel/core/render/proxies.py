"""nginx.conf and httpd.conf for the proxy nodes of a profile."""
from __future__ import annotations

import re
import signal
from dataclasses import dataclass
from pathlib import Path

from stackpanel.core import logformat
from stackpanel.core.discovery import ApacheInfo, NginxInfo, PhpFpmInfo
from stackpanel.core.discovery.apache import (
    APACHE_BALANCER_MODULES,
    APACHE_BASE_MODULES,
    APACHE_GZIP_MODULES,
    APACHE_HTTP2_MODULES,
    APACHE_PHP_MODULES,
    APACHE_PROXY_MODULES,
    APACHE_TLS_MODULES,
)
from stackpanel.core.discovery.platform import install_hint
from stackpanel.core.errors import RenderError
from stackpanel.core.profiles.schema import (
    DEFAULT_LIMITS,
    ApacheNode,
    Limits,
    NginxNode,
    Profile,
    ProxyNode,
    Route,
)
from stackpanel.core.render.common import CertificateRequest, RenderedNode, RunPaths, backend_address, template_env
from stackpanel.core.render.php import php_socket, render_php_fpm


def upstream_idle_seconds(profile: Profile, target: str) -> int:
    """A proxy's pooled-connection idle timeout: one second below the backend's keep-alive.

    The backend closes idle connections after its keepalive_timeout (uvicorn: 5 s); if the proxy
    kept them longer it would sometimes send a request down a connection being closed → 502.
    """
    backend_keepalive = profile.nodes[target].keepalive_timeout_seconds
    return max(1, int(backend_keepalive) - 1)


@dataclass(frozen=True)
class _Backend:
    name: str  # the node: also the access-log route tag of the edge to it
    address: str  # host:port or unix:/path


#: nginx's directive per method (round robin is its default: no directive).
_NGINX_METHODS = {"round_robin": None, "least_conn": "least_conn", "ip_hash": "ip_hash"}
#: Apache's lbmethod per method (sticky: requests spread by count, a cookie pins each client).
_APACHE_METHODS = {"round_robin": "byrequests", "least_conn": "bybusyness", "sticky": "byrequests"}


@dataclass(frozen=True)
class _Upstream:
    """The backends of one route (several: balanced) or of every route to one node (one)."""

    name: str  # sp_<node>, or sp-lb<route index> for a balanced route (node names have no such form)
    backends: tuple[_Backend, ...]
    pool: int
    idle_seconds: int
    method: str = "round_robin"
    max_fails: int = 1
    fail_timeout: int = 10

    @property
    def balanced(self) -> bool:
        return len(self.backends) > 1

    @property
    def nginx_method(self) -> str | None:
        return _NGINX_METHODS.get(self.method)

    @property
    def apache_method(self) -> str:
        return _APACHE_METHODS.get(self.method, "byrequests")

    @property
    def sticky_cookie(self) -> str | None:
        return f"{self.name.replace('-', '_')}" if self.method == "sticky" else None


def _upstream(profile: Profile, paths: RunPaths, route: Route, index: int) -> _Upstream:
    names = route.backends
    return _Upstream(
        name=f"sp-lb{index}" if route.is_balanced else f"sp_{names[0]}",
        backends=tuple(_Backend(n, backend_address(profile, paths, n)) for n in names),
        # Idle connections kept per nginx worker; a connection in use beyond the pool is closed
        # after its response and reopened (measured: 1,156 reconnects in 3.5 s at 64 clients
        # with 32; none with 128, and 13-26 µs less CPU per request).
        pool=max(128, 8 * sum(profile.nodes[n].workers for n in names)),
        idle_seconds=min(upstream_idle_seconds(profile, n) for n in names),
        method=route.balance_method, max_fails=route.max_fails or 1,
        fail_timeout=_whole_seconds(route.fail_timeout),
    )


_BLANK_BEFORE_BRACE = re.compile(r"\n[ \t]*\n([ \t]*\})")


@dataclass(frozen=True)
class _EdgeRoute:
    """One route as both templates need it: resolved limits, anchoring and prefix handling."""

    index: int
    path: str
    upstream: _Upstream | None  # None: static
    static: str | None
    php: bool
    follow_symlinks: bool
    target: str  # the access-log route tag: the (first) backend's name, or "static"
    strip: bool  # the proxy removes the prefix (strip_prefix) before passing the request on
    forwarded_prefix: str  # X-Forwarded-Prefix for the backend ("" when none)
    buffering: bool
    cache_seconds: int | None
    limits: Limits

    @property
    def to(self) -> str | None:
        """The upstream's name (None for static)."""
        return self.upstream.name if self.upstream else None

    @property
    def idle_seconds(self) -> int:
        return self.upstream.idle_seconds if self.upstream else 0

    @property
    def prefix(self) -> str:
        return self.path.rstrip("/")

    @property
    def anchored(self) -> list[tuple[str, str]]:
        """nginx locations (modifier, path) that match the prefix at a segment boundary:
        /api → `= /api` and `/api/`, never /apiary. A static prefix always ends in '/': an alias
        without it lets /files../x reach the parent directory."""
        if self.path == "/" or self.path.endswith("/"):
            return [("", self.path)]
        return [("", self.path + "/")] if self.static else [("=", self.path), ("", self.path + "/")]

    @property
    def body_kb(self) -> int:
        return max(1, round((self.limits.max_body_mb or 0) * 1024))

    @property
    def timeout_seconds(self) -> int:
        """Apache has one proxy timeout for reads and writes: the read timeout (waiting for the
        backend's answer is what a user tunes; sends to a loopback backend do not stall)."""
        return _whole_seconds(self.limits.read_timeout_seconds or 1)


def _edge_routes(profile: Profile, name: str, node: ProxyNode, paths: RunPaths) -> list[_EdgeRoute]:
    out = []
    for i, r in enumerate(node.routes):
        out.append(_EdgeRoute(
            index=i, path=r.path, upstream=_upstream(profile, paths, r, i) if r.backends else None, static=r.static,
            php=r.php, follow_symlinks=r.follow_symlinks, target=r.targets[0],
            strip=r.strip_prefix, forwarded_prefix=r.prefix if r.strip_prefix else "", buffering=r.buffering,
            cache_seconds=r.cache_seconds, limits=profile.route_limits(name, r),
        ))
    return out


def render_nginx(profile: Profile, name: str, node: NginxNode, paths: RunPaths, nginx: NginxInfo,
                 as_root: bool, user: str, group: str) -> RenderedNode:
    routes = _edge_routes(profile, name, node, paths)
    upstreams = list({r.upstream.name: r.upstream for r in routes if r.upstream is not None}.values())
    tmp = paths.node_tmp(name)
    conf = paths.conf_dir / f"nginx-{name}.conf"
    certificate = _certificate(profile, name, node, paths)
    text = template_env().get_template("nginx.conf.j2").render(
        name=name, node=node, paths=paths, tmp=tmp, upstreams=upstreams,
        routes=routes, defaults=DEFAULT_LIMITS, node_headers=node.limits.headers,
        tls=node.tls, certificate=certificate, tls_address=_tls_address(node),
        # nginx 1.25.1 replaced `listen ... http2` with `http2 on;`
        http2_directive=_version(nginx.version) >= (1, 25, 1),
        server_names=profile.accepted_host_names(name),
        user=user if as_root else None, group=group, shutdown_seconds=_whole_seconds(node.shutdown.timeout_seconds),
        log_format=logformat.NGINX_LOG_FORMAT,
    )
    text = _BLANK_BEFORE_BRACE.sub(r"\n\1", text)  # the macros' optional lines leave blank ones
    prefix = str(paths.root) + "/"
    return RenderedNode(
        name=name, kind="nginx",
        argv=(str(nginx.path), "-p", prefix, "-c", str(conf), "-e", str(paths.error_log(name))),
        cwd=paths.root,
        files={conf: text},
        access_log=paths.access_log(name), error_log=paths.error_log(name), output_log=paths.output_log(name),
        pid_file=paths.pid_file(name),
        config_test_argv=(str(nginx.path), "-t", "-q", "-p", prefix, "-c", str(conf), "-e",
                          str(paths.error_log(name))),
        stop_signal=signal.SIGQUIT, reload_signal=signal.SIGHUP, certificate=certificate,
        dirs=tuple(tmp / d for d in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi")),
        writable_dirs=tuple(tmp / d for d in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi")),
    )


def render_apache(profile: Profile, name: str, node: ApacheNode, paths: RunPaths, apache: ApacheInfo,
                  as_root: bool, user: str, group: str, php: PhpFpmInfo | None = None) -> RenderedNode:
    """`php`: the php-fpm that runs the node's `php: true` routes (required when it has any)."""
    routes = _edge_routes(profile, name, node, paths)
    proxied = any(r.to for r in routes)
    balancers = [r.upstream for r in routes if r.upstream is not None and r.upstream.balanced]
    base_modules = tuple(f"mpm_{node.mpm}" if m == "mpm_event" else m for m in APACHE_BASE_MODULES)
    modules = base_modules + (APACHE_PROXY_MODULES if proxied else ())
    if balancers:
        modules += APACHE_BALANCER_MODULES + tuple(f"lbmethod_{b.apache_method}" for b in balancers)
    companion = None
    if node.php_dirs:
        if php is None:
            raise RenderError(f"node {name!r} runs PHP, and php-fpm is not installed: {install_hint('php')}")
        companion = render_php_fpm(name, node, paths, php, as_root, user, group)
        modules += tuple(m for m in APACHE_PHP_MODULES if m not in modules)
    certificate = _certificate(profile, name, node, paths)
    if node.tls is not None:
        modules += APACHE_TLS_MODULES + (APACHE_HTTP2_MODULES if node.tls.http2 else ())
    if any(r.limits.gzip for r in routes):
        modules += APACHE_GZIP_MODULES
    root_route = next((r for r in routes if r.static and r.path == "/"), None)
    root_static = root_route.static if root_route else None
    names = profile.accepted_host_names(name)
    document_root = Path(root_static) if root_static else paths.root / "htdocs"
    conf = paths.conf_dir / f"httpd-{name}.conf"
    by_length = sorted(routes, key=lambda r: len(r.path))
    text = template_env().get_template("httpd.conf.j2").render(
        name=name, node=node, paths=paths, runtime_dir=paths.state_dir,
        load_modules=apache.load_module_lines(modules),
        user=user if as_root else None, group=group,
        log_format=logformat.APACHE_LOG_FORMAT.replace('"', '\\"'),
        shutdown_seconds=_whole_seconds(node.shutdown.timeout_seconds),
        mime_types=apache.mime_types, document_root=document_root,
        root_follow_symlinks=root_route.follow_symlinks if root_route else False,
        root_php=root_route.php if root_route else False,
        exact_names=[n for n in names if not n.startswith("*")], wildcard_names=[n for n in names if n.startswith("*")],
        static_aliases=[r for r in routes if r.static and r.path != "/"],
        routes_shortest_first=by_length,
        routes_longest_first=[r for r in reversed(by_length) if r.to or proxied],
        proxied=proxied, balancers=balancers,
        balanced_log_format=logformat.APACHE_BALANCED_LOG_FORMAT.replace('"', '\\"'),
        defaults=DEFAULT_LIMITS, node_headers=node.limits.headers,
        tls=node.tls, certificate=certificate, tls_address=_tls_address(node),
        php_socket=php_socket(paths, name) if companion else None,
    )
    base = (str(apache.path), "-d", str(paths.root), "-f", str(conf))
    return RenderedNode(
        name=name, kind="apache",
        argv=base + ("-DFOREGROUND",),
        cwd=paths.root,
        files={conf: text},
        access_log=paths.access_log(name), error_log=paths.error_log(name), output_log=paths.output_log(name),
        pid_file=paths.pid_file(name),
        config_test_argv=base + ("-t",),
        # WINCH = graceful-stop (finish requests, then exit); USR1 = graceful restart with the new config.
        stop_signal=signal.SIGWINCH, reload_signal=signal.SIGUSR1, certificate=certificate,
        dirs=(document_root,) if root_static is None else (), companion=companion,
    )


def _certificate(profile: Profile, name: str, node: ProxyNode, paths: RunPaths) -> CertificateRequest | None:
    if node.tls is None:
        return None
    names = node.certificate_names(profile.accepted_host_names(name))
    return CertificateRequest(tuple(names), paths.tls_dir(name))


def _tls_address(node: ProxyNode) -> str:
    return f"{node.url_host}:{node.tls.port}" if node.tls else ""


def _version(text: str) -> tuple[int, ...]:
    return tuple(int(p) for p in re.findall(r"\d+", text)[:3]) or (0,)


def _whole_seconds(value: float) -> int:
    return max(1, int(value))

"""The profile model: one topology of servers, validated field by field.

Every string that ends up inside nginx.conf or httpd.conf is constrained here to a character set
that cannot start a new directive (no ``;``, ``{``, quotes, ``$``, newlines ...); the renderers
quote them as well, so neither layer alone has to be perfect.

Cross-node rules (ports, routes, cycles, reachability, files on disk) live in ``validators.py``.
"""
from __future__ import annotations

import ipaddress
import os
import re
import sys
from pathlib import Path
from typing import Annotated, Any, ClassVar, Literal

from pydantic import BaseModel, ConfigDict, Field, PrivateAttr, ValidationInfo, field_validator, model_validator

from stackpanel.core.fsutil import is_dir, is_file

NodeKind = Literal["nginx", "apache", "gunicorn", "uvicorn"]
PROXY_KINDS: tuple[str, ...] = ("nginx", "apache")
APP_SERVER_KINDS: tuple[str, ...] = ("gunicorn", "uvicorn")
RestartPolicy = Literal["no", "on-failure", "always"]
#: How a proxy spreads a route's requests over several backends (`to: [a, b]`).
BalanceMethod = Literal["round_robin", "least_conn", "ip_hash", "sticky"]
#: Where an app server listens: its TCP port, a Unix socket in the run directory, or `auto`
#: (a Unix socket behind nginx, see UNIX_SOCKET_FRONTS; TCP otherwise).
ListenMode = Literal["auto", "tcp", "unix"]
Interface = Literal["asgi", "wsgi"]

NODE_NAME_RE = re.compile(r"^[a-z][a-z0-9_-]{0,31}$")
URL_PATH_RE = re.compile(r"^/[A-Za-z0-9._~/-]*$")
MODULE_RE = re.compile(r"^[A-Za-z_]\w*(\.[A-Za-z_]\w*)*:[A-Za-z_]\w*(\.[A-Za-z_]\w*)*$")
ENV_NAME_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
#: A DNS name a proxy answers to (``*.`` allowed as the first label), lower case.
HOST_NAME_RE = re.compile(r"^(\*\.)?([a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?\.)*[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$")
#: Names every proxy answers to: a browser sends these for loopback, and no DNS answer can make
#: a page on another site send them (the defence against DNS rebinding).
LOOPBACK_NAMES: tuple[str, ...] = ("localhost", "*.localhost", "127.0.0.1", "[::1]")

#: Variables the servers read as extra options: set in a profile (or inherited from the shell
#: that runs stackpanel) they would change a command line behind the profile's back, e.g.
#: GUNICORN_CMD_ARGS=--daemon detaches gunicorn from its supervisor. Refused in profiles and
#: removed from the environment the servers start with.
SERVER_CONTROL_ENV: tuple[str, ...] = (
    "GUNICORN_CMD_ARGS",  # gunicorn: extra command-line options
    "WEB_CONCURRENCY",  # gunicorn and uvicorn: worker count
    "NGINX",  # nginx: inherited listening sockets (binary upgrade)
    "LISTEN_FDS", "LISTEN_PID", "LISTEN_FDNAMES",  # socket activation (gunicorn binds them)
    "PYTHONINSPECT",  # python: stays in an interactive prompt after the server exits
)
SERVER_CONTROL_ENV_PREFIXES: tuple[str, ...] = ("UVICORN_",)  # uvicorn: every option as UVICORN_<NAME>


def is_server_control_env(name: str) -> bool:
    return name in SERVER_CONTROL_ENV or name.startswith(SERVER_CONTROL_ENV_PREFIXES)


#: Directories a static route may never serve: the whole system, its configuration, a home.
SYSTEM_DIRS = frozenset({
    "/", "/bin", "/boot", "/dev", "/etc", "/home", "/lib", "/lib32", "/lib64", "/libx32", "/media", "/mnt",
    "/opt", "/proc", "/root", "/run", "/sbin", "/srv", "/sys", "/tmp", "/usr", "/usr/local", "/var",
    "/Users", "/Library", "/System", "/Applications", "/Volumes", "/private",
})
SYSTEM_TREES = ("/etc", "/proc", "/sys", "/dev", "/boot")
# Characters a config file path may not contain: they could end a quoted string or start a
# variable/directive in nginx or Apache syntax.
UNSAFE_PATH_CHARS = set("\"'`\\$;{}%#<>*?[]|&") | {chr(c) for c in range(32)} | {"\x7f"}

#: Names reserved by the access-log format (``static`` is the route tag of file serving).
RESERVED_NODE_NAMES = {"static", "client"}


def check_config_path(value: str) -> str:
    bad = sorted({c for c in value if c in UNSAFE_PATH_CHARS})
    if bad:
        shown = ", ".join(repr(c) for c in bad)
        raise ValueError(
            f"path contains {shown}, which nginx/Apache configs cannot carry safely; "
            "use a directory whose path has no such characters (a symlink works)"
        )
    if not value.strip():
        raise ValueError("path is empty")
    return value


def _resolve_against_profile(value: str, info: ValidationInfo, follow_links: bool = True) -> str:
    """An absolute path (relative ones are relative to the profile's directory). `follow_links`
    False keeps symbolic links as written: a venv's bin/python is a link to the base interpreter,
    and only the link's own path tells Python it runs in the venv."""
    base = (info.context or {}).get("base_dir")
    try:
        path = Path(value).expanduser()
    except RuntimeError:  # "~someone" for a user that does not exist
        raise ValueError(f"{value!r} starts with ~ but names no user of this machine") from None
    if not path.is_absolute() and base is not None:
        path = Path(base) / path
    if base is None:
        return str(path)
    return str(path.resolve()) if follow_links else os.path.abspath(path)


def check_host(value: str) -> str:
    """An IP literal in canonical form; no zone id (its text would reach the configs unchecked)."""
    if value == "localhost":
        return "127.0.0.1"
    if "%" in value:
        raise ValueError(f"{value!r} has a zone id (%...): link-local addresses are not supported; "
                         "write e.g. 127.0.0.1 or ::1")
    try:
        ip = ipaddress.ip_address(value)
    except ValueError:
        raise ValueError(f"{value!r} is not an IP address; write e.g. 127.0.0.1 or ::1") from None
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped  # ::ffff:127.0.0.1 is 127.0.0.1, and binds as such everywhere
    return str(ip)


def is_loopback(host: str) -> bool:
    return ipaddress.ip_address(host).is_loopback


def check_host_name(value: str) -> str:
    name = value.lower()
    if name.startswith("[") and name.endswith("]"):
        return f"[{check_host(name[1:-1])}]" if ":" in name else _bad_name(value)
    try:
        ip = ipaddress.ip_address(name)
        return f"[{ip}]" if ip.version == 6 else str(ip)
    except ValueError:
        pass
    if len(name) > 253 or not HOST_NAME_RE.fullmatch(name):
        _bad_name(value)
    return name


def _bad_name(value: str) -> str:
    raise ValueError(f"{value!r} is not a host name: use letters, digits and '-' in dot-separated labels "
                     "(e.g. myapp.localhost), optionally starting with '*.'")


def check_static_dir(path: str) -> str:
    """Refuse to publish the system, its configuration or a home directory as static files."""
    p = Path(path)
    home = Path.home().resolve() if Path.home().is_absolute() else None
    if str(p) in SYSTEM_DIRS or any(p.is_relative_to(t) for t in SYSTEM_TREES):
        raise ValueError(f"static directory {path} is a system directory; serving it would publish the "
                         "machine's files: point `static:` at your site's own directory")
    if home is not None and (p == home or home.is_relative_to(p)):
        raise ValueError(f"static directory {path} is (or contains) your home directory, with your keys "
                         "and settings: point `static:` at your site's own directory")
    return path


class StrictModel(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class AppSpec(StrictModel):
    """The application an app server runs."""

    module: str = Field(description="module:attribute, e.g. stackpanel.apps.fastapi_demo:app")
    interface: Interface = "asgi"
    python: str | None = Field(default=None, description="interpreter or venv directory; default: stackpanel's")
    working_dir: str | None = Field(default=None, validate_default=True,
                                    description="directory the app runs in; default: the profile's")
    env: dict[str, str] = Field(default_factory=dict)

    @field_validator("module")
    @classmethod
    def _module(cls, v: str) -> str:
        if not MODULE_RE.fullmatch(v):
            raise ValueError(f"{v!r} is not of the form package.module:attribute (e.g. myapp.main:app)")
        return v

    @field_validator("python", "working_dir")
    @classmethod
    def _paths(cls, v: str | None, info: ValidationInfo) -> str | None:
        if v is None:
            base = (info.context or {}).get("base_dir")
            return str(base) if info.field_name == "working_dir" and base is not None else None
        return _resolve_against_profile(check_config_path(v), info, follow_links=info.field_name != "python")

    @field_validator("env")
    @classmethod
    def _env(cls, v: dict[str, str]) -> dict[str, str]:
        for key, value in v.items():
            if not ENV_NAME_RE.fullmatch(key):
                raise ValueError(f"environment variable name {key!r} must match [A-Za-z_][A-Za-z0-9_]*")
            if is_server_control_env(key):
                raise ValueError(
                    f"{key} is read by the servers as extra options and would change their command line "
                    "behind the profile's back (e.g. GUNICORN_CMD_ARGS=--daemon leaves an orphan); "
                    "set the node's own keys instead (workers, threads, ...)")
            if "\x00" in value:
                raise ValueError(f"environment variable {key} contains a NUL byte")
        return v

    @property
    def interpreter(self) -> str:
        """The Python executable that runs the app server: `python` (an interpreter or a venv
        directory), else a `.venv` in the app's directory, else stackpanel's own."""
        if self.python is None:
            local = Path(self.working_dir or ".") / ".venv" / "bin" / "python"
            return str(local) if is_file(local) else sys.executable
        p = Path(self.python)
        return str(p / "bin" / "python") if is_dir(p) else str(p)


#: A probe's query string (socket.io wants ``?EIO=4&transport=polling``): no ``%``, quotes or
#: spaces, so it stays one word in exported shell and systemd lines too.
PROBE_QUERY_RE = re.compile(r"^[A-Za-z0-9._~\-=&+,:]{0,256}$")


class HttpGet(StrictModel):
    path: str = Field(default="/", description="path requested, with an optional ?query")

    @field_validator("path")
    @classmethod
    def _path(cls, v: str) -> str:
        path, mark, query = v.partition("?")
        check_url_path(path)
        if mark and not PROBE_QUERY_RE.fullmatch(query):
            raise ValueError(f"{v!r}: a probe's query may use only letters, digits and . _ ~ - = & + , :")
        return v


class ReadinessProbe(StrictModel):
    """Ready = TCP connect, then an HTTP GET through the node answers with a status below 500."""

    http_get: HttpGet = HttpGet()
    initial_delay_seconds: float = Field(default=0.0, ge=0, le=60)
    period_seconds: float = Field(default=0.05, gt=0, le=10)
    timeout_seconds: float = Field(default=30.0, gt=0, le=600, description="give up after this long")


class LivenessProbe(StrictModel):
    """After readiness: GET path every period; `failure_threshold` failures in a row (no answer
    within timeout, or a status ≥ 500) mean the node is hung: it is killed and restarted per its
    availability policy (a stopped or deadlocked server accepts connections and answers nothing)."""

    http_get: HttpGet = HttpGet()
    period_seconds: float = Field(default=5.0, gt=0, le=3600)
    timeout_seconds: float = Field(default=2.0, gt=0, le=600)
    failure_threshold: int = Field(default=3, ge=1, le=100)


class Availability(StrictModel):
    """Restarts are counted in a sliding window (as systemd's StartLimitIntervalSec/Burst): a node
    gives up after `max_restarts` crashes within `restart_window_seconds`, and a crash after a
    healthy stretch longer than the window restarts at once, as the first one did."""

    restart: RestartPolicy = "on-failure"
    backoff_seconds: float = Field(default=0.5, ge=0, le=300)
    max_restarts: int = Field(default=5, ge=0, le=1000)
    restart_window_seconds: float = Field(default=300.0, gt=0, le=86_400)

    @field_validator("restart", mode="before")
    @classmethod
    def _yaml_no(cls, v: Any) -> Any:
        # YAML 1.1 reads an unquoted `no` as false.
        return "no" if v is False else v


class Shutdown(StrictModel):
    """timeout_seconds is the server's own graceful timeout; it is rendered into the server's
    config, and the supervisor waits a little longer before it kills."""

    timeout_seconds: float = Field(default=10.0, gt=0, le=600)


def check_url_path(v: str) -> str:
    if not URL_PATH_RE.fullmatch(v):
        raise ValueError(
            f"{v!r} is not a URL path prefix: it must start with '/' and use only letters, digits and . _ ~ - /"
        )
    if "//" in v or "/../" in v + "/" or "/./" in v + "/":
        raise ValueError(f"{v!r} has an empty, '.' or '..' segment")
    return v


HEADER_NAME_RE = re.compile(r"^[A-Za-z][A-Za-z0-9-]{0,63}$")
#: Printable ASCII without the characters that end a quoted config string or start a variable
#: (nginx ``$``, Apache ``%{}`` and ``${}``); CSP's quotes and semicolons are fine.
HEADER_VALUE_RE = re.compile(r'^[ !#&-\[\]-~]{0,1024}$')
#: Headers that frame or route the message: the servers own them.
RESERVED_HEADERS = frozenset({"connection", "content-length", "transfer-encoding", "upgrade", "keep-alive", "te",
                              "trailer", "host", "date", "server"})


class RateLimit(StrictModel):
    """Requests per second per client address, with a burst allowance; excess requests get 429."""

    requests_per_second: int = Field(ge=1, le=100_000)
    burst: int = Field(default=0, ge=0, le=100_000)


class Limits(StrictModel):
    """What a proxy allows a request: set on a proxy node (for all its routes) or on one route.
    Unset keys inherit (route ← node ← DEFAULT_LIMITS); headers add up."""

    max_body_mb: float | None = Field(default=None, gt=0, le=2047, description="largest request body (413 beyond)")
    connect_timeout_seconds: float | None = Field(default=None, gt=0, le=75)
    read_timeout_seconds: float | None = Field(default=None, gt=0, le=86_400,
                                               description="longest wait for the backend's next bytes")
    send_timeout_seconds: float | None = Field(default=None, gt=0, le=86_400)
    gzip: bool | None = Field(default=None, description="compress text responses")
    rate_limit: RateLimit | None = None
    headers: dict[str, str] = Field(default_factory=dict, description="extra response headers")

    @field_validator("headers")
    @classmethod
    def _headers(cls, v: dict[str, str]) -> dict[str, str]:
        for name, value in v.items():
            if not HEADER_NAME_RE.fullmatch(name):
                raise ValueError(f"header name {name!r} must be letters, digits and '-' (e.g. X-Frame-Options)")
            if name.lower() in RESERVED_HEADERS:
                raise ValueError(f"header {name} is set by the servers themselves; remove it here")
            if not isinstance(value, str) or not HEADER_VALUE_RE.fullmatch(value):
                raise ValueError(f"header {name}: the value must be printable ASCII without \" \\ $ % "
                                 "(at most 1024 characters)")
        return v

    def over(self, base: Limits) -> Limits:
        """These limits with every unset key taken from `base`."""
        values = {k: getattr(self, k) if getattr(self, k) is not None else getattr(base, k)
                  for k in type(self).model_fields if k != "headers"}
        return Limits(**values, headers={**base.headers, **self.headers})


DEFAULT_LIMITS = Limits(max_body_mb=32, connect_timeout_seconds=5, read_timeout_seconds=60, send_timeout_seconds=60,
                        gzip=False)


#: nginx's own default (fail_timeout=10s), used by both proxies.
DEFAULT_FAIL_TIMEOUT_SECONDS = 10.0


class Route(StrictModel):
    """A path prefix that a proxy sends either to another node (`to`) or to a directory (`static`).

    A prefix is anchored at a segment: ``/api`` matches ``/api`` and ``/api/...``, never ``/apiary``.
    """

    path: str
    to: str | list[str] | None = Field(default=None, description="the node (or nodes, balanced) that serve it")
    static: str | None = None
    balance: BalanceMethod | None = Field(
        default=None, description="several backends only: round_robin (default), least_conn, ip_hash (nginx: one "
        "client address, one backend) or sticky (Apache: a cookie pins each client to a backend)")
    max_fails: int | None = Field(default=None, ge=1, le=100, description="several backends, nginx only: failed "
                                  "attempts within fail_timeout_seconds that take a backend out (default 1)")
    fail_timeout_seconds: float | None = Field(
        default=None, gt=0, le=3600, description="several backends: how long a failing backend stays out of the "
        "pool (default 10)")
    follow_symlinks: bool = Field(
        default=False, description="static only: follow symbolic links inside the directory (off: a link "
        "out of the directory could publish any file)")
    strip_prefix: bool = Field(default=False, description="proxied only: the backend sees /x for /api/x "
                               "(X-Forwarded-Prefix and the app server's root path say /api)")
    buffering: bool = Field(default=True, description="proxied only: off streams each chunk as it comes")
    cache_seconds: int | None = Field(default=None, ge=0, le=31_536_000,
                                      description="static only: Cache-Control max-age")
    php: bool = Field(default=False, description="static on an apache node only: run the directory's .php files "
                      "with php-fpm (a process of the node, on a Unix socket in the run dir)")
    limits: Limits = Limits()

    @field_validator("path")
    @classmethod
    def _path(cls, v: str) -> str:
        return check_url_path(v)

    @field_validator("to", mode="before")
    @classmethod
    def _to(cls, v: Any) -> Any:
        if v is None or isinstance(v, str) or (isinstance(v, list) and all(isinstance(n, str) for n in v)):
            return v
        raise ValueError(f"{v!r} is not a node name: write `to: app`, or `to: [app1, app2]` to balance over several")

    @field_validator("static")
    @classmethod
    def _static(cls, v: str | None, info: ValidationInfo) -> str | None:
        return None if v is None else check_static_dir(_resolve_against_profile(check_config_path(v), info))

    @model_validator(mode="after")
    def _one_target(self) -> Route:
        if (self.to is None) == (self.static is None):
            raise ValueError("a route needs exactly one of `to: <node>` or `static: <directory>`")
        if self.static is None and (self.follow_symlinks or self.cache_seconds is not None or self.php):
            raise ValueError("follow_symlinks, cache_seconds and php apply to static routes only "
                             "(`static: <directory>`); remove them here")
        if self.to is None and (self.strip_prefix or not self.buffering):
            raise ValueError("strip_prefix and buffering apply to proxied routes (`to:`) only; remove them here")
        if self.strip_prefix and self.path.rstrip("/") == "":
            raise ValueError("strip_prefix on / strips nothing; remove it")
        if isinstance(self.to, list) and not self.to:
            raise ValueError("`to: []` names no node; write `to: app` or `to: [app1, app2]`")
        if not self.is_balanced and {"balance", "max_fails", "fail_timeout_seconds"} & self.model_fields_set:
            raise ValueError("balance, max_fails and fail_timeout_seconds apply to a route with several backends "
                             "(`to: [app1, app2]`); remove them here")
        return self

    @property
    def backends(self) -> tuple[str, ...]:
        """The node names this route proxies to, in the profile's order (none for static)."""
        if self.to is None:
            return ()
        return (self.to,) if isinstance(self.to, str) else tuple(self.to)

    @property
    def is_balanced(self) -> bool:
        return len(self.backends) > 1

    @property
    def balance_method(self) -> BalanceMethod:
        return self.balance or "round_robin"

    @property
    def fail_timeout(self) -> float:
        return self.fail_timeout_seconds if self.fail_timeout_seconds is not None else DEFAULT_FAIL_TIMEOUT_SECONDS

    @property
    def prefix(self) -> str:
        """The path without a trailing slash ('' for /): what strip_prefix removes."""
        return self.path.rstrip("/")

    @property
    def targets(self) -> tuple[str, ...]:
        """The route tags written to access logs: each backend's name, or ``static``."""
        return self.backends or ("static",)


class NodeBase(StrictModel):
    host: str = "127.0.0.1"
    port: int = Field(ge=1, le=65535)
    expose: bool = Field(default=False, description="allow a host beyond loopback (reachable from the network)")
    workers: int = Field(default=1, ge=1, le=64)
    depends_on: list[str] = Field(default_factory=list)
    keepalive_timeout_seconds: float = Field(
        default=5.0, gt=0, le=300, description="how long the server keeps an idle client connection open"
    )
    readiness_probe: ReadinessProbe = ReadinessProbe()
    liveness_probe: LivenessProbe | None = None
    availability: Availability = Availability()
    shutdown: Shutdown = Shutdown()

    @field_validator("host")
    @classmethod
    def _host(cls, v: str) -> str:
        return check_host(v)

    @property
    def is_exposed(self) -> bool:
        return not is_loopback(self.host)

    @property
    def url_host(self) -> str:
        return f"[{self.host}]" if ":" in self.host else self.host

    @property
    def address(self) -> str:
        return f"{self.url_host}:{self.port}"

    @property
    def url(self) -> str:
        return f"http://{self.address}/"

    @property
    def listen_addresses(self) -> list[tuple[str, int]]:
        """Every (host, port) this node binds (a proxy's tls listener too)."""
        return [(self.host, self.port)]

    @property
    def stop_deadline_seconds(self) -> float:
        """How long the supervisor waits after the graceful signal before SIGKILL."""
        return self.shutdown.timeout_seconds + 2.0


class TlsListener(StrictModel):
    """HTTPS on a port of its own, with a certificate from the user's local CA (`stackpanel trust`)."""

    port: int = Field(ge=1, le=65535)
    redirect: bool = Field(default=False, description="the plain port answers 308 to the https URL")
    http2: bool = True


class ProxyNode(NodeBase):
    routes: list[Route] = Field(min_length=1)
    limits: Limits = Limits()
    tls: TlsListener | None = None

    @property
    def listen_addresses(self) -> list[tuple[str, int]]:
        return [(self.host, self.port)] + ([(self.host, self.tls.port)] if self.tls else [])

    @property
    def tls_url(self) -> str | None:
        return f"https://{self.url_host}:{self.tls.port}/" if self.tls else None

    def certificate_names(self, accepted: list[str]) -> list[str]:
        """The names a TLS leaf covers: the accepted Host names without brackets, wildcards only
        where the profile declared one (the CA's constraints cover localhost's subdomains)."""
        return [n.strip("[]") for n in accepted if n != "*.localhost"]
    server_names: list[str] = Field(
        default_factory=list, description="host names this proxy answers to besides localhost, *.localhost, "
        "127.0.0.1 and [::1]; any other Host gets 421 (DNS rebinding)")

    @field_validator("server_names")
    @classmethod
    def _server_names(cls, v: list[str]) -> list[str]:
        return list(dict.fromkeys(check_host_name(n) for n in v))

    @field_validator("routes")
    @classmethod
    def _unique_paths(cls, v: list[Route]) -> list[Route]:
        seen: set[str] = set()
        for r in v:
            if r.path in seen:
                raise ValueError(f"two routes for {r.path!r}; each path prefix may appear once")
            seen.add(r.path)
        return v


class NginxNode(ProxyNode):
    kind: Literal["nginx"]
    worker_connections: int = Field(default=1024, ge=16, le=65536)


class ApacheNode(ProxyNode):
    kind: Literal["apache"]
    threads_per_child: int = Field(default=128, ge=1, le=1024)
    mpm: Literal["event", "worker"] = Field(
        default="event", description="event: idle keep-alive connections wait in one listener thread; worker: "
        "each connection keeps its thread (fewer hand-offs per request, but idle clients hold threads)")
    php_workers: int = Field(default=4, ge=1, le=256, description="php-fpm processes for the node's `php: true` "
                             "routes (a static pool: each runs one script at a time)")

    @property
    def php_dirs(self) -> list[str]:
        """The static directories whose .php files php-fpm runs (empty: the node runs no php-fpm)."""
        return [r.static for r in self.routes if r.php and r.static is not None]


#: Options stackpanel sets itself on an app server's command line (binds, logs, pid, control
#: socket, daemon mode, the app's location): `args:` may not repeat them.
OWNED_UVICORN_OPTIONS = frozenset({
    "--host", "--port", "--uds", "--fd", "--workers", "--reload", "--reload-dir", "--reload-include",
    "--reload-exclude", "--reload-delay", "--log-config", "--app-dir", "--env-file", "--root-path",
    "--interface", "--factory", "--timeout-keep-alive", "--timeout-graceful-shutdown", "--proxy-headers",
    "--no-proxy-headers", "--forwarded-allow-ips", "--log-level", "--access-log", "--no-access-log", "--use-colors",
    "--no-use-colors", "--limit-concurrency", "--http", "--loop",
})
OWNED_GUNICORN_OPTIONS = frozenset({
    "--bind", "-b", "--workers", "-w", "--worker-class", "-k", "--chdir", "--pid", "-p", "--control-socket",
    "--no-control-socket", "--log-config", "--log-config-json", "--log-config-dict", "--log-file", "--error-logfile",
    "--access-logfile", "--access-logformat", "--config", "-c", "--daemon", "-D", "--user", "-u", "--group", "-g",
    "--timeout", "-t", "--graceful-timeout", "--keep-alive", "--forwarded-allow-ips", "--threads", "--preload",
    "--max-requests", "--max-requests-jitter", "--reload", "--pythonpath", "--env", "-e", "--paste", "--check-config",
    "--print-config", "--capture-output", "--enable-stdio-inheritance", "--worker-tmp-dir", "--umask", "-m",
    "--initgroups",
})


#: The proxies behind which `listen: auto` is a Unix socket: faster than loopback TCP behind nginx
#: (1.13-1.25x), no faster behind Apache (0.99x), measured in BENCHMARKS.md.
UNIX_SOCKET_FRONTS: frozenset[str] = frozenset({"nginx"})


class AppServerNode(NodeBase):
    app: AppSpec
    listen: ListenMode = Field(
        default="auto", description="tcp: host and port; unix: a Unix socket in the run directory, reached by the "
        "proxies in front only (the port is not bound); auto: unix when only nginx proxies front the node and "
        "it is not exposed, tcp otherwise")
    args: list[str] = Field(default_factory=list, max_length=64,
                            description="more command-line options for the server, after stackpanel's own")

    #: the options `args:` may not set (per kind)
    OWNED_OPTIONS: ClassVar[frozenset[str]] = frozenset()

    @field_validator("args")
    @classmethod
    def _args(cls, v: list[str]) -> list[str]:
        for arg in v:
            if any(ord(c) < 32 for c in arg):
                raise ValueError(f"argument {arg!r} contains a control character")
            option = arg.split("=", 1)[0]
            short = option[:2] if option.startswith("-") and not option.startswith("--") else option
            if option in cls.OWNED_OPTIONS or short in cls.OWNED_OPTIONS:
                raise ValueError(f"{option} is set by stackpanel from the profile (binds, logs, pid, workers "
                                 "and the keys of this node): set the node's key instead of passing it in args")
        return v


class GunicornNode(AppServerNode):
    OWNED_OPTIONS: ClassVar[frozenset[str]] = OWNED_GUNICORN_OPTIONS
    kind: Literal["gunicorn"]
    worker_class: Literal["sync", "uvicorn"] | None = Field(
        default=None, description="sync (WSGI) or uvicorn (ASGI); default: from the app's interface"
    )
    threads: int = Field(default=1, ge=1, le=64)
    timeout_seconds: float = Field(default=30.0, gt=0, le=3600, description="gunicorn --timeout")
    preload: bool = Field(default=False, description="import the app once in the master, before forking")
    max_requests: int = Field(default=0, ge=0, le=10_000_000, description="restart a worker after this many "
                              "requests (0: never)")
    max_requests_jitter: int = Field(default=0, ge=0, le=10_000_000)

    @property
    def effective_worker_class(self) -> str:
        if self.worker_class is not None:
            return self.worker_class
        return "uvicorn" if self.app.interface == "asgi" else "sync"

    @model_validator(mode="after")
    def _class_matches_interface(self) -> GunicornNode:
        wc, iface = self.effective_worker_class, self.app.interface
        if (wc == "uvicorn") != (iface == "asgi"):
            want = "uvicorn" if iface == "asgi" else "sync"
            raise ValueError(f"worker_class {wc!r} cannot run a {iface} app; use worker_class: {want}")
        return self


class UvicornNode(AppServerNode):
    OWNED_OPTIONS: ClassVar[frozenset[str]] = OWNED_UVICORN_OPTIONS
    kind: Literal["uvicorn"]
    reload: bool = False
    factory: bool = Field(default=False, description="app.module names a function that returns the app")
    root_path: str | None = Field(default=None, description="the ASGI root_path (default: the prefix a "
                                  "proxy strips in front of this node)")
    limit_concurrency: int | None = Field(default=None, ge=1, le=1_000_000,
                                          description="answer 503 beyond this many connections and tasks")
    http: Literal["auto", "h11", "httptools"] = "auto"
    loop: Literal["auto", "asyncio", "uvloop"] = "auto"

    @field_validator("root_path")
    @classmethod
    def _root_path(cls, v: str | None) -> str | None:
        return None if v is None else check_url_path(v).rstrip("/") or None

    @model_validator(mode="after")
    def _reload_single(self) -> UvicornNode:
        if self.reload and self.workers != 1:
            raise ValueError("uvicorn --reload runs a single worker; set workers: 1 or reload: false")
        return self


Node = Annotated[NginxNode | ApacheNode | GunicornNode | UvicornNode, Field(discriminator="kind")]
NODE_MODELS: dict[str, type[NodeBase]] = {
    "nginx": NginxNode,
    "apache": ApacheNode,
    "gunicorn": GunicornNode,
    "uvicorn": UvicornNode,
}


def _tls_shifted(node: NodeBase, offset: int) -> dict[str, Any]:
    if isinstance(node, ProxyNode) and node.tls is not None:
        return {"tls": node.tls.model_copy(update={"port": node.tls.port + offset})}
    return {}


class Edge(BaseModel):
    """One hop of the request path: a route of a proxy to a node or to its static files."""

    model_config = ConfigDict(frozen=True)
    source: str
    target: str  # node name or "static"
    path: str


class Profile(StrictModel):
    _port_offset: int = PrivateAttr(default=0)
    version: Literal[1]
    name: str = Field(min_length=1, max_length=80)
    description: str = ""
    nodes: dict[str, Node] = Field(min_length=1)

    @field_validator("name")
    @classmethod
    def _name(cls, v: str) -> str:
        if any(ord(c) < 32 for c in v):
            raise ValueError("the profile name must be a single line of text")
        return v

    @field_validator("nodes")
    @classmethod
    def _node_names(cls, v: dict[str, Any]) -> dict[str, Any]:
        for name in v:
            if name in RESERVED_NODE_NAMES:
                raise ValueError(f"node name {name!r} is reserved; pick another (e.g. {name}1)")
            if not NODE_NAME_RE.fullmatch(name):
                raise ValueError(
                    f"node name {name!r} must start with a lowercase letter and use only a-z 0-9 _ - "
                    "(at most 32 characters)"
                )
        return v

    # ---- derived topology (one place per fact: everything below is computed from `nodes`) ----

    def edges(self) -> list[Edge]:
        out: list[Edge] = []
        for name, node in self.nodes.items():
            if isinstance(node, ProxyNode):
                out.extend(Edge(source=name, target=t, path=r.path) for r in node.routes for t in r.targets)
        return out

    def dependencies(self, name: str) -> list[str]:
        """Nodes that must be ready before `name` starts: its route targets and depends_on."""
        node = self.nodes[name]
        deps = list(node.depends_on)
        if isinstance(node, ProxyNode):
            deps.extend(b for r in node.routes for b in r.backends)
        return list(dict.fromkeys(deps))

    @property
    def entry(self) -> str:
        """The node clients talk to: the one no route leads to."""
        targets = {e.target for e in self.edges()}
        for name in self.nodes:
            if name not in targets:
                return name
        return next(iter(self.nodes))

    @property
    def entry_url(self) -> str:
        """The plain HTTP URL of the entry (probes, load, bench)."""
        return self.nodes[self.entry].url

    @property
    def browser_url(self) -> str:
        """What a person opens: the entry's https URL when it has TLS."""
        entry = self.nodes[self.entry]
        return (entry.tls_url if isinstance(entry, ProxyNode) else None) or entry.url

    def start_order(self) -> list[str]:
        """Backends first: a node starts after every node it depends on (validated acyclic)."""
        order: list[str] = []
        done: set[str] = set()

        def visit(n: str) -> None:
            if n in done:
                return
            done.add(n)
            for d in self.dependencies(n):
                if d in self.nodes:
                    visit(d)
            order.append(n)

        for name in self.nodes:
            visit(name)
        return order

    def with_derived_probes(self) -> Profile:
        """A proxy without its own readiness probe is probed at the probe path of the node its `/`
        route leads to, so the request goes all the way through and no app logs a 404 for it."""
        def path_of(name: str, seen: frozenset[str]) -> str:
            node = self.nodes[name]
            if "readiness_probe" in node.model_fields_set or not isinstance(node, ProxyNode) or name in seen:
                return node.readiness_probe.http_get.path
            root = next((r.backends for r in node.routes if r.path == "/"), ())
            if not root or root[0] not in self.nodes:  # balanced: the backends serve one app
                return node.readiness_probe.http_get.path
            return path_of(root[0], seen | {name})

        nodes = dict(self.nodes)
        for name, node in self.nodes.items():
            path = path_of(name, frozenset())
            if path != node.readiness_probe.http_get.path:
                probe = node.readiness_probe.model_copy(update={"http_get": HttpGet(path=path)})
                nodes[name] = node.model_copy(update={"readiness_probe": probe})
        if nodes == self.nodes:
            return self
        derived = self.model_copy(update={"nodes": nodes})
        derived._port_offset = self._port_offset
        return derived

    def route_limits(self, name: str, route: Route) -> Limits:
        node = self.nodes[name]
        assert isinstance(node, ProxyNode)
        return route.limits.over(node.limits.over(DEFAULT_LIMITS))

    def mount_prefix(self, name: str) -> str:
        """The prefix that proxies strip before `name` sees a request ('' when none does)."""
        prefixes = {r.prefix for n in self.nodes.values() if isinstance(n, ProxyNode) for r in n.routes
                    if name in r.backends and r.strip_prefix}
        return next(iter(prefixes)) if len(prefixes) == 1 else ""

    def accepted_host_names(self, name: str) -> list[str]:
        """The Host names proxy `name` answers to: loopback names, its own bind address when exposed,
        its server_names, and those of every proxy in front of it (they forward the client's Host)."""
        names = list(LOOPBACK_NAMES)
        seen: set[str] = set()
        todo = [name]
        while todo:
            current = todo.pop()
            if current in seen:
                continue
            seen.add(current)
            node = self.nodes[current]
            if node.is_exposed and not ipaddress.ip_address(node.host).is_unspecified:
                names.append(node.url_host)
            if isinstance(node, ProxyNode):
                names.extend(node.server_names)
            todo.extend(e.source for e in self.edges() if e.target == current)
        return list(dict.fromkeys(names))

    def listens_on_unix(self, name: str) -> bool:
        """Whether app server `name` listens on a Unix socket (its path is the run directory's)."""
        node = self.nodes[name]
        if not isinstance(node, AppServerNode) or node.listen == "tcp":
            return False
        if node.listen == "unix":
            return True
        fronts = {self.nodes[e.source].kind for e in self.edges() if e.target == name}
        return bool(fronts) and fronts <= UNIX_SOCKET_FRONTS and not node.expose

    def kinds(self) -> set[str]:
        """The servers this profile runs: the node kinds, and ``php`` (php-fpm) for a `php: true` route."""
        kinds: set[str] = {n.kind for n in self.nodes.values()}
        if any(isinstance(n, ProxyNode) and any(r.php for r in n.routes) for n in self.nodes.values()):
            kinds.add("php")
        return kinds

    @property
    def port_offset(self) -> int:
        """The offset every port of this (loaded) profile was moved by."""
        return self._port_offset

    def with_port_offset(self, offset: int) -> Profile:
        if offset == 0:
            return self
        nodes = {name: n.model_copy(update={"port": n.port + offset, **_tls_shifted(n, offset)})
                 for name, n in self.nodes.items()}
        shifted = self.model_copy(update={"nodes": nodes})
        shifted._port_offset = self._port_offset + offset
        return shifted

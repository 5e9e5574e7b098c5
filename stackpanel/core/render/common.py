"""What every renderer shares: the run-directory layout, the rendered result, safe quoting."""
from __future__ import annotations

import functools
import grp
import logging
import os
import re
import shlex
import signal
import sys
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

import jinja2

from stackpanel.core.errors import RenderError
from stackpanel.core.profiles.schema import (
    HEADER_VALUE_RE,
    UNSAFE_PATH_CHARS,
    AppServerNode,
    Profile,
    is_server_control_env,
)
from stackpanel.core.tls.ca import LEAF_FILE, LEAF_KEY_FILE

log = logging.getLogger("stackpanel.render")

#: Unprivileged account the servers' workers switch to when stackpanel runs as root.
UNPRIVILEGED_USER = "nobody"


def unprivileged_group() -> str:
    for name in ("nogroup", "nobody"):
        try:
            grp.getgrnam(name)
            return name
        except KeyError:
            continue
    return "nogroup"


def running_as_root() -> bool:
    return hasattr(os, "geteuid") and os.geteuid() == 0


#: A bare config word: addresses (127.0.0.1:8080, [::1]:8080), host names (*.localhost), node names.
_WORD_RE = re.compile(r"^[A-Za-z0-9._:*\[\]-]+$")


def quote(value: object) -> str:
    """Double-quote a string for nginx or Apache, refusing anything that could escape the quotes.

    Every string a template writes goes through this filter (``| q``) or ``word`` below: the
    profile schema already restricts these strings; this is the second, independent guard.
    """
    text = str(value)
    bad = {c for c in text if c in UNSAFE_PATH_CHARS}
    if bad or not text:
        raise RenderError(f"refusing to write {text!r} into a server config: it contains {sorted(bad)}")
    return f'"{text}"'


def prefix_regex(path: object) -> str:
    """A regex (for a quoted Apache argument) matching a URL path prefix at a segment boundary:
    ``/api`` → ``^/api(/|$)``; ``/`` and ``/api/`` end in a slash already.

    The path charset is letters, digits and ``. _ ~ - /``: '.' is the only regex metacharacter,
    written as ``[.]`` because a backslash may not appear in a rendered config.
    """
    text = path_regex(path)
    return f"^{text}" if text.endswith("/") else f"^{text}(/|$)"


def path_regex(path: object) -> str:
    """The path itself as a regex (no anchors): '.' as ``[.]``."""
    return uri(path).replace(".", "[.]")


def uri(path: object) -> str:
    """A schema-validated URL path written inside a quoted URL (``"http://{{ a | word }}{{ p | uri }}"``)."""
    text = str(path)
    if not re.fullmatch(r"/[A-Za-z0-9._~/-]*", text):
        raise RenderError(f"refusing to write {text!r} into a server config: not a URL path")
    return text


def header_value(value: object) -> str:
    """A response header value, written inside double quotes (CSP's quotes and ';' are fine)."""
    text = str(value)
    if not HEADER_VALUE_RE.fullmatch(text):
        raise RenderError(f"refusing to write {text!r} into a server config: not a plain header value")
    return text


def upstream(value: object) -> str:
    """A backend address in an nginx `server` line: host:port as a word, a Unix socket quoted."""
    text = str(value)
    return quote(text) if text.startswith("unix:") else word(text)


def proxy_url(value: object, node: object) -> str:
    """A backend address as an Apache proxy URL (inside double quotes): http://host:port, or
    mod_proxy's unix:/path|http://NODE for a Unix socket (the node's name keeps the workers of
    one balancer apart: Apache shares workers with the same URL)."""
    text = str(value)
    if text.startswith("unix:"):
        quote(text)  # refuses what could end the quoted string
        return f"{text}|http://{word(node)}"
    return "http://" + word(text)


_REGEX_LITERAL = re.compile(r"[\w/:,@=-]")
_REGEX_IN_CLASS = set(".+()* ")


def literal_regex(value: object) -> str:
    """A plain string as a PCRE matching just it, for inside double quotes: a metacharacter is
    written as a class (``.`` → ``[.]``) because a backslash may not appear in a rendered config."""
    out = []
    for c in str(value):
        if _REGEX_LITERAL.fullmatch(c):
            out.append(c)
        elif c in _REGEX_IN_CLASS or c in "[]":
            out.append("[[]" if c == "[" else "[]]" if c == "]" else f"[{c}]")
        else:
            raise RenderError(f"refusing to write {value!r} into a server config as a regex: it contains {c!r}")
    return "".join(out)


def unquoted(value: object) -> str:
    """A path inside a quoted string that carries more than the path (``"proxy:unix:PATH|fcgi://..."``)."""
    return quote(value)[1:-1]


def seconds(value: object) -> int:
    """Whole seconds, at least 1 (both servers take integers here)."""
    return max(1, int(float(str(value))))


def num(value: object) -> str:
    """A number as a person writes it in a comment: 5, 0.5."""
    return f"{float(str(value)):g}"


def word(value: object) -> str:
    """A value written unquoted (``| word``): only characters that cannot end or start a directive."""
    text = str(value)
    if not _WORD_RE.fullmatch(text):
        raise RenderError(f"refusing to write {text!r} into a server config: not a plain address or name")
    return text


@dataclass(frozen=True)
class RunPaths:
    """Layout of a run directory: everything a stack writes stays inside it."""

    root: Path

    @property
    def conf_dir(self) -> Path:
        return self.root / "conf"

    @property
    def logs_dir(self) -> Path:
        return self.root / "logs"

    @property
    def state_dir(self) -> Path:
        return self.root / "run"

    @property
    def tmp_dir(self) -> Path:
        return self.root / "tmp"

    def access_log(self, node: str) -> Path:
        return self.logs_dir / f"{node}.access.log"

    def error_log(self, node: str) -> Path:
        return self.logs_dir / f"{node}.error.log"

    def output_log(self, node: str) -> Path:
        """stdout + stderr of the node's leader process."""
        return self.logs_dir / f"{node}.out.log"

    def websockets_dir(self, node: str) -> Path:
        """One file per worker pid holding its count of open WebSockets (the access wrapper's)."""
        return self.state_dir / f"ws-{node}"

    def tls_dir(self, node: str) -> Path:
        return self.state_dir / f"tls-{node}"

    def unix_socket(self, node: str) -> Path:
        """Where an app server listens when it listens on a Unix socket (`listen: unix`)."""
        return self.state_dir / f"{node}.sock"

    def pid_file(self, node: str) -> Path:
        return self.state_dir / f"{node}.pid"

    def node_tmp(self, node: str) -> Path:
        return self.tmp_dir / node

    @property
    def record_file(self) -> Path:
        return self.root / "processes.json"


@dataclass(frozen=True)
class CertificateRequest:
    """A TLS leaf a node needs: issued (or reused) by RenderedStack.write() from the local CA."""

    names: tuple[str, ...]
    directory: Path

    @property
    def cert(self) -> Path:
        return self.directory / LEAF_FILE

    @property
    def key(self) -> Path:
        return self.directory / LEAF_KEY_FILE


@dataclass(frozen=True)
class RenderedNode:
    """Everything needed to run one node: files to write, the command, and how to signal it."""

    name: str
    kind: str
    argv: tuple[str, ...]
    cwd: Path
    files: Mapping[Path, str]
    access_log: Path
    output_log: Path
    error_log: Path | None = None
    pid_file: Path | None = None
    env: Mapping[str, str] = field(default_factory=dict)
    #: ``nginx -t`` / ``apache2 -t`` for the rendered config; None for app servers.
    config_test_argv: tuple[str, ...] | None = None
    stop_signal: int = signal.SIGTERM
    #: graceful reload (nginx HUP, apache USR1 = graceful, gunicorn HUP); None: restart instead.
    reload_signal: int | None = None
    #: directories to create before the first start.
    dirs: tuple[Path, ...] = ()
    #: of those, the ones the server's unprivileged workers must be able to write.
    writable_dirs: tuple[Path, ...] = ()
    #: the TLS leaf the config refers to (None without tls).
    certificate: CertificateRequest | None = None
    #: where the app's workers count their open WebSockets (None: the tier cannot tell)
    websockets_dir: Path | None = None
    #: the Unix socket the node listens on instead of its TCP port (None: TCP)
    unix_socket: Path | None = None
    #: a process the node owns and runs beside its own (an apache node's php-fpm): started and
    #: probed before it, stopped after it, and a crash of either restarts both
    companion: RenderedNode | None = None
    #: readiness of a process without HTTP of its own (a companion): this Unix socket accepts
    ready_socket: Path | None = None

    def environment(self, inherited: Mapping[str, str]) -> dict[str, str]:
        """The process environment: the inherited one without the variables that would change the
        server's command line behind the profile's back (SERVER_CONTROL_ENV), plus the node's own."""
        return {k: v for k, v in inherited.items() if not is_server_control_env(k)} | dict(self.env)

    @property
    def command_line(self) -> str:
        env = " ".join(f"{k}={shlex.quote(v)}" for k, v in self.env.items())
        cmd = shlex.join(self.argv)
        prefix = f"cd {shlex.quote(str(self.cwd))} && " if self.cwd else ""
        return prefix + (f"env {env} " if env else "") + cmd

    @property
    def config_file(self) -> Path | None:
        return next(iter(self.files), None)

    @property
    def processes(self) -> tuple[RenderedNode, ...]:
        """This node's processes in start order: its companion first."""
        return (self.companion, self) if self.companion is not None else (self,)


#: sun_path's size with its NUL: a longer socket path cannot be bound (Linux 108, BSD/macOS 104).
SUN_PATH_MAX = 104 if sys.platform == "darwin" else 108


def unix_socket_of(profile: Profile, paths: RunPaths, name: str) -> Path | None:
    """The Unix socket node `name` listens on, or None for TCP. `listen: auto` falls back to TCP
    when the run directory's path is too long for a socket; `listen: unix` is then an error."""
    if not profile.listens_on_unix(name):
        return None
    path = paths.unix_socket(name)
    size = len(os.fsencode(path))
    if size < SUN_PATH_MAX:
        return path
    node = profile.nodes[name]
    if isinstance(node, AppServerNode) and node.listen == "unix":
        raise RenderError(f"node {name!r}: the Unix socket {path} is {size} bytes long, over the system's limit of "
                          f"{SUN_PATH_MAX - 1}; use a run directory with a shorter path, or `listen: tcp`")
    log.info("node %s listens on TCP: the socket path %s is over %d bytes", name, path, SUN_PATH_MAX - 1)
    return None


def backend_address(profile: Profile, paths: RunPaths, name: str) -> str:
    """How a proxy reaches node `name`: ``host:port`` or ``unix:/path``."""
    socket = unix_socket_of(profile, paths, name)
    return f"unix:{socket}" if socket is not None else profile.nodes[name].address


@functools.cache
def template_env() -> jinja2.Environment:
    """One environment per process: it caches the compiled templates (~75 ms each to compile)."""
    env = jinja2.Environment(
        loader=jinja2.PackageLoader("stackpanel.core.render", "templates"),
        undefined=jinja2.StrictUndefined,
        autoescape=False,
        trim_blocks=True,
        lstrip_blocks=True,
        keep_trailing_newline=True,
    )
    env.filters["q"] = quote
    env.filters["word"] = word
    env.filters["header_value"] = header_value
    env.filters["seconds"] = seconds
    env.filters["unquoted"] = unquoted
    env.filters["num"] = num
    env.filters["uri"] = uri
    env.filters["prefix_regex"] = prefix_regex
    env.filters["path_regex"] = path_regex
    env.filters["upstream"] = upstream
    env.filters["proxy_url"] = proxy_url
    env.filters["literal_regex"] = literal_regex
    return env

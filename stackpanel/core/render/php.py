"""php-fpm for an apache node's `php: true` routes: a process the node owns (its companion).

Apache hands a route's .php files to the pool over a Unix socket in the run directory
(``SetHandler "proxy:unix:SOCKET|fcgi://localhost"`` inside the directory's own ``<Directory>``),
so only files Apache itself would serve from that directory can run; ``open_basedir`` keeps the
scripts to the same directories.
"""
from __future__ import annotations

import signal
from pathlib import Path

from stackpanel.core.discovery import PhpFpmInfo
from stackpanel.core.errors import RenderError
from stackpanel.core.profiles.schema import ApacheNode
from stackpanel.core.render.common import RenderedNode, RunPaths, template_env

#: sun_path is 108 bytes on Linux (104 on macOS) including the NUL.
MAX_SOCKET_PATH = 103


def php_socket(paths: RunPaths, name: str) -> str:
    socket = str(paths.state_dir / f"{name}.fpm")
    if len(socket.encode()) > MAX_SOCKET_PATH:
        raise RenderError(f"node {name!r}: the php-fpm socket {socket} is longer than a Unix socket path may be "
                          f"({MAX_SOCKET_PATH} bytes); run the stack from a shorter run directory (--run-dir)")
    return socket


def render_php_fpm(name: str, node: ApacheNode, paths: RunPaths, php: PhpFpmInfo, as_root: bool, user: str,
                   group: str) -> RenderedNode:
    conf = paths.conf_dir / f"php-fpm-{name}.conf"
    socket = php_socket(paths, name)
    tmp = paths.node_tmp(f"{name}.php")
    log_name = f"{name}.php"
    text = template_env().get_template("php-fpm.conf.j2").render(
        name=name, node=node, paths=paths, socket=socket, pid_file=paths.pid_file(log_name),
        error_log=paths.error_log(log_name), tmp=tmp, open_basedir=":".join([*node.php_dirs, str(tmp)]),
        shutdown_seconds=max(1, int(node.shutdown.timeout_seconds)), user=user if as_root else None, group=group,
    )
    base = (str(php.path), "--fpm-config", str(conf), "--prefix", str(paths.root))
    return RenderedNode(
        name=log_name, kind="php-fpm", argv=base + ("--nodaemonize", "--force-stderr"), cwd=paths.root,
        files={conf: text}, access_log=paths.access_log(name), output_log=paths.output_log(log_name),
        error_log=paths.error_log(log_name), pid_file=paths.pid_file(log_name), config_test_argv=base + ("-t",),
        # QUIT: graceful (running scripts finish within process_control_timeout); USR2: reload
        stop_signal=signal.SIGQUIT, reload_signal=signal.SIGUSR2,
        dirs=(tmp,), writable_dirs=(tmp,), ready_socket=Path(socket),
    )

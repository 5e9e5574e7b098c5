"""Command lines (and log configs) for the app-server nodes: gunicorn and uvicorn."""
from __future__ import annotations

import json
import signal
from pathlib import Path
from typing import Any

from stackpanel.core import logformat
from stackpanel.core.profiles.schema import AppServerNode, GunicornNode, UvicornNode
from stackpanel.core.render.common import RenderedNode, RunPaths

UVICORN_WORKER_CLASS = "uvicorn_worker.UvicornWorker"
#: Proxies on this machine that may set X-Forwarded-* headers.
TRUSTED_PROXIES = "127.0.0.1,::1"


def _trusted(unix_socket: Path | None) -> str:
    """A connection over a Unix socket has no peer address, so uvicorn would trust none of it:
    trust every peer of the socket, which only this machine can reach (as it can 127.0.0.1)."""
    return TRUSTED_PROXIES if unix_socket is None else "*"


def _seconds(value: float) -> str:
    return str(max(1, int(value)))


def _app_env(node: AppServerNode) -> dict[str, str]:
    # Unbuffered output so the last log lines of a crash are on disk when we read them.
    return {"PYTHONUNBUFFERED": "1", **node.app.env}


def _workdir(node: AppServerNode) -> Path:
    # The loader defaults working_dir to the profile's directory; a bare model falls back to cwd.
    return Path(node.app.working_dir) if node.app.working_dir else Path.cwd()


#: The ASGI wrapper that logs every request with its duration and request id (uvicorn's access
#: log has neither): written into the run's conf dir, importable without stackpanel.
ACCESS_WRAPPER = "stackpanel_access"
_ACCESS_WRAPPER_SOURCE = (Path(__file__).parent / "templates" / f"{ACCESS_WRAPPER}.py").read_text(encoding="utf-8")


def _wrapped(name: str, node: AppServerNode, paths: RunPaths) -> tuple[str, dict[str, str], dict[Path, str]]:
    """(app target, environment, files) that run the node's ASGI app inside the access wrapper."""
    env = {"STACKPANEL_APP": node.app.module, "STACKPANEL_APP_DIR": str(_workdir(node)),
           "STACKPANEL_WS_DIR": str(paths.websockets_dir(name))}
    if isinstance(node, UvicornNode) and node.factory:
        env["STACKPANEL_APP_FACTORY"] = "1"
    return f"{ACCESS_WRAPPER}:app", env, {paths.conf_dir / f"{ACCESS_WRAPPER}.py": _ACCESS_WRAPPER_SOURCE}


def _wrapper_loggers(paths: RunPaths, name: str) -> dict[str, Any]:
    """uvicorn's own access lines off; the wrapper's lines, already formatted, to the access log."""
    return {
        "uvicorn.access": {"handlers": [], "level": "WARNING", "propagate": False},
        "stackpanel.access": {"handlers": ["wrapped_access"], "level": "INFO", "propagate": False},
    }


def _wrapper_handler(paths: RunPaths, name: str) -> dict[str, Any]:
    return {"wrapped_access": {"class": "logging.FileHandler", "filename": str(paths.access_log(name)),
                               "formatter": "plain"}}


def uvicorn_log_config(paths: RunPaths, name: str, wrapped: bool = False) -> dict[str, Any]:
    """dictConfig for uvicorn: access lines in the shared format (pid first) to the access log,
    written by the access wrapper for an ASGI app (`wrapped`), by uvicorn's logger for WSGI."""
    config: dict[str, Any] = {
        "version": 1,
        "disable_existing_loggers": False,
        "formatters": {
            "access": {"()": "uvicorn.logging.AccessFormatter", "fmt": logformat.UVICORN_ACCESS_FORMAT,
                       "use_colors": False},
            "default": {"()": "uvicorn.logging.DefaultFormatter",
                        "fmt": "%(asctime)s [%(process)d] %(levelprefix)s %(message)s", "use_colors": False},
        },
        "handlers": {
            "access": {"class": "logging.FileHandler", "filename": str(paths.access_log(name)),
                       "formatter": "access"},
            "default": {"class": "logging.StreamHandler", "formatter": "default", "stream": "ext://sys.stderr"},
        },
        "loggers": {
            "uvicorn": {"handlers": ["default"], "level": "INFO", "propagate": False},
            "uvicorn.error": {"level": "INFO"},
            "uvicorn.access": {"handlers": ["access"], "level": "INFO", "propagate": False},
        },
    }
    return _with_wrapper(config, paths, name) if wrapped else config


def _with_wrapper(config: dict[str, Any], paths: RunPaths, name: str) -> dict[str, Any]:
    config["formatters"]["plain"] = {"format": "%(message)s"}
    config["handlers"].update(_wrapper_handler(paths, name))
    config["loggers"].update(_wrapper_loggers(paths, name))
    return config


def gunicorn_log_config(paths: RunPaths, name: str, uvicorn_workers: bool) -> dict[str, Any]:
    """dictConfig for gunicorn. Sync workers: gunicorn's access log in the shared format. With
    UvicornWorker, the access wrapper writes the lines and uvicorn's own are off."""
    access_formatter = {"format": logformat.GUNICORN_FORMATTER}
    config: dict[str, Any] = {
        "version": 1,
        "disable_existing_loggers": False,
        "root": {"level": "INFO", "handlers": ["error"]},
        "formatters": {
            "access": access_formatter,
            "generic": {"format": "%(asctime)s [%(process)d] [%(levelname)s] %(message)s"},
        },
        "handlers": {
            "access": {"class": "logging.FileHandler", "filename": str(paths.access_log(name)),
                       "formatter": "access"},
            "error": {"class": "logging.StreamHandler", "formatter": "generic", "stream": "ext://sys.stderr"},
        },
        "loggers": {
            "gunicorn.error": {"level": "INFO", "handlers": ["error"], "propagate": False,
                               "qualname": "gunicorn.error"},
            "gunicorn.access": {"level": "INFO", "handlers": ["access"], "propagate": False,
                                "qualname": "gunicorn.access"},
        },
    }
    if not uvicorn_workers:
        return config
    # UvicornWorker hands gunicorn.access's handlers and level to uvicorn.access: WARNING keeps
    # uvicorn's own lines out (the wrapper writes the access line).
    config["loggers"]["gunicorn.access"]["level"] = "WARNING"
    return _with_wrapper(config, paths, name)


def render_uvicorn(name: str, node: UvicornNode, paths: RunPaths, mount_prefix: str = "",
                   unix_socket: Path | None = None) -> RenderedNode:
    """`mount_prefix`: the prefix a proxy strips in front of this node (its ASGI root_path);
    `unix_socket`: listen there instead of host:port."""
    workdir = _workdir(node)
    log_conf = paths.conf_dir / f"uvicorn-{name}.logging.json"
    wrapped = node.app.interface == "asgi"
    target, wrapper_env, wrapper_files = _wrapped(name, node, paths) if wrapped else (node.app.module, {}, {})
    argv = [
        node.app.interpreter, "-m", "uvicorn", target,
        *(("--uds", str(unix_socket)) if unix_socket else ("--host", node.host, "--port", str(node.port))),
        # the wrapper lives in the conf dir and puts the app's directory on sys.path itself
        "--app-dir", str(paths.conf_dir if wrapped else workdir),
        "--log-config", str(log_conf),
        "--timeout-keep-alive", _seconds(node.keepalive_timeout_seconds),
        "--timeout-graceful-shutdown", _seconds(node.shutdown.timeout_seconds),
        "--proxy-headers", "--forwarded-allow-ips", _trusted(unix_socket),
        "--no-server-header",
    ]
    if node.app.interface == "wsgi":
        argv += ["--interface", "wsgi"]
    root_path = node.root_path or mount_prefix
    if root_path:
        argv += ["--root-path", root_path]
    if node.factory and not wrapped:
        argv += ["--factory"]
    if node.limit_concurrency is not None:
        argv += ["--limit-concurrency", str(node.limit_concurrency)]
    if node.http != "auto":
        argv += ["--http", node.http]
    if node.loop != "auto":
        argv += ["--loop", node.loop]
    if node.reload:
        argv += ["--reload", "--reload-dir", str(workdir)]
    elif node.workers > 1:
        argv += ["--workers", str(node.workers)]
    argv += node.args
    return RenderedNode(
        name=name, kind="uvicorn", argv=tuple(argv), cwd=workdir,
        files={log_conf: json.dumps(uvicorn_log_config(paths, name, wrapped), indent=2) + "\n", **wrapper_files},
        access_log=paths.access_log(name), output_log=paths.output_log(name),
        env=_app_env(node) | wrapper_env, stop_signal=signal.SIGTERM,
        websockets_dir=paths.websockets_dir(name) if wrapped else None, unix_socket=unix_socket,
        dirs=(paths.websockets_dir(name),) if wrapped else (),
        # uvicorn has no graceful reload; --workers N restarts workers on HUP only since 0.29
        reload_signal=None,
    )


def render_gunicorn(name: str, node: GunicornNode, paths: RunPaths, unix_socket: Path | None = None) -> RenderedNode:
    """A stripped prefix reaches a WSGI app as X-Forwarded-Prefix only: gunicorn's SCRIPT_NAME
    would refuse every request that does not carry the prefix (the readiness probe's). Apps read
    it with werkzeug's ProxyFix(x_prefix=1) or Django's FORCE_SCRIPT_NAME."""
    workdir = _workdir(node)
    uvicorn_workers = node.effective_worker_class == "uvicorn"
    log_conf = paths.conf_dir / f"gunicorn-{name}.logging.json"
    # Without --config gunicorn executes a gunicorn.conf.py found in the app's directory, which
    # could rebind, daemonize or add hooks behind the profile's back: pin an empty one.
    py_conf = paths.conf_dir / f"gunicorn-{name}.conf.py"
    target, wrapper_env, wrapper_files = _wrapped(name, node, paths) if uvicorn_workers else (node.app.module, {}, {})
    argv = [
        node.app.interpreter, "-m", "gunicorn", target,
        "--config", str(py_conf),
        "--bind", f"unix:{unix_socket}" if unix_socket else node.address,
        "--workers", str(node.workers),
        "--worker-class", UVICORN_WORKER_CLASS if uvicorn_workers else "sync",
        "--chdir", str(workdir),
        "--pid", str(paths.pid_file(name)),
        # gunicorn ≥ 27 opens a control socket in ~/.gunicorn by default: two stacks would collide.
        "--control-socket", str(paths.state_dir / f"gunicorn-{name}.ctl"),
        "--log-config-json", str(log_conf),
        "--timeout", _seconds(node.timeout_seconds),
        "--graceful-timeout", _seconds(node.shutdown.timeout_seconds),
        "--keep-alive", _seconds(node.keepalive_timeout_seconds),
        "--forwarded-allow-ips", _trusted(unix_socket),
    ]
    if uvicorn_workers:
        argv += ["--pythonpath", str(paths.conf_dir)]  # the access wrapper
    else:
        argv += ["--access-logformat", logformat.GUNICORN_ACCESS_FORMAT]
        if node.threads > 1:
            argv += ["--threads", str(node.threads)]
    if node.preload:
        argv += ["--preload"]
    if node.max_requests:
        argv += ["--max-requests", str(node.max_requests), "--max-requests-jitter", str(node.max_requests_jitter)]
    argv += node.args
    return RenderedNode(
        name=name, kind="gunicorn", argv=tuple(argv), cwd=workdir,
        files={log_conf: json.dumps(gunicorn_log_config(paths, name, uvicorn_workers), indent=2) + "\n",
               py_conf: "# Rendered by stackpanel: every setting is on the command line. Edit the profile.\n",
               **wrapper_files},
        access_log=paths.access_log(name), output_log=paths.output_log(name),
        pid_file=paths.pid_file(name), env=_app_env(node) | wrapper_env,
        websockets_dir=paths.websockets_dir(name) if uvicorn_workers else None, unix_socket=unix_socket,
        dirs=(paths.websockets_dir(name),) if uvicorn_workers else (),
        stop_signal=signal.SIGTERM, reload_signal=signal.SIGHUP,
    )

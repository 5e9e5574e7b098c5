"""`stackpanel export process-compose`: the vocabulary borrowed from process-compose, handed back.

process-compose runs local processes, like stackpanel itself, so this export renders the configs
into a real run directory (next to the file by default) and points each process at them.

Unlike stackpanel's supervisor, process-compose passes its own environment on: a
GUNICORN_CMD_ARGS or UVICORN_* set in the shell that runs it reaches the servers (stackpanel
removes those, see schema.SERVER_CONTROL_ENV). The file's header says so.

An apache node's php-fpm (its companion, for `php: true` routes) becomes a process of its own,
``NODE-php-fpm``, which the node depends on: healthy once its FastCGI socket accepts.
"""
from __future__ import annotations

import shlex
import sys
from pathlib import Path
from typing import Any

import yaml

from stackpanel.core.export.common import ExportError, over_tcp
from stackpanel.core.profiles.schema import NodeBase, Profile
from stackpanel.core.render import RenderedNode, render_stack

#: process-compose's names for the restart policies (src/types/process.go).
RESTART = {"no": "no", "on-failure": "on_failure", "always": "always"}


#: Connects to a Unix socket (process-compose's probes speak HTTP over TCP, or run a command).
_UNIX_CONNECT = "import socket, sys; socket.socket(socket.AF_UNIX).connect(sys.argv[1])"


def _companion(rendered: RenderedNode, owner: NodeBase) -> dict[str, Any]:
    """php-fpm as its own process, probed at its socket with this interpreter (the export is for this
    machine: it points at a run directory rendered here)."""
    assert rendered.ready_socket is not None
    return {
        "command": shlex.join(rendered.argv),
        "working_dir": str(rendered.cwd),
        "log_location": str(rendered.output_log),
        "readiness_probe": {"exec": {"command": shlex.join([sys.executable, "-c", _UNIX_CONNECT,
                                                             str(rendered.ready_socket)])},
                            "period_seconds": 1, "timeout_seconds": 2, "failure_threshold": 30},
        **_policies(rendered, owner),
    }


def _policies(rendered: RenderedNode, node: NodeBase) -> dict[str, Any]:
    """Restart and shutdown: the node's own (a companion lives and dies with its node)."""
    avail = node.availability
    return {"availability": {"restart": RESTART[avail.restart], "backoff_seconds": max(1, round(avail.backoff_seconds)),
                             "max_restarts": avail.max_restarts},
            "shutdown": {"signal": int(rendered.stop_signal),
                         "timeout_seconds": max(1, round(node.stop_deadline_seconds))}}


def process_compose_document(profile: Profile, run_dir: Path) -> dict[str, Any]:
    profile = over_tcp(profile)
    stack = render_stack(profile, run_dir)
    stack.write()
    processes: dict[str, Any] = {}
    for name, rendered in stack.nodes.items():
        node = profile.nodes[name]
        probe = node.readiness_probe
        proc: dict[str, Any] = {
            "command": shlex.join(rendered.argv),
            "working_dir": str(rendered.cwd),
            "log_location": str(rendered.output_log),
        }
        if rendered.env:
            proc["environment"] = [f"{k}={v}" for k, v in rendered.env.items()]
        deps = [d for d in profile.dependencies(name) if d in profile.nodes]
        if rendered.companion is not None:
            companion = f"{name}-{rendered.companion.kind}"
            if companion in profile.nodes:
                raise ExportError(f"node {companion!r} has the name the export gives {name}'s "
                                  f"{rendered.companion.kind}: rename it")
            processes[companion] = _companion(rendered.companion, node)
            deps.append(companion)
        if deps:
            proc["depends_on"] = {d: {"condition": "process_healthy"} for d in deps}
        # process-compose has no tcp_socket probe: bash's /dev/tcp connects (exec probes run in bash)
        check: dict[str, Any] = (
            {"exec": {"command": f"exec 3<>/dev/tcp/{node.host}/{node.port}"}} if probe.tcp_socket is not None
            else {"http_get": {"host": node.host, "scheme": "http", "path": probe.http_get.path, "port": node.port}})
        proc["readiness_probe"] = {
            **check,
            # process-compose takes whole seconds; the supervisor's 50 ms polling becomes 1 s.
            "initial_delay_seconds": int(probe.initial_delay_seconds),
            "period_seconds": max(1, round(probe.period_seconds)),
            "timeout_seconds": max(1, min(5, int(probe.timeout_seconds))),
            "failure_threshold": max(1, int(probe.timeout_seconds / max(1.0, probe.period_seconds))),
        }
        proc.update(_policies(rendered, node))
        processes[name] = proc
    return {"version": "0.5", "log_level": "info", "processes": processes}


def export_process_compose(profile: Profile, file: Path, *, run_dir: Path | None = None) -> Path:
    """Write `file` and render the configs into `run_dir` (default: ``<file's dir>/stackpanel-run``).
    Returns the run dir."""
    file = Path(file)
    run = Path(run_dir) if run_dir is not None else file.parent / "stackpanel-run"
    doc = process_compose_document(profile, run)
    file.parent.mkdir(parents=True, exist_ok=True)
    header = (f"# {profile.name}: exported by stackpanel; configs rendered into {run}.\n"
              f"# Run: process-compose -f {file.name} up\n"
              "# from a shell without GUNICORN_CMD_ARGS, WEB_CONCURRENCY or UVICORN_* (the servers would read them).\n")
    file.write_text(header + yaml.safe_dump(doc, sort_keys=False, width=1000, allow_unicode=True), encoding="utf-8")
    return run

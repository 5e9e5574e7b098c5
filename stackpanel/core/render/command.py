"""A command node: any program that listens on a port, run as the profile's argv list.

Nothing of the profile is reinterpreted: the argv is the list as written (a leading ``python``
becomes the node's interpreter), no shell runs it, and where to listen reaches the program as
``HOST`` and ``PORT`` (so ``--port-offset`` moves it too) rather than through its arguments.
"""
from __future__ import annotations

import signal
from pathlib import Path

from stackpanel.core.profiles.schema import CommandNode
from stackpanel.core.render.common import RenderedNode, RunPaths


def render_command(name: str, node: CommandNode, paths: RunPaths) -> RenderedNode:
    workdir = Path(node.working_dir) if node.working_dir else Path.cwd()
    env = {"PYTHONUNBUFFERED": "1", **node.env, "HOST": node.host, "PORT": str(node.port)}
    return RenderedNode(
        name=name, kind="command", argv=tuple(node.argv), cwd=workdir, files={},
        # a command writes no access log of ours: the file stays empty and its edge shows no rate
        access_log=paths.access_log(name), output_log=paths.output_log(name),
        env=env, stop_signal=signal.SIGTERM, reload_signal=None,
    )

"""A command node (#13.9) in the panel: a node of the graph like the servers, a route target, its
output in the log view."""
from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from stackpanel.core.profiles.loader import load_profile_text
from stackpanel.core.render import render_stack
from stackpanel.qt.graph_view import GraphView
from stackpanel.qt.log_view import sources_for

pytestmark = pytest.mark.gui

PROFILE = """\
version: 1
name: commands
nodes:
  edge: {kind: nginx, port: 18080, routes: [{path: /, to: main}]}
  main: {kind: command, port: 18000, command: [python, main.py], depends_on: [db]}
  db: {kind: command, port: 18005, command: [python, db.py], readiness_probe: {tcp_socket: {}}}
"""


def test_command_nodes_are_drawn_routed_to_and_logged(qtbot: Any, tmp_path: Path) -> None:
    profile = load_profile_text(PROFILE, tmp_path / "p.yaml")
    view = GraphView()
    qtbot.addWidget(view)
    view.set_profile(profile)
    assert set(view.nodes) == {"edge", "main", "db"} and view.nodes["main"].kind == "command"
    assert view.edge("client", "edge") is not None and view.edge("edge", "main") is not None
    sources = {(s.node, s.stream): s.path for s in sources_for(render_stack(profile, tmp_path / "run"))}
    assert sources[("main", "out")] == tmp_path / "run" / "logs" / "main.out.log"
    assert ("db", "out") in sources and ("main", "access") not in sources  # a command logs no access lines of ours

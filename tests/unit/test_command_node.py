"""The command node kind (#13.9) in profiles: an argv list, never a shell string; the same env rules
as app nodes; located errors with what to write instead."""
from __future__ import annotations

import sys
import textwrap
from pathlib import Path

import pytest

from stackpanel.core.errors import ProfileError
from stackpanel.core.profiles.loader import load_profile
from stackpanel.core.profiles.schema import CommandNode
from stackpanel.core.render import render_stack

BASE = """\
version: 1
name: commands
nodes:
  edge:
    kind: nginx
    port: 18080
    routes: [{path: /, to: main}]
  main:
    kind: command
    port: 18000
    command: [python, main.py]
"""


def load(text: str, tmp_path: Path):
    path = tmp_path / "p.yaml"
    path.write_text(textwrap.dedent(text))
    return load_profile(path)


def problem(text: str, tmp_path: Path) -> tuple[int, str, str]:
    with pytest.raises(ProfileError) as info:
        load(text, tmp_path)
    assert str(tmp_path / "p.yaml") in str(info.value)  # located: file:line:col
    first = info.value.problems[0]
    return first.line, first.message, first.hint


def test_a_command_runs_its_list_with_the_nodes_python_and_learns_where_to_listen(tmp_path: Path) -> None:
    profile = load(BASE, tmp_path)
    node = profile.nodes["main"]
    assert isinstance(node, CommandNode) and node.argv == [sys.executable, "main.py"]
    stack = render_stack(profile.with_port_offset(7), tmp_path / "run")
    main = stack.nodes["main"]
    assert main.argv == (sys.executable, "main.py") and main.cwd == tmp_path and main.kind == "command"
    assert main.env["HOST"] == "127.0.0.1" and main.env["PORT"] == "18007"  # moves with the offset
    assert "server 127.0.0.1:18007 max_fails=0;" in next(iter(stack.nodes["edge"].files.values()))  # a route target


def test_a_venv_next_to_the_command_is_its_python(tmp_path: Path) -> None:
    venv_python = tmp_path / ".venv" / "bin" / "python"
    venv_python.parent.mkdir(parents=True)
    venv_python.symlink_to(sys.executable)
    assert load(BASE, tmp_path).nodes["main"].argv == [str(venv_python), "main.py"]  # the link, not its target


def test_a_shell_string_is_refused_with_the_list_to_write(tmp_path: Path) -> None:
    line, message, _ = problem(BASE.replace("[python, main.py]", '"python main.py; rm -rf ~"'), tmp_path)
    assert line == 11 and "never a shell string" in message and "command: [python, main.py]" in message


@pytest.mark.parametrize(("env", "words"), [
    ("{GUNICORN_CMD_ARGS: --daemon}", "change their command line"),
    ("{UVICORN_PORT: '1'}", "change their command line"),
    ("{PORT: '9'}", "set by stackpanel from the node's host and port"),
    ("{'A B': x}", "must match"),
])
def test_env_follows_the_app_node_rules(tmp_path: Path, env: str, words: str) -> None:
    _, message, _ = problem(BASE + f"    env: {env}\n", tmp_path)
    assert words in message


def test_a_program_that_is_not_there_is_named(tmp_path: Path) -> None:
    line, message, hint = problem(BASE.replace("[python, main.py]", "[no-such-program-xyz, --port, '1']"), tmp_path)
    assert line == 11 and "'no-such-program-xyz' is not on PATH" in message and "install it" in hint
    _, message, _ = problem(BASE.replace("[python, main.py]", "[./server]"), tmp_path)
    assert "'./server' is not an executable file" in message


def test_workers_and_a_stray_python_are_refused(tmp_path: Path) -> None:
    _, message, _ = problem(BASE + "    workers: 2\n", tmp_path)
    assert "runs one process" in message
    _, message, _ = problem(BASE.replace("[python, main.py]", "[redis-server]") + "    python: /usr/bin/python3\n",
                            tmp_path)
    assert "python: applies to a command that starts with `python`" in message


def test_a_database_next_to_the_app_is_reached_through_depends_on(tmp_path: Path) -> None:
    text = BASE + "    depends_on: [db]\n  db:\n    kind: command\n    port: 18005\n    command: [python, db.py]\n" \
        "    readiness_probe: {tcp_socket: {}}\n"
    profile = load(text, tmp_path)
    assert profile.entry == "edge" and profile.start_order().index("db") < profile.start_order().index("main")
    _, message, _ = problem(text.replace("readiness_probe: {tcp_socket: {}}",
                                         "readiness_probe: {tcp_socket: {}, http_get: {path: /}}"), tmp_path)
    assert "http_get or tcp_socket, not both" in message


def test_a_compose_export_says_it_cannot_package_a_command(tmp_path: Path) -> None:
    from stackpanel.core.export import export
    from stackpanel.core.export.common import ExportError

    with pytest.raises(ExportError) as info:
        export(load(BASE, tmp_path), "compose", tmp_path / "out", "p")
    assert "node 'main' is a command node" in str(info.value) and "systemd" in str(info.value)


def test_a_systemd_export_probes_a_tcp_node_with_a_connect(tmp_path: Path) -> None:
    from stackpanel.core.export.systemd import export_systemd

    text = BASE + "    readiness_probe: {tcp_socket: {}}\n"
    plan = export_systemd(load(text, tmp_path), "p")
    unit = next(body for rel, body in plan.files.items() if rel.endswith(".service") and "main" in rel)
    assert '"tcp://127.0.0.1:18000" 30' in unit and "ExecStart=" in unit



def test_the_editor_adds_a_command_node_behind_a_proxy(tmp_path: Path) -> None:
    from stackpanel.core.profiles.edit import DEMO_COMMAND, ProfileDocument
    from stackpanel.core.profiles.loader import load_profile_text

    doc = ProfileDocument(BASE)
    name = doc.add_node("command", behind="edge")
    profile = load_profile_text(doc.text, tmp_path / "p.yaml")
    node = profile.nodes[name]
    assert name == "cmd" and isinstance(node, CommandNode) and tuple(node.command) == DEMO_COMMAND
    assert node.port == 9000 and any(r.to == name for r in profile.nodes["edge"].routes)
    assert "command: [python, -m, stackpanel.apps.listen_demo]" in doc.text

"""The listening sockets the supervisor holds and hands to the servers (#18.4): command lines and
environments per server, binds and conflicts. Loopback sockets only; no server is started."""
from __future__ import annotations

import os
import socket
import stat
import subprocess
from pathlib import Path

import pytest

from stackpanel.core.profiles.library import builtin_dir
from stackpanel.core.profiles.loader import load_profile
from stackpanel.core.profiles.schema import AppServerNode
from stackpanel.core.render import render_stack
from stackpanel.core.supervise.ports import free_port_offset
from stackpanel.core.supervise.sockets import Address, ListeningSockets, bound_name, listener_owner_problem
from stackpanel.core.supervise.spawner import SuperviseError
from tests.unit.test_render import APACHE, NGINX


def _stack(name: str, tmp_path: Path, tcp: bool = True):
    """A built-in stack on free ports; ``tcp``: its app servers on loopback TCP (behind nginx they
    default to a Unix socket)."""
    profile = load_profile(builtin_dir() / f"{name}.yaml")
    ports = [p for n in profile.nodes.values() for _h, p in n.listen_addresses]
    profile = load_profile(builtin_dir() / f"{name}.yaml", port_offset=free_port_offset(ports))
    if tcp:
        profile = profile.model_copy(update={"nodes": {
            n: node.model_copy(update={"listen": "tcp"}) if isinstance(node, AppServerNode) else node
            for n, node in profile.nodes.items()}})
    return render_stack(profile, tmp_path / "run", nginx=NGINX, apache=APACHE)


def _addresses(stack, name: str) -> list[Address]:
    """What the supervisor passes: its socket file for a node on a Unix socket, else its TCP listeners."""
    socket_path = stack.nodes[name].unix_socket
    return [socket_path] if socket_path else stack.profile.nodes[name].listen_addresses


@pytest.fixture
def sockets():
    held = ListeningSockets()
    yield held
    held.close()


def test_uvicorn_gets_fd_instead_of_host_and_port(tmp_path: Path, sockets: ListeningSockets) -> None:
    stack = _stack("nginx-uvicorn", tmp_path)
    app = stack.nodes["app"]
    assert sockets.bind([(app, _addresses(stack, "app"))]) == []
    launch = sockets.launch(app, _addresses(stack, "app"), {"A": "1"})
    (fd,) = launch.pass_fds
    assert "--host" not in launch.argv and "--port" not in launch.argv
    i = launch.argv.index("--fd")
    assert launch.argv[i + 1] == str(fd)
    # nothing else moved: the rendered command line without the two pairs, --fd N in --host's place
    host = app.argv.index("--host")
    assert launch.argv[:i] == app.argv[:host] and launch.argv[i + 2:] == app.argv[host + 4:]
    assert launch.env == {"A": "1"}
    assert socket.socket(fileno=os.dup(fd)).getsockname() == ("127.0.0.1", stack.profile.nodes["app"].port)


def test_gunicorn_binds_fd_and_nginx_inherits_every_listener(tmp_path: Path, sockets: ListeningSockets) -> None:
    stack = _stack("nginx-gunicorn-uvicorn", tmp_path)
    nodes = [(stack.nodes[n], _addresses(stack, n)) for n in ("web", "app")]
    assert sockets.bind(nodes) == []
    app = sockets.launch(stack.nodes["app"], _addresses(stack, "app"), {})
    assert app.argv[app.argv.index("--bind") + 1] == f"fd://{app.pass_fds[0]}"
    assert app.argv.count("--bind") == 1
    web = sockets.launch(stack.nodes["web"], _addresses(stack, "web"), {"PATH": "/bin"})
    assert web.argv == stack.nodes["web"].argv  # nginx's listen directives name the same addresses
    assert web.env == {"PATH": "/bin", "NGINX": "".join(f"{fd};" for fd in web.pass_fds)}


def test_tls_proxy_hands_over_both_listeners(tmp_path: Path, sockets: ListeningSockets) -> None:
    stack = _stack("nginx-tls-uvicorn", tmp_path)
    web = stack.nodes["web"]
    assert sockets.bind([(web, _addresses(stack, "web"))]) == []
    launch = sockets.launch(web, _addresses(stack, "web"), {})
    assert len(launch.pass_fds) == 2 and launch.env["NGINX"].count(";") == 2


def test_apache_keeps_its_own_bind(tmp_path: Path, sockets: ListeningSockets) -> None:
    stack = _stack("apache-uvicorn", tmp_path)
    web = stack.nodes["web"]
    assert sockets.bind([(web, _addresses(stack, "web"))]) == []
    assert sockets.held == ()  # only checked: Apache binds it
    launch = sockets.launch(web, _addresses(stack, "web"), {"X": "y"})
    assert launch.argv == web.argv and launch.pass_fds == () and "NGINX" not in launch.env


def test_a_taken_port_is_a_conflict_naming_the_holder_and_nothing_stays_bound(
        tmp_path: Path, sockets: ListeningSockets) -> None:
    stack = _stack("nginx-gunicorn-uvicorn", tmp_path)
    web_port = stack.profile.nodes["web"].port
    with socket.create_server(("127.0.0.1", web_port)):
        conflicts = sockets.bind([(stack.nodes[n], _addresses(stack, n)) for n in ("app", "web")], offset=20)
    assert [c.port for c in conflicts] == [web_port]
    assert f"taken by pid {os.getpid()}" in conflicts[0].message and "--port-offset 120" in conflicts[0].remedy
    assert sockets.held == ()  # the app's socket, bound first, was let go again


@pytest.mark.parametrize(("profile", "option", "value"), [("nginx-uvicorn", "--fd", "{fd}"),
                                                       ("nginx-gunicorn-uvicorn", "--bind", "fd://{fd}")])
def test_an_app_server_on_a_unix_socket_takes_ours(tmp_path: Path, sockets: ListeningSockets, profile: str,
                                                   option: str, value: str) -> None:
    stack = _stack(profile, tmp_path, tcp=False)
    app = stack.nodes["app"]
    path = app.unix_socket
    assert path is not None  # listen: auto behind nginx
    assert sockets.bind([(app, _addresses(stack, "app"))]) == [] and sockets.held == (path,)
    launch = sockets.launch(app, _addresses(stack, "app"), {})
    (fd,) = launch.pass_fds
    assert launch.argv[launch.argv.index(option) + 1] == value.format(fd=fd)
    assert str(path) not in " ".join(launch.argv) and "--uds" not in launch.argv
    assert stat.S_IMODE(path.stat().st_mode) == 0o666  # nginx's workers run as another user
    listener = socket.socket(fileno=os.dup(fd))
    with listener:
        assert listener.getsockname() == str(bound_name(path))
        # gunicorn unlinks the name it was handed when it stops: the public one still connects
        bound_name(path).unlink()
        with socket.socket(socket.AF_UNIX) as client:
            client.connect(str(path))
            listener.accept()[0].close()
        # the next start gets the name back, to unlink in its turn
        sockets.launch(app, _addresses(stack, "app"), {})
        assert os.path.samefile(bound_name(path), path)
    sockets.release([path])
    assert not os.path.lexists(path) and not os.path.lexists(bound_name(path))


def test_a_stale_socket_file_goes_and_a_live_one_is_named(tmp_path: Path, sockets: ListeningSockets) -> None:
    stack = _stack("nginx-uvicorn", tmp_path, tcp=False)
    app = stack.nodes["app"]
    assert app.unix_socket is not None
    app.unix_socket.parent.mkdir(parents=True, exist_ok=True)
    with socket.socket(socket.AF_UNIX) as dead:  # a killed run's file: nothing listens on it
        dead.bind(str(app.unix_socket))
    assert sockets.bind([(app, _addresses(stack, "app"))]) == [] and sockets.held == (app.unix_socket,)
    sockets.release([app.unix_socket])
    with socket.socket(socket.AF_UNIX) as live:
        live.bind(str(app.unix_socket))
        live.listen()
        with pytest.raises(SuperviseError, match="another process listens on"):
            sockets.bind([(app, _addresses(stack, "app"))])
    assert sockets.held == ()


def test_handoff_off_keeps_every_command_line(tmp_path: Path) -> None:
    stack = _stack("nginx-gunicorn-uvicorn", tmp_path)
    off = ListeningSockets(enabled=False)
    assert off.bind([(stack.nodes[n], _addresses(stack, n)) for n in ("app", "web")]) == []
    assert off.held == ()
    for n in ("app", "web"):
        assert off.launch(stack.nodes[n], _addresses(stack, n), {}).argv == stack.nodes[n].argv


def test_a_missing_option_is_our_bug_said_plainly(tmp_path: Path, sockets: ListeningSockets) -> None:
    import dataclasses

    stack = _stack("nginx-gunicorn-uvicorn", tmp_path)
    app = stack.nodes["app"]
    assert sockets.bind([(app, _addresses(stack, "app"))]) == []
    broken = dataclasses.replace(app, argv=tuple(a for a in app.argv if a != "--bind"))
    with pytest.raises(SuperviseError, match="no --bind in its command line"):
        sockets.launch(broken, _addresses(stack, "app"), {})


def test_a_listener_of_another_process_is_named() -> None:
    other = subprocess.Popen(["sleep", "30"])  # a node whose process tree does not hold the socket
    try:
        with socket.create_server(("127.0.0.1", 0)) as s:
            port = s.getsockname()[1]
            assert listener_owner_problem("127.0.0.1", port, os.getpid()) is None  # ours
            problem = listener_owner_problem("127.0.0.1", port, other.pid)
    finally:
        other.kill()
        other.wait()
    assert problem is not None and f"held by pid {os.getpid()}" in problem


def test_connections_accepted_on_a_held_socket_have_nodelay(tmp_path: Path, sockets: ListeningSockets) -> None:
    """uvicorn --fd under uvloop never sets TCP_NODELAY itself (the socket looks AF_UNIX to it): the
    accepted connections must inherit it from ours, or two-part responses wait for a delayed ACK."""
    stack = _stack("uvicorn-workers", tmp_path)
    app = stack.nodes["app"]
    assert sockets.bind([(app, _addresses(stack, "app"))]) == []
    (fd,) = sockets.launch(app, _addresses(stack, "app"), {}).pass_fds
    listener = socket.socket(fileno=os.dup(fd))
    with listener, socket.create_connection(listener.getsockname()):
        accepted, _ = listener.accept()
        with accepted:
            assert accepted.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY) != 0

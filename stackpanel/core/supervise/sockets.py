"""The supervisor owns the listening sockets and hands them to the servers (issue #18.4).

systemd socket activation's trick: the socket is bound and listening in stackpanel, and each
server start gets a copy of it. When a master crashes, the kernel keeps queueing connections in
the socket's backlog (stackpanel still holds it), and the restarted master serves them: a crash
refuses no connection. Binding here also closes the gap between "is the port free?" and the
server's own bind: a taken port fails at our bind, and its holder is named as before.

How each server takes a socket (the fd number is the parent's: ``pass_fds`` keeps numbers, and
clears CLOEXEC on them in the child only):

* uvicorn: ``--fd N`` instead of ``--host/--port`` (``--workers N`` shares it too);
* gunicorn: ``--bind fd://N`` instead of ``--bind HOST:PORT`` (``LISTEN_FDS`` would need
  ``LISTEN_PID`` = gunicorn's own pid, unknown before the fork);
* nginx: ``NGINX="N;M;"``, the variable of its binary upgrade; 1.22 takes it in a fresh master
  too and uses every inherited socket whose address a ``listen`` directive names.
* an app server on a Unix socket (`listen: unix`, the default behind nginx) takes it the same way
  (``--fd N`` for ``--uds PATH``, ``fd://N`` for ``unix:PATH``). We bind it under a hidden name and
  hard-link the public one to it: a gunicorn that stops unlinks the name it was handed
  (getsockname) and the public name, the one nginx connects to, stays. Connections follow the inode.
* Apache httpd has no way to take an inherited socket (Debian's build has no systemd socket
  activation): it binds its own port after our port check, as before, and its readiness probe
  counts only when the answering socket is its own (see :func:`listener_owner_problem`).

``SERVER_CONTROL_ENV`` still refuses ``NGINX``/``LISTEN_*`` in profiles and strips them from the
inherited environment: only the supervisor sets them, here.
"""
from __future__ import annotations

import errno
import os
import socket
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import psutil

from stackpanel.core.render import RenderedNode
from stackpanel.core.supervise.ports import (
    PortConflict,
    check_ports_free,
    clear_stale_socket,
    conflict_for,
    find_port_holders,
)
from stackpanel.core.supervise.spawner import SuperviseError

__all__ = ["BACKLOG", "HANDOFF_KINDS", "Address", "Launch", "ListeningSockets", "SocketPathError", "bound_name",
           "listener_owner_problem"]

#: The servers that can take a socket from us. Apache is not one (see the module docstring).
HANDOFF_KINDS = frozenset({"uvicorn", "gunicorn", "nginx"})
#: Held while no server listens (a crashed master): the kernel caps it at net.core.somaxconn
#: (4096 here). The servers set their own backlog when they start.
BACKLOG = 4096

#: A TCP listener (host, port) or a Unix socket's path.
Address = tuple[str, int] | Path


class SocketPathError(SuperviseError):
    """A node's Unix socket path cannot be used (another process listens there, a file in the way)."""

    def __init__(self, node: str, message: str) -> None:
        super().__init__(message)
        self.node = node
#: What a Unix socket file gets, as uvicorn's own --uds sets it: nginx's workers run as another user.
UNIX_SOCKET_MODE = 0o666


@dataclass(frozen=True)
class Launch:
    """How to start one node: its command line and environment with the sockets handed over."""

    argv: tuple[str, ...]
    env: dict[str, str]
    pass_fds: tuple[int, ...] = ()


def _bind(host: str, port: int) -> socket.socket:
    family = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0][0]
    # create_server: SO_REUSEADDR (as the servers set it) and IPV6_V6ONLY for "::1"; CLOEXEC by
    # default (Python sockets are not inheritable): only a pass_fds child gets a copy.
    sock = socket.create_server((host, port), family=family, backlog=BACKLOG)
    # Accepted connections inherit it on Linux. uvicorn rebuilds an --fd socket as AF_UNIX, so
    # uvloop serves it as a Unix socket and never sets TCP_NODELAY: every keep-alive response
    # written in two parts then waited 44 ms for a delayed ACK (0.3 ms with this; measured).
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return sock


def bound_name(path: Path) -> Path:
    """The hidden name a Unix socket is bound under (shorter than ``path``: it fits wherever
    ``path`` does)."""
    return path.with_name(f".{path.stem}.h")


def _bind_unix(path: Path) -> socket.socket:
    problem = clear_stale_socket(path)  # a killed run's file goes; a live listener is named
    if problem is not None:
        raise SuperviseError(problem)
    hidden = bound_name(path)
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)  # bound before the run's files are written
        hidden.unlink(missing_ok=True)  # a killed run's: the run lock says nobody else uses this directory
        sock.bind(str(hidden))
        os.chmod(hidden, UNIX_SOCKET_MODE)
        sock.listen(BACKLOG)
        os.link(hidden, path)
    except OSError as exc:
        sock.close()
        hidden.unlink(missing_ok=True)
        raise SuperviseError(f"cannot listen on {path}: {exc.strerror or exc}") from None
    return sock


def _relink(path: Path) -> None:
    """The hidden name again if a stopped gunicorn unlinked it: the next one unlinks it too when it
    stops, and a name already gone would fail that stop."""
    hidden = bound_name(path)
    if not os.path.lexists(hidden):
        try:
            os.link(path, hidden)
        except OSError as exc:
            raise SuperviseError(f"cannot restore {hidden}: {exc.strerror or exc}") from None


def _close(address: Address, sock: socket.socket) -> None:
    sock.close()
    if isinstance(address, Path):  # refused from now on, and no file left for the next bind
        address.unlink(missing_ok=True)
        bound_name(address).unlink(missing_ok=True)


def _replace_option(argv: Sequence[str], option: str, new: tuple[str, str],
                    drop: Sequence[str] = ()) -> tuple[str, ...]:
    """``argv`` with the first ``option VALUE`` replaced by the pair ``new`` and every option in
    ``drop`` removed with its value. No ``option`` at all is a bug of ours (the renderer wrote it)."""
    out: list[str] = []
    replaced = skip = False
    for i, arg in enumerate(argv):
        if skip:
            skip = False
        elif i + 1 < len(argv) and ((arg == option and not replaced) or arg in drop):
            out += new if arg == option else ()
            replaced = replaced or arg == option
            skip = True
        else:
            out.append(arg)
    if not replaced:
        raise SuperviseError(f"cannot hand a socket to {argv[0]!r}: no {option} in its command line")
    return tuple(out)


class ListeningSockets:
    """The listening sockets of one run, keyed by address: bound before the first start of a
    node, held across its crashes and restarts, closed when it is stopped.

    ``enabled=False`` keeps the old path for every node (the servers bind, after a port check):
    the benchmarks compare both. Thread-safety: the supervisor calls it under its action lock.
    """

    def __init__(self, *, enabled: bool = True) -> None:
        self.kinds = HANDOFF_KINDS if enabled else frozenset()
        self._held: dict[Address, socket.socket] = {}

    def hands_off(self, node: RenderedNode) -> bool:
        return node.kind in self.kinds

    def bind(self, nodes: Iterable[tuple[RenderedNode, Sequence[Address]]], offset: int = 0) -> list[PortConflict]:
        """Bind every address of the nodes that take a socket, port-check the others. Returns the
        conflicts (naming each holder); on any conflict nothing stays bound by this call. A Unix
        socket path that cannot be used raises SocketPathError, naming the node and why."""
        conflicts: list[PortConflict] = []
        checked: list[tuple[str, int]] = []
        bound: list[Address] = []
        try:
            for node, addresses in nodes:
                for address in addresses:
                    if address in self._held:
                        continue
                    if isinstance(address, Path):
                        if self.hands_off(node):  # else the server binds it (and clears a stale file)
                            try:
                                self._held[address] = _bind_unix(address)
                            except SuperviseError as exc:
                                raise SocketPathError(node.name, str(exc)) from None
                            bound.append(address)
                    elif not self.hands_off(node):
                        checked.append(address)
                    else:
                        try:
                            self._held[address] = _bind(*address)
                            bound.append(address)
                        except socket.gaierror as exc:
                            conflicts.append(conflict_for(*address, OSError(errno.EADDRNOTAVAIL, str(exc)), offset))
                        except OSError as exc:
                            conflicts.append(conflict_for(*address, exc, offset))
            conflicts += check_ports_free(checked, offset=offset)
        except BaseException:
            self.release(bound)
            raise
        if conflicts:
            self.release(bound)
        return conflicts

    def release(self, addresses: Iterable[Address]) -> None:
        for address in addresses:
            sock = self._held.pop(address, None)
            if sock is not None:
                _close(address, sock)

    def close(self) -> None:
        self.release(list(self._held))

    @property
    def held(self) -> tuple[Address, ...]:
        return tuple(self._held)

    def holds(self, address: Address) -> bool:
        return address in self._held

    def launch(self, node: RenderedNode, addresses: Sequence[Address], env: Mapping[str, str]) -> Launch:
        """The node's command line and environment, with its held sockets handed over. No addresses
        (a companion process) or no handoff: it binds its own, as before."""
        if not self.hands_off(node) or not addresses:
            return Launch(node.argv, dict(env))
        missing = [a for a in addresses if a not in self._held]
        if missing:
            where = missing[0] if isinstance(missing[0], Path) else f"{missing[0][0]}:{missing[0][1]}"
            raise SuperviseError(f"{node.name}: no listening socket held for {where}")
        fds = tuple(self._held[a].fileno() for a in addresses)
        if isinstance(addresses[0], Path):
            _relink(addresses[0])
        if node.kind == "uvicorn":
            if isinstance(addresses[0], Path):
                return Launch(_replace_option(node.argv, "--uds", ("--fd", str(fds[0]))), dict(env), fds[:1])
            argv = _replace_option(node.argv, "--host", ("--fd", str(fds[0])), drop=("--port",))
            return Launch(argv, dict(env), fds[:1])
        if node.kind == "gunicorn":
            return Launch(_replace_option(node.argv, "--bind", ("--bind", f"fd://{fds[0]}")), dict(env), fds[:1])
        # nginx: one inherited socket per listen address (plain, tls); the config's listen
        # directives name the same addresses, so it binds none itself
        return Launch(node.argv, {**env, "NGINX": "".join(f"{fd};" for fd in fds)}, fds)


def listener_owner_problem(host: str, port: int, pid: int) -> str | None:
    """For a node that binds its own port: None when the socket listening on ``host:port`` belongs
    to process ``pid`` or one of its descendants (or nobody can tell), else what a person reads:
    which process answered instead. Costs a walk of every socket (psutil.net_connections)."""
    holders = find_port_holders(host, port)
    if not holders:
        return None  # not visible (another user's, or just gone): the probe alone decides
    try:
        leader = psutil.Process(pid)
        ours = {pid} | {p.pid for p in leader.children(recursive=True)}
    except psutil.Error:
        ours = {pid}
    if any(h.pid in ours for h in holders):
        return None
    return (f"port {port} on {host} answered, but it is held by {holders[0].describe()}, not by this node's "
            f"processes; stop that process or move the stack with --port-offset N")

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
* an app server on a Unix socket (`listen: unix`, the default behind nginx) binds its socket file
  itself, as before: a crash there refuses connections while it restarts (handing over an AF_UNIX
  socket would work the same way; not done yet).
* Apache httpd has no way to take an inherited socket (Debian's build has no systemd socket
  activation): it binds its own port after our port check, as before, and its readiness probe
  counts only when the answering socket is its own (see :func:`listener_owner_problem`).

``SERVER_CONTROL_ENV`` still refuses ``NGINX``/``LISTEN_*`` in profiles and strips them from the
inherited environment: only the supervisor sets them, here.
"""
from __future__ import annotations

import errno
import socket
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

import psutil

from stackpanel.core.render import RenderedNode
from stackpanel.core.supervise.ports import PortConflict, check_ports_free, conflict_for, find_port_holders
from stackpanel.core.supervise.spawner import SuperviseError

__all__ = ["BACKLOG", "HANDOFF_KINDS", "Launch", "ListeningSockets", "listener_owner_problem"]

#: The servers that can take a socket from us. Apache is not one (see the module docstring).
HANDOFF_KINDS = frozenset({"uvicorn", "gunicorn", "nginx"})
#: Held while no server listens (a crashed master): the kernel caps it at net.core.somaxconn
#: (4096 here). The servers set their own backlog when they start.
BACKLOG = 4096

Address = tuple[str, int]


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
        conflicts (naming each holder); on any conflict nothing stays bound by this call."""
        conflicts: list[PortConflict] = []
        checked: list[Address] = []
        bound: list[Address] = []
        for node, addresses in nodes:
            for address in addresses:
                if not self.hands_off(node):
                    checked.append(address)
                    continue
                if address in self._held:
                    continue
                try:
                    self._held[address] = _bind(*address)
                    bound.append(address)
                except socket.gaierror as exc:
                    conflicts.append(conflict_for(*address, OSError(errno.EADDRNOTAVAIL, str(exc)), offset))
                except OSError as exc:
                    conflicts.append(conflict_for(*address, exc, offset))
        conflicts += check_ports_free(checked, offset=offset)
        if conflicts:
            self.release(bound)
        return conflicts

    def release(self, addresses: Iterable[Address]) -> None:
        for address in addresses:
            sock = self._held.pop(address, None)
            if sock is not None:
                sock.close()

    def close(self) -> None:
        self.release(list(self._held))

    @property
    def held(self) -> tuple[Address, ...]:
        return tuple(self._held)

    def launch(self, node: RenderedNode, addresses: Sequence[Address], env: Mapping[str, str]) -> Launch:
        """The node's command line and environment, with its held sockets handed over. No addresses
        (an app server on a Unix socket, a companion process): it binds its own, as before."""
        if not self.hands_off(node) or not addresses or node.unix_socket is not None:
            return Launch(node.argv, dict(env))
        missing = [a for a in addresses if a not in self._held]
        if missing:
            raise SuperviseError(f"{node.name}: no listening socket held for {missing[0][0]}:{missing[0][1]}")
        fds = tuple(self._held[a].fileno() for a in addresses)
        if node.kind == "uvicorn":
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

"""Who holds a TCP port, and are the ports a stack needs free? (And a Unix socket's file.)

``check_ports_free`` first tries to bind each address the way servers do (``SO_REUSEADDR``),
which is fast and exact; only for addresses that fail does it look up the holders with
``psutil.net_connections`` (slower: it walks every process's file descriptors).
All functions are thread-safe and do blocking I/O: keep them off a GUI thread.
"""

from __future__ import annotations

import errno
import ipaddress
import logging
import os
import random
import socket
import stat
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import psutil

from stackpanel.core.supervise.spawner import SuperviseError

log = logging.getLogger("stackpanel.supervise")

__all__ = [
    "PortConflict",
    "PortHolder",
    "check_ports_free",
    "clear_stale_socket",
    "conflict_for",
    "find_port_holders",
    "wait_ports_free",
]

_WILDCARDS_V4 = {"0.0.0.0"}
_WILDCARDS_V6 = {"::"}
_MAX_CMDLINE = 200


@dataclass(frozen=True)
class PortHolder:
    """A process with a listening socket on the port. ``pid`` is None when we may not see it."""

    pid: int | None
    name: str
    cmdline: str
    user: str
    local_address: str

    def describe(self) -> str:
        if self.pid is None:
            return "a process stackpanel is not allowed to see (owned by another user; try as root)"
        return f'pid {self.pid} ({self.name}: "{self.cmdline}")'


@dataclass(frozen=True)
class PortConflict:
    """An address that cannot be bound: ``message`` says why/who, ``remedy`` what to do."""

    host: str
    port: int
    holders: tuple[PortHolder, ...]
    errno: int | None
    message: str
    remedy: str

    def __str__(self) -> str:
        return f"{self.message}; {self.remedy}"


def _resolve(host: str) -> set[str]:
    """Numeric IPs ``host`` stands for ('localhost' -> 127.0.0.1 and ::1)."""
    try:
        return {str(ipaddress.ip_address(host))}
    except ValueError:
        pass
    try:
        infos = socket.getaddrinfo(host, None, type=socket.SOCK_STREAM)
    except socket.gaierror:
        return {host}
    return {str(ipaddress.ip_address(str(info[4][0]).split("%")[0])) for info in infos}


def _matches(listen_ip: str, wanted: set[str]) -> bool:
    ip = listen_ip.split("%", maxsplit=1)[0]
    if ip in wanted:
        return True
    if ip.startswith("::ffff:") and ip[7:] in wanted:
        return True
    # A wildcard bind blocks every address of its family (and '::' usually IPv4 too).
    if ip in _WILDCARDS_V4 and any(":" not in w for w in wanted):
        return True
    if ip in _WILDCARDS_V6:
        return True
    # Binding the wildcard ourselves is blocked by any specific listener.
    return bool(wanted & (_WILDCARDS_V4 | _WILDCARDS_V6))


def _holder(pid: int | None, addr: str) -> PortHolder:
    if pid is None:
        return PortHolder(None, "?", "", "?", addr)
    try:
        p = psutil.Process(pid)
        with p.oneshot():
            name = p.name()
            try:
                # one line: nginx pads its process title, `python -c` scripts carry newlines
                cmd = " ".join(" ".join(p.cmdline()).split())
            except psutil.Error:
                cmd = ""
            try:
                user = p.username()
            except (psutil.Error, KeyError):
                user = "?"
    except psutil.Error:
        return PortHolder(pid, "?", "", "?", addr)
    if len(cmd) > _MAX_CMDLINE:
        cmd = cmd[: _MAX_CMDLINE - 1] + "…"
    return PortHolder(pid, name, cmd or name, user, addr)


def _family_of(pid: int) -> list[int]:
    """``pid`` plus the processes sharing its listening socket, the parent ("master") first.

    psutil reports one pid per socket even when a master and its workers all hold it, and
    which one is arbitrary (for nginx usually a worker).  Walk up to the topmost ancestor with
    the same name in the same process group, then add its same-name children in that group.
    """
    try:
        proc = psutil.Process(pid)
        name, pgid = proc.name(), os.getpgid(pid)
        while True:
            parent = proc.parent()
            if parent is None or parent.pid <= 1 or parent.name() != name:
                break
            if os.getpgid(parent.pid) != pgid:
                break
            proc = parent
        family = [proc.pid]
        for child in proc.children(recursive=True):
            try:
                if child.name() == name and os.getpgid(child.pid) == pgid:
                    family.append(child.pid)
            except (psutil.Error, OSError):
                continue
        return family
    except (psutil.Error, OSError):
        return [pid]


def find_port_holders(host: str, port: int) -> list[PortHolder]:
    """Processes LISTENing on ``port`` at ``host`` (or at a wildcard address covering it).

    The first entry is the process to stop (e.g. the nginx master); workers sharing its
    socket follow.  Pids of other users' processes are only visible to root; they appear
    with ``pid=None``.
    """
    wanted = _resolve(host)
    seen: dict[int | None, PortHolder] = {}
    try:
        conns = psutil.net_connections(kind="tcp")
    except psutil.AccessDenied:  # pragma: no cover - macOS without root
        log.warning("not allowed to list sockets; cannot tell who holds port %d", port)
        return []
    for c in conns:
        if c.status != psutil.CONN_LISTEN or not c.laddr or c.laddr.port != port:
            continue
        if not _matches(c.laddr.ip, wanted):
            continue
        addr = f"{c.laddr.ip}:{c.laddr.port}"
        for pid in _family_of(c.pid) if c.pid is not None else [None]:
            if pid not in seen:
                seen[pid] = _holder(pid, addr)
    return list(seen.values())


def _try_bind(host: str, port: int) -> OSError | None:
    try:
        infos = socket.getaddrinfo(host, port, family=socket.AF_UNSPEC, type=socket.SOCK_STREAM)
        family, _, _, _, sockaddr = infos[0]
    except socket.gaierror as exc:
        return OSError(errno.EADDRNOTAVAIL, f"cannot resolve {host!r}: {exc}")
    s = socket.socket(family, socket.SOCK_STREAM)
    try:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        s.bind(sockaddr)
        return None
    except OSError as exc:
        return exc
    finally:
        s.close()


def _conflict(host: str, port: int, err: OSError, offset: int = 0) -> PortConflict:
    code = err.errno
    # the offset in use moves with the suggestion: at --port-offset 4600 the next try is 4700, not 100
    remedy = (f"stop it, or move the whole stack with --port-offset N (e.g. --port-offset {offset + 100} "
              f"-> {port + 100})")
    if code == errno.EADDRINUSE:
        holders = tuple(find_port_holders(host, port))
        if holders:
            first = holders[0]
            msg = f"port {port} on {host} is taken by {first.describe()}"
            others = [str(h.pid) for h in holders[1:] if h.pid is not None]
            if others:
                msg += f" (with {len(others)} more of its processes: {', '.join(others)})"
        else:
            msg = (
                f"port {port} on {host} is in use, but no process is listening on it "
                "(a socket bound without listening, another network namespace, or it was just released)"
            )
            remedy = f"retry in a moment, check `ss -tanp 'sport = :{port}'`, or use --port-offset N"
        return PortConflict(host, port, holders, code, msg, remedy)
    if code == errno.EACCES:
        msg = f"port {port} on {host} needs privileges to bind (ports below 1024 are reserved for root)"
        remedy = "use a port of 1024 or above (e.g. --port-offset N), or run as root"
    elif code == errno.EADDRNOTAVAIL:
        msg = f"{host} is not an address of this machine, so port {port} cannot be bound there"
        remedy = "use 127.0.0.1 (or ::1) in the profile"
    else:
        msg = f"cannot bind port {port} on {host}: {err.strerror or err}"
        remedy = "check the address in the profile"
    return PortConflict(host, port, (), code, msg, remedy)


def conflict_for(host: str, port: int, err: OSError, offset: int = 0) -> PortConflict:
    """The conflict a failed bind of ``host:port`` means (naming the holder), for binds made elsewhere."""
    return _conflict(host, port, err, offset)


def check_ports_free(addrs: Iterable[tuple[str, int]], offset: int = 0) -> list[PortConflict]:
    """Try to bind each ``(host, port)``; return a conflict (naming the holder) per failure.
    ``offset``: the port offset the addresses already carry (for the suggested next one)."""
    conflicts: list[PortConflict] = []
    for host, port in addrs:
        err = _try_bind(host, port)
        if err is not None:
            conflicts.append(_conflict(host, port, err, offset))
    return conflicts


def wait_ports_free(
    addrs: Sequence[tuple[str, int]], timeout: float, *, interval: float = 0.05
) -> list[PortConflict]:
    """Wait until every address can be bound; return the conflicts still left at ``timeout``.

    Cheap bind attempts while waiting; holders are looked up only for the final answer.
    """
    deadline = time.monotonic() + timeout
    pending = list(addrs)
    while True:
        pending = [(h, p) for h, p in pending if _try_bind(h, p) is not None]
        if not pending:
            return []
        if time.monotonic() >= deadline:
            return check_ports_free(pending)
        time.sleep(interval)


# --------------------------------------------------------------------------- free port offsets

#: Random offsets keep listening ports in [PORT_FLOOR, first ephemeral port), so that no outgoing
#: connection (the load generator's, a proxy's) can be handed one of them by the kernel.
PORT_FLOOR = 10_000


def _ephemeral_floor() -> int:
    try:
        with open("/proc/sys/net/ipv4/ip_local_port_range", encoding="ascii") as f:
            return int(f.read().split()[0])
    except (OSError, ValueError, IndexError):
        return 32768


def _bindable(port: int, host: str) -> bool:
    with socket.socket() as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((host, port))
        except OSError:
            return False
    return True


def free_port_offset(ports: Iterable[int], *, step: int = 10, smallest: bool = False, host: str = "127.0.0.1",
                     rng: random.Random | None = None) -> int:
    """An offset under which every one of ``ports`` can be bound on ``host`` right now.

    ``smallest``: the smallest positive multiple of ``step`` (what a person would pick after a port
    conflict). Otherwise a random one between PORT_FLOOR and the ephemeral range, so that parallel
    test runs and comparisons rarely pick the same. The supervisor still checks the ports before it
    starts anything; this only makes a collision unlikely. Raises SuperviseError when none is free.
    """
    wanted = sorted(set(ports))
    if not wanted:
        return 0
    if smallest:
        candidates = [k * step for k in range(1, (65535 - wanted[-1]) // step + 1)]
    else:
        ceiling = _ephemeral_floor() - 1
        lo, hi = max(0, PORT_FLOOR - wanted[0]), ceiling - wanted[-1]
        if hi <= lo:  # high ports already: any free spot above them
            lo, hi = 0, max(0, 65535 - wanted[-1])
        candidates = list(range(lo - lo % step + step, hi, step)) or [0]
        (rng or random.Random()).shuffle(candidates)
    for offset in candidates[:500]:
        if all(_bindable(p + offset, host) for p in wanted):
            return offset
    raise SuperviseError(f"no free port offset found for ports {wanted}; free some loopback ports and retry")


def clear_stale_socket(path: Path) -> str | None:
    """Remove a Unix socket file nothing listens on any more (a killed server leaves it behind and
    would then fail to bind). Returns why the path cannot be used, or None when it is free."""
    if not os.path.lexists(path):
        return None
    if not stat.S_ISSOCK(os.lstat(path).st_mode):
        return f"{path} exists and is not a socket: remove it"
    probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        probe.settimeout(1.0)
        probe.connect(str(path))
    except (ConnectionRefusedError, FileNotFoundError):
        os.unlink(path)
        log.info("removed the stale socket %s", path)
        return None
    except OSError as exc:
        return f"cannot check the socket {path}: {exc}"
    finally:
        probe.close()
    return f"another process listens on {path}: stop it (or the stackpanel that runs it) first"

"""Cross-node rules of a profile, as small named validators run after the schema.

Each validator returns problems located through the SourceMap; none of them launches anything.
"""
from __future__ import annotations

import ipaddress
import os
from collections.abc import Callable
from pathlib import Path

from stackpanel.core.errors import ProfileProblem
from stackpanel.core.fsutil import is_dir, is_file
from stackpanel.core.profiles.schema import ApacheNode, AppServerNode, Profile, ProxyNode
from stackpanel.core.profiles.sourcemap import SourceMap
from stackpanel.core.tls import name_problem


def _is_wildcard(host: str) -> bool:
    return ipaddress.ip_address(host).is_unspecified


def check_ports(profile: Profile, smap: SourceMap, port_offset: int) -> list[ProfileProblem]:
    problems: list[ProfileProblem] = []
    seen: dict[int, list[tuple[str, str]]] = {}
    is_root = hasattr(os, "geteuid") and os.geteuid() == 0
    ports: list[tuple[str, tuple[str, ...], int, str]] = [
        (name, ("nodes", name, "port"), node.port, node.host) for name, node in profile.nodes.items()]
    ports += [(name, ("nodes", name, "tls", "port"), node.tls.port, node.host) for name, node in profile.nodes.items()
              if isinstance(node, ProxyNode) and node.tls is not None]
    for name, loc, base_port, host in ports:
        port = base_port + port_offset
        shifted = f" (port {base_port} + offset {port_offset})" if port_offset else ""
        if not 1 <= port <= 65535:
            problems.append(smap.problem(loc, f"port {port}{shifted} is outside 1..65535",
                                         "use a smaller --port-offset"))
            continue
        for other, other_host in seen.get(port, []):
            if other_host == host or _is_wildcard(other_host) or _is_wildcard(host):
                problems.append(smap.problem(loc, f"port {port}{shifted} is already used by node {other!r}",
                                             "give every node (and every tls listener) its own port"))
        seen.setdefault(port, []).append((name, host))
        if port < 1024 and not is_root:
            problems.append(smap.problem(loc, f"port {port}{shifted} is privileged and needs root",
                                         f"use a port of 1024 or above, e.g. {port + 8000}"))
    return problems


def check_exposure(profile: Profile, smap: SourceMap, port_offset: int) -> list[ProfileProblem]:
    """Loopback unless the node says `expose: true` (exposure_warnings() then tells the user)."""
    problems: list[ProfileProblem] = []
    for name, node in profile.nodes.items():
        if node.is_exposed and not node.expose:
            where = "every network interface" if _is_wildcard(node.host) else "the network"
            problems.append(smap.problem(("nodes", name, "host"),
                                         f"host {node.host} listens on {where}: other machines could reach this node",
                                         "use 127.0.0.1 (or ::1), or add `expose: true` to this node if you mean it"))
    return problems


def check_edge_features(profile: Profile, smap: SourceMap, port_offset: int) -> list[ProfileProblem]:
    """What one server cannot do, and prefixes that cannot be mounted."""
    problems: list[ProfileProblem] = []
    prefixes: dict[str, set[str]] = {}
    for name, node in profile.nodes.items():
        if not isinstance(node, ProxyNode):
            continue
        if node.tls is not None:
            for i, server_name in enumerate(node.server_names):
                why = name_problem(server_name)
                if why:
                    problems.append(smap.problem(("nodes", name, "server_names", i),
                                                 f"no local certificate can name {server_name!r}: {why}"))
        if isinstance(node, ApacheNode) and node.limits.rate_limit is not None:
            problems.append(smap.problem(("nodes", name, "limits", "rate_limit"), _APACHE_RATE,
                                         _APACHE_RATE_FIX, prefer_key=True))
        for i, route in enumerate(node.routes):
            loc = ("nodes", name, "routes", i)
            if isinstance(node, ApacheNode) and route.limits.rate_limit is not None:
                problems.append(smap.problem(loc + ("limits", "rate_limit"), _APACHE_RATE, _APACHE_RATE_FIX,
                                             prefer_key=True))
            if route.php and not isinstance(node, ApacheNode):
                problems.append(smap.problem(loc + ("php",), f"{node.kind} does not run PHP: `php: true` needs "
                                             "an apache node (it hands .php files to php-fpm)",
                                             "serve this directory from an apache node (a route of this node "
                                             "`to:` it), or remove `php: true`", prefer_key=True))
            if route.strip_prefix:
                for backend in route.backends:
                    if backend in profile.nodes:
                        prefixes.setdefault(backend, set()).add(route.prefix)
    for target, found in prefixes.items():
        if len(found) > 1:
            shown = ", ".join(sorted(found))
            problems.append(smap.problem(("nodes", target), f"routes strip different prefixes ({shown}) "
                                         f"before node {target!r}: an app is mounted at one prefix",
                                         "strip one prefix, or give each prefix its own app node", prefer_key=True))
    return problems


#: (proxy kind, method) → what to write instead.
_UNSUPPORTED_BALANCE = {
    ("apache", "ip_hash"): "Apache has no client-address hash; write `balance: sticky` (a cookie pins each "
                           "client to one backend)",
    ("nginx", "sticky"): "nginx (open source) has no cookie stickiness; write `balance: ip_hash` (one client "
                         "address, one backend)",
}


def check_balancing(profile: Profile, smap: SourceMap, port_offset: int) -> list[ProfileProblem]:
    """A balancing method or health setting the proxy kind cannot render."""
    problems: list[ProfileProblem] = []
    for name, node in profile.nodes.items():
        if not isinstance(node, ProxyNode):
            continue
        for i, route in enumerate(node.routes):
            loc = ("nodes", name, "routes", i)
            fix = _UNSUPPORTED_BALANCE.get((node.kind, route.balance_method))
            if fix is not None:
                problems.append(smap.problem(loc + ("balance",), f"{node.kind} cannot balance with "
                                             f"{route.balance_method!r}", fix))
            if isinstance(node, ApacheNode) and route.max_fails is not None:
                problems.append(smap.problem(loc + ("max_fails",), "Apache takes a backend out at its first "
                                             "failed connection: it has no failure count",
                                             "remove max_fails (fail_timeout_seconds sets how long it stays out)",
                                             prefer_key=True))
    return problems


def check_unix_sockets(profile: Profile, smap: SourceMap, port_offset: int) -> list[ProfileProblem]:
    """A Unix socket is for a node that only proxies on this machine reach."""
    problems: list[ProfileProblem] = []
    for name, node in profile.nodes.items():
        if not isinstance(node, AppServerNode) or node.listen != "unix":
            continue
        if name == profile.entry:
            problems.append(smap.problem(("nodes", name, "listen"), f"node {name!r} is the entry: clients reach it "
                                         "over TCP, not a Unix socket", "write `listen: tcp` (or put a proxy in "
                                         "front)"))
        elif node.expose:
            problems.append(smap.problem(("nodes", name, "listen"), f"node {name!r} is exposed, but a Unix socket "
                                         "is not reachable from the network", "write `listen: tcp`, or remove "
                                         "`expose: true`"))
    return problems


_APACHE_RATE = "Apache has no request-rate limit (mod_ratelimit limits bandwidth, not requests)"
_APACHE_RATE_FIX = "put an nginx node in front with the rate_limit, or remove it here"


def check_references(profile: Profile, smap: SourceMap, port_offset: int) -> list[ProfileProblem]:
    problems: list[ProfileProblem] = []
    names = list(profile.nodes)
    for name, node in profile.nodes.items():
        if isinstance(node, ProxyNode):
            for i, route in enumerate(node.routes):
                seen: set[str] = set()
                for j, backend in enumerate(route.backends):
                    loc: tuple[str | int, ...] = ("nodes", name, "routes", i, "to")
                    loc += (j,) if route.is_balanced else ()
                    if backend not in profile.nodes:
                        problems.append(smap.problem(loc, f"route {route.path!r} goes to unknown node {backend!r}",
                                                     f"use one of: {', '.join(names)}"))
                    elif backend == name:
                        problems.append(smap.problem(loc, f"node {name!r} routes to itself",
                                                     "route to a backend node instead"))
                    elif backend in seen:
                        problems.append(smap.problem(loc, f"route {route.path!r} lists node {backend!r} twice",
                                                     "name each backend once"))
                    elif route.is_balanced and not isinstance(profile.nodes[backend], AppServerNode):
                        problems.append(smap.problem(loc, f"route {route.path!r} balances over {backend!r}, a "
                                                     f"{profile.nodes[backend].kind} proxy: a balanced route goes "
                                                     "to app servers", "list gunicorn or uvicorn nodes here, or "
                                                     f"write `to: {backend}` alone"))
                    seen.add(backend)
        for i, dep in enumerate(node.depends_on):
            if dep not in profile.nodes:
                problems.append(smap.problem(("nodes", name, "depends_on", i),
                                             f"depends_on names unknown node {dep!r}",
                                             f"use one of: {', '.join(names)}"))
    return problems


def check_cycles(profile: Profile, smap: SourceMap, port_offset: int) -> list[ProfileProblem]:
    state: dict[str, int] = {}  # 1 = on the stack, 2 = done
    stack: list[str] = []

    def visit(n: str) -> list[str] | None:
        state[n] = 1
        stack.append(n)
        for d in profile.dependencies(n):
            if d not in profile.nodes or d == n:
                continue
            if state.get(d) == 1:
                return stack[stack.index(d):] + [d]
            if d not in state:
                found = visit(d)
                if found:
                    return found
        stack.pop()
        state[n] = 2
        return None

    for name in profile.nodes:
        if name not in state:
            cycle = visit(name)
            if cycle:
                return [smap.problem(("nodes", cycle[0]), "the request path loops: " + " → ".join(cycle),
                                     "a request must flow one way, from the entry node to the app", prefer_key=True)]
    return []


def check_reachability(profile: Profile, smap: SourceMap, port_offset: int) -> list[ProfileProblem]:
    targets = {e.target for e in profile.edges()}
    entries = [n for n in profile.nodes if n not in targets]
    if len(entries) <= 1:
        return []
    entry = entries[0]
    return [
        smap.problem(("nodes", n), f"node {n!r} is not reached by any route (the entry node is {entry!r})",
                     f"add a route to it under node {entry!r}, or remove it", prefer_key=True)
        for n in entries[1:]
    ]


def check_paths_and_modules(profile: Profile, smap: SourceMap, port_offset: int) -> list[ProfileProblem]:
    from stackpanel.core.discovery import module_importable

    problems: list[ProfileProblem] = []
    for name, node in profile.nodes.items():
        if isinstance(node, ProxyNode):
            for i, route in enumerate(node.routes):
                if route.static is not None and not is_dir(route.static):
                    problems.append(smap.problem(("nodes", name, "routes", i, "static"),
                                                 f"static directory {route.static} does not exist",
                                                 "create it, or point `static:` at an existing directory "
                                                 "(relative paths are relative to the profile file)"))
        if isinstance(node, AppServerNode):
            app = node.app
            loc = ("nodes", name, "app")
            if app.working_dir is not None and not is_dir(app.working_dir):
                problems.append(smap.problem(loc + ("working_dir",), f"working_dir {app.working_dir} does not exist",
                                             "point it at the directory that holds your app"))
                continue
            if not is_file(app.interpreter):
                problems.append(smap.problem(loc + ("python",), f"no Python interpreter at {app.interpreter}",
                                             "give the interpreter (…/bin/python) or the venv directory"))
                continue
            module = app.module.split(":", 1)[0]
            workdir = app.working_dir or os.getcwd()
            if not module_importable(Path(app.interpreter), module, Path(workdir)):
                problems.append(smap.problem(loc + ("module",),
                                             f"module {module!r} cannot be found by {app.interpreter} "
                                             f"(working directory {workdir})",
                                             "check the spelling, set app.working_dir to the directory that "
                                             "contains it, or app.python to the venv where it is installed"))
    return problems


Validator = Callable[[Profile, SourceMap, int], list[ProfileProblem]]
#: Cheap structural rules first; the file-system checks only run when those pass.
STRUCTURE_VALIDATORS: tuple[Validator, ...] = (check_ports, check_exposure, check_references, check_cycles,
                                               check_reachability, check_edge_features, check_balancing,
                                               check_unix_sockets)


#: The rules that look at one node at a time (file checks last): they hold for any subset of the
#: nodes, so they run on the nodes the schema accepts while others still fail it.
NODE_VALIDATORS: tuple[Validator, ...] = (check_ports, check_exposure, check_edge_features, check_paths_and_modules)


def validate_profile(profile: Profile, smap: SourceMap, port_offset: int = 0,
                     check_files: bool = True, collect_all: bool = False) -> list[ProfileProblem]:
    """The cross-node rules. By default the file-system checks wait until the structure is right;
    `collect_all` runs them too (an editor shows every problem at once)."""
    problems: list[ProfileProblem] = []
    references_broken = False
    for validator in STRUCTURE_VALIDATORS:
        if references_broken and validator in (check_cycles, check_reachability):
            continue  # they need valid references
        found = validator(profile, smap, port_offset)
        problems.extend(found)
        if validator is check_references and found:
            if not collect_all:
                break
            references_broken = True
    if check_files and (collect_all or not problems):
        problems.extend(check_paths_and_modules(profile, smap, port_offset))
    return problems

"""Render a whole profile into a run directory."""
from __future__ import annotations

import os
import shutil
from dataclasses import dataclass
from pathlib import Path

from stackpanel.core import discovery
from stackpanel.core.errors import RenderError
from stackpanel.core.profiles.schema import ApacheNode, GunicornNode, NginxNode, Profile, UvicornNode
from stackpanel.core.render.appservers import render_gunicorn, render_uvicorn
from stackpanel.core.render.common import (
    UNPRIVILEGED_USER,
    RenderedNode,
    RunPaths,
    running_as_root,
    unix_socket_of,
    unprivileged_group,
)
from stackpanel.core.render.proxies import render_apache, render_nginx
from stackpanel.core.tls import issue_leaf


@dataclass(frozen=True)
class RenderedStack:
    profile: Profile
    paths: RunPaths
    nodes: dict[str, RenderedNode]  # in start order: backends first
    as_root: bool

    def write(self) -> None:
        """Create the run directory and write every file; safe to call again (re-render)."""
        p = self.paths
        for d in (p.root, p.conf_dir, p.logs_dir, p.state_dir, p.tmp_dir):
            d.mkdir(parents=True, exist_ok=True)
        # Workers that dropped root (nginx, apache children) must reach files inside the run dir.
        if self.as_root:
            _make_traversable(p.root)
        for node in (proc for n in self.nodes.values() for proc in n.processes):
            for d in node.dirs:
                d.mkdir(parents=True, exist_ok=True)
            for d in node.writable_dirs:
                if self.as_root:
                    shutil.chown(d, UNPRIVILEGED_USER, unprivileged_group())
            if node.certificate is not None:
                issue_leaf(node.certificate.names, node.certificate.directory)
            for path, text in node.files.items():
                tmp = path.with_name(path.name + ".tmp")
                tmp.write_text(text, encoding="utf-8")
                os.replace(tmp, path)


def _make_traversable(path: Path) -> None:
    """o+x on the run dir and its parents (only where missing) so an unprivileged worker can reach it."""
    for d in [path, *path.parents]:
        try:
            mode = d.stat().st_mode
            if not mode & 0o001:
                d.chmod(mode | 0o001)
        except OSError:
            break


def _check_app_servers(profile: Profile) -> None:
    """Each app-server node's interpreter must have its server package (and uvicorn-worker)."""
    for name, node in profile.nodes.items():
        if not isinstance(node, GunicornNode | UvicornNode):
            continue
        wanted: list[discovery.Kind] = [node.kind]
        if isinstance(node, GunicornNode) and node.effective_worker_class == "uvicorn":
            wanted += ["uvicorn", "uvicorn_worker"]
        env = discovery.python_env(node.app.interpreter)
        if not env.found:
            raise RenderError(f"node {name!r}: cannot run {node.app.interpreter}: {env.error}")
        for kind in wanted:
            if env.package_version(kind) is None:
                raise RenderError(f"node {name!r} needs {kind.replace('_', '-')} in {node.app.interpreter}; "
                                  f"install it with: {discovery.install_hint(kind, python=node.app.interpreter)}")


def render_stack(profile: Profile, run_dir: Path, *, as_root: bool | None = None,
                 nginx: discovery.NginxInfo | None = None,
                 apache: discovery.ApacheInfo | None = None,
                 php: discovery.PhpFpmInfo | None = None) -> RenderedStack:
    """Render every node. nginx/apache are discovered when not given; missing ones raise RenderError
    with the install command."""
    paths = RunPaths(Path(run_dir).resolve())
    root = running_as_root() if as_root is None else as_root
    user, group = UNPRIVILEGED_USER, unprivileged_group()
    kinds = profile.kinds()
    if "nginx" in kinds and nginx is None:
        nginx = discovery.find_nginx()
        if nginx is None:
            raise RenderError(f"this profile needs nginx, which is not installed: {discovery.install_hint('nginx')}")
    if "apache" in kinds and apache is None:
        apache = discovery.find_apache()
        if apache is None:
            raise RenderError(f"this profile needs Apache httpd, which is not installed: "
                              f"{discovery.install_hint('apache')}")
    if "php" in kinds and php is None:
        php = discovery.find_php_fpm()
        if php is None:
            raise RenderError(f"this profile runs PHP (a `php: true` route), and php-fpm is not installed: "
                              f"{discovery.install_hint('php')}")
    _check_app_servers(profile)
    nodes: dict[str, RenderedNode] = {}
    for name in profile.start_order():
        node = profile.nodes[name]
        if isinstance(node, NginxNode):
            assert nginx is not None
            nodes[name] = render_nginx(profile, name, node, paths, nginx, root, user, group)
        elif isinstance(node, ApacheNode):
            assert apache is not None
            nodes[name] = render_apache(profile, name, node, paths, apache, root, user, group, php)
        elif isinstance(node, GunicornNode):
            nodes[name] = render_gunicorn(name, node, paths, unix_socket_of(profile, paths, name))
        elif isinstance(node, UvicornNode):
            nodes[name] = render_uvicorn(name, node, paths, profile.mount_prefix(name),
                                         unix_socket_of(profile, paths, name))
    return RenderedStack(profile=profile, paths=paths, nodes=nodes, as_root=root)

"""`stackpanel export compose`: the profile as a compose.yaml for docker compose / podman compose.

How backend addresses come out right (the renderers write ``host:port`` from the profile, and a
host must be an IP literal there): the profile is rendered with every node on ``0.0.0.0``
(``expose: true``: inside its own container a server must listen beyond loopback), so a backend
appears in its proxy's config as ``0.0.0.0:PORT``; each proxy's text then gets ``SERVICE:PORT``
for the ports of *its own* backends. Ports are unique per profile (validated) and a proxy's own
listen ports are never among its backends', so the rewrite is unambiguous, and it leaves every
other line (pools, timeouts, log format, TLS, limits) exactly as the local run renders it. The
alternative, placeholder IPs per node, would put those IPs into the proxies' accepted Host names.

Paths: the profile is rendered into a placeholder run dir and every path is moved to the same
layout under :data:`CONTAINER_ROOT` in each container; static directories are copied into the
export and mounted read-only, TLS leaves are mounted from ``tls/<node>/``.
"""
from __future__ import annotations

import re
import shlex
import signal
from pathlib import Path
from typing import Any

import yaml

from stackpanel.core import discovery
from stackpanel.core.export.common import (
    RENDER_ROOT,
    AppSource,
    ExportError,
    ExportPlan,
    app_source,
    interpreter_tag,
    over_tcp,
    package_files,
    profile_with,
    refuse_php,
    relocate,
    server_requirements,
    slug,
)
from stackpanel.core.profiles.schema import AppServerNode, CommandNode, NodeBase, Profile, ProxyNode
from stackpanel.core.render import RenderedNode, render_stack
from stackpanel.core.render.appservers import TRUSTED_PROXIES
from stackpanel.core.render.proxies import APACHE_BASE_MODULES, APACHE_PROXY_MODULES

#: Where the run-directory layout lives in every container.
CONTAINER_ROOT = "/srv/stackpanel"
#: The app's code inside an app-server image.
APP_DIR = "/app"
#: Images (Debian-based: bash for the healthchecks, `nogroup` for the workers' user).
NGINX_IMAGE = "nginx:1.28"
HTTPD_IMAGE = "httpd:2.4"

_NGINX_BIN = Path("/usr/sbin/nginx")
_HTTPD_ROOT = Path("/usr/local/apache2")
#: Every module the renderers may load; the official httpd image builds them all as shared objects.
_HTTPD_MODULES = frozenset(APACHE_BASE_MODULES + APACHE_PROXY_MODULES
                           + ("ssl", "socache_shmcb", "http2", "filter", "deflate"))


def nginx_image_info(image: str) -> discovery.NginxInfo:
    """What the renderer needs to know about the nginx in `image` (its version from the tag)."""
    tag = image.rpartition(":")[2]
    version = tag if re.fullmatch(r"\d+(\.\d+)*", tag) else "1.28.0"
    return discovery.NginxInfo(path=_NGINX_BIN, version=version, conf_path=Path("/etc/nginx/nginx.conf"),
                               mime_types=Path("/etc/nginx/mime.types"), modules_path=Path("/etc/nginx/modules"))


def httpd_image_info() -> discovery.ApacheInfo:
    """The official httpd image: /usr/local/apache2, only core, so and http_core compiled in."""
    return discovery.ApacheInfo(path=_HTTPD_ROOT / "bin" / "httpd", version="2.4", server_root=_HTTPD_ROOT,
                                modules_dir=_HTTPD_ROOT / "modules", compiled_in=("core", "so", "http_core"),
                                available=_HTTPD_MODULES, mime_types=_HTTPD_ROOT / "conf" / "mime.types")


def _container_paths(name: str) -> dict[str, str]:
    root = CONTAINER_ROOT
    return {"": root, f"/run/tls-{name}": f"{root}/tls/{name}"}


def _static_dest(node: str, index: int) -> str:
    return f"static/{node}-{index}"


def container_profile(profile: Profile) -> Profile:
    """Every node on 0.0.0.0 (inside its container), static routes at their container paths, the
    app in APP_DIR. Run with this machine's Python only for the renderer's package check."""
    import sys

    updates: dict[str, dict[str, object]] = {}
    for name, node in profile.nodes.items():
        update: dict[str, object] = {"host": "0.0.0.0", "expose": True}
        if isinstance(node, ProxyNode):
            update["routes"] = [r.model_copy(update={"static": f"{CONTAINER_ROOT}/{_static_dest(name, i)}"})
                                if r.static else r for i, r in enumerate(node.routes)]
        if isinstance(node, AppServerNode):
            update["app"] = node.app.model_copy(update={"working_dir": APP_DIR, "python": sys.executable})
        updates[name] = update
    return over_tcp(profile_with(profile, **updates))


def service_name(node: str) -> str:
    """The compose service (and DNS name) of a node: '_' is not a valid host-name character, and
    Apache refuses it in a ProxyPass URL, so my_api becomes my-api."""
    return node.replace("_", "-")


def _backend_rewrite(profile: Profile, name: str, text: str) -> str:
    node = profile.nodes[name]
    own = {port for _, port in node.listen_addresses}
    backends = {profile.nodes[t].port: t for t in profile.dependencies(name) if t in profile.nodes}
    if own & set(backends):
        raise ExportError(f"node {name!r} listens on a port of its own backend; give the nodes distinct ports")

    def to_service(m: re.Match[str]) -> str:
        port = int(m.group(1))
        return f"{service_name(backends[port])}:{port}" if port in backends else m.group(0)

    return re.sub(r"(?<![\d.])0\.0\.0\.0:(\d+)(?!\d)", to_service, text)


def _container_argv(rendered: RenderedNode, node: NodeBase) -> list[str]:
    argv = [relocate(a, _container_paths(rendered.name)) for a in rendered.argv]
    if isinstance(node, AppServerNode):
        argv[0] = "python"
        # The proxies reach an app server from their own containers' addresses on the compose
        # network, not from loopback; nothing else reaches it (its port is not published).
        argv = ["*" if a == TRUSTED_PROXIES else a for a in argv]
    return argv


def _duration(seconds: float) -> str:
    ms = max(1, round(seconds * 1000))
    return f"{ms // 1000}s" if ms % 1000 == 0 else f"{ms}ms"


def healthcheck(node: NodeBase) -> dict[str, Any]:
    """The readiness probe as a healthcheck: an HTTP GET on the node's own port whose status is
    below 500 (what the supervisor accepts), with bash's /dev/tcp: the nginx, httpd and python
    images all have bash, none is guaranteed curl. `$$` is compose's escape for `$`."""
    probe = node.readiness_probe
    script = f"exec 3<>/dev/tcp/127.0.0.1/{node.port}"  # a tcp_socket probe: the connect is all
    if probe.tcp_socket is None:
        script += (f" && printf 'GET {probe.http_get.path} HTTP/1.0\\r\\nHost: localhost\\r\\n\\r\\n' >&3 && "
                   "read -r _ code _ <&3 && [ \"$$code\" -lt 500 ]")
    period = max(1.0, probe.period_seconds)
    return {
        "test": ["CMD", "bash", "-c", script],
        "interval": _duration(period),
        "timeout": _duration(max(1.0, min(5.0, probe.timeout_seconds))),
        "retries": max(3, int(probe.timeout_seconds / period)),
        "start_period": _duration(probe.initial_delay_seconds + probe.timeout_seconds),
    }


def restart_policy(node: NodeBase) -> str:
    a = node.availability
    if a.restart == "no" or (a.restart == "on-failure" and a.max_restarts == 0):
        return "no"
    if a.restart == "always":
        return "unless-stopped"  # "always" would also start it with the engine after a `compose stop`
    return f"on-failure:{a.max_restarts}"


def _dockerfile(python_image: str) -> str:
    return f"""\
# Rendered by stackpanel export: the app and its requirements on the official python image.
FROM {python_image}
ENV PYTHONDONTWRITEBYTECODE=1 PIP_DISABLE_PIP_VERSION_CHECK=1
RUN useradd --system --uid 10001 --no-create-home --shell /usr/sbin/nologin app \\
    && mkdir -p {CONTAINER_ROOT}/logs {CONTAINER_ROOT}/run {CONTAINER_ROOT}/tmp \\
    && chown app {CONTAINER_ROOT}/logs {CONTAINER_ROOT}/run {CONTAINER_ROOT}/tmp
WORKDIR {APP_DIR}
COPY requirements.txt {APP_DIR}/requirements.txt
RUN pip install --no-cache-dir -r {APP_DIR}/requirements.txt
COPY src/ {APP_DIR}/
USER app
"""


def export_compose(profile: Profile, name: str, *, publish_address: str = "127.0.0.1",
                   nginx_image: str = NGINX_IMAGE, httpd_image: str = HTTPD_IMAGE,
                   python_image: str | None = None) -> ExportPlan:
    """The plan of a compose export of `profile` (`name`: the project name, e.g. the file stem)."""
    refuse_php(profile)
    project = slug(name)
    commands = [n for n, node in profile.nodes.items() if isinstance(node, CommandNode)]
    if commands:  # an arbitrary program has no image to build it in: say so rather than guess one
        raise ExportError(f"node {commands[0]!r} is a command node, which a compose export cannot package (no "
                          "image is known to run it); export systemd units or a process-compose file instead")
    python_image = python_image or f"python:{interpreter_tag()}"
    cprofile = container_profile(profile)
    stack = render_stack(cprofile, RENDER_ROOT, as_root=True, nginx=nginx_image_info(nginx_image),
                         apache=httpd_image_info())
    plan = ExportPlan()
    services: dict[str, Any] = {}
    volumes: dict[str, Any] = {}
    sources: dict[str, AppSource] = {}
    entry = profile.entry
    names = {service_name(n) for n in profile.nodes}
    if len(names) != len(profile.nodes):
        raise ExportError("two nodes differ only in '_' versus '-', and compose service names cannot tell them "
                          "apart; rename one")
    for node_name, rendered in stack.nodes.items():
        node = profile.nodes[node_name]
        mapping = _container_paths(node_name)
        mounts = [f"./conf:{CONTAINER_ROOT}/conf:ro", f"{node_name}-logs:{CONTAINER_ROOT}/logs"]
        volumes[f"{node_name}-logs"] = {}
        for path, text in rendered.files.items():
            rel = relocate(str(path), mapping).removeprefix(CONTAINER_ROOT + "/")
            if not rel.startswith("conf/"):
                raise ExportError(f"node {node_name!r}: rendered file {path} is outside the conf directory")
            plan.add(rel, _backend_rewrite(cprofile, node_name, relocate(text, mapping)))
        service: dict[str, Any] = {}
        if isinstance(node, ProxyNode):
            service["image"] = nginx_image if node.kind == "nginx" else httpd_image
            for i, route in enumerate(node.routes):
                if route.static:
                    plan.trees[_static_dest(node_name, i)] = Path(route.static)
                    mounts.append(f"./{_static_dest(node_name, i)}:{CONTAINER_ROOT}/{_static_dest(node_name, i)}:ro")
            if node.tls is not None:
                mounts.append(f"./tls/{node_name}:{CONTAINER_ROOT}/tls/{node_name}:ro")
                plan.add(f"tls/{node_name}/README.md", _tls_readme(profile, node_name))
        else:
            assert isinstance(node, AppServerNode)
            src = sources[node_name] = app_source(node)
            build = f"build/{node_name}"
            plan.add(f"{build}/Dockerfile", _dockerfile(python_image))
            reqs = list(dict.fromkeys([*server_requirements(node), *src.requirements]))
            plan.add(f"{build}/requirements.txt", "# Rendered by stackpanel export: the servers pinned to the "
                     "versions this machine runs, then the app's own.\n" + "\n".join(reqs) + "\n")
            if src.subdirs:
                for rel, source in package_files(src).items():
                    if source.is_dir():
                        plan.trees[f"{build}/src/{rel}"] = source
                    else:
                        plan.add(f"{build}/src/{rel}", source.read_text(encoding="utf-8"))
            else:
                plan.trees[f"{build}/src"] = src.tree
            service["build"] = {"context": f"./{build}"}
            service["image"] = f"stackpanel-{project}-{service_name(node_name)}:latest"
            service["working_dir"] = APP_DIR
        service["command"] = _container_argv(rendered, node)
        if rendered.env:
            service["environment"] = {k: relocate(v, mapping) for k, v in rendered.env.items()}
        service["volumes"] = mounts
        # Pid files, sockets and temp files: per container, gone with it.
        # (nginx creates its temp dirs one level deep: the node's own tmp dir is the mount.)
        service["tmpfs"] = [f"{CONTAINER_ROOT}/run", f"{CONTAINER_ROOT}/tmp/{node_name}"] + (
            [f"{CONTAINER_ROOT}/htdocs"] if any(str(d).endswith("/htdocs") for d in rendered.dirs) else [])
        ports = [port for _, port in node.listen_addresses]
        if node_name == entry:
            service["ports"] = [f"{publish_address}:{p}:{p}" for p in ports]
        else:
            service["expose"] = [str(p) for p in ports]
        deps = [d for d in profile.dependencies(node_name) if d in profile.nodes]
        if deps:
            service["depends_on"] = {service_name(d): {"condition": "service_healthy"} for d in deps}
        service["healthcheck"] = healthcheck(node)
        service["restart"] = restart_policy(node)
        service["stop_signal"] = f"SIG{signal.Signals(rendered.stop_signal).name.removeprefix('SIG')}"
        service["stop_grace_period"] = _duration(node.stop_deadline_seconds)
        services[service_name(node_name)] = service
    doc = {"services": services, "volumes": volumes}
    header = (f"# {profile.name}: exported by stackpanel from the profile (see README.md).\n"
              f"# Run: docker compose -p stackpanel-{project} up --build\n")
    plan.add("compose.yaml", header + yaml.safe_dump(doc, sort_keys=False, width=1000, allow_unicode=True))
    plan.add("README.md", _readme(profile, project, services, sources, publish_address, python_image))
    return plan


def _tls_readme(profile: Profile, name: str) -> str:
    node = profile.nodes[name]
    assert isinstance(node, ProxyNode)
    names = ", ".join(node.certificate_names(profile.accepted_host_names(name)))
    return (f"# TLS for node {name}\n\nPut the certificate chain in `cert.pem` and its key in `key.pem` here; "
            f"the config reads them from {CONTAINER_ROOT}/tls/{name}/.\nNames the local run's certificate covers: "
            f"{names}.\nFor a try on this machine, `stackpanel export compose --local-certs` puts a leaf from "
            "your local CA here (trusted only where `stackpanel trust` ran). A server needs a real "
            "certificate for its public name (add that name to `server_names:` in the profile).\n")


def _readme(profile: Profile, project: str, services: dict[str, Any], sources: dict[str, AppSource],
            publish: str, python_image: str) -> str:
    entry = profile.nodes[profile.entry]
    urls = [f"http://{publish}:{entry.port}/"]
    if isinstance(entry, ProxyNode) and entry.tls is not None:
        urls.append(f"https://localhost:{entry.tls.port}/")
    lines = [
        f"# {profile.name}: docker compose export", "",
        "Exported by `stackpanel export compose` from the profile; re-export rather than edit.", "",
        "## Run it", "",
        "```sh",
        f"docker compose -p stackpanel-{project} up --build      # or: podman compose ...",
        f"docker compose -p stackpanel-{project} down -v          # stop, and drop the log volumes",
        "```", "",
        f"Then open {' or '.join(urls)}. Services start backends first: each waits until the ones it "
        "depends on are healthy (the profile's readiness probes).", "",
        "| service | image | command |", "|---|---|---|",
    ]
    for name, service in services.items():
        built = "build" in service
        image = f"`{service['build']['context']}` (FROM {python_image})" if built else f"`{service['image']}`"
        lines.append(f"| {name} | {image} | `{shlex.join(service['command'][:4])} ...` |")
    lines += [
        "", "## What differs from the local run", "",
        f"- Every server listens on 0.0.0.0 inside its own container; only the entry (`{profile.entry}`) is "
        f"published, on {publish}. The others are reachable only on the compose network, by service name "
        "(the proxies' upstreams name them).",
        "- App servers trust X-Forwarded-* from any address (`--forwarded-allow-ips *`): their ports are not "
        "published, so only the proxies reach them.",
        f"- Paths: configs are mounted read-only from `conf/` at {CONTAINER_ROOT}/conf; logs go to one named "
        f"volume per service at {CONTAINER_ROOT}/logs (`docker compose logs` shows each server's stderr); pid "
        "files and temp files live on tmpfs.",
        "- Restart: `on-failure` becomes `on-failure:<max_restarts>`, `always` becomes `unless-stopped`; the "
        "engine's own backoff (100 ms doubling) replaces `backoff_seconds`.",
        "- Stop: the same graceful signal (nginx QUIT, Apache WINCH, app servers TERM) and the server's "
        "graceful timeout + 2 s before the engine kills.",
        "- Readiness probes become healthchecks (an HTTP GET through bash's /dev/tcp, status below 500) "
        "polled at least every second.",
    ]
    for name, src in sources.items():
        lines.append(f"- `{name}`: the image copies {src.note}; `build/{name}/requirements.txt` pins the "
                     "servers and the imported packages to the versions installed where the export ran; "
                     "check it before building on another machine.")
    if any(isinstance(n, ProxyNode) and n.tls for n in profile.nodes.values()):
        lines.append("- TLS: put a certificate and key into `tls/<node>/` (see the README there).")
    lines += [
        "", "## What this export was checked with", "",
        "`docker-compose config` (docker-compose 1.29) and the compose-spec JSON schema accept the file; the "
        "proxy configs pass `nginx -t` and `apache2 -t` with the service names resolvable. No container was run "
        "by those checks: building and running need a container engine.", "",
        "## Kubernetes", "",
        "`kompose convert -f compose.yaml` turns this file into Deployments and Services; the bind-mounted "
        "`conf/` and `static/` directories become volumes you fill with ConfigMaps or an image of your own.",
        "",
    ]
    return "\n".join(lines)

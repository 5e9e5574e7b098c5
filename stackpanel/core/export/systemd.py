"""`stackpanel export systemd`: one service unit per node and a target that groups them.

Layout, as a package would install it (per profile P, per node N):

- configs (read-only to the services): /etc/stackpanel/P/, TLS leaves in /etc/stackpanel/P/tls/N/
- logs: /var/log/stackpanel/P/N/ (LogsDirectory=, one per unit: systemd chowns it to the unit's user)
- pid files, sockets: /run/stackpanel/P/N/ (RuntimeDirectory=); nginx temp files: /var/cache/stackpanel/P/N/
- static sites: /usr/share/stackpanel/P/static/N-i/; nginx -p / Apache ServerRoot: /var/lib/stackpanel/P/N/

ExecStart uses this machine's nginx, apache2 and Python (the real paths, so `systemd-analyze
verify` can check them); a server with another layout needs the same binaries or an edit. The
proxies run as root and drop their workers to nobody/nogroup, as Debian's own units do; the app
servers run as the `stackpanel` system user (sysusers.d file included).

Readiness: a unit is "started" only when its readiness probe answers (ExecStartPost runs the
probe), so After= on a backend means what depends_on means locally: ready, not just spawned.
"""
from __future__ import annotations

import signal
import sys
from pathlib import Path

from stackpanel.core import discovery
from stackpanel.core.export.common import (
    RENDER_ROOT,
    ExportError,
    ExportPlan,
    over_tcp,
    profile_with,
    refuse_php,
    relocate,
    slug,
)
from stackpanel.core.profiles.schema import AppServerNode, Profile, ProxyNode
from stackpanel.core.render import RenderedNode, render_stack

#: The probe ExecStartPost runs: GET until a status below 500 or the timeout (stdlib only).
PROBE_SCRIPT = '''\
"""Rendered by stackpanel export: wait until URL answers with a status below 500 (the readiness probe)."""
import sys
import time
import urllib.error
import urllib.request

url, timeout, period = sys.argv[1], float(sys.argv[2]), float(sys.argv[3])
deadline = time.monotonic() + timeout
while True:
    try:
        with urllib.request.urlopen(url, timeout=5) as response:
            status = response.status
    except urllib.error.HTTPError as exc:
        status = exc.code
    except OSError:
        status = 599
    if status < 500:
        sys.exit(0)
    if time.monotonic() > deadline:
        sys.exit(f"{url} not ready after {timeout:g} s (last status {status})")
    time.sleep(period)
'''

SYSUSERS = ("# Rendered by stackpanel export: the user the app servers run as.\n"
            'u stackpanel - "stackpanel app servers" - -\n')


def _esc(value: str) -> str:
    """One ExecStart= / Environment= word, double-quoted: systemd expands % specifiers and $VARS."""
    if any(ord(c) < 32 for c in value):
        raise ExportError(f"cannot write {value!r} into a unit file: it contains a control character")
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"').replace("%", "%%").replace("$", "$$") + '"'


def _seconds(value: float) -> str:
    return f"{value:g}s" if value >= 0.1 else "100ms"


class Layout:
    def __init__(self, project: str):
        self.project = project
        self.etc = f"/etc/stackpanel/{project}"

    def unit(self, node: str) -> str:
        return f"stackpanel-{self.project}-{node}.service"

    @property
    def target(self) -> str:
        return f"stackpanel-{self.project}.target"

    def mapping(self, node: str) -> dict[str, str]:
        p = self.project
        return {
            "": f"/var/lib/stackpanel/{p}/{node}",
            "/htdocs": f"/var/lib/stackpanel/{p}/{node}",
            "/conf": self.etc,
            f"/run/tls-{node}": f"{self.etc}/tls/{node}",
            "/run": f"/run/stackpanel/{p}/{node}",
            "/logs": f"/var/log/stackpanel/{p}/{node}",
            f"/tmp/{node}": f"/var/cache/stackpanel/{p}/{node}",
        }


def _deployment_profile(profile: Profile, layout: Layout) -> Profile:
    updates: dict[str, dict[str, object]] = {}
    for name, node in profile.nodes.items():
        if isinstance(node, ProxyNode):
            routes = [r.model_copy(update={"static": f"/usr/share/stackpanel/{layout.project}/static/{name}-{i}"})
                      if r.static else r for i, r in enumerate(node.routes)]
            updates[name] = {"routes": routes}
    return over_tcp(profile_with(profile, **updates))


def _unit(profile: Profile, name: str, rendered: RenderedNode, layout: Layout, probe_python: str) -> str:
    node = profile.nodes[name]
    mapping = layout.mapping(name)
    deps = [layout.unit(d) for d in profile.dependencies(name) if d in profile.nodes]
    a = node.availability
    restart = {"no": "no", "on-failure": "on-failure", "always": "always"}[a.restart]
    probe = node.readiness_probe
    probe_url = f"http://{node.url_host}:{node.port}{probe.http_get.path}"
    is_app = isinstance(node, AppServerNode)
    lines = [
        f"# Rendered by stackpanel export from profile {profile.name!r}, node {name!r} ({node.kind}).",
        "[Unit]",
        f"Description=stackpanel {layout.project}: {name} ({node.kind})",
        f"PartOf={layout.target}",
        "After=network.target" + "".join(f" {d}" for d in deps),
    ]
    if deps:
        lines.append("Requires=" + " ".join(deps))
    # systemd counts starts in a window; the profile counts restarts: allow max_restarts + 1 starts.
    window = max(60, int((a.backoff_seconds + probe.timeout_seconds) * (a.max_restarts + 1)))
    lines += [f"StartLimitIntervalSec={window}",
              f"StartLimitBurst={a.max_restarts + 1}", "", "[Service]", "Type=simple"]
    lines.append("ExecStart=" + " ".join(_esc(relocate(arg, mapping)) for arg in rendered.argv))
    lines.append(f"ExecStartPost={_esc(probe_python)} {_esc(layout.etc + '/stackpanel-probe.py')} "
                 f"{_esc(probe_url)} {probe.timeout_seconds:g} {probe.period_seconds:g}")
    if rendered.reload_signal is not None:
        reload = signal.Signals(rendered.reload_signal).name.removeprefix("SIG")
        lines.append(f"ExecReload=/bin/kill -{reload} $MAINPID")
    lines.append(f"WorkingDirectory={relocate(str(rendered.cwd), mapping)}")
    for key, value in rendered.env.items():
        lines.append(f"Environment={_esc(f'{key}={relocate(value, mapping)}')}")
    lines += [
        f"KillSignal=SIG{signal.Signals(rendered.stop_signal).name.removeprefix('SIG')}",
        "KillMode=mixed",  # the graceful signal to the master; SIGKILL to what is left at the timeout
        # The server's own graceful timeout, plus 2 s: never kill a server that is still draining.
        f"TimeoutStopSec={_seconds(node.stop_deadline_seconds)}",
        f"TimeoutStartSec={_seconds(probe.initial_delay_seconds + probe.timeout_seconds + 10)}",
        f"Restart={restart}",
        f"RestartSec={_seconds(a.backoff_seconds)}",
    ]
    if is_app:
        lines += ["User=stackpanel", "Group=stackpanel"]
    p = layout.project
    lines += [
        f"LogsDirectory=stackpanel/{p}/{name}",
        f"RuntimeDirectory=stackpanel/{p}/{name}",
        f"StateDirectory=stackpanel/{p}/{name}",
        f"CacheDirectory=stackpanel/{p}/{name}",
        f"ConfigurationDirectory=stackpanel/{p}",
        "# Sandboxing the servers tolerate: the whole system read-only but their own directories.",
        "ProtectSystem=strict",
        "ProtectHome=read-only",  # an app may live in a home directory; it is never written
        "PrivateTmp=yes",
        "PrivateDevices=yes",
        "NoNewPrivileges=yes",
        "ProtectKernelTunables=yes",
        "ProtectKernelModules=yes",
        "ProtectKernelLogs=yes",
        "ProtectControlGroups=yes",
        "ProtectClock=yes",
        "ProtectHostname=yes",
        "RestrictNamespaces=yes",
        "RestrictRealtime=yes",
        "RestrictSUIDSGID=yes",
        "LockPersonality=yes",
        "SystemCallArchitectures=native",
        "RestrictAddressFamilies=AF_UNIX AF_INET AF_INET6",
    ]
    if is_app:
        lines.append("CapabilityBoundingSet=")
    else:
        # Root master: bind, switch the workers to nobody, chown its temp dirs, read the configs.
        lines.append("CapabilityBoundingSet=CAP_NET_BIND_SERVICE CAP_SETUID CAP_SETGID CAP_CHOWN "
                     "CAP_DAC_OVERRIDE CAP_KILL")
    lines += ["", "[Install]", f"WantedBy={layout.target}", ""]
    return "\n".join(lines)


def export_systemd(profile: Profile, name: str, *, probe_python: str | None = None,
                   nginx: discovery.NginxInfo | None = None, apache: discovery.ApacheInfo | None = None) -> ExportPlan:
    """Units in `units/`, the files for /etc/stackpanel/<name>/ in `etc/`, static sites in `share/`,
    and a README with the install commands. Renders for root (the proxies drop their workers);
    nginx/apache: this machine's unless given."""
    refuse_php(profile)
    layout = Layout(slug(name))
    dprofile = _deployment_profile(profile, layout)
    stack = render_stack(dprofile, RENDER_ROOT, as_root=True, nginx=nginx, apache=apache)
    plan = ExportPlan()
    probe_python = probe_python or sys.executable
    plan.add("etc/stackpanel-probe.py", PROBE_SCRIPT)
    plan.add("sysusers.d/stackpanel.conf", SYSUSERS)
    for node_name, rendered in stack.nodes.items():
        mapping = layout.mapping(node_name)
        for path, text in rendered.files.items():
            dest = relocate(str(path), mapping)
            if not dest.startswith(layout.etc + "/"):
                raise ExportError(f"node {node_name!r}: rendered file {path} does not belong in {layout.etc}")
            plan.add("etc/" + dest.removeprefix(layout.etc + "/"), relocate(text, mapping))
        node = profile.nodes[node_name]
        if isinstance(node, ProxyNode):
            for i, route in enumerate(node.routes):
                if route.static:
                    plan.trees[f"share/static/{node_name}-{i}"] = Path(route.static)
        plan.add(f"units/{layout.unit(node_name)}", _unit(profile, node_name, rendered, layout, probe_python))
    wants = " ".join(layout.unit(n) for n in stack.nodes)
    plan.add(f"units/{layout.target}", "\n".join([
        f"# Rendered by stackpanel export from profile {profile.name!r}.",
        "[Unit]", f"Description=stackpanel {layout.project}: {profile.name}", f"Wants={wants}", "",
        "[Install]", "WantedBy=multi-user.target", ""]))
    plan.add("README.md", _readme(profile, layout, stack.nodes))
    return plan


def _readme(profile: Profile, layout: Layout, nodes: dict[str, RenderedNode]) -> str:
    p = layout.project
    return "\n".join([
        f"# {profile.name}: systemd export", "",
        "Exported by `stackpanel export systemd`; re-export rather than edit.", "",
        "## Install (as root)", "", "```sh",
        "install -m 0644 sysusers.d/stackpanel.conf /etc/sysusers.d/ && systemd-sysusers",
        f"mkdir -p {layout.etc} /usr/share/stackpanel/{p} && cp -r etc/. {layout.etc}/",
        f"[ -d share/static ] && cp -r share/static /usr/share/stackpanel/{p}/",
        "cp units/* /etc/systemd/system/ && systemctl daemon-reload",
        f"systemctl enable --now {layout.target}",
        "```", "",
        f"Units start backends first ({' → '.join(nodes)}); each counts as started when its readiness probe "
        "answers, so a proxy starts after its backends are ready. "
        f"`systemctl stop {layout.target}` stops them all (PartOf=).", "",
        "## What differs from the local run", "",
        f"- Paths: configs in {layout.etc}, logs in /var/log/stackpanel/{p}/<node>/, pid files and sockets in "
        f"/run/stackpanel/{p}/<node>/, nginx temp files in /var/cache/stackpanel/{p}/<node>/; each server's "
        "stderr goes to the journal (`journalctl -u <unit>`).",
        "- Restart: Restart= from `availability.restart`, RestartSec= from `backoff_seconds`, "
        "StartLimitBurst= max_restarts + 1 within a window (systemd counts starts per interval).",
        "- Stop: KillSignal= is the graceful signal the supervisor sends; TimeoutStopSec= is the server's own "
        "graceful timeout + 2 s.",
        "- The proxies run as root and switch their workers to nobody/nogroup; the app servers run as "
        "`stackpanel`. Everything the workers read must be readable by them.",
        "- ExecStart names this machine's binaries and Python; on another server install the same versions "
        "or edit the paths. The app must be importable by that Python (as it is for the local run).",
        "- TLS: put `cert.pem` and `key.pem` into " + f"{layout.etc}/tls/<node>/ (a real certificate for the "
        "server's public name, listed in the profile's `server_names:`).", "",
        "`systemd-analyze verify units/*` accepts these units; they were not run here (no systemd as PID 1).",
        "",
    ])

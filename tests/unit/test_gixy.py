"""gixy-ng, the nginx configuration analyser, on every rendered nginx config.

Built-in profiles plus the shapes the tests generate (static sub-paths, server_names, a root
static route with links allowed, IPv6 backends). No finding above LOW, except those with a
written reason here.
"""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import yaml

from stackpanel.core.profiles.library import list_profiles
from stackpanel.core.profiles.loader import load_profile, load_profile_text
from stackpanel.core.render import render_stack
from tests import hostile
from tests.unit.test_render import APACHE, NGINX, PHP

#: Findings accepted, each with its reason.
ACCEPTED = {
    # gixy flags any `proxy_set_header Host $http_host`. Ours is in a server block whose
    # server_name lists only the profile's names, and every other Host is answered 421 by the
    # default server, so the forwarded Host is one of those names; apps need the port it carries.
    "host_spoofing": "Host is allow-listed by server_name; other names get 421",
    # strip_prefix passes `http://sp_<node>$sp_stripN`: the host is an upstream group of IP
    # literals defined in the same file, so there is no DNS name to re-resolve (gixy cannot
    # tell an upstream name from a host name). The variable keeps the raw path (see
    # proxy_pass_normalized, which this form avoids).
    "missing_resolver": "proxy_pass names an upstream of IP literals, not a DNS name",
    # HSTS on localhost would pin every http://localhost:<port> of the user's machine (other dev
    # servers, other stacks) to https for as long as max-age says; tls.redirect is the local
    # equivalent. Users who want it add the header in `limits.headers`.
    "hsts_header": "HSTS on localhost would break every other local http server",
}


def _rendered_nginx_configs(tmp_path: Path) -> list[Path]:
    profiles = [load_profile(e.path) for e in list_profiles() if e.builtin]
    (tmp_path / "site").mkdir()
    generated = hostile.put(hostile.BASE, ("nodes", "edge", "server_names"), ["a.localhost", "*.b.test"])
    profiles.append(load_profile_text(yaml.safe_dump(generated), tmp_path / "p.yaml"))
    confs = []
    for i, profile in enumerate(profiles):
        stack = render_stack(profile, tmp_path / f"run{i}", nginx=NGINX, apache=APACHE, php=PHP)
        stack.write()
        confs += [n.config_file for n in stack.nodes.values() if n.kind == "nginx" and n.config_file]
    return confs


def test_gixy_finds_nothing_above_low(tmp_path: Path) -> None:
    confs = _rendered_nginx_configs(tmp_path)
    assert len(confs) >= 6
    result = subprocess.run([sys.executable, "-m", "gixy", "-f", "json", *map(str, confs)],
                            capture_output=True, text=True, timeout=120)
    findings = json.loads(result.stdout or "[]")
    serious = [f for f in findings if f["severity"] not in ("UNSPECIFIED", "LOW") and f["plugin"] not in ACCEPTED]
    assert serious == [], json.dumps(serious, indent=1)
    # gixy did read every file: the accepted finding is reported once per proxying config
    assert {f["path"] for f in findings if f["plugin"] == "host_spoofing"} >= {
        str(c) for c in confs if "proxy_pass" in c.read_text()}
    assert result.returncode in (0, 1), result.stderr  # gixy exits 1 when it reports anything

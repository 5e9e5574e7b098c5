"""Every built-in profile's exports, checked by the tools that will read them.

What these tests prove, and what they do not: there is no container engine and no systemd as
PID 1 on these machines, so nothing exported is *run* here. They prove that

- docker-compose 1.29 (Debian's) parses and normalises each compose.yaml (`config`, no daemon),
  and the file validates against the compose-spec JSON schema that check-jsonschema vendors;
- each exported proxy config passes Debian's own `nginx -t` / `apache2 -t` laid out at the
  container paths (a private mount namespace puts the export at /srv/stackpanel and the official
  httpd image's module and mime.types paths at /usr/local/apache2, bound to Debian's; the
  LoadModule lines of modules Debian's apache2 has compiled in are dropped for the test), with an
  /etc/hosts of that namespace naming every compose service (127.0.0.1): the upstream names
  resolve as they are written, which is what a compose network's DNS does;
- every exported unit passes `systemd-analyze verify` (syntax, dependencies, executables).

The images' own nginx (1.28) writes `http2 on;` where Debian's 1.22 needs `listen ... http2`:
the nginx -t export names an image tag with this machine's nginx version, so that one line
follows the tested binary; every other line is the same as the default export's.
"""
from __future__ import annotations

import importlib.util
import json
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from stackpanel.core import discovery
from stackpanel.core.export import export_compose, export_process_compose, export_systemd
from stackpanel.core.export.compose import CONTAINER_ROOT, service_name
from stackpanel.core.profiles.library import list_profiles
from stackpanel.core.profiles.loader import load_profile
from stackpanel.core.profiles.schema import ProxyNode

pytestmark = pytest.mark.integration

BUILTINS = [e for e in list_profiles() if e.builtin]
PROXIED = [e for e in BUILTINS if any(isinstance(n, ProxyNode) for n in load_profile(e.path).nodes.values())]


def _compose_schema() -> dict | None:
    spec = importlib.util.find_spec("check_jsonschema")  # located, not imported (it pulls in click)
    if spec is None or not spec.submodule_search_locations:
        return None
    path = Path(next(iter(spec.submodule_search_locations))) / "builtin_schemas" / "vendor" / "compose-spec.json"
    return json.loads(path.read_text(encoding="utf-8")) if path.is_file() else None


@pytest.mark.parametrize("entry", BUILTINS, ids=[e.name for e in BUILTINS])
def test_compose_export_passes_docker_compose_config(entry, tmp_path: Path) -> None:
    if shutil.which("docker-compose") is None:
        pytest.skip("docker-compose is not installed (apt-get install docker-compose)")
    profile = load_profile(entry.path)
    export_compose(profile, entry.name).write(tmp_path)
    done = subprocess.run(["docker-compose", "-f", "compose.yaml", "config"], cwd=tmp_path,
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    normalised = yaml.safe_load(done.stdout)
    assert set(normalised["services"]) == {service_name(n) for n in profile.nodes}
    # Only the entry is published, on loopback.
    published = {name for name, s in normalised["services"].items() if s.get("ports")}
    assert published == {service_name(profile.entry)}
    for port in normalised["services"][service_name(profile.entry)]["ports"]:  # 1.29 keeps the short form
        assert (port["host_ip"] if isinstance(port, dict) else port.split(":")[0]) == "127.0.0.1", port


@pytest.mark.parametrize("entry", BUILTINS, ids=[e.name for e in BUILTINS])
def test_compose_export_matches_the_compose_spec_schema(entry) -> None:
    jsonschema = pytest.importorskip("jsonschema")
    schema = _compose_schema()
    if schema is None:
        pytest.skip("check-jsonschema (which ships the compose-spec schema) is not installed")
    plan = export_compose(load_profile(entry.path), entry.name)
    doc = yaml.safe_load(plan.files["compose.yaml"])
    errors = list(jsonschema.Draft202012Validator(schema).iter_errors(doc))
    assert not errors, [f"{'/'.join(map(str, e.absolute_path))}: {e.message}" for e in errors]


def _namespace_script(export: Path, services: list[str], apache_modules: Path) -> str:
    hosts = export.parent / "hosts"
    hosts.write_text("127.0.0.1 localhost " + " ".join(services) + "\n", encoding="utf-8")
    return f"""set -e
mount -t tmpfs none /srv
mkdir -p {CONTAINER_ROOT}/logs {CONTAINER_ROOT}/run {CONTAINER_ROOT}/tmp
cp -a {export}/conf {CONTAINER_ROOT}/conf
[ -d {export}/static ] && cp -a {export}/static {CONTAINER_ROOT}/static
[ -d {export}/tls ] && cp -a {export}/tls {CONTAINER_ROOT}/tls
for s in {" ".join(services)}; do mkdir -p {CONTAINER_ROOT}/tmp/$s; done
mount --bind {hosts} /etc/hosts
mount -t tmpfs none /usr/local
mkdir -p /usr/local/apache2/modules /usr/local/apache2/conf
mount --bind {apache_modules} /usr/local/apache2/modules
cp /etc/mime.types /usr/local/apache2/conf/mime.types
"""


@pytest.mark.parametrize("entry", PROXIED, ids=[e.name for e in PROXIED])
def test_exported_proxy_configs_pass_nginx_and_apache_tests(entry, tmp_path: Path) -> None:
    if shutil.which("unshare") is None:
        pytest.skip("needs unshare (util-linux) for a private mount namespace")
    nginx, apache = discovery.find_nginx(), discovery.find_apache()
    profile = load_profile(entry.path)
    kinds = profile.kinds()
    if ("nginx" in kinds and nginx is None) or ("apache" in kinds and apache is None):
        pytest.skip("needs Debian's nginx and apache2")
    image = f"nginx:{nginx.version}" if nginx is not None else "nginx:1.28"
    export = tmp_path / "export"
    export_compose(profile, entry.name, nginx_image=image).write(export)
    for name, node in profile.nodes.items():
        if isinstance(node, ProxyNode) and node.tls is not None:
            from stackpanel.core.tls import issue_leaf

            issue_leaf(node.certificate_names(profile.accepted_host_names(name)), export / "tls" / name,
                       ca_directory=tmp_path / "ca")
    if apache is not None:
        # Debian compiles log_config, unixd, ... into apache2; the httpd image has them as modules,
        # and loading a compiled-in module is an error: drop those LoadModule lines (only those).
        for conf in (export / "conf").glob("httpd-*.conf"):
            lines = conf.read_text(encoding="utf-8").splitlines(keepends=True)
            conf.write_text("".join(line for line in lines if not any(
                line.startswith(f"LoadModule {m}_module ") for m in apache.compiled_in)), encoding="utf-8")
    compose = yaml.safe_load((export / "compose.yaml").read_text(encoding="utf-8"))
    tests = []
    for name in profile.nodes:
        argv = [str(a) for a in compose["services"][service_name(name)]["command"]]
        if profile.nodes[name].kind == "nginx":
            assert nginx is not None
            tests.append([str(nginx.path), "-t", *argv[1:]])
        elif profile.nodes[name].kind == "apache":
            assert apache is not None
            tests.append([str(apache.path), "-t", *[a for a in argv[1:] if a != "-DFOREGROUND"]])
    assert tests
    modules = apache.modules_dir if apache is not None and apache.modules_dir else Path("/usr/lib/apache2/modules")
    script = _namespace_script(export, list(compose["services"]), modules)
    script += "".join(f"mkdir -p {t}\n" for s in compose["services"].values() for t in s.get("tmpfs", []))
    script += "\n".join(" ".join(f"'{a}'" for a in t) + " 2>&1" for t in tests) + "\n"
    done = subprocess.run(["unshare", "-m", "sh", "-c", script], capture_output=True, text=True, timeout=60)
    if done.returncode != 0 and "unshare failed" in done.stderr:
        pytest.skip(f"no private mount namespace here: {done.stderr.strip()}")
    assert done.returncode == 0, done.stdout + done.stderr
    assert "emerg" not in done.stdout and "AH00526" not in done.stdout, done.stdout


@pytest.mark.parametrize("entry", BUILTINS, ids=[e.name for e in BUILTINS])
def test_systemd_units_pass_systemd_analyze_verify(entry, tmp_path: Path) -> None:
    if shutil.which("systemd-analyze") is None:
        pytest.skip("systemd-analyze is not installed (apt-get install systemd)")
    profile = load_profile(entry.path)
    plan = export_systemd(profile, entry.name)
    plan.write(tmp_path)
    units = sorted(str(p) for p in (tmp_path / "units").iterdir())
    done = subprocess.run(["systemd-analyze", "verify", "--man=no", *units], capture_output=True, text=True,
                          timeout=120, cwd=tmp_path)
    # verify exits 0 on unknown keys and unparsable values (it only warns): any output is a failure.
    assert done.returncode == 0 and not done.stderr.strip() and not done.stdout.strip(), done.stdout + done.stderr


@pytest.mark.parametrize("entry", BUILTINS, ids=[e.name for e in BUILTINS])
def test_process_compose_export_is_complete(entry, tmp_path: Path) -> None:
    """No process-compose binary here: this checks the file's structure against the vocabulary
    (process-compose's src/types), and that the configs it points at were rendered."""
    profile = load_profile(entry.path)
    out = tmp_path / "process-compose.yaml"
    export_process_compose(profile, out, run_dir=tmp_path / "run")
    doc = yaml.safe_load(out.read_text(encoding="utf-8"))
    assert set(doc["processes"]) == set(profile.nodes)
    for name, proc in doc["processes"].items():
        for dep, cond in proc.get("depends_on", {}).items():
            assert dep in profile.nodes and cond == {"condition": "process_healthy"}
        assert proc["readiness_probe"]["http_get"]["port"] == profile.nodes[name].port
        assert Path(proc["working_dir"]).is_dir()
    for path in (tmp_path / "run" / "conf").iterdir():
        assert path.stat().st_size > 0

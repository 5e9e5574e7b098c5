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
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from stackpanel.core import discovery
from stackpanel.core.export import export_compose, export_process_compose, export_systemd
from stackpanel.core.export.compose import CONTAINER_ROOT, service_name
from stackpanel.core.profiles.library import list_profiles
from stackpanel.core.profiles.loader import load_profile
from stackpanel.core.profiles.schema import Profile, ProxyNode
from stackpanel.core.tls import issue_leaf

pytestmark = pytest.mark.integration

BUILTINS = [e for e in list_profiles() if e.builtin and e.name != "nginx-php-uvicorn"]  # exports refuse php (test_php)
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


def _export_for_debian(profile: Profile, name: str, tmp_path: Path, nginx: discovery.NginxInfo | None) -> Path:
    """The compose export with the nginx image tag of this machine's nginx (see the module doc) and,
    for TLS, a leaf from a throwaway CA in tls/<node>/ (what the user puts there)."""
    image = f"nginx:{nginx.version}" if nginx is not None else "nginx:1.28"
    export = tmp_path / "export"
    export_compose(profile, name, nginx_image=image).write(export)
    for node_name, node in profile.nodes.items():
        if isinstance(node, ProxyNode) and node.tls is not None:
            issue_leaf(node.certificate_names(profile.accepted_host_names(node_name)), export / "tls" / node_name,
                       ca_directory=tmp_path / "ca")
    return export


def _stage_for_debian(export: Path, apache: discovery.ApacheInfo | None) -> dict:
    """Debian compiles log_config, unixd, ... into apache2; the httpd image has them as modules,
    and loading a compiled-in module is an error: drop those LoadModule lines (only those)."""
    if apache is not None:
        for conf in (export / "conf").glob("httpd-*.conf"):
            lines = conf.read_text(encoding="utf-8").splitlines(keepends=True)
            conf.write_text("".join(line for line in lines if not any(
                line.startswith(f"LoadModule {m}_module ") for m in apache.compiled_in)), encoding="utf-8")
    return yaml.safe_load((export / "compose.yaml").read_text(encoding="utf-8"))


def _namespace_script(export: Path, compose: dict, apache: discovery.ApacheInfo | None) -> str:
    """Shell lines that lay the export out at the container paths inside a private mount namespace."""
    services = list(compose["services"])
    modules = apache.modules_dir if apache is not None and apache.modules_dir else Path("/usr/lib/apache2/modules")
    hosts = export.parent / "hosts"
    hosts.write_text("127.0.0.1 localhost " + " ".join(services) + "\n", encoding="utf-8")
    tmpfs = "".join(f"mkdir -p {t}\n" for s in compose["services"].values() for t in s.get("tmpfs", []))
    return f"""set -e
mount -t tmpfs none /srv
mkdir -p {CONTAINER_ROOT}/logs {CONTAINER_ROOT}/run {CONTAINER_ROOT}/tmp
cp -a {export}/conf {CONTAINER_ROOT}/conf
[ -d {export}/static ] && cp -a {export}/static {CONTAINER_ROOT}/static
[ -d {export}/tls ] && cp -a {export}/tls {CONTAINER_ROOT}/tls
{tmpfs}mount --bind {hosts} /etc/hosts
mount -t tmpfs none /usr/local
mkdir -p /usr/local/apache2/modules /usr/local/apache2/conf
mount --bind {modules} /usr/local/apache2/modules
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
    export = _export_for_debian(profile, entry.name, tmp_path, nginx)
    compose = _stage_for_debian(export, apache)
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
    script = _namespace_script(export, compose, apache)
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


EVERY_BUILTIN = [e for e in list_profiles() if e.builtin]


@pytest.mark.parametrize("entry", EVERY_BUILTIN, ids=[e.name for e in EVERY_BUILTIN])
def test_process_compose_export_is_complete(entry, tmp_path: Path) -> None:
    """No process-compose binary here: this checks the file's structure against the vocabulary
    (process-compose's src/types), and that the configs it points at were rendered."""
    profile = load_profile(entry.path)
    out = tmp_path / "process-compose.yaml"
    export_process_compose(profile, out, run_dir=tmp_path / "run")
    doc = yaml.safe_load(out.read_text(encoding="utf-8"))
    companions = {f"{n}-php-fpm" for n, node in profile.nodes.items()
                  if isinstance(node, ProxyNode) and any(r.php for r in node.routes)}
    assert set(doc["processes"]) == set(profile.nodes) | companions
    for name, proc in doc["processes"].items():
        for dep, cond in proc.get("depends_on", {}).items():
            assert dep in doc["processes"] and cond == {"condition": "process_healthy"}
        if name in companions:  # probed at its FastCGI socket
            assert "AF_UNIX" in proc["readiness_probe"]["exec"]["command"]
        else:
            assert proc["readiness_probe"]["http_get"]["port"] == profile.nodes[name].port
        assert Path(proc["working_dir"]).is_dir()
    for path in (tmp_path / "run" / "conf").iterdir():
        assert path.stat().st_size > 0


RUN_PROFILES = [e for e in PROXIED if e.name in ("nginx-split", "nginx-gunicorn-uvicorn", "nginx-tls-uvicorn")]


@pytest.mark.parametrize("entry", RUN_PROFILES, ids=[e.name for e in RUN_PROFILES])
def test_exported_stack_serves_through_service_names(entry, tmp_path: Path) -> None:
    """Runs the compose export's own commands, not in containers but in private mount, network and
    pid namespaces: the container paths, /etc/hosts naming the services, loopback only, every
    process killed with the namespace. Services start in compose order, each after its
    dependencies' exported healthchecks pass; then a request to every route of the entry must get
    an answer (below 500) and must show up in every tier's access log.

    Proves: the exported configs, command lines, healthchecks and service-name upstreams work
    together with the real servers (Debian's nginx/apache2, this venv's uvicorn/gunicorn) and the
    app code copied into build/<node>/src. Not proved: the images (their nginx is 1.28, httpd is
    built differently, Python comes from the python image and requirements.txt), container
    networking, volumes and the engine's restart and healthcheck handling. The app directory is
    /srv/app instead of /app (a root-level mount point cannot be made without touching the host)."""
    if shutil.which("unshare") is None or shutil.which("ip") is None:
        pytest.skip("needs unshare and ip (util-linux, iproute2)")
    nginx, apache = discovery.find_nginx(), discovery.find_apache()
    if nginx is None or apache is None:
        pytest.skip("needs Debian's nginx and apache2")
    profile = load_profile(entry.path)
    export = _export_for_debian(profile, entry.name, tmp_path, nginx)
    compose = _stage_for_debian(export, apache)
    script = "ip link set lo up\n" + _namespace_script(export, compose, apache)
    for node_name in profile.start_order():
        svc = compose["services"][service_name(node_name)]
        argv = [str(a) for a in svc["command"]]
        env = dict(svc.get("environment", {}))
        if "build" in svc:
            script += f"rm -rf /srv/app && cp -a {export}/{svc['build']['context']}/src /srv/app\n"
            argv = [sys.executable if i == 0 else ("/srv/app" if a == "/app" else a) for i, a in enumerate(argv)]
            env["STACKPANEL_APP_DIR"] = "/srv/app"
            cwd = "/srv/app"
        else:
            argv[0] = str(nginx.path) if profile.nodes[node_name].kind == "nginx" else str(apache.path)
            cwd = "/"
        assigns = " ".join(shlex.quote(f"{k}={v}") for k, v in env.items())
        script += (f"(cd {cwd} && exec env -u PYTHONPATH {assigns} {shlex.join(argv)}) "
                   f"> {tmp_path}/{node_name}.out 2>&1 &\n")
        check = svc["healthcheck"]["test"][-1].replace("$$", "$")
        script += (f"i=0; until bash -c {shlex.quote(check)} 2>/dev/null; do i=$((i+1)); "
                   f"[ $i -lt 150 ] || {{ echo 'UNHEALTHY {node_name}'; exit 1; }}; sleep 0.2; done\n")
    entry_node = profile.nodes[profile.entry]
    assert isinstance(entry_node, ProxyNode)
    for route in entry_node.routes:
        script += (f"echo ROUTE {route.path} $(curl -s -o /dev/null -w '%{{http_code}}' "
                   f"http://localhost:{entry_node.port}{route.path})\n")
        if entry_node.tls is not None:
            script += (f"echo ROUTE https{route.path} $(curl -sk -o /dev/null -w '%{{http_code}}' "
                       f"https://localhost:{entry_node.tls.port}{route.path})\n")
    script += f"sleep 1.2; cp -a {CONTAINER_ROOT}/logs {tmp_path}/logs\n"  # nginx flushes its log buffer every 1 s
    done = subprocess.run(["unshare", "-m", "-n", "-p", "-f", "--kill-child", "sh", "-c", script],
                          capture_output=True, text=True, timeout=120)
    outputs = "\n".join(f"--- {p.name}\n{p.read_text(errors='replace')[-1500:]}" for p in tmp_path.glob("*.out"))
    assert done.returncode == 0, done.stdout + done.stderr + outputs
    statuses = dict(line.split()[1:3] for line in done.stdout.splitlines() if line.startswith("ROUTE "))
    # Below 500: answered by the tier behind the route (a 404 from the app for /ws is an answer;
    # a 502/504 would be an upstream nginx or Apache could not reach).
    assert statuses and all(len(v) == 3 and int(v) < 500 for v in statuses.values()), (statuses, outputs)
    assert "200" in statuses.values(), statuses
    for node_name in profile.nodes:
        log = tmp_path / "logs" / f"{node_name}.access.log"
        assert log.is_file() and log.stat().st_size > 0, f"no request reached {node_name}\n{outputs}"

"""Every built-in profile, rendered, passes the real servers' own config tests (nginx -t, apache2 -t)."""
from __future__ import annotations

import os
import re
import subprocess
from pathlib import Path

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from stackpanel.core.errors import ProfileError, RenderError
from stackpanel.core.profiles.library import list_profiles
from stackpanel.core.profiles.loader import load_profile, load_profile_text
from stackpanel.core.render import render_stack
from tests import hostile

pytestmark = pytest.mark.integration

BUILTINS = [e for e in list_profiles() if e.builtin]


@pytest.mark.parametrize("entry", BUILTINS, ids=[e.name for e in BUILTINS])
def test_rendered_configs_pass_the_servers_own_test(entry, tmp_path: Path) -> None:
    stack = render_stack(load_profile(entry.path), tmp_path / "run")
    stack.write()
    tested = 0
    for node in stack.nodes.values():
        if node.config_test_argv is None:
            continue
        result = subprocess.run(node.config_test_argv, capture_output=True, text=True, timeout=30)
        assert result.returncode == 0, f"{node.name}: {result.stdout}{result.stderr}"
        assert "warn" not in (result.stdout + result.stderr).lower(), result.stdout + result.stderr
        tested += 1
    proxies = sum(1 for n in stack.profile.nodes.values() if n.kind in ("nginx", "apache"))
    assert tested == proxies


def test_gunicorn_accepts_the_rendered_arguments(tmp_path: Path) -> None:
    """gunicorn --check-config parses our argv (incl. the JSON log config) and imports the app."""
    for name in ("nginx-gunicorn-uvicorn", "nginx-gunicorn-flask"):
        stack = render_stack(load_profile(next(e.path for e in BUILTINS if e.name == name)), tmp_path / name)
        stack.write()
        app = stack.nodes["app"]
        # --check-config loads the app before gunicorn applies --pythonpath (where the access
        # wrapper lives); a real start applies it first
        env = app.environment(os.environ) | {"PYTHONPATH": str(stack.paths.conf_dir)}
        result = subprocess.run([*app.argv, "--check-config"], cwd=app.cwd, capture_output=True, text=True,
                                timeout=60, env=env)
        assert result.returncode == 0, result.stdout + result.stderr


# ----------------------------------------------------------------- hostile values, checked by the servers


def _dump_nginx(node, cwd: Path) -> tuple[list[str], str]:
    """(files nginx read, the text of the config as nginx -T prints it)."""
    argv = [a for a in node.config_test_argv if a != "-q"]
    argv[argv.index("-t")] = "-T"
    result = subprocess.run(argv, capture_output=True, text=True, timeout=30, cwd=cwd)
    assert result.returncode == 0, result.stderr
    files = re.findall(r"^# configuration file (.+):$", result.stdout, flags=re.M)
    return files, result.stdout


def _apache_includes(node, cwd: Path) -> list[str]:
    result = subprocess.run([*node.config_test_argv, "-D", "DUMP_INCLUDES"], capture_output=True, text=True,
                            timeout=30, cwd=cwd)
    assert result.returncode == 0, result.stdout + result.stderr
    return re.findall(r"^\s*\(\*\) (.+)$", result.stdout, flags=re.M)


@pytest.fixture(scope="module")
def hostile_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    directory = tmp_path_factory.mktemp("hostile")
    (directory / "site").mkdir()
    return directory


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(field=st.sampled_from(hostile.LEAVES), value=hostile.hostile_text)
def test_hostile_values_are_refused_or_read_back_unchanged_by_the_servers(hostile_dir: Path, field: tuple,
                                                                          value: str) -> None:
    """nginx -T and apache2 -t -D DUMP_INCLUDES: one config file each, and the directives nginx
    read back are those of the base profile (no Include, no extra Listen, no ProxyRequests)."""
    if field[-1] == "path":
        value = "/x" + value + "y"
    text = yaml.safe_dump(hostile.put(hostile.BASE, field, value), allow_unicode=True)
    try:
        stack = render_stack(load_profile_text(text, hostile_dir / "p.yaml"), hostile_dir / "run")
    except (ProfileError, RenderError):
        return
    stack.write()
    base = render_stack(load_profile_text(yaml.safe_dump(hostile.BASE), hostile_dir / "p.yaml"),
                        hostile_dir / "base")
    base.write()
    files, dumped = _dump_nginx(stack.nodes["edge"], hostile_dir)
    _, base_dumped = _dump_nginx(base.nodes["edge"], hostile_dir)
    assert files == [str(stack.nodes["edge"].config_file)]
    if hostile.only_injection_could_change_structure(field, value):
        assert hostile.skeleton_nginx(dumped) == hostile.skeleton_nginx(base_dumped), (field, value)
    assert _apache_includes(stack.nodes["mid"], hostile_dir) == [str(stack.nodes["mid"].config_file)]


@pytest.mark.parametrize(("proxy", "route"), [
    ("nginx", {"balance": "least_conn", "max_fails": 3, "fail_timeout_seconds": 2, "strip_prefix": True}),
    ("nginx", {"balance": "ip_hash"}),
    ("apache", {"balance": "sticky", "fail_timeout_seconds": 2}),
    ("apache", {"balance": "least_conn", "strip_prefix": True}),
])
@pytest.mark.parametrize("listen", ["tcp", "unix"])
def test_balanced_routes_pass_the_servers_own_test_without_warnings(proxy: str, route: dict, listen: str,
                                                                    tmp_path: Path) -> None:
    data = yaml.safe_load((next(e.path for e in BUILTINS if e.name == "nginx-balanced")).read_text())
    data["nodes"]["web"]["kind"] = proxy
    data["nodes"]["web"]["routes"][0].update(route)
    for app in ("app1", "app2"):
        data["nodes"][app]["listen"] = listen
    entry = next(e for e in BUILTINS if e.name == "nginx-balanced")
    stack = render_stack(load_profile_text(yaml.safe_dump(data), entry.path), tmp_path / "run")
    stack.write()
    web = stack.nodes["web"]
    assert web.config_test_argv is not None
    result = subprocess.run(web.config_test_argv, capture_output=True, text=True, timeout=30)
    assert result.returncode == 0 and "warn" not in (result.stdout + result.stderr).lower(), result.stderr

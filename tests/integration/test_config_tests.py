"""Every built-in profile, rendered, passes the real servers' own config tests (nginx -t, apache2 -t)."""
from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from stackpanel.core.profiles.library import list_profiles
from stackpanel.core.profiles.loader import load_profile
from stackpanel.core.render import render_stack

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
        result = subprocess.run([*app.argv, "--check-config"], cwd=app.cwd, capture_output=True, text=True,
                                timeout=60)
        assert result.returncode == 0, result.stdout + result.stderr

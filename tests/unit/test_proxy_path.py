"""The proxy path (issue 12): Apache's MPM as a profile key."""
from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from stackpanel.core.errors import ProfileError
from stackpanel.core.profiles.library import builtin_dir
from stackpanel.core.profiles.loader import load_profile, load_profile_text
from stackpanel.core.render import render_stack
from tests.unit.test_render import APACHE, NGINX

APACHE_WORKER = dataclasses.replace(APACHE, available=APACHE.available | {"mpm_worker"})


def conf(text: str, tmp_path: Path) -> str:
    profile = load_profile_text(text, tmp_path / "p.yaml")
    stack = render_stack(profile, tmp_path / "run", nginx=NGINX, apache=APACHE_WORKER)
    return next(iter(stack.nodes["web"].files.values()))


def test_event_is_the_default_mpm(tmp_path: Path) -> None:
    stack = render_stack(load_profile(builtin_dir() / "apache-uvicorn.yaml"), tmp_path / "run", nginx=NGINX,
                         apache=APACHE_WORKER)
    text = next(iter(stack.nodes["web"].files.values()))
    assert "LoadModule mpm_event_module /usr/lib/apache2/modules/mod_mpm_event.so" in text
    assert "mpm_worker" not in text


def test_mpm_worker_loads_the_worker_module_only(tmp_path: Path) -> None:
    text = (builtin_dir() / "apache-uvicorn.yaml").read_text().replace("kind: apache\n",
                                                                        "kind: apache\n    mpm: worker\n")
    rendered = conf(text, tmp_path)
    assert "LoadModule mpm_worker_module /usr/lib/apache2/modules/mod_mpm_worker.so" in rendered
    assert "mpm_event" not in rendered
    assert "ThreadsPerChild 128" in rendered  # the same thread settings apply


def test_an_unknown_mpm_is_a_located_error(tmp_path: Path) -> None:
    text = (builtin_dir() / "apache-uvicorn.yaml").read_text().replace("kind: apache\n",
                                                                        "kind: apache\n    mpm: prefork\n")
    with pytest.raises(ProfileError) as info:
        load_profile_text(text, tmp_path / "p.yaml")
    (problem,) = info.value.problems
    assert problem.line == text.splitlines().index("    mpm: prefork") + 1
    assert "'event'" in problem.message and "'worker'" in problem.message

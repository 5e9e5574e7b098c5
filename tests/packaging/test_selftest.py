"""`stackpanel selftest` and the workshop group, on this machine (fast; no package built)."""
from __future__ import annotations

import re
from pathlib import Path

import pytest

from stackpanel.core.profiles import library
from stackpanel.core.supervise.ports import free_port_offset
from stackpanel.selftest import default_profiles, run_selftest

WORKSHOP = Path(__file__).resolve().parents[2] / "packaging" / "example-workshop"


@pytest.fixture
def workshop(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    monkeypatch.setenv("STACKPANEL_WORKSHOP_DIR", str(WORKSHOP))
    monkeypatch.setattr(library, "user_dir", lambda: tmp_path / "no-user-profiles")
    return WORKSHOP


def test_workshop_profiles_form_their_own_group(workshop: Path) -> None:
    entries = library.list_profiles()
    groups = [e.group for e in entries]
    assert groups == sorted(groups, key=["built-in", "workshop", "user"].index)
    ws = [e for e in entries if e.group == "workshop"]
    assert [e.name for e in ws] == ["workshop-hello"] and all(e.builtin for e in ws)
    assert library.resolve_profile("workshop-hello") == workshop / "workshop-hello.yaml"
    assert default_profiles() == ["workshop-hello"]


def test_without_a_workshop_the_default_is_every_builtin(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("STACKPANEL_WORKSHOP_DIR", str(tmp_path / "none"))
    assert default_profiles() == sorted(p.stem for p in library.builtin_dir().glob("*.yaml"))


def test_a_profile_that_does_not_load_is_one_fail_line_and_exit_1() -> None:
    lines: list[str] = []
    assert run_selftest(["no-such-profile"], say=lines.append) == 1
    assert lines[0].startswith("FAIL  no-such-profile: profile does not load")
    assert lines[-1] == "selftest: 1 of 2 checks failed"


@pytest.mark.integration
def test_up_request_stop_nothing_left() -> None:
    """(The workshop's own profile needs its baked-in requirements: the install test runs it.)"""
    offset = free_port_offset((8080, 8000))
    lines: list[str] = []
    assert run_selftest(["nginx-uvicorn"], port_offset=offset, say=lines.append) == 0, lines
    assert lines[0].startswith("PASS  doctor:")
    assert re.match(r"PASS  nginx-uvicorn: up .* → 200 .* processes gone, ports free$", lines[1]), lines[1]
    assert lines[-1] == "selftest: all 2 checks passed"

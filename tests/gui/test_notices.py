"""The panel says what the user must know before starting a profile: exposed nodes, and an https
entry whose local CA browsers do not trust yet (with the button that fixes it)."""
from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from stackpanel.core.profiles.library import resolve_profile
from stackpanel.qt.controller import StackController
from stackpanel.qt.notices import ProfileNotices

pytestmark = pytest.mark.gui

EXPOSED = """\
version: 1
name: exposed
nodes:
  web: {kind: nginx, port: 18080, host: 0.0.0.0, expose: true, routes: [{path: /, to: app}]}
  app: {kind: uvicorn, port: 18000, host: 0.0.0.0, expose: true, app: {module: stackpanel.apps.fastapi_demo:app}}
"""


def _load(qtbot: Any, controller: StackController, name: str, path: Path) -> None:
    op = controller.load_profile(name, path)
    qtbot.waitUntil(op.done, timeout=10_000)


def test_exposed_nodes_are_shown_and_loopback_profiles_say_nothing(qtbot: Any, tmp_path: Path) -> None:
    c = StackController()
    notices = ProfileNotices(c)
    qtbot.addWidget(notices)
    (tmp_path / "exposed.yaml").write_text(EXPOSED)
    _load(qtbot, c, "exposed", tmp_path / "exposed.yaml")
    assert not notices.isHidden()
    assert "node 'web' listens on every network interface" in notices.text.text()
    assert "bypasses that proxy" in notices.text.text()
    assert notices.trust_button.isHidden()
    _load(qtbot, c, "nginx-uvicorn", resolve_profile("nginx-uvicorn"))
    assert notices.isHidden()  # nothing kept after it stopped being true
    c.shutdown()


def test_an_untrusted_https_entry_offers_the_trust_button(qtbot: Any, tmp_path: Path,
                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "data"))  # no CA yet: certainly not trusted
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    c = StackController()
    notices = ProfileNotices(c)
    qtbot.addWidget(notices)
    _load(qtbot, c, "nginx-tls-uvicorn", resolve_profile("nginx-tls-uvicorn"))
    assert not notices.isHidden() and not notices.trust_button.isHidden()
    assert "stackpanel trust" in notices.text.text()
    assert c.browser_url.startswith("https://127.0.0.1:8443/")
    c.shutdown()

"""Stack → Export… writes the loaded profile through the core's export (the CLI's path), off the
GUI thread; disabled while no valid profile is loaded."""
from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml
from PySide6.QtWidgets import QMessageBox, QWidget

from stackpanel.core.profiles.library import resolve_profile
from stackpanel.qt.controller import StackController
from stackpanel.qt.export_action import ExportAction

pytestmark = pytest.mark.gui


def test_export_writes_compose_and_process_compose(qtbot: Any, tmp_path: Path,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    shown: list[str] = []
    monkeypatch.setattr(QMessageBox, "information", lambda _p, _t, text: shown.append(text))
    c = StackController()
    parent = QWidget()
    qtbot.addWidget(parent)
    action = ExportAction(c, parent)
    assert not action.isEnabled()
    op = c.load_profile("nginx-split", resolve_profile("nginx-split"))
    qtbot.waitUntil(op.done, timeout=10_000)
    assert action.isEnabled()
    done = action.run("compose", tmp_path / "compose")
    qtbot.waitUntil(done.done, timeout=30_000)
    assert done.ok, done.error
    compose = yaml.safe_load((tmp_path / "compose" / "compose.yaml").read_text())
    assert set(compose["services"]) == {"edge", "app", "site"}
    done = action.run("process-compose", tmp_path / "pc.yaml")
    qtbot.waitUntil(done.done, timeout=30_000)
    assert done.ok and "processes" in yaml.safe_load((tmp_path / "pc.yaml").read_text())
    qtbot.waitUntil(lambda: len(shown) == 2)
    assert "compose" in shown[0] and "process-compose" in shown[1]
    c.shutdown()

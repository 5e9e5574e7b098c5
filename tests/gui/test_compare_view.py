"""The compare view: a real comparison run from the widget, off the GUI thread."""
from __future__ import annotations

import pytest
from PySide6.QtCore import Qt

from stackpanel.qt.compare_view import COLUMNS, CompareView

pytestmark = pytest.mark.gui


def check_only(view: CompareView, names: set[str]) -> None:
    for i in range(view.profiles.count()):
        item = view.profiles.item(i)
        item.setCheckState(Qt.CheckState.Checked if item.text() in names else Qt.CheckState.Unchecked)


def test_nothing_selected_says_so(qtbot) -> None:
    view = CompareView()
    qtbot.addWidget(view)
    check_only(view, set())
    view.run()
    assert "tick at least one profile" in view.log.toPlainText()
    assert view.run_button.isEnabled()


@pytest.mark.integration
def test_a_real_comparison_fills_the_table_and_the_chart(qtbot) -> None:
    view = CompareView()
    qtbot.addWidget(view)
    check_only(view, {"uvicorn-workers", "nginx-uvicorn"})
    view.duration.setValue(1)
    view.warmup.setValue(0)
    view.workers.setValue(1)
    view.connections.setValue(4)
    with qtbot.waitSignal(view.finished, timeout=90_000) as blocker:
        view.run()
        assert not view.run_button.isEnabled()  # the GUI thread is free while it runs
    comparison = blocker.args[0]
    assert [r.name for r in comparison.runs] == ["uvicorn-workers", "nginx-uvicorn"]  # baseline first
    assert all(r.ok for r in comparison.runs), [r.reason for r in comparison.runs]
    assert view.table.rowCount() == 2 and view.table.columnCount() == len(COLUMNS)
    assert view.table.item(0, 2).text() == "1.00"  # the first profile is the baseline
    assert float(view.table.item(1, 1).text().replace(",", "")) > 0
    assert not view.chart.pixmap().isNull()
    assert view.save_button.isEnabled()
    assert "nginx-uvicorn" in view.log.toPlainText()  # progress lines reached the GUI
    view.shutdown()

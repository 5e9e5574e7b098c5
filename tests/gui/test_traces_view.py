"""The Traces tab with synthetic traces (no servers): the list, its filters and id search, the waterfall
(pid, start offset, duration, own time, hop time, status per tier), the empty states, the export, and
traces arriving from a core thread through the bridge."""
from __future__ import annotations

import json
import threading
from pathlib import Path
from typing import Any

import pytest
from PySide6.QtCore import Qt

from stackpanel.core.metrics.synthetic import trace_lines
from stackpanel.core.metrics.tracing import Trace, TraceCollector
from stackpanel.core.profiles.library import resolve_profile
from stackpanel.qt.controller import StackController
from stackpanel.qt.panels import TAB_PANELS
from stackpanel.qt.traces_view import TracesView, waterfall_rows

pytestmark = pytest.mark.gui

PATH3 = [("edge", "nginx", 101, "web"), ("web", "apache", 202, "app"), ("app", "gunicorn", 303, "-")]
T0 = 1_750_000_000.0


def synthetic() -> tuple[Trace, ...]:
    c = TraceCollector("edge")
    for n in ("edge", "web", "app"):
        c.add_node(n)
    lines = (trace_lines("ok-1", PATH3, start=T0, duration=0.040, path="/api/items", hop=0.002)
             + trace_lines("slow-2", PATH3, start=T0 + 1, duration=0.900, path="/api/report")
             + trace_lines("boom-3", PATH3, start=T0 + 2, duration=0.010, status=500, path="/api/items")
             + trace_lines("static-4", [("edge", "nginx", 101, "static")], start=T0 + 3, duration=0.001,
                           path="/index.html"))
    for node in ("app", "web", "edge"):
        c.feed(node, [ln.encode() for n, ln in lines if n == node], now=1.0)
    return c.traces()


def shown_ids(view: TracesView) -> list[str]:
    return [view.list.topLevelItem(i).text(5) for i in range(view.list.topLevelItemCount())]


def test_the_traces_tab_is_registered() -> None:
    assert any(spec.key == "traces" and spec.title == "Traces" for spec in TAB_PANELS)


def test_list_filters_and_search(qtbot: Any) -> None:
    view = TracesView()
    qtbot.addWidget(view)
    view.set_traces(synthetic())
    assert view.pages.currentIndex() == 1
    assert shown_ids(view) == ["static-4", "boom-3", "slow-2", "ok-1"]
    assert view.list.topLevelItem(1).text(4) == "edge → web → app" and view.list.topLevelItem(1).text(2) == "500"
    view.path.setText("/api/items")
    assert shown_ids(view) == ["boom-3", "ok-1"]
    view.status.setCurrentText("failed")
    assert shown_ids(view) == ["boom-3"]
    view.clear_filters()
    view.status.setCurrentText("2xx")
    assert shown_ids(view) == ["static-4", "slow-2", "ok-1"]
    view.clear_filters()
    assert [view.node.itemText(i) for i in range(view.node.count())] == ["any node", "edge", "web", "app"]
    view.node.setCurrentText("app")
    assert shown_ids(view) == ["boom-3", "slow-2", "ok-1"]
    view.clear_filters()
    view.min_ms.setValue(100)
    assert shown_ids(view) == ["slow-2"]
    view.clear_filters()
    view.search.setText("ok-")
    assert shown_ids(view) == ["ok-1"]
    view.clear_filters()
    view.search.setText("no-such-id")
    assert shown_ids(view) == [] and "0 of 4" in view.summary.text()


def test_clicking_a_request_shows_its_waterfall(qtbot: Any) -> None:
    view = TracesView()
    qtbot.addWidget(view)
    view.resize(1000, 600)
    view.show()
    view.set_traces(synthetic())
    assert view.waterfall.trace is None
    item = view.list.topLevelItem(3)  # ok-1
    rect = view.list.visualItemRect(item)
    qtbot.mouseClick(view.list.viewport(), Qt.MouseButton.LeftButton, pos=rect.center())
    trace = view.selected()
    assert trace is not None and trace.request_id == "ok-1"
    rows = waterfall_rows(trace)
    assert [r["node"] for r in rows] == ["edge", "web", "app"]
    assert [r["pid"] for r in rows] == ["101", "202", "303"] and {r["status"] for r in rows} == {"200"}
    # each tier starts 2 ms after the one in front and ends 2 ms before it: durations 40, 36, 32 ms
    assert [r["start"] for r in rows] == ["0.00", "2.00", "4.00"]
    assert [r["duration"] for r in rows] == ["40.00", "36.00", "32.00"]
    assert [r["own"] for r in rows] == ["4.00", "4.00", "32.00"]  # its duration minus the next tier's
    assert [r["hop"] for r in rows] == ["2.00", "2.00", ""]
    assert "pid 202" in view.waterfall.toolTip() and "own 4.00 ms" in view.waterfall.toolTip()
    assert view.waterfall.grab().width() > 0  # paints
    # the selection survives a refresh with newer traces, and goes when filtered out
    view.set_traces(synthetic())
    assert view.selected() is not None and view.selected().request_id == "ok-1"
    view.status.setCurrentText("5xx")
    assert view.selected() is None
    assert view.select("boom-3") and {r["status"] for r in waterfall_rows(view.selected())} == {"500"}


def test_empty_state_says_what_to_do(qtbot: Any) -> None:
    controller = StackController()
    view = TracesView(controller=controller)
    qtbot.addWidget(view)
    assert view.pages.currentIndex() == 0
    assert "start the stack, then send a request" in view.empty_text.text()
    assert view.empty_button.text() == "Start the stack" and not view.empty_button.isEnabled()  # no profile yet
    with qtbot.waitSignal(controller.profileLoaded, timeout=10_000):
        controller.load_profile("nginx-uvicorn", resolve_profile("nginx-uvicorn"))
    qtbot.waitUntil(view.empty_button.isEnabled, timeout=5_000)
    assert [view.node.itemText(i) for i in range(view.node.count())] == ["any node", "web", "app"]
    view.set_traces(synthetic())
    assert view.pages.currentIndex() == 1
    view.set_traces(())
    assert view.pages.currentIndex() == 0


class TracingSession:
    """The parts of a session the bridge and the view use: traces completed on a core thread."""

    def __init__(self) -> None:
        self.collector = TraceCollector("edge")
        for n in ("edge", "web", "app"):
            self.collector.add_node(n)

    def subscribe(self, cb: Any) -> Any:
        return lambda: None

    def subscribe_metrics(self, cb: Any) -> Any:
        return lambda: None

    def subscribe_traces(self, cb: Any) -> Any:
        return self.collector.subscribe(cb)

    def traces(self) -> tuple[Trace, ...]:
        return self.collector.traces()

    def complete_on_a_core_thread(self, rid: str) -> None:
        def run() -> None:
            for node, line in reversed(trace_lines(rid, PATH3, start=T0, duration=0.02)):
                self.collector.feed(node, [line.encode()], now=1.0)
            self.collector.publish()

        t = threading.Thread(target=run)
        t.start()
        t.join()


def test_traces_from_a_core_thread_reach_the_view_and_export_as_otlp(qtbot: Any, tmp_path: Path) -> None:
    controller = StackController()
    view = TracesView(controller=controller)
    qtbot.addWidget(view)
    view.show()
    session = TracingSession()
    controller.session = session  # type: ignore[assignment]
    controller.bridge.attach(session)
    with qtbot.waitSignal(controller.bridge.traces, timeout=5_000) as batch:
        session.complete_on_a_core_thread("live-1")
    assert [t.request_id for t in batch.args[0]] == ["live-1"]
    qtbot.waitUntil(lambda: shown_ids(view) == ["live-1"], timeout=5_000)
    op = view.export_to(tmp_path / "out.otlp.json")
    assert op is not None
    qtbot.waitUntil(op.done, timeout=5_000)
    assert op.ok and op.result() == 1
    doc = json.loads((tmp_path / "out.otlp.json").read_text())
    assert sorted(rs["resource"]["attributes"][0]["value"]["stringValue"] for rs in doc["resourceSpans"]) == [
        "app", "edge", "web"]
    controller.bridge.detach()


def test_a_running_stack_without_requests_says_where_to_send_one(qtbot: Any, tmp_path: Path) -> None:
    from tests.gui.test_controller import RecordingSession, loaded_controller

    controller = loaded_controller(qtbot, lambda p: RecordingSession(p, tmp_path / "run", []))
    view = TracesView(controller=controller)
    qtbot.addWidget(view)
    assert view.empty_button.text() == "Start the stack" and view.empty_button.isEnabled()
    view.empty_button.click()  # starts the stack, like the toolbar's Start
    qtbot.waitUntil(lambda: view.empty_button.text() == "Open in browser", timeout=10_000)
    assert controller.browser_url in view.empty_text.text() and "send one" in view.empty_text.text()
    assert view.pages.currentIndex() == 0

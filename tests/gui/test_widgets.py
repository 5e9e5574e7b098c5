"""Widgets fed with real core objects: profiles from the built-in library, events as the supervisor
emits them, metrics snapshots from a real MetricsEngine over synthetic access-log lines."""
from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PySide6.QtGui import QColor

from stackpanel.core.metrics import MetricsEngine
from stackpanel.core.metrics.synthetic import access_line
from stackpanel.core.profiles.library import list_profiles, resolve_profile
from stackpanel.core.profiles.loader import load_profile
from stackpanel.core.supervise.events import NodeState, NodeStateChanged, WorkersChanged
from stackpanel.qt.bridge import LogSource
from stackpanel.qt.graph_view import GraphView, edge_width
from stackpanel.qt.log_view import LogView, is_error_line
from stackpanel.qt.plots import PlotsPanel
from stackpanel.qt.theme import state_colour

pytestmark = pytest.mark.gui


@pytest.fixture
def sleepers() -> Iterator[list[int]]:
    procs = [subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"]) for _ in range(3)]
    yield [p.pid for p in procs]
    for p in procs:
        p.kill()
        p.wait(5)


def append(path: Path, lines: list[str]) -> None:
    with open(path, "a") as f:
        f.write("".join(line + "\n" for line in lines))


@pytest.mark.parametrize("name", [e.name for e in list_profiles() if e.builtin])
def test_graph_lays_out_every_builtin_profile_left_to_right(qtbot: Any, name: str) -> None:
    profile = load_profile(resolve_profile(name))
    view = GraphView()
    qtbot.addWidget(view)
    view.set_profile(profile)
    assert set(view.nodes) == set(profile.nodes)
    client = view.leaves["client"]
    entry = view.nodes[profile.entry]
    assert view.edge("client", profile.entry) is not None
    for e in profile.edges():  # every route is an edge, labelled with its path, drawn left to right
        target = e.target if e.target != "static" else f"static:{e.source}"
        edge = view.edge(e.source, target)
        assert edge is not None and e.path in edge.routes
        assert view._item(target).pos().x() > view.nodes[e.source].pos().x()
    for n, node in profile.nodes.items():
        if node.kind in ("gunicorn", "uvicorn"):
            assert view.edge(n, f"app:{n}") is not None
    assert client.pos().x() < entry.pos().x()


def test_graph_follows_states_workers_and_traffic(qtbot: Any, tmp_path: Path, sleepers: list[int]) -> None:
    profile = load_profile(resolve_profile("nginx-uvicorn"))
    view = GraphView()
    qtbot.addWidget(view)
    view.set_profile(profile)
    view.apply_event(NodeStateChanged("app", NodeState.STARTING, NodeState.STOPPED, sleepers[0]))
    assert view.nodes["app"].colour == state_colour(NodeState.STARTING)
    view.apply_event(WorkersChanged("app", sleepers[0], (sleepers[1], sleepers[2]), (sleepers[1], sleepers[2]), ()))
    view.apply_event(NodeStateChanged("app", NodeState.READY, NodeState.STARTING, sleepers[0]))
    assert set(view.workers["app"]) == {sleepers[1], sleepers[2]}
    assert view.nodes["app"].colour == state_colour(NodeState.READY)
    chip = view.workers["app"][sleepers[1]]
    assert chip.pos().y() > view.nodes["app"].pos().y() + view.nodes["app"].h - 1  # under its master
    view.apply_event(WorkersChanged("app", sleepers[0], (sleepers[2],), (), (sleepers[1],)))
    assert set(view.workers["app"]) == {sleepers[2]}
    assert chip.scene() is None

    # traffic: a real engine over the logs the tiers write
    web_log, app_log = tmp_path / "web.log", tmp_path / "app.log"
    eng = MetricsEngine()
    eng.register_node("web", "nginx", web_log, routes=["app", "static"])
    eng.register_node("app", "uvicorn", app_log)
    eng.set_workers("web", os.getpid(), [])
    eng.set_workers("app", sleepers[0], [sleepers[2]])
    eng.tick(0.0)
    append(web_log, [access_line("nginx", os.getpid(), 200, 0.004, "app")] * 190
           + [access_line("nginx", os.getpid(), 502, 0.001, "app")] * 10
           + [access_line("nginx", os.getpid(), 200, 0.001, "static")] * 20)
    append(app_log, [access_line("uvicorn", sleepers[2], 200, 0, "-")] * 190)
    snap = eng.tick(2.0)
    eng.close()
    view.apply_metrics(snap)
    api = view.edge("web", "app")
    static = view.edge("web", "static:web")
    client = view.edge("client", "web")
    assert api is not None and static is not None and client is not None
    assert api.label_text == "/api\n100 req/s\n5.0% 5xx"
    assert static.label_text == "/\n10 req/s\n0.0% 5xx"
    assert client.rps == pytest.approx(110.0)
    assert api.pen().widthF() == pytest.approx(edge_width(100.0)) and api.pen().widthF() > static.pen().widthF()
    assert api.pen().color() == QColor("#e5534b")  # >= 1 % errors: red
    assert view.edge("app", "app:app").rps == pytest.approx(95.0)  # type: ignore[union-attr]
    assert view.workers["app"][sleepers[2]].rate == "95/s"
    assert "110 req/s" in view.nodes["web"].metric_line
    # stopping clears the workers
    view.apply_event(NodeStateChanged("app", NodeState.STOPPED, NodeState.STOPPING, None))
    assert view.workers["app"] == {}


def test_graph_click_selects_node(qtbot: Any) -> None:
    view = GraphView()
    qtbot.addWidget(view)
    view.resize(900, 400)
    view.show()
    view.set_profile(load_profile(resolve_profile("nginx-split")))
    clicked: list[str] = []
    view.nodeClicked.connect(clicked.append)
    item = view.nodes["site"]
    pos = view.mapFromScene(item.pos() + item.boundingRect().center())
    from PySide6.QtCore import Qt

    qtbot.mouseClick(view.viewport(), Qt.MouseButton.LeftButton, pos=pos)
    assert clicked == ["site"]
    assert item.selected_mark


def test_plots_one_curve_per_worker_window_and_pause(qtbot: Any, tmp_path: Path, sleepers: list[int]) -> None:
    log = tmp_path / "app.log"
    eng = MetricsEngine()
    eng.register_node("app", "gunicorn", log, routes=["-"])
    eng.set_workers("app", sleepers[0], sleepers[1:])
    panel = PlotsPanel(redraw_ms=10_000)
    qtbot.addWidget(panel)
    panel.show()
    panel.entry = "app"
    for t in range(0, 400, 10):  # 400 s of history at one tick per 10 s
        append(log, [access_line("gunicorn", sleepers[1], 200, 0.01, "-")] * 20)
        snap = eng.tick(float(t))
    panel.apply_metrics(snap)
    panel.redraw()
    keys = {("app", p) for p in sleepers}
    assert set(panel.cpu.curves) == keys and set(panel.rps.curves) == keys and set(panel.rss.curves) == keys
    assert set(panel.latency.curves) == {("app", "p50"), ("app", "p95")}
    colours = {k: panel.colour(k) for k in keys}
    assert len(set(colours.values())) == 3
    x, y = panel.rps.curves[("app", sleepers[1])].getData()
    assert x is not None and x[-1] == 0.0 and x[0] >= -300  # 5 min window by default
    assert np.nanmax(y) == pytest.approx(2.0)  # 20 lines per 10 s
    _x50, y50 = panel.latency.curves[("app", "p50")].getData()
    assert np.nanmax(y50) == pytest.approx(10.0)  # ms
    panel.set_window(60)
    panel.redraw()
    x, _ = panel.rps.curves[("app", sleepers[1])].getData()
    assert x[0] >= -60 and len(x) == 7
    # a worker goes: its curve goes, the others keep their colours
    eng.set_workers("app", sleepers[0], [sleepers[2]])
    snap = eng.tick(400.0)
    eng.close()
    panel.set_paused(True)
    panel.apply_metrics(snap)
    panel._on_timer()
    assert ("app", sleepers[1]) in panel.cpu.curves  # paused: nothing redrawn
    panel.set_paused(False)
    panel.hide()
    panel._on_timer()
    assert ("app", sleepers[1]) in panel.cpu.curves  # hidden (another tab in front): not redrawn
    panel.show()
    panel._on_timer()
    assert set(panel.cpu.curves) == {("app", sleepers[0]), ("app", sleepers[2])}
    assert panel.colour(("app", sleepers[2])) == colours[("app", sleepers[2])]
    # every worker replaced (a restart): curves and legend entries are reused, renamed, recoloured
    before = {id(c) for c in panel.cpu.curves.values()}
    eng2 = MetricsEngine()
    eng2.register_node("app", "gunicorn", log, routes=["-"])
    eng2.set_workers("app", sleepers[1], [])
    snap2 = eng2.tick(0.0)
    eng2.close()
    assert {(w.node, w.pid) for w in snap2.workers} == {("app", sleepers[1])}
    panel.apply_metrics(snap2)
    panel.redraw()
    assert set(panel.cpu.curves) == {("app", sleepers[1])}
    assert id(panel.cpu.curves[("app", sleepers[1])]) in before  # recycled, not rebuilt
    labels = [label.text for _sample, label in panel.cpu.legend.items]
    assert labels == [f"app {sleepers[1]} master"] and panel.cpu._spare == []
    pen = panel.cpu.curves[("app", sleepers[1])].opts["pen"]
    assert pen.color().name() == QColor(colours[("app", sleepers[1])]).name()
    assert "app: " in panel.status.text()


def test_log_view_filter_search_follow_and_errors(qtbot: Any, tmp_path: Path) -> None:
    web_err, app_out = tmp_path / "web.error.log", tmp_path / "app.out.log"
    web_err.write_text("2024/01/01 [notice] 1#1: start worker processes\n")
    app_out.write_text("INFO:     Started server process [42]\n")
    view = LogView()
    qtbot.addWidget(view)
    view.show()  # a hidden view only keeps the backlog
    view.set_sources([LogSource("web", "error", web_err), LogSource("app", "out", app_out)])
    try:
        qtbot.waitUntil(lambda: len(view.lines) == 2, timeout=3000)
        append(app_out, ["Traceback (most recent call last):", "ValueError: boom"])
        qtbot.waitUntil(lambda: "ValueError: boom" in view.shown_text(), timeout=3000)
        assert view.shown_text().splitlines()[-1].startswith("app.out")
        # filter by process
        view.source_box.setCurrentIndex(view.source_box.findData("web."))
        assert "Traceback" not in view.shown_text() and "start worker" in view.shown_text()
        view.source_box.setCurrentIndex(0)
        # search
        view.search_edit.setText("valueerror")
        view.refilter()
        assert view.shown_text().splitlines() == [f"{'app.out':<16} ValueError: boom"]
        view.search_edit.setText("")
        view.errors_only.setChecked(True)
        assert len(view.shown_text().splitlines()) == 2  # Traceback + ValueError
        view.errors_only.setChecked(False)
        # follow: new lines keep the view at the end
        append(web_err, [f"line {i}" for i in range(300)])
        qtbot.waitUntil(lambda: "line 299" in view.shown_text(), timeout=3000)
        bar = view.text.verticalScrollBar()
        assert bar.value() == bar.maximum()
    finally:
        view.stop()
    assert is_error_line('web.access       1234 502 0.001 app - GET "/api"')  # as shown, with the label
    assert is_error_line('1234 502 0.001 app - GET "/api"')
    assert is_error_line("2024/01/01 [crit] 12#12: connect() failed")
    assert not is_error_line("INFO: 127.0.0.1 GET /healthz 200")


def test_log_view_throttles_appends_skips_floods_and_waits_while_hidden_or_paused(qtbot: Any) -> None:
    from stackpanel.qt import log_view as lv

    view = LogView(shown_lines=2000)
    qtbot.addWidget(view)
    view.resize(900, 400)
    view.show()
    # a flood: 10 batches of 400 lines between two flushes -> one flush of LINES_PER_FLUSH + a marker
    for b in range(10):
        view.append_lines([("app.access", f"GET /x {b}-{i} 200") for i in range(400)])
    assert view.shown_text() == ""  # nothing drawn before the timer fires
    view.flush()
    shown = view.shown_text().splitlines()
    assert len(shown) == lv.LINES_PER_FLUSH + 1
    assert shown[0].startswith("…") and f"{4000 - lv.LINES_PER_FLUSH} lines skipped" in shown[0]
    assert shown[-1].endswith("GET /x 9-399 200") and shown[1].endswith(f"GET /x 9-{400 - lv.LINES_PER_FLUSH} 200")
    assert not lv.is_error_line(shown[0])
    assert len(view.lines) == 4000  # skipped lines stay in the backlog: a search finds them
    view.search_edit.setText("x 0-7 200")
    view.refilter()
    assert view.shown_text().splitlines() == [f"{'app.access':<16} GET /x 0-7 200"]
    view.search_edit.setText("")
    # a rebuild shows the newest REFILTER_CHUNK lines at once and the older ones on the next ticks
    view.refilter()
    assert view.text.blockCount() == lv.REFILTER_CHUNK
    while view._backfill:
        view.flush()
    assert view.text.blockCount() == 2000  # the view's limit
    text = view.shown_text().splitlines()
    assert text[0].endswith("GET /x 5-0 200") and text[-1].endswith("GET /x 9-399 200")
    assert view.text.verticalScrollBar().value() == view.text.verticalScrollBar().maximum()

    # hidden (another tab in front): only the backlog grows; shown again: rebuilt from it
    view.hide()
    view.append_lines([("web.error", "hidden line")])
    view.flush()
    assert "hidden line" not in view.shown_text() and view.lines[-1] == ("web.error", "hidden line")
    view.show()
    assert view.shown_text().splitlines()[-1].endswith("hidden line")
    while view._backfill:
        view.flush()

    # follow paused: the text stays as it is (count says how much is new); resumed: rebuilt
    view.follow.setChecked(False)
    before = view.shown_text()
    view.append_lines([("web.error", "while paused")] * 3)
    view.flush()
    assert view.shown_text() == before and "follow paused, 3 new" in view.count_label.text()
    view.follow.setChecked(True)
    assert view.shown_text().splitlines()[-1].endswith("while paused")
    assert view.skipped_total == 4000 - lv.LINES_PER_FLUSH


def test_plots_spread_many_new_workers_over_event_loop_passes(qtbot: Any, tmp_path: Path, sleepers: list[int],
                                                              monkeypatch: pytest.MonkeyPatch) -> None:
    from stackpanel.qt import plots as plots_mod

    monkeypatch.setattr(plots_mod, "NEW_CURVES_PER_REDRAW", 7)  # two workers' curves (3 each) per pass
    eng = MetricsEngine()
    eng.register_node("app", "gunicorn", tmp_path / "app.log", routes=["-"])
    eng.set_workers("app", sleepers[0], sleepers[1:])
    snap = eng.tick(0.0)
    eng.close()
    panel = PlotsPanel(redraw_ms=10_000)
    qtbot.addWidget(panel)
    panel.show()
    panel.apply_metrics(snap)
    panel.redraw()
    assert len(panel.cpu.curves) == 2 and len(panel.rss.curves) == 2  # the third waits for the next pass
    assert not panel.latency.curves  # 1 curve left in the budget: the node's two latency curves wait too
    qtbot.waitUntil(lambda: len(panel.cpu.curves) == 3 and len(panel.latency.curves) == 2, timeout=2000)
    assert set(panel.rps.curves) == {("app", p) for p in sleepers}
    assert len({panel.colour(("app", p)) for p in sleepers}) == 3


def test_notice_lines_of_an_error_log_and_client_closed_499s_are_not_highlighted(qtbot: Any) -> None:
    """An nginx [notice] line in web.error.log was shown bold red (the label said "error"); the
    499s a load run leaves when it closes its connections were amber."""
    from PySide6.QtGui import QTextDocument

    from stackpanel.qt.log_view import LABEL_WIDTH, LogHighlighter

    def formats(label: str, line: str) -> set[str]:
        doc = QTextDocument()
        highlighter = LogHighlighter(doc)
        doc.setPlainText(f"{label:<{LABEL_WIDTH}} {line}")
        highlighter.rehighlight()
        found = set()
        for r in doc.firstBlock().layout().formats():
            if r.format.foreground().color() == highlighter.error_format.foreground().color():
                found.add("error")
            if r.format.foreground().color() == highlighter.warning_format.foreground().color():
                found.add("warning")
        return found

    assert formats("web error", "2026/12/01 08:12:26 [notice] 12#12: signal process started") == set()
    assert formats("web error", "2026/12/01 08:12:26 [crit] 12#12: connect() failed") == {"error"}
    assert formats("web access", '4321 499 0.010 app - GET "/api/hello"') == set()
    assert formats("web access", '4321 404 0.001 app - GET "/nope"') == {"warning"}


def test_balanced_edges_show_each_backends_share_in_the_graph_and_the_details(qtbot: Any, tmp_path: Path) -> None:
    from stackpanel.qt.details import NodeDetails

    profile = load_profile(resolve_profile("nginx-balanced"))
    view = GraphView()
    qtbot.addWidget(view)
    view.set_profile(profile)
    assert view.edge("web", "app1") is not None and view.edge("web", "app2") is not None
    assert view.nodes["app1"].address == "unix socket"  # behind the proxy: listen auto → a socket
    web_log = tmp_path / "web.log"
    eng = MetricsEngine()
    eng.register_node("web", "nginx", web_log, routes=["app1", "app2", "static"], balanced=[("app1", "app2")])
    eng.set_workers("web", os.getpid(), [])
    eng.tick(0.0)
    append(web_log, [access_line("nginx", os.getpid(), 200, 0.002, "app1")] * 150
           + [access_line("nginx", os.getpid(), 200, 0.002, "app2")] * 50)
    snap = eng.tick(2.0)
    eng.close()
    view.apply_metrics(snap)
    one, two = view.edge("web", "app1"), view.edge("web", "app2")
    assert one is not None and two is not None
    assert one.label_text == "/api\n75 req/s\n0.0% 5xx\n75% of route"
    assert two.label_text == "/api\n25 req/s\n0.0% 5xx\n25% of route"
    assert "25.0% of the requests of /api" in two.toolTip()
    assert "of route" not in view.edge("web", "static:web").label_text  # type: ignore[union-attr]
    details = NodeDetails()
    qtbot.addWidget(details)
    details.show_node("web", "nginx", profile.nodes["web"].address, "", {})
    details.set_backend_shares(snap.edges_of("web"))
    assert details.backends.text() == "app1: 75% (150 requests, 75 req/s)\napp2: 25% (50 requests, 25 req/s)"

"""The panel's look (GUIDE §8), measured on the real widgets: legible text at 1280×720, labels beside
their edges, legends outside the data, every column shown, one state palette with readable contrast,
visible check boxes in the dark theme, texts that stay true, settings that are remembered."""
from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PySide6.QtCore import QPoint, QPointF, QSettings, Qt
from PySide6.QtGui import QColor, QImage, QPalette, QWheelEvent
from PySide6.QtWidgets import QApplication, QCheckBox, QStyle, QStyleOptionButton, QSystemTrayIcon

from stackpanel.core.bench import CompareSettings, Comparison, ProfileRun
from stackpanel.core.metrics import MetricsEngine
from stackpanel.core.metrics.synthetic import access_line
from stackpanel.core.profiles.library import list_profiles, resolve_profile
from stackpanel.core.profiles.loader import load_profile
from stackpanel.core.supervise.events import NodeState, StackState
from stackpanel.qt import graph_view
from stackpanel.qt.compare_view import CompareView
from stackpanel.qt.controller import StackController
from stackpanel.qt.graph_view import MIN_TEXT_PX, GraphView
from stackpanel.qt.load_panel import LoadPanel
from stackpanel.qt.log_view import LogView
from stackpanel.qt.main_window import MainWindow
from stackpanel.qt.plots import EMPTY_TEXT, OTHERS, TOP_WORKERS, PlotsPanel
from stackpanel.qt.theme import (
    NODE_STATE_HUES,
    STACK_STATE_HUES,
    STATE_HUES,
    _dark_palette,
    _light_palette,
    apply_theme,
    contrast_ratio,
    hue_colour,
)

pytestmark = pytest.mark.gui

FIVE_NODES = """\
version: 1
name: five nodes
description: one edge in front of four backends
nodes:
  edge:
    kind: nginx
    port: 8080
    routes:
      - {path: /api, to: api}
      - {path: /legacy, to: legacy}
      - {path: /blog, to: blog}
      - {path: /, to: cache}
  cache:
    kind: nginx
    port: 8082
    routes:
      - {path: /, static: site}
  blog:
    kind: apache
    port: 8081
    routes:
      - {path: /, static: site}
  api:
    kind: uvicorn
    port: 8000
    workers: 4
    app: {module: "stackpanel.apps.fastapi_demo:app"}
  legacy:
    kind: gunicorn
    port: 8001
    workers: 4
    app: {module: "stackpanel.apps.flask_demo:app"}
"""


@pytest.fixture
def five_nodes(tmp_path: Path) -> Path:
    (tmp_path / "site").mkdir()
    (tmp_path / "site" / "index.html").write_text("<p>hi</p>\n")
    path = tmp_path / "five.yaml"
    path.write_text(FIVE_NODES)
    return path


@pytest.fixture
def sleepers() -> Iterator[list[int]]:
    procs = [subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"]) for _ in range(11)]
    yield [p.pid for p in procs]
    for p in procs:
        p.kill()
        p.wait(5)


@pytest.fixture
def theme() -> Iterator[Any]:
    """apply_theme(app, mode), and the application's style and palette as they were afterwards."""
    app = QApplication.instance()
    assert isinstance(app, QApplication)
    style, palette = app.style().name(), app.palette()
    yield lambda mode: apply_theme(app, mode)
    app.setStyle(style)
    app.setPalette(palette)


def largest_builtin() -> str:
    def size(name: str) -> int:
        p = load_profile(resolve_profile(name))
        return len(p.nodes) * 10 + len(list(p.edges()))

    return max((e.name for e in list_profiles() if e.builtin), key=size)


def open_window(qtbot: Any, settings: QSettings, profile: str, size: tuple[int, int] = (1280, 720)) -> MainWindow:
    w = MainWindow(initial_profile=profile, settings=settings)
    qtbot.addWidget(w)
    w.resize(*size)
    w.show()
    qtbot.waitUntil(lambda: w.controller.loaded is not None and w.controller.loaded.name == profile, timeout=10_000)
    qtbot.wait(50)  # the layout settles (splitters, the graph's fit on resize)
    return w


def painted_text_px(view: GraphView, monkeypatch: pytest.MonkeyPatch) -> list[float]:
    """Every font size the graph paints with (scene pixels), recorded while it is drawn."""
    seen: list[float] = []
    real = graph_view.text_font

    def recording(px: int, bold: bool = False) -> Any:
        seen.append(px)
        return real(px, bold)

    monkeypatch.setattr(graph_view, "text_font", recording)
    view.viewport().grab()
    monkeypatch.setattr(graph_view, "text_font", real)
    assert seen, "nothing was painted"
    return seen


def give_traffic(view: GraphView) -> None:
    """Labels at their widest (three lines, a rate limit) and lines at their thickest."""
    for e in view.edges:
        e.set_traffic(12_345.0, 600.0, 300.0)
    view.refresh_labels()  # what apply_metrics does after the edges


def assert_labels_clear(view: GraphView) -> None:
    labels = [e.label.sceneBoundingRect() for e in view.edges]
    for e in view.edges:
        rect = e.label.sceneBoundingRect()
        for other in view.edges:  # no line and no arrowhead under any label
            assert not other.outline().intersects(rect), f"{other.source}->{other.target} crosses {e.label.text()!r}"
        for box in [*view.nodes.values(), *view.leaves.values()]:
            assert not box.sceneBoundingRect().intersects(rect), f"{e.label.text()!r} over {box.key}"
    for i, a in enumerate(labels):
        for b in labels[i + 1:]:
            assert not a.intersects(b)


# -- the graph ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("size", [(1280, 720), (1920, 1080)])
def test_graph_text_is_at_least_9px_in_the_window_for_the_largest_profile(
        qtbot: Any, settings: QSettings, monkeypatch: pytest.MonkeyPatch, size: tuple[int, int]) -> None:
    w = open_window(qtbot, settings, largest_builtin(), size)
    view = w.graph
    scale = view.transform().m11()
    assert min(painted_text_px(view, monkeypatch)) * scale >= MIN_TEXT_PX
    assert view.smallest_text_px() >= MIN_TEXT_PX

    def fits_or_scrolls_at_the_floor() -> bool:
        rect = view.mapFromScene(view.scene().sceneRect()).boundingRect()
        fits = rect.width() <= view.viewport().width() + 1 and rect.height() <= view.viewport().height() + 1
        scrolls = any(b.maximum() > b.minimum() for b in (view.horizontalScrollBar(), view.verticalScrollBar()))
        return fits or (scrolls and view.transform().m11() == pytest.approx(graph_view.MIN_SCALE))

    qtbot.waitUntil(fits_or_scrolls_at_the_floor, timeout=5000)  # the scroll range follows the scene's growth


def test_five_nodes_stay_legible_zoom_pan_and_fit(qtbot: Any, five_nodes: Path,
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    view = GraphView()
    qtbot.addWidget(view)
    view.resize(820, 260)  # the graph's part of a 1280×720 window
    view.show()
    view.set_profile(load_profile(five_nodes))
    view.set_workers("api", (101, 102, 103, 104))
    view.set_workers("legacy", (201, 202, 203, 204))
    assert len(view.nodes) == 5
    assert min(painted_text_px(view, monkeypatch)) * view.transform().m11() >= MIN_TEXT_PX
    # too big: it scrolls (a range, which may lie below 0: the scene has negative coordinates)
    assert any(b.maximum() > b.minimum() for b in (view.horizontalScrollBar(), view.verticalScrollBar()))
    fitted = view.transform().m11()

    def wheel(steps: int) -> None:
        centre = QPointF(view.viewport().rect().center())
        ev = QWheelEvent(centre, view.viewport().mapToGlobal(centre), QPoint(), QPoint(0, 120 * steps),
                         Qt.MouseButton.NoButton, Qt.KeyboardModifier.NoModifier, Qt.ScrollPhase.NoScrollPhase, False)
        QApplication.sendEvent(view.viewport(), ev)

    wheel(3)
    assert view.transform().m11() == pytest.approx(fitted * 1.15 ** 3) and not view.auto_fit
    wheel(-30)  # far out: it stops where text would get smaller than 9 px
    assert view.smallest_text_px() >= MIN_TEXT_PX
    assert view.transform().m11() == pytest.approx(graph_view.MIN_SCALE)
    wheel(2)
    # drag to pan: the hand drags the scene
    assert view.dragMode() == view.DragMode.ScrollHandDrag
    bar = view.horizontalScrollBar()
    bar.setValue(bar.minimum())
    start = view.viewport().rect().center()
    qtbot.mousePress(view.viewport(), Qt.MouseButton.LeftButton, pos=start)
    for dx in range(0, 200, 20):
        qtbot.mouseMove(view.viewport(), start - QPoint(dx, 0))
    qtbot.mouseRelease(view.viewport(), Qt.MouseButton.LeftButton, pos=start - QPoint(200, 0))
    assert bar.value() > bar.minimum()
    qtbot.mouseDClick(view.viewport(), Qt.MouseButton.LeftButton, pos=view.viewport().rect().topLeft() + QPoint(2, 2))
    assert view.auto_fit and view.transform().m11() == pytest.approx(fitted)
    view.resize(1800, 700)  # room enough: the whole graph, larger
    qtbot.waitUntil(lambda: view.transform().m11() > fitted)
    rect = view.mapFromScene(view.scene().sceneRect()).boundingRect()
    assert rect.width() <= view.viewport().width() + 1 and rect.height() <= view.viewport().height() + 1


@pytest.mark.parametrize("name", [*(e.name for e in list_profiles() if e.builtin), "five"])
def test_edge_labels_sit_on_plates_beside_their_edges(qtbot: Any, name: str, five_nodes: Path) -> None:
    view = GraphView()
    qtbot.addWidget(view)
    view.set_profile(load_profile(five_nodes if name == "five" else resolve_profile(name)))
    assert_labels_clear(view)  # idle: "0 req/s"
    give_traffic(view)  # busy: wide plates, thick lines
    assert all(e.label.text().count("\n") >= 1 for e in view.edges)
    assert_labels_clear(view)


# -- palette and controls ----------------------------------------------------------------------------


def test_one_state_palette_readable_in_light_and_dark() -> None:
    assert {NodeState.STOPPED: "grey", NodeState.STARTING: "blue", NodeState.READY: "green",
            NodeState.FAILED: "red"}.items() <= NODE_STATE_HUES.items()
    assert STACK_STATE_HUES[StackState.DEGRADED] == "orange" and STACK_STATE_HUES[StackState.FAILED] == "red"
    assert NODE_STATE_HUES[NodeState.BACKING_OFF] == "orange"
    for pal in (_light_palette(), _dark_palette()):
        for hue in STATE_HUES:
            colour = hue_colour(hue, pal)
            for role in (QPalette.ColorRole.Base, QPalette.ColorRole.Window, QPalette.ColorRole.AlternateBase):
                assert contrast_ratio(colour, pal.color(role)) >= 4.5, (hue, role)
    # the same hue in both: a blue stays a blue
    for hue, (light, dark) in STATE_HUES.items():
        apart = abs(QColor(light).hueF() - QColor(dark).hueF())
        assert min(apart, 1 - apart) < 0.05 or hue == "grey", hue  # hue is a circle: red is at both ends


def _indicator_contrast(box: QCheckBox) -> float:
    """The strongest contrast between the unchecked indicator's pixels and the base colour."""
    opt = QStyleOptionButton()
    box.initStyleOption(opt)
    rect = box.style().subElementRect(QStyle.SubElement.SE_CheckBoxIndicator, opt, box)
    image: QImage = box.grab().toImage()
    base = box.palette().color(QPalette.ColorRole.Window)
    return max(contrast_ratio(QColor(image.pixel(x, y)), base)
               for x in range(rect.left(), rect.right() + 1) for y in range(rect.top(), rect.bottom() + 1))


def test_unchecked_checkboxes_are_visible_in_both_themes(qtbot: Any, theme: Any) -> None:
    for mode in ("dark", "light"):
        theme(mode)
        box = QCheckBox("errors only")
        qtbot.addWidget(box)
        box.show()
        assert _indicator_contrast(box) >= 3.0, mode  # WCAG's contrast for the parts of a control
        # and the check boxes of a list (the compare view's profiles)
        from PySide6.QtWidgets import QListWidget, QListWidgetItem, QStyleOptionViewItem

        lst = QListWidget()
        qtbot.addWidget(lst)
        item = QListWidgetItem("uvicorn-workers")
        item.setFlags(item.flags() | Qt.ItemFlag.ItemIsUserCheckable)
        item.setCheckState(Qt.CheckState.Unchecked)
        lst.addItem(item)
        lst.show()
        opt = QStyleOptionViewItem()
        opt.initFrom(lst.viewport())
        opt.rect = lst.visualItemRect(item)
        opt.features = QStyleOptionViewItem.ViewItemFeature.HasCheckIndicator
        rect = lst.style().subElementRect(QStyle.SubElement.SE_ItemViewItemCheckIndicator, opt, lst)
        image = lst.viewport().grab().toImage()
        base = lst.palette().color(QPalette.ColorRole.Base)
        best = max(contrast_ratio(QColor(image.pixel(x, y)), base)
                   for x in range(rect.left(), rect.right() + 1) for y in range(rect.top(), rect.bottom() + 1))
        assert best >= 3.0, mode


def test_nodes_table_shows_every_column_and_the_profile_list_fits_its_names(qtbot: Any, settings: QSettings) -> None:
    from stackpanel.core.profiles.library import user_dir

    user_dir().mkdir(parents=True, exist_ok=True)  # a "yours (<long path>)" group too
    (user_dir() / "mine.yaml").write_text(resolve_profile("nginx-uvicorn").read_text())
    w = open_window(qtbot, settings, "nginx-split")
    table = w.node_table
    for name in table.rows:  # the widest a row gets: a long pid, a long state, workers, restarts
        table.set_state(name, NodeState.BACKING_OFF, 4_194_301)
        table.set_workers(name, tuple(range(4_194_000, 4_194_032)))
    qtbot.wait(50)
    header = table.horizontalHeader()
    for c in range(table.columnCount()):
        need = max(header.sectionSizeHint(c), table.sizeHintForColumn(c))
        assert header.sectionSize(c) >= need, table.COLUMNS[c]
        assert header.sectionViewportPosition(c) + header.sectionSize(c) <= table.viewport().width()
    assert not table.horizontalScrollBar().isVisible()
    plist = w.profile_list
    assert plist.count() > 10  # built-in and user profiles
    assert abs(plist.height() - plist.content_height()) <= 2
    assert not plist.verticalScrollBar().isVisible()
    assert plist.viewport().height() >= sum(plist.sizeHintForRow(i) for i in range(plist.count()))  # none cut


# -- plots -------------------------------------------------------------------------------------------


def test_plot_legends_beside_the_data_hideable_and_top_workers_plus_others(
        qtbot: Any, tmp_path: Path, sleepers: list[int], settings: QSettings) -> None:
    log = tmp_path / "app.log"
    eng = MetricsEngine()
    eng.register_node("app", "gunicorn", log, routes=["-"])
    master, workers = sleepers[0], sleepers[1:]
    eng.set_workers("app", master, workers)
    panel = PlotsPanel(redraw_ms=10_000)
    qtbot.addWidget(panel)
    panel.resize(880, 420)
    panel.show()
    assert panel.pages.currentWidget() is panel.empty and "start the stack, then put load on it" in EMPTY_TEXT
    for t in range(0, 60, 2):  # worker i serves i+1 requests per tick
        with open(log, "a") as f:
            for i, pid in enumerate(workers):
                f.write((access_line("gunicorn", pid, 200, 0.01, "-") + "\n") * (i + 1))
        snap = eng.tick(float(t))
    eng.close()
    panel.apply_metrics(snap)
    panel.redraw()
    assert panel.pages.currentIndex() == 1
    qtbot.waitUntil(lambda: len(panel.rps.curves) == TOP_WORKERS + 1)  # new curves come a few per pass
    busiest = {("app", pid) for pid in workers[-TOP_WORKERS:]}
    assert set(panel.rps.curves) == busiest | {OTHERS}
    _x, others = panel.rps.curves[OTHERS].getData()
    rest = [h for h in snap.worker_history if (h.node, h.pid) not in busiest]
    want = np.nanmean([h.rps[-1] for h in rest])
    assert others[-1] == pytest.approx(want)
    qtbot.wait(20)
    for p in panel.plots:  # the legend is beside the data area, not over it
        legend = p.legend.sceneBoundingRect()
        data = p.plot.vb.sceneBoundingRect()
        assert legend.width() > 0 and legend.left() >= data.right() - 1  # beside it, on the right
    width_with = panel.rps.plot.vb.sceneBoundingRect().width()
    panel.restore_settings(settings)
    panel.legend_box.setChecked(False)
    qtbot.wait(20)
    assert not panel.rps.legend.isVisible()
    assert panel.rps.plot.vb.sceneBoundingRect().width() > width_with + 40  # the data area took its room
    assert str(settings.value("plots/legend")).lower() == "false"


def test_a_new_run_gets_a_separator_in_plots_and_logs(qtbot: Any, tmp_path: Path, sleepers: list[int]) -> None:
    eng = MetricsEngine()
    eng.register_node("app", "gunicorn", tmp_path / "app.log", routes=["-"])
    eng.set_workers("app", sleepers[0], sleepers[1:3])
    for t in range(0, 30, 2):
        snap = eng.tick(float(t))
    eng.close()
    panel = PlotsPanel(redraw_ms=10_000)
    qtbot.addWidget(panel)
    panel.show()
    panel.mark_run_start(snap.wall_time - 20)
    panel.apply_metrics(snap)
    panel.redraw()
    for p in panel.plots:
        assert p.run_start_positions() == [pytest.approx(-20.0)]
    logs = LogView()
    qtbot.addWidget(logs)
    logs.show()
    logs.append_lines([("app out", "first run line")])
    logs.mark_run_start(snap.wall_time)
    logs.append_lines([("app out", "second run line")])
    logs.errors_only.setChecked(True)  # a filter that hides both runs' lines still shows where one starts
    qtbot.waitUntil(lambda: "stack started at" in logs.shown_text())
    assert "run line" not in logs.shown_text()
    logs.errors_only.setChecked(False)
    qtbot.waitUntil(lambda: "second run line" in logs.shown_text())
    text = logs.shown_text()
    assert text.index("first run line") < text.index("stack started at") < text.index("second run line")


# -- texts that stay true ----------------------------------------------------------------------------


def test_toolbar_drops_failed_once_the_failure_is_answered_or_the_profile_changes(qtbot: Any,
                                                                                   settings: QSettings) -> None:
    w = open_window(qtbot, settings, "nginx-uvicorn")
    c = w.controller
    c._set_stack_state(StackState.FAILED)  # as a failed start leaves it
    assert "failed" in w.state_label.text()
    c.acknowledge_failure()  # the failure dialog was closed
    assert "stopped" in w.state_label.text() and c.stack_state == StackState.STOPPED
    c._set_stack_state(StackState.FAILED)
    w.profile_list.select_profile("uvicorn-workers")
    qtbot.waitUntil(lambda: c.loaded is not None and c.loaded.name == "uvicorn-workers")
    assert "stopped" in w.state_label.text()


def test_a_start_cancelled_at_the_port_conflict_leaves_the_toolbar_at_stopped(qtbot: Any,
                                                                              settings: QSettings) -> None:
    import socket

    from PySide6.QtWidgets import QMessageBox

    from stackpanel.core.supervise.ports import free_port_offset

    w = open_window(qtbot, settings, "uvicorn-workers")
    offset = free_port_offset([8000])
    w.offset_spin.setValue(offset)
    qtbot.waitUntil(lambda: w.controller.loaded is not None and w.controller.loaded.port_offset == offset)
    holder = socket.socket()
    holder.bind(("127.0.0.1", 8000 + offset))
    holder.listen()
    try:
        w.act_start.trigger()

        def dialog() -> QMessageBox | None:
            return next((b for b in w.findChildren(QMessageBox)
                         if b.windowTitle() == "Port already in use" and b.isVisible()), None)

        qtbot.waitUntil(lambda: dialog() is not None, timeout=30_000)
        box = dialog()
        assert box is not None
        assert "failed" in w.state_label.text()  # true while the dialog says why
        box.button(QMessageBox.StandardButton.Cancel).click()  # the start is cancelled: nothing runs
        qtbot.waitUntil(lambda: "stopped" in w.state_label.text())
        assert w.controller.stack_state == StackState.STOPPED and w.act_start.isEnabled()
    finally:
        holder.close()


def test_load_tab_says_what_to_do_for_the_state_it_is_in(qtbot: Any) -> None:
    panel = LoadPanel()
    qtbot.addWidget(panel)
    assert "Start the stack" in panel.hint.text() and not panel.start_button.isEnabled()
    panel.set_target("http://127.0.0.1:8080/")
    assert "Start the stack" not in panel.hint.text() and "http://127.0.0.1:8080/" in panel.hint.text()
    assert panel.start_button.isEnabled()
    panel.set_target(None)
    assert "Start the stack" in panel.hint.text()


def test_load_and_compare_settings_are_remembered(qtbot: Any, settings: QSettings) -> None:
    w = open_window(qtbot, settings, "nginx-uvicorn")
    load, compare = w.panel(LoadPanel), w.panel(CompareView)
    load.path_box.setCurrentText("/api/wait?ms=50")
    load.connections.setValue(48)
    load.rate.setValue(700)
    load.duration.setValue(12)
    compare.connections.setValue(9)
    compare.duration.setValue(4)
    compare.workers.setValue(3)
    compare.path.setCurrentText("/api/cpu?ms=5")
    last = compare.profiles.takeItem(compare.profiles.count() - 1)
    compare.profiles.insertItem(0, last)  # reordered: a new baseline
    order = [compare.profiles.item(i).text() for i in range(compare.profiles.count())]
    for i in range(compare.profiles.count()):
        item = compare.profiles.item(i)
        item.setCheckState(Qt.CheckState.Checked if i in (0, 2) else Qt.CheckState.Unchecked)
    checked = compare.selected_profiles()
    w.close()
    qtbot.waitUntil(lambda: not w.isVisible())
    w2 = open_window(qtbot, settings, "nginx-uvicorn")
    load2, compare2 = w2.panel(LoadPanel), w2.panel(CompareView)
    assert load2.path_box.currentText() == "/api/wait?ms=50"
    assert (load2.connections.value(), load2.rate.value(), load2.duration.value()) == (48, 700, 12.0)
    assert (compare2.connections.value(), compare2.duration.value(), compare2.workers.value()) == (9, 4, 3)
    assert compare2.path.currentText() == "/api/cpu?ms=5"
    assert [compare2.profiles.item(i).text() for i in range(compare2.profiles.count())] == order
    assert compare2.selected_profiles() == checked


def test_compare_says_it_does_not_use_the_port_offset(qtbot: Any) -> None:
    from PySide6.QtWidgets import QLabel

    view = CompareView()
    qtbot.addWidget(view)
    notes = [lab.text() for lab in view.findChildren(QLabel)]
    assert any("port offset is not used" in text for text in notes)


def test_compare_chart_fits_its_widget_and_stays_legible(qtbot: Any) -> None:
    from stackpanel.qt.chart import SMALLEST_TEXT_PX

    runs = tuple(ProfileRun(name=n, title=n, ok=True, throughput_rps=r, latency_p50_ms=1.0, latency_p90_ms=2.0,
                            latency_p99_ms=5.0, latency_max_ms=9.0, requests_ok=int(r * 5), responses=int(r * 5),
                            errors={}, duration_s=5.0, generator_cpu_percent=50.0, app_workers=2)
                 for n, r in (("uvicorn-workers", 4000.0), ("nginx-uvicorn", 3000.0),
                              ("nginx-gunicorn-uvicorn", 2000.0)))
    comparison = Comparison(settings=CompareSettings(connections=8, duration_s=5.0, path="/api/hello", warmup_s=0.0,
                                                     generator="builtin", workers=2),
                            runs=runs, machine={"nproc": 2}, started_at=1_700_000_000.0)
    view = CompareView()
    qtbot.addWidget(view)
    view.show()
    view.show_comparison(comparison)
    area = view.chart_area
    for size in ((1000, 700), (1800, 1000), (700, 500)):
        view.resize(*size)
        qtbot.wait(30)
        shown, vp = view.chart.pixmap().size(), area.viewport().size()
        assert abs(shown.width() - vp.width()) <= 1  # as wide as its widget: nothing cut off
        assert shown.height() <= vp.height() + 1 or area.verticalScrollBar().maximum() > 0
        assert area.horizontalScrollBar().maximum() == 0
        assert SMALLEST_TEXT_PX * area.scale() >= 9.0  # the smallest text stays legible
        assert 38 * area.scale() <= 38 * 0.75  # and the title is not huge


# -- tray --------------------------------------------------------------------------------------------


def test_tray_icon_only_where_there_is_a_tray(qtbot: Any, settings: QSettings, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(QSystemTrayIcon, "isSystemTrayAvailable", staticmethod(lambda: False))
    w = open_window(qtbot, settings, "nginx-uvicorn")
    assert w.tray is None
    w.close()
    monkeypatch.setattr(QSystemTrayIcon, "isSystemTrayAvailable", staticmethod(lambda: True))
    w2 = open_window(qtbot, settings, "nginx-uvicorn")
    tray = w2.tray
    assert tray is not None
    actions = tray.menu.actions()
    assert w2.act_start in actions and w2.act_stop in actions and w2.url_actions.open in actions
    assert tray.state_action.text() == "● nginx-uvicorn: stopped"
    w2.controller._set_stack_state(StackState.RUNNING)
    assert "running" in tray.state_action.text() and "running" in tray.icon.toolTip()
    w2.controller._set_stack_state(StackState.STOPPED)


def test_controller_alone_has_no_failed_after_a_profile_switch(qtbot: Any) -> None:
    c = StackController()
    with qtbot.waitSignal(c.profileLoaded, timeout=10_000):
        c.load_profile("nginx-uvicorn", resolve_profile("nginx-uvicorn"))
    c._set_stack_state(StackState.FAILED)
    with qtbot.waitSignal(c.profileLoaded, timeout=10_000):
        c.set_port_offset(300)  # another offset: another stack, never started
    assert c.stack_state == StackState.STOPPED
    c.shutdown()


def test_a_theme_switch_gives_states_the_shade_of_the_new_theme(qtbot: Any, settings: QSettings, theme: Any) -> None:
    w = open_window(qtbot, settings, "nginx-uvicorn")
    for mode, pal in (("dark", _dark_palette()), ("light", _light_palette())):
        w.set_theme(mode)
        qtbot.wait(10)
        want = hue_colour("grey", pal)  # stopped
        assert all(n.colour == want for n in w.graph.nodes.values()), mode
        assert want.name() in w.state_label.styleSheet()
        assert w.node_table.item(0, 2).foreground().color() == want


def test_the_entry_node_offers_open_in_browser_and_copy_url(qtbot: Any, settings: QSettings) -> None:
    w = open_window(qtbot, settings, "nginx-split")
    graph = w.graph
    entry = graph.nodes[graph.profile.entry]  # type: ignore[union-attr]
    menu = graph.node_menu(entry)
    assert menu is not None
    assert menu.actions() == [w.url_actions.open, w.url_actions.copy]  # the window's own: same enabled state
    assert graph.node_menu(graph.nodes["site"]) is None and graph.node_menu(graph.leaves["client"]) is None



def test_log_highlights_are_readable_text_in_both_themes(qtbot: Any, theme: Any) -> None:
    logs = LogView()
    qtbot.addWidget(logs)
    for mode, pal in (("dark", _dark_palette()), ("light", _light_palette())):
        theme(mode)
        QApplication.processEvents()
        h = logs.highlighter
        for fmt in (h.error_format, h.warning_format, h.run_format):
            assert contrast_ratio(fmt.foreground().color(), pal.color(QPalette.ColorRole.Base)) >= 4.5, mode


def test_the_node_and_events_tabs_say_what_to_do_while_empty(qtbot: Any, settings: QSettings) -> None:
    from stackpanel.qt.details import NodeDetails
    from stackpanel.qt.event_log import EventLog

    w = open_window(qtbot, settings, "nginx-uvicorn")
    events, details = w.panel(EventLog), w.panel(NodeDetails)
    assert "start the stack" in events.placeholderText() and events.toPlainText() == ""
    assert "Select a node" in details.config.placeholderText()
    assert "Start the stack" in details.last_lines.placeholderText()
    table = w.node_table
    assert table.cell(table.rows["app"], 5).text() == "socket"  # behind nginx: listen auto → a Unix socket
    assert table.cell(table.rows["web"], 5).text().startswith(":")

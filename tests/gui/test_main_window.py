"""The main window over real profiles; the end-to-end test runs the real nginx + uvicorn stack."""
from __future__ import annotations

import os
import socket
import urllib.request
from typing import Any

import pytest
from PySide6.QtCore import QSettings
from PySide6.QtGui import QGuiApplication
from PySide6.QtWidgets import QMenu, QMessageBox

from stackpanel.core.metrics import MetricsSnapshot
from stackpanel.core.profiles.library import user_dir
from stackpanel.core.supervise.events import NodeState, StackState
from stackpanel.core.supervise.ports import free_port_offset
from stackpanel.core.supervise.process import alive_pids
from stackpanel.qt.controller import LoadedProfile
from stackpanel.qt.details import NodeDetails
from stackpanel.qt.load_panel import LoadPanel
from stackpanel.qt.log_view import RUN_LABEL, LogView
from stackpanel.qt.main_window import MainWindow
from stackpanel.qt.plots import PlotsPanel

pytestmark = pytest.mark.gui

BROKEN = """\
version: 1
name: broken
nodes:
  web:
    kind: nginx
    port: 8080
    wokers: 2
    routes:
      - path: /
        to: ap
"""


def loaded(w: MainWindow) -> LoadedProfile | None:
    return w.controller.loaded


def open_window(qtbot: Any, settings: QSettings, profile: str | None = None) -> MainWindow:
    w = MainWindow(initial_profile=profile, settings=settings)
    qtbot.addWidget(w)
    w.show()
    qtbot.waitUntil(lambda: loaded(w) is not None, timeout=10_000)
    return w


def open_at_offset(qtbot: Any, settings: QSettings, profile: str, offset: int) -> MainWindow:
    """The window with `profile` loaded and every port shifted by `offset`."""
    w = open_window(qtbot, settings, profile)
    w.offset_spin.setValue(offset)
    qtbot.waitUntil(lambda: loaded(w) is not None and loaded(w).port_offset == offset, timeout=10_000)
    return w


def test_broken_profile_shows_every_problem_with_file_line_and_fix(qtbot: Any, settings: QSettings) -> None:
    d = user_dir()
    d.mkdir(parents=True)
    (d / "broken.yaml").write_text(BROKEN)
    w = open_window(qtbot, settings, "broken")
    assert loaded(w) is not None and loaded(w).error is not None
    assert w.top_stack.currentWidget() is w.problems
    text = w.problems.text()
    assert f"{d / 'broken.yaml'}:7:5" in text
    assert "wokers" in text and "fix: did you mean 'workers'?" in text
    assert "problem" in w.problems.headline.text()
    assert not w.act_start.isEnabled()
    # a valid one brings the graph back
    w.profile_list.select_profile("nginx-uvicorn")
    qtbot.waitUntil(lambda: loaded(w) is not None and loaded(w).name == "nginx-uvicorn", timeout=10_000)
    assert w.top_stack.currentWidget() is w.graph
    assert set(w.graph.nodes) == {"web", "app"} and w.act_start.isEnabled()
    assert w.node_table.rowCount() == 2


def test_details_show_rendered_config_and_command_before_start(qtbot: Any, settings: QSettings) -> None:
    w = open_window(qtbot, settings, "nginx-gunicorn-uvicorn")
    details = w.panel(NodeDetails)
    w.controller.select_node("app")
    assert "gunicorn" in details.command.toPlainText()
    assert "uvicorn_worker.UvicornWorker" in details.command.toPlainText()
    w.controller.select_node("web")
    assert "upstream" in details.config.toPlainText() and details.config.isReadOnly()
    assert details.kind.text() == "nginx"


def test_last_profile_and_port_offset_are_remembered(qtbot: Any, settings: QSettings) -> None:
    w = open_window(qtbot, settings)
    assert loaded(w) is not None and loaded(w).name == "nginx-uvicorn"  # the default
    w.profile_list.select_profile("nginx-split")
    qtbot.waitUntil(lambda: loaded(w) is not None and loaded(w).name == "nginx-split", timeout=10_000)
    w.offset_spin.setValue(300)
    w.resize(1000, 700)
    w.close()
    w2 = open_window(qtbot, settings)
    qtbot.waitUntil(lambda: loaded(w2) is not None and loaded(w2).port_offset == 300, timeout=10_000)
    assert loaded(w2).name == "nginx-split"
    assert loaded(w2).profile is not None and loaded(w2).profile.nodes["edge"].port == 8080 + 300
    assert w2.height() == 700  # restored (the default is 920; offscreen clamps widths to its 800 px screen)
    w2.close()


def _offset_for(ports: tuple[int, ...] = (8000, 8080)) -> int:
    return free_port_offset(ports)


_alive = alive_pids


@pytest.mark.integration
@pytest.mark.timeout(180)
def test_start_watch_request_stop_end_to_end(qtbot: Any, settings: QSettings,
                                             monkeypatch: pytest.MonkeyPatch) -> None:
    offset = _offset_for()
    w = open_at_offset(qtbot, settings, "nginx-uvicorn", offset)
    snaps: list[MetricsSnapshot] = []
    w.controller.bridge.metrics.connect(snaps.append)
    try:
        w.act_start.trigger()
        qtbot.waitUntil(lambda: w.controller.stack_state == StackState.RUNNING, timeout=90_000)
        assert all(n.state == NodeState.READY for n in w.graph.nodes.values())
        assert w.node_table.state_of("app") == NodeState.READY
        qtbot.waitUntil(lambda: len(w.graph.workers["app"]) == 2, timeout=10_000)
        url = f"http://127.0.0.1:{8080 + offset}/"
        assert url in w.url_label.text()
        # texts that say what is true now: the Load tab offers load on this URL; the run is marked
        assert f"The stack runs: load goes to {url}" == w.panel(LoadPanel).hint.text()
        assert "stopped" not in w.state_label.text() and "running" in w.state_label.text()
        assert any(label == RUN_LABEL for label, _t in w.panel(LogView).lines)
        assert len(w.panel(PlotsPanel).run_starts) == 1

        # plots receive data
        qtbot.waitUntil(lambda: len(snaps) >= 2, timeout=10_000)
        w.panel(PlotsPanel).redraw()
        assert ("app", next(iter(w.graph.workers["app"]))) in w.panel(PlotsPanel).cpu.curves
        before = snaps[-1].node("web").requests_total  # type: ignore[union-attr]

        # a request through the entry moves the counters
        for _ in range(25):
            with urllib.request.urlopen(url + "api/hello", timeout=5) as r:
                assert r.status == 200
        qtbot.waitUntil(lambda: snaps[-1].node("web").requests_total >= before + 25,  # type: ignore[union-attr]
                        timeout=10_000)
        assert snaps[-1].node("app").requests_total >= 25  # type: ignore[union-attr]
        assert f"{snaps[-1].node('web').requests_total} req" in w.graph.nodes["web"].metric_line  # type: ignore[union-attr]
        assert any(s.edge("web", "app") and s.edge("web", "app").rps > 0 for s in snaps)  # type: ignore[union-attr]
        qtbot.waitUntil(lambda: any("/api/hello" in t for _, t in w.panel(LogView).lines), timeout=10_000)

        pids: set[int] = set()
        snap = w.controller.session.snapshot()  # type: ignore[union-attr]
        for n in snap.nodes:
            pids.update([n.pid, *n.worker_pids] if n.pid else n.worker_pids)
        assert len(pids) >= 4
    finally:
        # closing with a running stack asks, then stops it cleanly
        asked: list[str] = []
        monkeypatch.setattr(QMessageBox, "question",
                            lambda *a, **k: asked.append(a[1]) or QMessageBox.StandardButton.Yes)
        w.close()
        qtbot.waitUntil(lambda: not w.isVisible(), timeout=60_000)
    assert asked == ["Stop the stack?"]
    assert w.controller.stack_state == StackState.STOPPED
    assert _alive(pids) == []
    for port in (8000 + offset, 8080 + offset):
        with socket.socket() as s:
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            s.bind(("127.0.0.1", port))  # free again


def _message_box(w: MainWindow, title: str) -> QMessageBox | None:
    return next((b for b in w.findChildren(QMessageBox) if b.windowTitle() == title and b.isVisible()), None)


@pytest.mark.integration
@pytest.mark.timeout(180)
def test_port_conflict_names_the_holder_and_offers_a_free_offset(qtbot: Any, settings: QSettings,
                                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    offset = _offset_for()
    w = open_at_offset(qtbot, settings, "uvicorn-workers", offset)
    holder = socket.socket()
    holder.bind(("127.0.0.1", 8000 + offset))
    holder.listen()
    try:
        w.act_start.trigger()
        qtbot.waitUntil(lambda: _message_box(w, "Port already in use") is not None, timeout=30_000)
        box = _message_box(w, "Port already in use")
        assert box is not None
        assert f"port {8000 + offset} on 127.0.0.1 is taken by pid {os.getpid()}" in box.informativeText()
        assert "PortHolder(" not in box.informativeText() and f"held by pid {os.getpid()}" in box.informativeText()
        retry = next(b for b in box.buttons() if b.text().startswith("Start with port offset"))
        offered = int(retry.text().rsplit(" ", 1)[1])
        assert offered > offset and (offered - offset) % 100 == 0  # the user's offset moved on, not reset
        assert w.controller.stack_state != StackState.RUNNING  # nothing was started
        retry.click()  # moves the stack to the offered offset and starts it
        qtbot.waitUntil(lambda: w.controller.stack_state == StackState.RUNNING, timeout=90_000)
        assert w.offset_spin.value() == offered
        # Open in browser / Copy URL follow the running stack's entry
        assert w.url_actions.copy.isEnabled() and w.url_actions.open.isEnabled()
        w.url_actions.copy.trigger()
        assert QGuiApplication.clipboard().text() == w.controller.browser_url == f"http://127.0.0.1:{8000 + offered}/"
    finally:
        holder.close()
        monkeypatch.setattr(QMessageBox, "question", lambda *a, **k: QMessageBox.StandardButton.Yes)
        w.close()
        qtbot.waitUntil(lambda: not w.isVisible(), timeout=60_000)
    assert w.controller.stack_state == StackState.STOPPED


@pytest.mark.integration
@pytest.mark.timeout(120)
def test_failed_start_shows_the_node_and_its_last_lines(qtbot: Any, settings: QSettings, tmp_path: Any) -> None:
    offset = _offset_for((8000,))
    (tmp_path / "crashy.py").write_text("raise SystemExit('config file missing: /etc/crashy.toml')\n")
    user_dir().mkdir(parents=True, exist_ok=True)
    (user_dir() / "crashy.yaml").write_text(
        f"version: 1\nname: crashy\nnodes:\n  app:\n    kind: uvicorn\n    port: {8000 + offset}\n"
        f"    app: {{module: 'crashy:app', working_dir: '{tmp_path}'}}\n    availability: {{restart: 'no'}}\n")
    w = open_window(qtbot, settings, "crashy")
    w.act_start.trigger()
    qtbot.waitUntil(lambda: _message_box(w, "The stack did not start") is not None, timeout=60_000)
    box = _message_box(w, "The stack did not start")
    assert box is not None
    assert "Node <b>app</b> did not start" in box.text() and "while starting" in box.text()
    assert "config file missing" in box.detailedText()
    assert w.controller.stack_state in (StackState.FAILED, StackState.STOPPED)
    # it offers the node's log: the Logs tab, filtered to that node; the toolbar no longer says failed
    show_log = next(b for b in box.buttons() if b.text() == "Show its log")
    show_log.click()
    logs = w.panel(LogView)
    qtbot.waitUntil(lambda: w.tabs.currentWidget() is logs)
    assert logs.source_box.currentData() == "app."
    assert w.controller.stack_state == StackState.STOPPED and "stopped" in w.state_label.text()
    w.close()


def test_a_new_panel_is_one_registry_entry_and_connects_itself(qtbot: Any, settings: QSettings) -> None:
    from PySide6.QtWidgets import QLabel

    from stackpanel.qt.controller import StackController
    from stackpanel.qt.panels import TAB_PANELS, PanelSpec

    class EntryPanel(QLabel):  # a panel as a later feature would add one: given the controller only
        def __init__(self, controller: StackController) -> None:
            super().__init__()
            controller.profileLoaded.connect(lambda lp: self.setText(lp.profile.entry if lp.profile else "-"))

    w = MainWindow(initial_profile="nginx-split", settings=settings,
                   panels=(*TAB_PANELS, PanelSpec("entry", "Entry", EntryPanel)))
    qtbot.addWidget(w)
    qtbot.waitUntil(lambda: loaded(w) is not None, timeout=10_000)
    assert w.tabs.tabText(w.tabs.count() - 1) == "Entry" and w.panels["entry"] is w.panel(EntryPanel)
    assert w.panel(EntryPanel).text() == "edge"
    assert [w.tabs.tabText(i) for i in range(w.tabs.count() - 1)] == [p.title for p in TAB_PANELS]
    w.close()


@pytest.mark.integration
@pytest.mark.timeout(180)
def test_node_buttons_restart_stop_and_start_one_node(qtbot: Any, settings: QSettings,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    from stackpanel.qt.event_log import EventLog

    offset = _offset_for((8000,))
    w = open_at_offset(qtbot, settings, "uvicorn-workers", offset)
    b = w.node_buttons
    try:
        w.node_table.select_node("app")
        assert b.btn_start.isEnabled() and not b.btn_stop.isEnabled()
        w.act_start.trigger()
        qtbot.waitUntil(lambda: w.controller.stack_state == StackState.RUNNING, timeout=60_000)
        qtbot.waitUntil(b.btn_restart.isEnabled, timeout=10_000)
        assert not b.btn_start.isEnabled()
        pid = w.node_table.item(w.node_table.rows["app"], 3).text()
        b.btn_restart.click()
        qtbot.waitUntil(lambda: w.node_table.state_of("app") == NodeState.READY and not w.controller.busy
                        and w.node_table.item(w.node_table.rows["app"], 3).text() not in ("", pid), timeout=60_000)
        events = w.panel(EventLog).toPlainText()
        assert "app: ready → stopping" in events and "app: starting → ready" in events
        b.btn_stop.click()
        qtbot.waitUntil(lambda: w.node_table.state_of("app") == NodeState.STOPPED and not w.controller.busy,
                        timeout=60_000)
        assert b.btn_start.isEnabled() and not b.btn_stop.isEnabled()
        b.btn_start.click()  # the same session starts it again
        qtbot.waitUntil(lambda: w.node_table.state_of("app") == NodeState.READY and not w.controller.busy,
                        timeout=60_000)
    finally:
        monkeypatch.setattr(QMessageBox, "question", lambda *a, **k: QMessageBox.StandardButton.Yes)
        w.close()
        qtbot.waitUntil(lambda: not w.isVisible(), timeout=60_000)


def test_about_says_the_version_and_where_things_live(qtbot: Any, settings: QSettings) -> None:
    from stackpanel import __version__
    from stackpanel.core.session import runs_root

    w = open_window(qtbot, settings, "nginx-uvicorn")
    text = w.about_text()
    assert f"stackpanel {__version__}" in text and str(user_dir()) in text and str(runs_root()) in text
    assert any(a.text() == "About stackpanel" for m in w.menuBar().findChildren(QMenu) for a in m.actions())
    w.close()

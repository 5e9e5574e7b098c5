"""The main window: profiles, controls, request-path graph, plots, logs, node details, load.

Data flows one way: the core (session, supervisor, metrics engine) publishes events and snapshots;
:class:`~stackpanel.qt.bridge.SessionBridge` turns them into signals; this window routes those to
the widgets. User actions become blocking session calls submitted to a
:class:`~stackpanel.qt.bridge.SessionWorker`; nothing here blocks the GUI thread.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from PySide6.QtCore import QByteArray, QSettings, Qt, QTimer, QUrl
from PySide6.QtGui import QAction, QActionGroup, QCloseEvent, QDesktopServices, QKeySequence
from PySide6.QtWidgets import (
    QAbstractItemView,
    QApplication,
    QHBoxLayout,
    QHeaderView,
    QLabel,
    QListWidget,
    QListWidgetItem,
    QMainWindow,
    QMessageBox,
    QPlainTextEdit,
    QPushButton,
    QSpinBox,
    QSplitter,
    QStackedWidget,
    QTableWidget,
    QTableWidgetItem,
    QTabWidget,
    QToolBar,
    QVBoxLayout,
    QWidget,
)

from stackpanel.core.errors import ProfileError, StackpanelError
from stackpanel.core.profiles.library import DEFAULT_PROFILE, list_profiles, user_dir
from stackpanel.core.profiles.loader import load_profile
from stackpanel.core.profiles.schema import Profile
from stackpanel.core.supervise.events import (
    NodeState,
    NodeStateChanged,
    StackMessage,
    StackSnapshot,
    StackState,
    StackStateChanged,
    WorkersChanged,
)
from stackpanel.core.supervise.ports import free_port_offset
from stackpanel.qt.bridge import OperationResult, SessionBridge, SessionWorker
from stackpanel.qt.compare_view import CompareView
from stackpanel.qt.details import NodeDetails
from stackpanel.qt.graph_view import GraphView
from stackpanel.qt.load_panel import LoadPanel
from stackpanel.qt.log_view import LogView, sources_for
from stackpanel.qt.plots import PlotsPanel
from stackpanel.qt.theme import STACK_COLOURS, THEMES, apply_theme, icon, state_colour

log = logging.getLogger("stackpanel.qt")

PATH_ROLE = Qt.ItemDataRole.UserRole
NAME_ROLE = Qt.ItemDataRole.UserRole + 1
ACTIVE_STATES = (StackState.STARTING, StackState.RUNNING, StackState.DEGRADED, StackState.STOPPING)


@dataclass(frozen=True)
class LoadedProfile:
    """The outcome of loading a profile off the GUI thread (``profile`` or ``error``) and, when it
    could be rendered, a preview of every node (command line and config files) for the details."""

    name: str
    path: Path
    port_offset: int
    profile: Profile | None = None
    error: ProfileError | None = None
    preview: Any = None  # RenderedStack
    preview_error: str = ""


def load_and_preview(name: str, path: Path, port_offset: int) -> LoadedProfile:
    """Worker-thread job: read and validate the profile, render it (no files written)."""
    try:
        profile = load_profile(path, port_offset=port_offset)
    except ProfileError as exc:
        return LoadedProfile(name, path, port_offset, error=exc)
    try:
        from stackpanel.core.render import render_stack
        from stackpanel.core.session import default_run_dir

        preview = render_stack(profile, default_run_dir(profile))
        return LoadedProfile(name, path, port_offset, profile, preview=preview)
    except StackpanelError as exc:
        return LoadedProfile(name, path, port_offset, profile, preview_error=str(exc))


def find_free_offset(ports: list[int]) -> int | None:
    """Worker-thread job: the smallest multiple of 100 that moves every port to a free one."""
    try:
        return free_port_offset(ports, step=100, smallest=True)
    except StackpanelError:
        return None


class ProblemsView(QWidget):
    """A profile that cannot be used: every problem with file:line:column and the fix."""

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.headline = QLabel()
        self.headline.setWordWrap(True)
        f = self.headline.font()
        f.setBold(True)
        f.setPointSizeF(f.pointSizeF() + 1)
        self.headline.setFont(f)
        self.list = QListWidget()
        self.list.setWordWrap(True)
        self.list.setAlternatingRowColors(True)
        lay = QVBoxLayout(self)
        lay.addWidget(self.headline)
        lay.addWidget(self.list, 1)

    def show_error(self, error: ProfileError) -> None:
        n = len(error.problems)
        self.headline.setText(
            f"⚠ This profile has {n} problem{'s' if n != 1 else ''}; nothing will be started until "
            "they are fixed."
        )
        self.list.clear()
        for p in error.problems:
            where = f"{p.file}:{p.line}:{p.column}" if p.line else str(p.file)
            text = f"{where}\n{p.message}" + (f"\nfix: {p.hint}" if p.hint else "")
            item = QListWidgetItem(icon("stop"), text)
            item.setToolTip(text)
            self.list.addItem(item)

    def text(self) -> str:
        return "\n".join(self.list.item(i).text() for i in range(self.list.count()))


class NodeTable(QTableWidget):
    COLUMNS = ("node", "kind", "state", "pid", "workers", "address", "restarts")

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(0, len(self.COLUMNS), parent)
        self.setHorizontalHeaderLabels(list(self.COLUMNS))
        self.verticalHeader().hide()
        self.setSelectionBehavior(QAbstractItemView.SelectionBehavior.SelectRows)
        self.setSelectionMode(QAbstractItemView.SelectionMode.SingleSelection)
        self.setEditTriggers(QAbstractItemView.EditTrigger.NoEditTriggers)
        self.horizontalHeader().setSectionResizeMode(QHeaderView.ResizeMode.ResizeToContents)
        self.horizontalHeader().setStretchLastSection(True)
        self.rows: dict[str, int] = {}

    def set_profile(self, profile: Profile | None) -> None:
        self.setRowCount(0)
        self.rows.clear()
        if profile is None:
            return
        for name in reversed(profile.start_order()):  # entry first, as the request flows
            node = profile.nodes[name]
            r = self.rowCount()
            self.insertRow(r)
            self.rows[name] = r
            for c, text in enumerate((name, node.kind, NodeState.STOPPED, "", "", node.address, "0")):
                self.setItem(r, c, QTableWidgetItem(str(text)))
            self._paint_state(r, NodeState.STOPPED)

    def cell(self, row: int, column: int) -> QTableWidgetItem:
        """The item at row, column (every cell gets one when its row is added)."""
        item = self.item(row, column)
        if item is None:
            item = QTableWidgetItem()
            self.setItem(row, column, item)
        return item

    def _paint_state(self, row: int, state: str) -> None:
        item = self.cell(row, 2)
        item.setText(str(state))
        item.setForeground(state_colour(state))
        f = item.font()
        f.setBold(True)
        item.setFont(f)

    def set_state(self, name: str, state: str, pid: int | None) -> None:
        r = self.rows.get(name)
        if r is None:
            return
        self._paint_state(r, state)
        self.cell(r, 3).setText(str(pid) if pid else "")
        if state in (NodeState.STOPPED, NodeState.FAILED):
            self.cell(r, 4).setText("")

    def set_workers(self, name: str, pids: tuple[int, ...]) -> None:
        r = self.rows.get(name)
        if r is not None:
            self.cell(r, 4).setText(str(len(pids)) if pids else "")
            self.cell(r, 4).setToolTip(", ".join(str(p) for p in pids))

    def apply_snapshot(self, snap: StackSnapshot) -> None:
        for n in snap.nodes:
            self.set_state(n.name, n.state, n.pid)
            self.set_workers(n.name, n.worker_pids)
            r = self.rows.get(n.name)
            if r is not None:
                self.cell(r, 6).setText(str(n.restarts))
                self.cell(r, 2).setToolTip(n.reason)

    def state_of(self, name: str) -> str:
        r = self.rows[name]
        return self.cell(r, 2).text()

    def selected_node(self) -> str | None:
        rows = self.selectionModel().selectedRows()
        if not rows:
            return None
        return self.cell(rows[0].row(), 0).text()

    def select_node(self, name: str) -> None:
        r = self.rows.get(name)
        if r is not None:
            self.selectRow(r)


class MainWindow(QMainWindow):
    def __init__(self, initial_profile: str | None = None, settings: QSettings | None = None) -> None:
        super().__init__()
        self.setWindowTitle("stackpanel")
        self.setWindowIcon(icon("stackpanel"))
        self.settings = settings if settings is not None else QSettings("stackpanel", "stackpanel")
        self.bridge = SessionBridge(self)
        self.worker = SessionWorker(self)  # start/stop/restart: one at a time
        self.reader = SessionWorker(self)  # quick reads (profiles, last lines): never wait behind a start
        self.session: Any = None  # StackSession, created on the worker thread
        self._session_key: tuple[str, int] | None = None
        self.loaded: LoadedProfile | None = None
        self.stack_state: str = StackState.STOPPED
        self._closing = False
        self._close_confirmed = False
        self._pending_after_prepare: str | None = None
        self._load_seq = 0
        self._last_stack_snapshot: StackSnapshot | None = None

        self._build_ui()
        self._wire()
        self._restore_settings()
        self.refresh_profiles(select=initial_profile or str(self.settings.value("profile", DEFAULT_PROFILE, str)))
        self._update_controls()

    # ------------------------------------------------------------------ UI

    def _build_ui(self) -> None:
        tb = QToolBar("Stack")
        tb.setObjectName("stack-toolbar")
        tb.setMovable(False)
        tb.setToolButtonStyle(Qt.ToolButtonStyle.ToolButtonTextBesideIcon)
        self.addToolBar(tb)
        self.act_start = QAction(icon("start"), "Start", self, shortcut=QKeySequence("Ctrl+R"))
        self.act_stop = QAction(icon("stop"), "Stop", self, shortcut=QKeySequence("Ctrl+."))
        self.act_restart = QAction(icon("restart"), "Restart", self, shortcut=QKeySequence("Ctrl+Shift+R"))
        for a in (self.act_start, self.act_stop, self.act_restart):
            tb.addAction(a)
        tb.addSeparator()
        tb.addWidget(QLabel(" port offset "))
        self.offset_spin = QSpinBox(minimum=0, maximum=50000, singleStep=100)
        self.offset_spin.setToolTip("Shift every port of the profile by this much (two stacks side by side)")
        tb.addWidget(self.offset_spin)
        tb.addSeparator()
        self.state_label = QLabel()
        self.state_label.setMinimumWidth(110)
        self.state_label.setAlignment(Qt.AlignmentFlag.AlignCenter)
        tb.addWidget(self.state_label)
        tb.addSeparator()
        self.url_label = QLabel()
        self.url_label.setOpenExternalLinks(True)
        self.url_label.setTextInteractionFlags(Qt.TextInteractionFlag.TextBrowserInteraction)
        tb.addWidget(self.url_label)

        # left: profiles + nodes
        self.profile_list = QListWidget()
        self.profile_list.setObjectName("profiles")
        self.node_table = NodeTable()
        self.btn_node_start = QPushButton(icon("start"), "Start node")
        self.btn_node_stop = QPushButton(icon("stop"), "Stop node")
        self.btn_node_restart = QPushButton(icon("restart"), "Restart node")
        node_buttons = QHBoxLayout()
        for b in (self.btn_node_start, self.btn_node_stop, self.btn_node_restart):
            node_buttons.addWidget(b)
        self.description = QLabel()
        self.description.setWordWrap(True)
        left = QWidget()
        ll = QVBoxLayout(left)
        ll.setContentsMargins(6, 6, 6, 6)
        ll.addWidget(_heading("Profiles"))
        ll.addWidget(self.profile_list, 3)
        ll.addWidget(self.description)
        ll.addWidget(_heading("Nodes"))
        ll.addWidget(self.node_table, 2)
        ll.addLayout(node_buttons)

        # right: graph (or problems) above, tabs below
        self.graph = GraphView()
        self.problems = ProblemsView()
        self.top_stack = QStackedWidget()
        self.top_stack.addWidget(self.graph)
        self.top_stack.addWidget(self.problems)
        self.plots = PlotsPanel()
        self.logs = LogView()
        self.details = NodeDetails()
        self.load_panel = LoadPanel()
        self.messages = QPlainTextEdit()
        self.messages.setReadOnly(True)
        self.messages.setMaximumBlockCount(2000)
        self.tabs = QTabWidget()
        self.tabs.addTab(self.plots, "Plots")
        self.tabs.addTab(self.logs, "Logs")
        self.tabs.addTab(self.details, "Node")
        self.tabs.addTab(self.load_panel, icon("load"), "Load")
        self.tabs.addTab(self.messages, "Events")
        self.compare = CompareView()
        self.tabs.addTab(self.compare, "Compare")

        self.right_split = QSplitter(Qt.Orientation.Vertical)
        self.right_split.setObjectName("right-split")
        self.right_split.addWidget(self.top_stack)
        self.right_split.addWidget(self.tabs)
        self.right_split.setSizes([360, 520])
        self.main_split = QSplitter()
        self.main_split.setObjectName("main-split")
        self.main_split.addWidget(left)
        self.main_split.addWidget(self.right_split)
        self.main_split.setStretchFactor(1, 1)
        self.main_split.setSizes([390, 1110])
        self.setCentralWidget(self.main_split)
        self.busy_label = QLabel()
        self.statusBar().addPermanentWidget(self.busy_label)

        # menus
        m = self.menuBar().addMenu("&Stack")
        for a in (self.act_start, self.act_stop, self.act_restart):
            m.addAction(a)
        m.addSeparator()
        act_reload = m.addAction("Reload profile list")
        act_reload.triggered.connect(lambda: self.refresh_profiles(select=self._current_name()))
        act_folder = m.addAction("Open user profile folder")
        act_folder.triggered.connect(self._open_user_dir)
        m.addSeparator()
        act_quit = m.addAction("Quit")
        act_quit.setShortcut(QKeySequence.StandardKey.Quit)
        act_quit.triggered.connect(self.close)
        view = self.menuBar().addMenu("&View")
        theme_menu = view.addMenu("Theme")
        self.theme_group = QActionGroup(self)
        for mode in THEMES:
            a = theme_menu.addAction(mode.capitalize())
            a.setCheckable(True)
            a.setData(mode)
            self.theme_group.addAction(a)
        self.theme_group.triggered.connect(lambda a: self.set_theme(a.data()))
        view.addAction("Fit graph", self.graph.fit)

    def _wire(self) -> None:
        b = self.bridge
        b.nodeStateChanged.connect(self._on_node_state)
        b.workersChanged.connect(self._on_workers)
        b.stackStateChanged.connect(self._on_stack_state)
        b.message.connect(self._on_message)
        b.stackSnapshot.connect(self._on_stack_snapshot)
        b.metrics.connect(self.plots.apply_metrics)
        b.metrics.connect(self.graph.apply_metrics)
        self.worker.finished.connect(self._on_operation_finished)
        self.worker.started.connect(lambda name: self.busy_label.setText(f"{name} …"))
        self.worker.busyChanged.connect(lambda _b: self._update_controls())
        self.reader.finished.connect(self._on_read_finished)
        self.act_start.triggered.connect(self.start_stack)
        self.act_stop.triggered.connect(self.stop_stack)
        self.act_restart.triggered.connect(self.restart_stack)
        self.btn_node_start.clicked.connect(lambda: self._node_action("start_node"))
        self.btn_node_stop.clicked.connect(lambda: self._node_action("stop_node"))
        self.btn_node_restart.clicked.connect(lambda: self._node_action("restart_node"))
        self.profile_list.currentItemChanged.connect(lambda cur, _prev: self._select_profile(cur))
        self.offset_spin.valueChanged.connect(lambda _v: self._offset_changed())
        self.graph.nodeClicked.connect(self.show_node)
        self.node_table.itemSelectionChanged.connect(self._on_table_selection)
        self.details.refreshLogRequested.connect(self._fetch_last_lines)
        self.plots.window_box.currentIndexChanged.connect(
            lambda _i: self.settings.setValue("plots/window", self.plots.window_s))
        self._offset_timer = QTimer(self, singleShot=True, interval=300)
        self._offset_timer.timeout.connect(lambda: self._select_profile(self.profile_list.currentItem()))

    # ------------------------------------------------------------------ settings

    def _restore_settings(self) -> None:
        s = self.settings
        geometry = s.value("geometry")
        if isinstance(geometry, QByteArray) and not geometry.isEmpty():
            self.restoreGeometry(geometry)
        else:
            self.resize(1500, 920)
        state = s.value("windowState")
        if isinstance(state, QByteArray):
            self.restoreState(state)
        for split in (self.main_split, self.right_split):
            v = s.value(f"splitter/{split.objectName()}")
            if isinstance(v, QByteArray):
                split.restoreState(v)
        self.plots.set_window(float(str(s.value("plots/window", 300))))
        self.offset_spin.blockSignals(True)
        self.offset_spin.setValue(int(str(s.value("portOffset", 0))))
        self.offset_spin.blockSignals(False)
        theme = str(s.value("theme", "system"))
        for a in self.theme_group.actions():
            a.setChecked(a.data() == theme)
        if theme != "system":
            self.set_theme(theme)

    def save_settings(self) -> None:
        s = self.settings
        s.setValue("geometry", self.saveGeometry())
        s.setValue("windowState", self.saveState())
        for split in (self.main_split, self.right_split):
            s.setValue(f"splitter/{split.objectName()}", split.saveState())
        if self.loaded is not None:
            s.setValue("profile", self.loaded.name)
        s.setValue("portOffset", self.offset_spin.value())
        s.setValue("plots/window", self.plots.window_s)
        s.sync()

    def set_theme(self, mode: str) -> None:
        app = QApplication.instance()
        if isinstance(app, QApplication):
            apply_theme(app, mode)
        self.settings.setValue("theme", mode)
        self.plots.apply_palette()

    # ------------------------------------------------------------------ profiles

    def refresh_profiles(self, select: str | None = None) -> None:
        """Listing three directories is cheap (no file contents read); loading happens on the reader."""
        self.profile_list.blockSignals(True)
        self.profile_list.clear()
        entries = list_profiles()
        chosen: QListWidgetItem | None = None
        for group_name in ("workshop", "built-in", "user"):  # an instructor's profiles on top
            group = [e for e in entries if e.group == group_name]
            if not group:
                continue
            header = QListWidgetItem(f"yours ({user_dir()})" if group_name == "user" else group_name)
            header.setFlags(Qt.ItemFlag.NoItemFlags)
            f = header.font()
            f.setBold(True)
            header.setFont(f)
            self.profile_list.addItem(header)
            for e in group:
                item = QListWidgetItem(f"  {e.name}")
                item.setData(PATH_ROLE, str(e.path))
                item.setData(NAME_ROLE, e.name)
                item.setToolTip(str(e.path))
                self.profile_list.addItem(item)
                if e.name == select and (chosen is None or group_name != "built-in"):  # as resolve_profile
                    chosen = item
        self.profile_list.blockSignals(False)
        if chosen is None:
            chosen = next((self.profile_list.item(i) for i in range(self.profile_list.count())
                           if self.profile_list.item(i).data(NAME_ROLE)), None)
        if chosen is not None:
            self.profile_list.setCurrentItem(chosen)  # loads it

    def _current_name(self) -> str | None:
        item = self.profile_list.currentItem()
        return item.data(NAME_ROLE) if item is not None else None

    def select_profile(self, name: str) -> None:
        for i in range(self.profile_list.count()):
            item = self.profile_list.item(i)
            if item.data(NAME_ROLE) == name:
                self.profile_list.setCurrentItem(item)
                return
        raise KeyError(name)

    def _select_profile(self, item: QListWidgetItem | None) -> None:
        if item is None or not item.data(PATH_ROLE):
            return
        self._load_seq += 1
        seq = self._load_seq
        name, path, offset = item.data(NAME_ROLE), Path(item.data(PATH_ROLE)), self.offset_spin.value()
        self.description.setText("loading …")
        self.reader.submit(f"load:{seq}", lambda: load_and_preview(name, path, offset))

    def _offset_changed(self) -> None:
        self.settings.setValue("portOffset", self.offset_spin.value())
        self._offset_timer.start()

    def _show_loaded(self, loaded: LoadedProfile) -> None:
        self.loaded = loaded
        self.settings.setValue("profile", loaded.name)
        if loaded.error is not None or loaded.profile is None:
            self.problems.show_error(loaded.error or ProfileError([]))
            self.top_stack.setCurrentWidget(self.problems)
            self.graph.set_profile(None)
            self.node_table.set_profile(None)
            self.description.setText(f"{loaded.path}")
            self.setWindowTitle(f"stackpanel – {loaded.name} (invalid)")
        else:
            p = loaded.profile
            self.top_stack.setCurrentWidget(self.graph)
            self.graph.set_profile(p)
            self.node_table.set_profile(p)
            self.plots.entry = p.entry
            text = f"<b>{_esc(p.name)}</b><br>{_esc(p.description)}"
            if loaded.preview_error:
                text += f"<br><span style='color:#e5534b'>{_esc(loaded.preview_error)}</span>"
            self.description.setText(text)
            self.setWindowTitle(f"stackpanel – {loaded.name}")
            self.show_node(p.entry)
        self._update_controls()

    # ------------------------------------------------------------------ stack operations

    def _session_matches(self) -> bool:
        return (self.session is not None and self.loaded is not None
                and self._session_key == (str(self.loaded.path), self.loaded.port_offset))

    def start_stack(self) -> None:
        if self.loaded is None or self.loaded.profile is None or self.worker.busy:
            return
        if not self._session_matches():
            self._prepare_session(then="start")
            return
        s = self.session
        self._submit("start", s.start)

    def stop_stack(self) -> None:
        if self.session is None:
            return
        self.session.request_stop()  # a start in progress gives up promptly (non-blocking)
        self._submit("stop", self.session.stop)

    def restart_stack(self) -> None:
        if self.session is None or self.worker.busy:
            return
        s = self.session

        def restart() -> None:
            s.stop()
            s.start()

        self._submit("restart", restart)

    def _node_action(self, action: str, node: str | None = None) -> None:
        node = node or self.node_table.selected_node()
        if node is None or self.worker.busy:
            return
        if self.session is None or not self._session_matches():
            if action == "stop_node":
                return
            self._prepare_session(then=f"{action}:{node}")
            return
        fn = getattr(self.session, action)
        self._submit(f"{action}:{node}", lambda: fn(node))

    def _prepare_session(self, then: str) -> None:
        assert self.loaded is not None and self.loaded.profile is not None
        profile, old = self.loaded.profile, self.session
        key = (str(self.loaded.path), self.loaded.port_offset)

        def prepare() -> Any:
            if old is not None:
                old.close()
            from stackpanel.core.session import StackSession

            return key, StackSession(profile)

        self.bridge.detach()
        self.session = None
        self._pending_after_prepare = then
        self.worker.submit("prepare", prepare)

    def _submit(self, name: str, fn: Any) -> None:
        session = self.session

        def run() -> StackSnapshot | None:
            try:
                fn()
            finally:
                snap = session.snapshot() if session is not None else None
                if snap is not None:
                    self.bridge.stackSnapshot.emit(snap)  # queued to the GUI thread
            return snap

        self.worker.submit(name, run)
        self._update_controls()

    def _on_operation_finished(self, r: OperationResult) -> None:
        self.busy_label.setText("")
        if r.name == "prepare":
            if not r.ok:
                self._pending_after_prepare = None
                self._show_error("Could not prepare the stack", r.error)
                return
            key, session = r.value
            self.session, self._session_key = session, key
            self.bridge.attach(session)
            self.logs.set_sources(sources_for(session.stack))
            self.plots.clear()
            self.bridge.publish_snapshot(session.snapshot())
            then, self._pending_after_prepare = self._pending_after_prepare, None
            if then == "start":
                self.start_stack()
            elif then and ":" in then:
                action, node = then.split(":", 1)
                self._node_action(action, node)
            return
        if r.name == "close":
            self._update_controls()
            if self._closing:
                self.close()
            return
        if not r.ok:
            self._show_operation_error(r)
        self._update_controls()

    def _show_operation_error(self, r: OperationResult) -> None:
        from stackpanel.core.supervise.supervisor import PortConflictError, StartError

        err = r.error
        if isinstance(err, PortConflictError):
            self._port_conflict(err)
        elif isinstance(err, StartError):
            self._log_message("error", str(err))
            box = QMessageBox(self)
            box.setIcon(QMessageBox.Icon.Critical)
            box.setWindowTitle("The stack did not start")
            box.setText(f"Node <b>{_esc(err.node)}</b> did not start: {_esc(err.reason)}")
            box.setInformativeText("Nothing it started is left running. Its last log lines are below.")
            box.setDetailedText("\n".join(err.last_lines) or "(no output)")
            box.open()
            self.show_node(err.node)
            self.details.set_last_lines(err.node, err.last_lines)
        else:
            self._show_error(f"{r.name} failed", err)

    def _port_conflict(self, err: Any) -> None:
        lines = []
        for c in err.conflicts:
            lines.append(f"• {c.message}")
            for h in getattr(c, "holders", ()):
                lines.append(f"    held by {h}")
            if getattr(c, "remedy", ""):
                lines.append(f"    {c.remedy}")
        text = "\n".join(lines)
        self._log_message("error", text)
        ports = [n.port - self.loaded.port_offset for n in self.loaded.profile.nodes.values()] \
            if self.loaded is not None and self.loaded.profile is not None else []
        self.reader.submit("find-offset", lambda: find_free_offset(ports))
        self._port_conflict_text = text

    def _offer_offset(self, offset: int | None) -> None:
        box = QMessageBox(self)
        box.setIcon(QMessageBox.Icon.Warning)
        box.setWindowTitle("Port already in use")
        box.setText("A port this profile needs is taken; nothing was started.")
        box.setInformativeText(getattr(self, "_port_conflict_text", ""))
        retry = None
        if offset is not None:
            retry = box.addButton(f"Start with port offset {offset}", QMessageBox.ButtonRole.AcceptRole)
        box.addButton(QMessageBox.StandardButton.Cancel)

        def done() -> None:
            if retry is not None and box.clickedButton() is retry and offset is not None:
                self._start_after_load = True
                self.offset_spin.setValue(offset)

        box.finished.connect(lambda _r: done())
        box.open()

    def _show_error(self, title: str, err: BaseException | None) -> None:
        text = str(err) if err is not None else "unknown error"
        self._log_message("error", f"{title}: {text}")
        box = QMessageBox(QMessageBox.Icon.Critical, title, text, QMessageBox.StandardButton.Ok, self)
        box.open()

    # ------------------------------------------------------------------ reads

    def _fetch_last_lines(self, node: str) -> None:
        s = self.session
        if s is not None and node in s.stack.nodes:
            self.reader.submit(f"last_lines:{node}", lambda: (node, s.last_lines(node, 60)))

    def _on_read_finished(self, r: OperationResult) -> None:
        if r.name.startswith("load:"):
            if int(r.name.split(":")[1]) == self._load_seq and r.ok:
                self._show_loaded(r.value)
                if getattr(self, "_start_after_load", False):
                    self._start_after_load = False
                    self.start_stack()
        elif r.name.startswith("last_lines:") and r.ok:
            self.details.set_last_lines(*r.value)
        elif r.name == "find-offset":
            self._offer_offset(r.value if r.ok else None)

    # ------------------------------------------------------------------ bridge signals

    def _on_node_state(self, ev: NodeStateChanged) -> None:
        self.graph.apply_event(ev)
        self.node_table.set_state(ev.node, ev.state, ev.pid)
        level = "error" if ev.state in (NodeState.CRASHED, NodeState.FAILED) else "info"
        self._log_message(level, f"{ev.node}: {ev.previous} → {ev.state}" + (f" ({ev.reason})" if ev.reason else ""))
        if ev.node == self.details.node:
            self._fetch_snapshot_for_details()

    def _on_workers(self, ev: WorkersChanged) -> None:
        self.graph.apply_event(ev)
        self.node_table.set_workers(ev.node, ev.worker_pids)
        if ev.added or ev.removed:
            self._log_message("info", f"{ev.node}: workers {list(ev.worker_pids)}"
                              + (f" (+{list(ev.added)})" if ev.added else "")
                              + (f" (-{list(ev.removed)})" if ev.removed else ""))
        if ev.node == self.details.node:
            self._fetch_snapshot_for_details()

    def _on_stack_state(self, ev: StackStateChanged) -> None:
        self._set_stack_state(ev.state)
        self._log_message("info", f"stack: {ev.state}" + (f" ({ev.reason})" if ev.reason else ""))

    def _on_message(self, ev: StackMessage) -> None:
        self._log_message(ev.level, ev.text)

    def _on_stack_snapshot(self, snap: StackSnapshot) -> None:
        self._last_stack_snapshot = snap
        self.graph.apply_stack_snapshot(snap)
        self.node_table.apply_snapshot(snap)
        self._set_stack_state(snap.state)
        if self.details.node:
            n = next((x for x in snap.nodes if x.name == self.details.node), None)
            self.details.set_snapshot(n)

    def _fetch_snapshot_for_details(self) -> None:
        s = self.session
        if s is not None:
            self.reader.submit("snapshot", lambda: self.bridge.stackSnapshot.emit(s.snapshot()))

    def _set_stack_state(self, state: str) -> None:
        self.stack_state = state
        self._update_controls()

    def _log_message(self, level: str, text: str) -> None:
        from datetime import datetime

        stamp = datetime.now().strftime("%H:%M:%S")
        self.messages.appendPlainText(f"{stamp} {level:<7} {text}")
        if level == "error":
            self.statusBar().showMessage(text.splitlines()[0], 10000)

    # ------------------------------------------------------------------ details

    def show_node(self, name: str) -> None:
        if self.loaded is None or self.loaded.profile is None or name not in self.loaded.profile.nodes:
            return
        node = self.loaded.profile.nodes[name]
        stack = self.session.stack if self._session_matches() else self.loaded.preview
        rendered = stack.nodes.get(name) if stack is not None else None
        files = {str(p): text for p, text in rendered.files.items()} if rendered is not None else {}
        self.details.show_node(name, node.kind, node.address,
                               rendered.command_line if rendered is not None else "", files)
        self.graph.select(name)
        self.node_table.blockSignals(True)
        self.node_table.select_node(name)
        self.node_table.blockSignals(False)
        if self._last_stack_snapshot is not None:
            n = next((x for x in self._last_stack_snapshot.nodes if x.name == name), None)
            self.details.set_snapshot(n)
        self._fetch_last_lines(name)

    def _on_table_selection(self) -> None:
        name = self.node_table.selected_node()
        if name is not None:
            self.show_node(name)
        self._update_controls()

    # ------------------------------------------------------------------ controls

    def _update_controls(self) -> None:
        valid = self.loaded is not None and self.loaded.profile is not None
        busy = self.worker.busy
        active = self.stack_state in ACTIVE_STATES
        self.act_start.setEnabled(valid and not busy and not active)
        self.act_stop.setEnabled(self.session is not None and (active or busy))
        self.act_restart.setEnabled(self.session is not None and not busy and active)
        self.profile_list.setEnabled(not active and not busy)
        self.offset_spin.setEnabled(not active and not busy)
        node = self.node_table.selected_node()
        node_state = self.node_table.state_of(node) if node else None
        node_up = node_state not in (None, NodeState.STOPPED, NodeState.FAILED)
        self.btn_node_start.setEnabled(valid and not busy and node is not None and not node_up)
        self.btn_node_stop.setEnabled(not busy and self.session is not None and node is not None and node_up)
        self.btn_node_restart.setEnabled(not busy and self.session is not None and node is not None and node_up)
        colour = STACK_COLOURS.get(self.stack_state, "#8c959f")
        self.state_label.setText(f" ● {self.stack_state} ")
        self.state_label.setStyleSheet(f"color: {colour}; font-weight: bold;")
        url = self.loaded.profile.entry_url if valid and self.loaded is not None and self.loaded.profile else ""
        if url and active:
            self.url_label.setText(f'<a href="{url}">{url}</a>')
        else:
            self.url_label.setText(f"<span style='color:gray'>{url}</span>" if url else "")
        self.load_panel.set_target(url if self.stack_state == StackState.RUNNING and url else None)

    def entry_url_clicked(self) -> None:
        if self.loaded is not None and self.loaded.profile is not None:
            QDesktopServices.openUrl(QUrl(self.loaded.profile.entry_url))

    def _open_user_dir(self) -> None:
        d = user_dir()
        d.mkdir(parents=True, exist_ok=True)
        QDesktopServices.openUrl(QUrl.fromLocalFile(str(d)))

    # ------------------------------------------------------------------ closing

    def closeEvent(self, event: QCloseEvent) -> None:
        self.save_settings()
        active = self.stack_state in ACTIVE_STATES or self.worker.busy
        if self.session is not None and (active or not self._closing):
            if active and not self._close_confirmed:
                answer = QMessageBox.question(
                    self, "Stop the stack?",
                    "The stack is running. Stop it and quit?\n\nEvery server is stopped gracefully; "
                    "nothing is left running.",
                    QMessageBox.StandardButton.Yes | QMessageBox.StandardButton.No,
                    QMessageBox.StandardButton.Yes,
                )
                if answer != QMessageBox.StandardButton.Yes:
                    event.ignore()
                    return
                self._close_confirmed = True
            if not self._closing:
                self._closing = True
                self.setEnabled(False)
                self.statusBar().showMessage("stopping the stack …")
                s = self.session
                s.request_stop()
                self.load_panel.bridge.stop()
                self.worker.submit("close", s.close)
            event.ignore()
            return
        self.load_panel.bridge.stop()
        self.logs.stop()
        self.bridge.detach()
        self.worker.shutdown(wait=True)
        self._offset_timer.stop()
        self.reader.shutdown(wait=False)
        self.compare.shutdown()
        event.accept()

    def shutdown_now(self) -> None:
        """Stop everything synchronously (tests, app exit without a close event)."""
        if self.session is not None:
            self.session.close()
            self.session = None


def _heading(text: str) -> QLabel:
    lab = QLabel(text)
    f = lab.font()
    f.setBold(True)
    lab.setFont(f)
    return lab


def _esc(text: str) -> str:
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")

"""The main window: it builds the panels and lays them out, nothing more.

Data flows one way: the core (session, supervisor, metrics engine) publishes events and snapshots;
:class:`~stackpanel.qt.bridge.SessionBridge` turns them into signals. The
:class:`~stackpanel.qt.controller.StackController` owns the loaded profile and the session and runs
every blocking call off the GUI thread. Each panel is given the controller and connects itself;
the tabs come from :data:`~stackpanel.qt.panels.TAB_PANELS`. Here: layout, menus, window settings
and the close sequence (stop the stack first, then go).
"""
from __future__ import annotations

import logging
from typing import TypeVar

from PySide6.QtCore import QByteArray, QSettings, Qt, QUrl
from PySide6.QtGui import QActionGroup, QCloseEvent, QDesktopServices, QKeySequence
from PySide6.QtWidgets import (
    QApplication,
    QLabel,
    QMainWindow,
    QMessageBox,
    QSplitter,
    QTabWidget,
    QToolBar,
    QVBoxLayout,
    QWidget,
)

from stackpanel.core.profiles.library import DEFAULT_PROFILE, user_dir
from stackpanel.qt.controller import LoadedProfile, StackController
from stackpanel.qt.editor import ProfileEditor
from stackpanel.qt.event_log import StackStatusBar
from stackpanel.qt.export_action import ExportAction
from stackpanel.qt.nodes_view import NodeButtons, NodeTable
from stackpanel.qt.notices import ProfileNotices
from stackpanel.qt.panels import TAB_PANELS, GuardsUnsavedWork, PanelSpec, RemembersSettings
from stackpanel.qt.profiles_view import ProfileDescription, ProfileList, ProfileOverview
from stackpanel.qt.stack_actions import EntryUrlLabel, PortOffsetBox, StackActions, StackStateLabel, UrlActions
from stackpanel.qt.theme import THEMES, apply_theme, icon
from stackpanel.qt.tray import StackTray

log = logging.getLogger("stackpanel.qt")

W = TypeVar("W", bound=QWidget)


class MainWindow(QMainWindow):
    def __init__(self, initial_profile: str | None = None, settings: QSettings | None = None,
                 panels: tuple[PanelSpec, ...] = TAB_PANELS) -> None:
        super().__init__()
        self.setWindowTitle("stackpanel")
        self.setWindowIcon(icon("stackpanel"))
        self.settings = settings if settings is not None else QSettings("stackpanel", "stackpanel")
        self.controller = c = StackController(self)
        self._closing = False  # the stack is being closed before the window goes
        self._close_confirmed = False
        self._stack_closed = False

        # toolbar: stack actions, port offset, state, entry URL
        self.stack_actions = StackActions(c, self)
        self.act_start, self.act_stop, self.act_restart = self.stack_actions.all()
        tb = QToolBar("Stack")
        tb.setObjectName("stack-toolbar")
        tb.setMovable(False)
        tb.setToolButtonStyle(Qt.ToolButtonStyle.ToolButtonTextBesideIcon)
        self.addToolBar(tb)
        for a in self.stack_actions.all():
            tb.addAction(a)
        tb.addSeparator()
        tb.addWidget(QLabel(" port offset "))
        self.offset_spin = PortOffsetBox(c)
        tb.addWidget(self.offset_spin)
        tb.addSeparator()
        self.state_label = StackStateLabel(c)
        tb.addWidget(self.state_label)
        tb.addSeparator()
        self.url_label = EntryUrlLabel(c)
        tb.addWidget(self.url_label)
        self.url_actions = UrlActions(c, self)
        for a in self.url_actions.all():
            tb.addAction(a)

        # left: profiles + nodes
        self.profile_list = ProfileList(c)
        self.description = ProfileDescription(c)
        self.node_table = NodeTable(controller=c)
        self.node_buttons = NodeButtons(c, self.node_table)
        left = QWidget()
        ll = QVBoxLayout(left)
        ll.setContentsMargins(6, 6, 6, 6)
        ll.addWidget(_heading("Profiles"))
        ll.addWidget(self.profile_list, 3)
        ll.addWidget(self.description)
        self.notices = ProfileNotices(c)
        ll.addWidget(self.notices)
        ll.addWidget(_heading("Nodes"))
        ll.addWidget(self.node_table, 2)
        ll.addWidget(self.node_buttons)

        # right: graph (or problems) above, tabs below
        self.top_stack = ProfileOverview(c)
        self.graph, self.problems = self.top_stack.graph, self.top_stack.problems
        self.graph.entry_actions = list(self.url_actions.all())  # the URL is an action on the entry node too
        self.tabs = QTabWidget()
        self.panels: dict[str, QWidget] = {}
        for spec in panels:
            widget = spec.make(c)
            self.panels[spec.key] = widget
            if spec.icon:
                self.tabs.addTab(widget, icon(spec.icon), spec.title)
            else:
                self.tabs.addTab(widget, spec.title)

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
        self.setStatusBar(StackStatusBar(c))

        self._build_menus()
        for editor in (w for w in self.panels.values() if isinstance(w, ProfileEditor)):
            editor.libraryChanged.connect(lambda name: self.profile_list.refresh(select=name or None))
        #: None where the desktop has no tray
        self.tray = StackTray.create(c, self, [self.act_start, self.act_stop, None, *self.url_actions.all()])
        c.profileLoaded.connect(self._show_title)
        if "logs" in self.panels:  # "show its log" (a failed start): the Logs tab in front
            c.logRequested.connect(lambda _node: self.tabs.setCurrentWidget(self.panels["logs"]))
        self._restore_settings()
        self.profile_list.refresh(select=initial_profile or str(self.settings.value("profile", DEFAULT_PROFILE, str)))

    def panel(self, kind: type[W]) -> W:
        """The tab panel of this type."""
        return next(w for w in self.panels.values() if isinstance(w, kind))

    def _build_menus(self) -> None:
        m = self.menuBar().addMenu("&Stack")
        for a in self.stack_actions.all():
            m.addAction(a)
        m.addSeparator()
        for a in self.url_actions.all():
            m.addAction(a)
        m.addSeparator()
        act_reload = m.addAction("Reload profile list")
        act_reload.triggered.connect(lambda: self.profile_list.refresh(select=self.profile_list.current_name()))
        act_folder = m.addAction("Open user profile folder")
        act_folder.triggered.connect(self._open_user_dir)
        self.act_export = ExportAction(self.controller, self)
        m.addAction(self.act_export)
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
        help_menu = self.menuBar().addMenu("&Help")
        help_menu.addAction("About stackpanel", self.show_about)

    def about_text(self) -> str:
        """Version, and where the profiles, runs, logs and the local CA live."""
        from stackpanel import __version__
        from stackpanel.core.profiles.library import builtin_dir
        from stackpanel.core.session import runs_root
        from stackpanel.core.tls import ca_dir

        return (f"stackpanel {__version__}\n\n"
                f"your profiles: {user_dir()}\nbuilt-in profiles: {builtin_dir()}\n"
                f"runs (configs and logs of each stack): {runs_root()}\nlocal CA for HTTPS: {ca_dir()}")

    def show_about(self) -> None:
        QMessageBox.about(self, "About stackpanel", self.about_text())

    def _show_title(self, loaded: LoadedProfile) -> None:
        invalid = " (invalid)" if loaded.profile is None else ""
        self.setWindowTitle(f"stackpanel – {loaded.name}{invalid}")

    # ------------------------------------------------------------------ settings

    def _restore_settings(self) -> None:
        s, c = self.settings, self.controller
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
        for widget in self.panels.values():
            if isinstance(widget, RemembersSettings):
                widget.restore_settings(s)
        c.set_port_offset(int(str(s.value("portOffset", 0))))  # before any profile is loaded
        c.portOffsetChanged.connect(lambda offset: s.setValue("portOffset", offset))
        c.profileLoaded.connect(lambda loaded: s.setValue("profile", loaded.name))
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
        if self.controller.loaded is not None:
            s.setValue("profile", self.controller.loaded.name)
        s.setValue("portOffset", self.offset_spin.value())
        for widget in self.panels.values():
            if isinstance(widget, RemembersSettings):
                widget.save_settings(s)
        s.sync()

    def set_theme(self, mode: str) -> None:
        """Every widget follows the application palette (plots repaint on the palette change)."""
        app = QApplication.instance()
        if isinstance(app, QApplication):
            apply_theme(app, mode)
        # colours set by style sheet or drawn into an icon do not follow the palette by themselves
        self.state_label.update_state()
        if self.tray is not None:
            self.tray.update_state()
        self.settings.setValue("theme", mode)

    def _open_user_dir(self) -> None:
        d = user_dir()
        d.mkdir(parents=True, exist_ok=True)
        QDesktopServices.openUrl(QUrl.fromLocalFile(str(d)))

    # ------------------------------------------------------------------ closing

    def closeEvent(self, event: QCloseEvent) -> None:
        """A window with a session first stops and closes it (asking if it runs), then goes."""
        if not self._closing and not all(w.may_close() for w in self.panels.values()
                                         if isinstance(w, GuardsUnsavedWork)):
            event.ignore()  # the user keeps editing
            return
        self.save_settings()
        c = self.controller
        if not self._stack_closed and (c.has_session or c.busy):
            if (c.active or c.busy) and not self._close_confirmed:
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
                c.close().then(self._on_stack_closed)
            event.ignore()
            return
        c.shutdown()
        event.accept()

    def _on_stack_closed(self, _op: object) -> None:
        self._stack_closed = True
        self.close()


def _heading(text: str) -> QLabel:
    lab = QLabel(text)
    f = lab.font()
    f.setBold(True)
    lab.setFont(f)
    return lab

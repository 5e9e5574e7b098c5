"""Stack-wide controls: Start/Stop/Restart (toolbar and menu), the port offset, the state and the
entry URL; and how a failed operation is shown (port conflicts offer a free offset, a failed start
names the node and its last log lines).

Each control is given the :class:`~stackpanel.qt.controller.StackController` and keeps itself up to
date from ``stateChanged``; every operation it starts carries its own completion callback.
"""
from __future__ import annotations

from typing import TypeVar

from PySide6.QtCore import QObject, Qt, QTimer, QUrl
from PySide6.QtGui import QAction, QDesktopServices, QGuiApplication, QKeySequence
from PySide6.QtWidgets import QLabel, QMessageBox, QSpinBox, QWidget

from stackpanel.core.supervise.supervisor import PortConflictError, StartError
from stackpanel.qt.controller import Operation, SessionPrepareError, StackController
from stackpanel.qt.theme import icon, stack_colour

T = TypeVar("T")

#: the offset box waits this long after the last change before reloading the profile
OFFSET_DEBOUNCE_MS = 300


def _esc(text: str) -> str:
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


# --------------------------------------------------------------------------------------------------
# How operations end
# --------------------------------------------------------------------------------------------------


def start_stack(parent: QWidget, controller: StackController) -> Operation[None] | None:
    """Start the loaded profile; a failure is shown over ``parent``."""
    op = controller.start()
    if op is not None:
        op.then(lambda o: report_failure(parent, controller, o))
    return op


def report_failure(parent: QWidget, controller: StackController, op: Operation[T]) -> None:
    """Nothing if ``op`` succeeded; otherwise a dialog a person can act on (and a line in the log)."""
    err = op.error
    if err is None:
        return
    if isinstance(err, PortConflictError):
        _port_conflict(parent, controller, err)
    elif isinstance(err, StartError):
        controller.log("error", str(err))
        box = QMessageBox(parent)
        box.setIcon(QMessageBox.Icon.Critical)
        box.setWindowTitle("The stack did not start")
        box.setText(f"Node <b>{_esc(err.node)}</b> did not start: {_esc(err.reason)}")
        box.setInformativeText("Nothing it started is left running. Its last log lines are below.")
        box.setDetailedText("\n".join(err.last_lines) or "(no output)")
        show_log = box.addButton("Show its log", QMessageBox.ButtonRole.ActionRole)
        box.addButton(QMessageBox.StandardButton.Close)

        def done() -> None:
            controller.acknowledge_failure()
            if box.clickedButton() is show_log:
                controller.show_log(err.node)

        box.finished.connect(lambda _r: done())
        box.open()
        controller.select_node(err.node)
        controller.publish_last_lines(err.node, err.last_lines)
    elif isinstance(err, SessionPrepareError):
        show_error(parent, controller, "Could not prepare the stack", err.cause)
    else:
        show_error(parent, controller, f"{op.name} failed", err)


def show_error(parent: QWidget, controller: StackController, title: str, err: BaseException | None) -> None:
    text = str(err) if err is not None else "unknown error"
    controller.log("error", f"{title}: {text}")
    box = QMessageBox(QMessageBox.Icon.Critical, title, text, QMessageBox.StandardButton.Ok, parent)
    box.open()


def _port_conflict(parent: QWidget, controller: StackController, err: PortConflictError) -> None:
    lines = []
    for c in err.conflicts:
        lines.append(f"• {c.message}")
        for h in c.holders:
            lines.append(f"    held by {h.describe()}")
        if c.remedy:
            lines.append(f"    {c.remedy}")
    text = "\n".join(lines)
    controller.log("error", text)
    controller.find_free_offset().then(
        lambda o: _offer_offset(parent, controller, text, o.result() if o.ok else None))


def _offer_offset(parent: QWidget, controller: StackController, text: str, offset: int | None) -> None:
    box = QMessageBox(parent)
    box.setIcon(QMessageBox.Icon.Warning)
    box.setWindowTitle("Port already in use")
    box.setText("A port this profile needs is taken; nothing was started.")
    box.setInformativeText(text)
    retry = None
    if offset is not None:
        retry = box.addButton(f"Start with port offset {offset}", QMessageBox.ButtonRole.AcceptRole)
    box.addButton(QMessageBox.StandardButton.Cancel)

    def done() -> None:
        if retry is not None and box.clickedButton() is retry and offset is not None:
            load = controller.set_port_offset(offset)
            if load is not None:
                load.then(lambda o: start_stack(parent, controller) if controller.is_current(o) else None)
        else:
            controller.acknowledge_failure()

    box.finished.connect(lambda _r: done())
    box.open()


# --------------------------------------------------------------------------------------------------
# Controls
# --------------------------------------------------------------------------------------------------


class StackActions(QObject):
    """Start, Stop and Restart as actions (for the toolbar and the Stack menu)."""

    def __init__(self, controller: StackController, window: QWidget) -> None:
        super().__init__(window)
        self._controller = controller
        self._window = window
        self.start = QAction(icon("start"), "Start", window, shortcut=QKeySequence("Ctrl+R"))
        self.stop = QAction(icon("stop"), "Stop", window, shortcut=QKeySequence("Ctrl+."))
        self.restart = QAction(icon("restart"), "Restart", window, shortcut=QKeySequence("Ctrl+Shift+R"))
        self.start.triggered.connect(lambda: start_stack(window, controller))
        self.stop.triggered.connect(lambda: self._report(controller.stop()))
        self.restart.triggered.connect(lambda: self._report(controller.restart()))
        controller.stateChanged.connect(self.update)
        self.update()

    def all(self) -> tuple[QAction, QAction, QAction]:
        return self.start, self.stop, self.restart

    def _report(self, op: Operation[None] | None) -> None:
        if op is not None:
            op.then(lambda o: report_failure(self._window, self._controller, o))

    def update(self) -> None:
        c = self._controller
        self.start.setEnabled(c.valid and not c.busy and not c.active)
        self.stop.setEnabled(c.has_session and (c.active or c.busy))
        self.restart.setEnabled(c.has_session and not c.busy and c.active)


class UrlActions(QObject):
    """Open in browser and Copy URL for the stack's entry, enabled while it runs."""

    def __init__(self, controller: StackController, window: QWidget) -> None:
        super().__init__(window)
        self._controller = controller
        self.open = QAction("Open in browser", window, shortcut=QKeySequence("Ctrl+B"))
        self.copy = QAction("Copy URL", window)
        self.open.setToolTip("Open the stack's entry URL in the desktop's browser")
        self.open.triggered.connect(lambda: QDesktopServices.openUrl(QUrl(controller.browser_url)))
        self.copy.triggered.connect(lambda: QGuiApplication.clipboard().setText(controller.browser_url))
        controller.stateChanged.connect(self.update)
        self.update()

    def all(self) -> tuple[QAction, QAction]:
        return self.open, self.copy

    def update(self) -> None:
        enabled = bool(self._controller.browser_url) and self._controller.active
        for action in self.all():
            action.setEnabled(enabled)


class PortOffsetBox(QSpinBox):
    """Shift every port of the profile (two stacks side by side); reloads the profile when the
    value has stayed put for a moment. Locked while the stack runs."""

    def __init__(self, controller: StackController, parent: QWidget | None = None) -> None:
        super().__init__(parent, minimum=0, maximum=50000, singleStep=100)
        self.setToolTip("Shift every port of the profile by this much (two stacks side by side)")
        self.setValue(controller.port_offset)
        self._timer = QTimer(self, singleShot=True, interval=OFFSET_DEBOUNCE_MS)
        self._timer.timeout.connect(lambda: controller.set_port_offset(self.value()))
        self.valueChanged.connect(lambda _v: self._timer.start())
        controller.portOffsetChanged.connect(self._show)
        controller.stateChanged.connect(lambda: self.setEnabled(not controller.active and not controller.busy))
        controller.shuttingDown.connect(self._timer.stop)

    def _show(self, offset: int) -> None:
        if offset != self.value():
            self.blockSignals(True)
            self.setValue(offset)
            self.blockSignals(False)


class StackStateLabel(QLabel):
    """`● running` in the state's colour."""

    def __init__(self, controller: StackController, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self._controller = controller
        self.setMinimumWidth(110)
        self.setAlignment(Qt.AlignmentFlag.AlignCenter)
        controller.stateChanged.connect(self.update_state)
        self.update_state()

    def update_state(self) -> None:
        state = self._controller.stack_state
        text = f" ● {state} "
        style = f"color: {stack_colour(state).name()}; font-weight: bold;"
        if text == self.text() and style == self.styleSheet():  # a style sheet change re-polishes: only if it differs
            return
        self.setText(text)
        self.setStyleSheet(style)


class EntryUrlLabel(QLabel):
    """The entry URL: a link while the stack is up, grey otherwise."""

    def __init__(self, controller: StackController, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self._controller = controller
        self.setOpenExternalLinks(True)
        self.setTextInteractionFlags(Qt.TextInteractionFlag.TextBrowserInteraction)
        controller.stateChanged.connect(self.update_url)
        self.update_url()

    def update_url(self) -> None:
        c = self._controller
        url = c.browser_url
        if url and c.active:
            self.setText(f'<a href="{url}">{url}</a>')
        else:
            self.setText(f"<span style='color:gray'>{url}</span>" if url else "")

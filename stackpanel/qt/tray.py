"""The tray icon, where the desktop has a tray: the stack's state at a glance, Start/Stop, the
entry URL, and the window back. The actions are the window's own (one set of enabled states)."""
from __future__ import annotations

from PySide6.QtCore import QObject
from PySide6.QtGui import QAction, QColor, QIcon, QPainter, QPixmap
from PySide6.QtWidgets import QMainWindow, QMenu, QSystemTrayIcon

from stackpanel.qt.controller import StackController
from stackpanel.qt.theme import icon, stack_colour


class StackTray(QObject):
    """Made by :meth:`create`, which gives None when the desktop has no tray."""

    def __init__(self, controller: StackController, window: QMainWindow, actions: list[QAction | None]) -> None:
        super().__init__(window)
        self._controller = controller
        self._window = window
        self.menu = QMenu()
        self.state_action = self.menu.addAction("")
        self.state_action.setEnabled(False)  # a heading, not a command
        self.menu.addSeparator()
        for a in actions:
            if a is None:
                self.menu.addSeparator()
            else:
                self.menu.addAction(a)
        self.menu.addSeparator()
        self.show_action = self.menu.addAction("Show window", self.show_window)
        self.icon = QSystemTrayIcon(self)
        self.icon.setContextMenu(self.menu)
        self.icon.activated.connect(self._activated)
        controller.stateChanged.connect(self.update_state)
        controller.profileLoaded.connect(lambda _lp: self.update_state())
        controller.shuttingDown.connect(self.icon.hide)
        self.update_state()
        self.icon.show()

    @classmethod
    def create(cls, controller: StackController, window: QMainWindow,
               actions: list[QAction | None]) -> StackTray | None:
        if not QSystemTrayIcon.isSystemTrayAvailable():
            return None
        return cls(controller, window, actions)

    def state_text(self) -> str:
        c = self._controller
        name = c.loaded.name if c.loaded is not None else "no profile"
        return f"{name}: {c.stack_state}"

    def update_state(self) -> None:
        text = self.state_text()
        self.state_action.setText(f"● {text}")
        self.icon.setToolTip(f"stackpanel – {text}")
        self.icon.setIcon(_badged(icon("stackpanel"), stack_colour(self._controller.stack_state)))

    def show_window(self) -> None:
        w = self._window
        w.showNormal()
        w.raise_()
        w.activateWindow()

    def _activated(self, reason: QSystemTrayIcon.ActivationReason) -> None:
        if reason == QSystemTrayIcon.ActivationReason.Trigger:
            self.show_window()


def _badged(base: QIcon, colour: QColor, size: int = 64) -> QIcon:
    """``base`` with a dot of the state's colour in its lower right corner."""
    pixmap = base.pixmap(size, size) if not base.isNull() else QPixmap(size, size)
    if base.isNull():
        pixmap.fill(QColor(0, 0, 0, 0))
    p = QPainter(pixmap)
    p.setRenderHint(QPainter.RenderHint.Antialiasing)
    p.setPen(QColor("white"))
    p.setBrush(colour)
    d = size * 0.42
    p.drawEllipse(int(size - d - 1), int(size - d - 1), int(d), int(d))
    p.end()
    return QIcon(pixmap)

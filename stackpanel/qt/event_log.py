"""What happened, in words: the Events tab (every journal line of the controller, time-stamped) and
the status bar (errors for a while, the operation under way)."""
from __future__ import annotations

from datetime import datetime

from PySide6.QtWidgets import QLabel, QPlainTextEdit, QStatusBar, QWidget

from stackpanel.qt.controller import StackController

#: an error stays in the status bar this long
STATUS_ERROR_MS = 10_000


class EventLog(QPlainTextEdit):
    """``HH:MM:SS level text`` for node and stack transitions, workers, stack messages and errors."""

    def __init__(self, controller: StackController, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setReadOnly(True)
        self.setMaximumBlockCount(2000)
        self.setPlaceholderText("Nothing has happened yet: start the stack (Stack → Start), and every state "
                                "change, worker and message of its nodes is written here with its time")
        controller.journal.connect(self.add)

    def add(self, level: str, text: str) -> None:
        stamp = datetime.now().strftime("%H:%M:%S")
        self.appendPlainText(f"{stamp} {level:<7} {text}")


class StackStatusBar(QStatusBar):
    """Shows errors for :data:`STATUS_ERROR_MS` and, on the right, the operation under way."""

    def __init__(self, controller: StackController, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.busy_label = QLabel()
        self.addPermanentWidget(self.busy_label)
        controller.operationStarted.connect(lambda name: self.busy_label.setText(f"{name} …"))
        controller.operationFinished.connect(lambda _name: self.busy_label.setText(""))
        controller.journal.connect(self._on_journal)

    def _on_journal(self, level: str, text: str) -> None:
        if level == "error":
            self.showMessage(text.splitlines()[0], STATUS_ERROR_MS)

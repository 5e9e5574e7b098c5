"""One view over every node's logs: per-process filter, search, follow mode, errors highlighted.

Files are read by :class:`~stackpanel.qt.bridge.LogFollower` on a background thread; this widget
only receives batches of ``(source label, line)`` and keeps a bounded backlog for re-filtering.
"""
from __future__ import annotations

import re
from collections import deque
from collections.abc import Iterable

from PySide6.QtCore import QTimer
from PySide6.QtGui import QColor, QFont, QFontDatabase, QSyntaxHighlighter, QTextCharFormat, QTextDocument
from PySide6.QtWidgets import (
    QCheckBox,
    QComboBox,
    QHBoxLayout,
    QLabel,
    QLineEdit,
    QPlainTextEdit,
    QPushButton,
    QVBoxLayout,
    QWidget,
)

from stackpanel.qt.bridge import LogFollower, LogSource
from stackpanel.qt.theme import ERROR_COLOUR, WARNING_COLOUR

ERROR_RE = re.compile(
    r"\b(error|crit|critical|alert|emerg|fatal|exception|traceback)\b|\b\w+(Error|Exception):"
    r"|^(\S+\s+)?\d+\s+5\d\d\s",
    re.IGNORECASE,
)
WARNING_RE = re.compile(r"\b(warn|warning)\b|^(\S+\s+)?\d+\s+4\d\d\s", re.IGNORECASE)
LABEL_WIDTH = 16


def is_error_line(text: str) -> bool:
    return ERROR_RE.search(text) is not None


class LogHighlighter(QSyntaxHighlighter):
    """Whole line red for errors (5xx, error/crit/Traceback...), amber for warnings and 4xx."""

    def __init__(self, document: QTextDocument) -> None:
        super().__init__(document)
        self.error_format = QTextCharFormat()
        self.error_format.setForeground(QColor(ERROR_COLOUR))
        self.error_format.setFontWeight(QFont.Weight.Bold)
        self.warning_format = QTextCharFormat()
        self.warning_format.setForeground(QColor(WARNING_COLOUR))
        self.match_format = QTextCharFormat()
        self.match_format.setBackground(QColor(255, 213, 79, 110))
        self.search = ""

    def highlightBlock(self, text: str) -> None:
        if ERROR_RE.search(text):
            self.setFormat(0, len(text), self.error_format)
        elif WARNING_RE.search(text):
            self.setFormat(0, len(text), self.warning_format)
        if self.search:
            low, needle, i = text.lower(), self.search.lower(), 0
            while (i := low.find(needle, i)) != -1:
                self.setFormat(i, len(needle), self.match_format)
                i += len(needle)


class LogView(QWidget):
    def __init__(self, parent: QWidget | None = None, backlog_lines: int = 20000,
                 shown_lines: int = 5000) -> None:
        super().__init__(parent)
        self.lines: deque[tuple[str, str]] = deque(maxlen=backlog_lines)
        self.follower = LogFollower(parent=self)
        self.follower.lines.connect(self.append_lines)

        self.source_box = QComboBox()
        self.source_box.setMinimumContentsLength(18)
        self.source_box.addItem("all processes", "")
        self.source_box.currentIndexChanged.connect(lambda _i: self.refilter())
        self.search_edit = QLineEdit()
        self.search_edit.setPlaceholderText("search (case-insensitive)")
        self.search_edit.setClearButtonEnabled(True)
        self._search_timer = QTimer(self, singleShot=True, interval=150)
        self._search_timer.timeout.connect(self.refilter)
        self.search_edit.textChanged.connect(lambda _t: self._search_timer.start())
        self.errors_only = QCheckBox("errors only")
        self.errors_only.toggled.connect(lambda _b: self.refilter())
        self.follow = QCheckBox("follow")
        self.follow.setChecked(True)
        self.follow.toggled.connect(self._on_follow)
        clear = QPushButton("Clear")
        clear.clicked.connect(self.clear)
        self.count_label = QLabel("")

        self.text = QPlainTextEdit()
        self.text.setReadOnly(True)
        self.text.setMaximumBlockCount(shown_lines)
        self.text.setLineWrapMode(QPlainTextEdit.LineWrapMode.NoWrap)
        self.text.setFont(QFontDatabase.systemFont(QFontDatabase.SystemFont.FixedFont))
        self.text.setPlaceholderText("Logs of the running stack appear here.")
        self.highlighter = LogHighlighter(self.text.document())
        self.text.verticalScrollBar().valueChanged.connect(self._on_scroll)

        bar = QHBoxLayout()
        bar.addWidget(self.source_box)
        bar.addWidget(self.search_edit, 1)
        bar.addWidget(self.errors_only)
        bar.addWidget(self.follow)
        bar.addWidget(clear)
        bar.addWidget(self.count_label)
        lay = QVBoxLayout(self)
        lay.setContentsMargins(4, 4, 4, 4)
        lay.addLayout(bar)
        lay.addWidget(self.text, 1)

    # -- sources ------------------------------------------------------------------------------------

    def set_sources(self, sources: Iterable[LogSource]) -> None:
        """Follow these files (replaces the previous set) and offer them in the filter."""
        sources = list(sources)
        current = self.source_box.currentData()
        self.source_box.blockSignals(True)
        self.source_box.clear()
        self.source_box.addItem("all processes", "")
        for node in dict.fromkeys(s.node for s in sources):
            self.source_box.addItem(node, f"{node}.")
            for s in sources:
                if s.node == node:
                    self.source_box.addItem(f"    {s.label}", s.label)
        i = self.source_box.findData(current)
        self.source_box.setCurrentIndex(max(0, i))
        self.source_box.blockSignals(False)
        self.follower.set_sources(sources)
        self.follower.start()

    def stop(self) -> None:
        self.follower.stop()

    # -- lines --------------------------------------------------------------------------------------

    def _matches(self, label: str, text: str) -> bool:
        want = self.source_box.currentData() or ""
        if want and not (label == want or (want.endswith(".") and label.startswith(want))):
            return False
        needle = self.search_edit.text().strip().lower()
        if needle and needle not in text.lower() and needle not in label.lower():
            return False
        return not (self.errors_only.isChecked() and not is_error_line(text))

    @staticmethod
    def _format(label: str, text: str) -> str:
        return f"{label:<{LABEL_WIDTH}} {text}"

    def append_lines(self, batch: list[tuple[str, str]]) -> None:
        self.lines.extend(batch)
        shown = [self._format(label, text) for label, text in batch if self._matches(label, text)]
        if not shown:
            return
        shown = shown[-self.text.maximumBlockCount():]
        bar = self.text.verticalScrollBar()
        keep = bar.value()
        self.text.appendPlainText("\n".join(shown))
        if self.follow.isChecked():
            bar.setValue(bar.maximum())
        else:
            bar.setValue(keep)
        self._update_count()

    def refilter(self) -> None:
        self.highlighter.search = self.search_edit.text().strip()
        limit = self.text.maximumBlockCount()
        shown: list[str] = []
        for label, text in reversed(self.lines):
            if self._matches(label, text):
                shown.append(self._format(label, text))
                if len(shown) >= limit:
                    break
        shown.reverse()
        self.text.setPlainText("\n".join(shown))
        if self.follow.isChecked():
            self.text.verticalScrollBar().setValue(self.text.verticalScrollBar().maximum())
        self._update_count()

    def clear(self) -> None:
        self.lines.clear()
        self.text.clear()
        self._update_count()

    def shown_text(self) -> str:
        return self.text.toPlainText()

    def _update_count(self) -> None:
        self.count_label.setText(f"{self.text.blockCount() if self.text.toPlainText() else 0} lines")

    # -- follow mode: scrolling up pauses it, scrolling back to the end resumes it --------------------

    def _on_follow(self, on: bool) -> None:
        if on:
            bar = self.text.verticalScrollBar()
            bar.setValue(bar.maximum())

    def _on_scroll(self, value: int) -> None:
        at_end = value >= self.text.verticalScrollBar().maximum() - 2
        if self.follow.isChecked() != at_end and self.text.verticalScrollBar().isSliderDown():
            self.follow.setChecked(at_end)


def sources_for(stack: object) -> list[LogSource]:
    """Log sources of a :class:`~stackpanel.core.render.stack.RenderedStack` (access, error, output)."""
    out: list[LogSource] = []
    for name, node in getattr(stack, "nodes", {}).items():
        out.append(LogSource(name, "out", node.output_log))
        if node.error_log is not None and node.error_log != node.output_log:
            out.append(LogSource(name, "error", node.error_log))
        out.append(LogSource(name, "access", node.access_log))
    return out


__all__ = ["LogHighlighter", "LogView", "is_error_line", "sources_for"]

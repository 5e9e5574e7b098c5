"""One view over every node's logs: per-process filter, search, follow mode, errors highlighted.

Files are read by :class:`~stackpanel.qt.bridge.LogFollower` on a background thread; this widget
only receives batches of ``(source label, line)`` and keeps a bounded backlog for re-filtering.

What reaches the text widget is throttled, because appending costs ~30 µs per line on the GUI
thread (layout + highlighter) and a stack under load writes 10k+ lines/s (measured: 94 ms per
250 ms batch, see benchmarks/RESULTS-gui.md):

* lines are only filtered and queued while the view is visible and following; otherwise they only
  go into the backlog and the view is rebuilt from it when it is shown or follow resumes;
* a timer appends at most :data:`LINES_PER_FLUSH` lines every :data:`FLUSH_MS`; when more arrive,
  the oldest queued ones are skipped and a marker line says how many (they stay in the backlog:
  a filter or search shows them);
* a rebuild (filter, search, show) puts the newest :data:`REFILTER_CHUNK` lines in at once and the
  older ones, up to the view's limit, a chunk per timer tick at the top.
"""
from __future__ import annotations

import re
import time
from collections import deque
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING

from PySide6.QtCore import QEvent, QTimer
from PySide6.QtGui import (
    QColor,
    QFont,
    QFontDatabase,
    QHideEvent,
    QPalette,
    QShowEvent,
    QSyntaxHighlighter,
    QTextCharFormat,
    QTextCursor,
    QTextDocument,
)
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

from stackpanel.core.supervise.events import StackState, StackStateChanged
from stackpanel.qt.bridge import LogFollower, LogSource
from stackpanel.qt.theme import hue_colour

if TYPE_CHECKING:
    from stackpanel.core.render import RenderedStack
    from stackpanel.core.session import StackSession
    from stackpanel.qt.controller import StackController

ERROR_RE = re.compile(
    r"\b(error|crit|critical|alert|emerg|fatal|exception|traceback)\b|\b\w+(Error|Exception):"
    r"|^(\S+\s+)?\d+\s+5\d\d\s",
    re.IGNORECASE,
)
# 499 is nginx's "the client closed the connection" (a load run ending, a browser navigating away):
# not the server's problem, so not highlighted
WARNING_RE = re.compile(r"\b(warn|warning)\b|^(\S+\s+)?\d+\s+4(?!99)\d\d\s", re.IGNORECASE)
LABEL_WIDTH = 16
#: the source label of the line that separates two runs of the stack
RUN_LABEL = "▶ run"
#: the text widget gets new lines at most this often ...
FLUSH_MS = 100
#: ... and at most this many per flush (~30 µs each: <= ~8 ms of GUI thread, <= 2 500 lines/s)
LINES_PER_FLUSH = 250
#: a rebuild shows this many newest lines at once, then adds older ones this many per flush
REFILTER_CHUNK = 500


def is_error_line(text: str) -> bool:
    return ERROR_RE.search(text) is not None


class LogHighlighter(QSyntaxHighlighter):
    """Whole line red for errors (5xx, error/crit/Traceback...), amber for warnings and 4xx."""

    def __init__(self, document: QTextDocument) -> None:
        super().__init__(document)
        self.error_format = QTextCharFormat()
        self.error_format.setFontWeight(QFont.Weight.Bold)
        self.warning_format = QTextCharFormat()
        self.run_format = QTextCharFormat()
        self.run_format.setFontWeight(QFont.Weight.Bold)
        self.set_palette(None)
        self.match_format = QTextCharFormat()
        self.match_format.setBackground(QColor(255, 213, 79, 110))
        self.search = ""

    def set_palette(self, palette: QPalette | None) -> None:
        """Error red, warning orange, run marks blue: the state palette's shades for this theme
        (readable as text, >= 4.5:1)."""
        self.error_format.setForeground(hue_colour("red", palette))
        self.warning_format.setForeground(hue_colour("orange", palette))
        self.run_format.setForeground(hue_colour("blue", palette))

    def highlightBlock(self, text: str) -> None:
        line = text[LABEL_WIDTH + 1:]  # the label ("web error") is the source's name, not the line's level
        if text.startswith(RUN_LABEL):
            self.setFormat(0, len(text), self.run_format)
        elif ERROR_RE.search(line):
            self.setFormat(0, len(text), self.error_format)
        elif WARNING_RE.search(line):
            self.setFormat(0, len(text), self.warning_format)
        if self.search:
            low, needle, i = text.lower(), self.search.lower(), 0
            while (i := low.find(needle, i)) != -1:
                self.setFormat(i, len(needle), self.match_format)
                i += len(needle)


class LogView(QWidget):
    def __init__(self, parent: QWidget | None = None, backlog_lines: int = 20000,
                 shown_lines: int = 5000, controller: StackController | None = None) -> None:
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
        self.text.setPlaceholderText("No logs yet: start the stack; every node's log lines appear here.")
        self.highlighter = LogHighlighter(self.text.document())
        self.text.verticalScrollBar().valueChanged.connect(self._on_scroll)
        #: lines waiting for the next flush (filtered, formatted); overflow is counted in _skipped
        self._pending: deque[str] = deque(maxlen=LINES_PER_FLUSH)
        self._skipped = 0
        #: older lines of a rebuild still to be put in at the top, oldest first
        self._backfill: list[str] = []
        #: lines arrived while hidden or not following: the text is rebuilt from the backlog
        self._stale = False
        self._unseen = 0
        self.skipped_total = 0
        self._flush_timer = QTimer(self, interval=FLUSH_MS)
        self._flush_timer.timeout.connect(self.flush)

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
        if controller is not None:
            self.bind(controller)

    def bind(self, controller: StackController) -> None:
        """Follow the logs of each new session's stack; stop the follower when the window goes."""

        def session_changed(session: StackSession | None) -> None:
            if session is not None:
                self.set_sources(sources_for(session.stack))

        def stack_state(ev: StackStateChanged) -> None:
            if ev.state == StackState.STARTING:
                self.mark_run_start(ev.at)

        controller.sessionChanged.connect(session_changed)
        controller.bridge.stackStateChanged.connect(stack_state)
        controller.logRequested.connect(self.show_node)
        controller.shuttingDown.connect(self.stop)

    def mark_run_start(self, wall_time: float) -> None:
        """A separator line where a new run of the stack starts (every filter shows it)."""
        when = time.strftime("%H:%M:%S", time.localtime(wall_time))
        self.append_lines([(RUN_LABEL, f"{'─' * 12} stack started at {when} {'─' * 12}")])

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

    def show_node(self, node: str) -> None:
        """Every log of ``node`` (the filter set to it), newest at the end."""
        i = self.source_box.findData(f"{node}.")
        if i >= 0:
            self.source_box.setCurrentIndex(i)
        self.follow.setChecked(True)

    def stop(self) -> None:
        self.follower.stop()

    # -- lines --------------------------------------------------------------------------------------

    def _filter(self) -> Callable[[str, str], bool]:
        """The current filter as a plain predicate (the widgets are read once, not per line)."""
        want = self.source_box.currentData() or ""
        prefix = want.endswith(".")
        needle = self.search_edit.text().strip().lower()
        errors_only = self.errors_only.isChecked()

        def matches(label: str, text: str) -> bool:
            if label == RUN_LABEL:
                return True
            if want and not (label == want or (prefix and label.startswith(want))):
                return False
            if needle and needle not in text.lower() and needle not in label.lower():
                return False
            return not (errors_only and not is_error_line(text))

        return matches

    def _matches(self, label: str, text: str) -> bool:
        return self._filter()(label, text)

    @staticmethod
    def _format(label: str, text: str) -> str:
        return f"{label:<{LABEL_WIDTH}} {text}"

    def _live(self) -> bool:
        """New lines go to the text only while someone can see them scroll by."""
        return self.isVisible() and self.follow.isChecked()

    def append_lines(self, batch: list[tuple[str, str]]) -> None:
        """New lines from the follower: into the backlog; queued for the text if it is live."""
        self.lines.extend(batch)
        if not self._live():
            self._stale = True
            self._unseen += len(batch)
            if self.isVisible():
                self._update_count()
            return
        matches = self._filter()
        # only the newest LINES_PER_FLUSH can be shown: look at no more than that many matches
        fresh: list[str] = []
        for label, text in reversed(batch):
            if matches(label, text):
                if len(fresh) >= LINES_PER_FLUSH:
                    self._skipped += 1
                    continue
                fresh.append(self._format(label, text))
        if not fresh:
            return
        overflow = len(self._pending) + len(fresh) - LINES_PER_FLUSH
        if overflow > 0:
            self._skipped += overflow  # the deque drops the oldest queued lines
        self._pending.extend(reversed(fresh))
        if not self._flush_timer.isActive():
            self._flush_timer.start()

    def flush(self) -> None:
        """Timer tick: queued lines (and a skipped-lines marker) at the end, one backfill chunk at
        the top."""
        if self._backfill:
            self._insert_backfill()
        if self._pending:
            shown = list(self._pending)
            self._pending.clear()
            if self._skipped:
                self.skipped_total += self._skipped
                shown.insert(0, self._format("…", f"{self._skipped} lines skipped (more than "
                                                  f"{LINES_PER_FLUSH * 1000 // FLUSH_MS} lines/s); a filter "
                                                  "or search shows every line"))
                self._skipped = 0
            bar = self.text.verticalScrollBar()
            self.text.appendPlainText("\n".join(shown))
            if self.follow.isChecked():
                bar.setValue(bar.maximum())
            self._update_count()
        if not self._pending and not self._backfill:
            self._flush_timer.stop()

    def _insert_backfill(self) -> None:
        chunk, self._backfill = self._backfill[-REFILTER_CHUNK:], self._backfill[:-REFILTER_CHUNK]
        room = self.text.maximumBlockCount() - self.text.blockCount()
        if room <= 0:  # new lines filled the view meanwhile: older ones would be trimmed at once
            self._backfill = []
            return
        chunk = chunk[-room:]
        bar = self.text.verticalScrollBar()
        keep, at_end = bar.value(), bar.value() >= bar.maximum()
        cursor = QTextCursor(self.text.document())
        cursor.movePosition(QTextCursor.MoveOperation.Start)
        cursor.insertText("\n".join(chunk) + "\n")
        bar.setValue(bar.maximum() if at_end else keep + len(chunk))  # what was in view stays there
        self._update_count()

    def refilter(self) -> None:
        """Rebuild the text from the backlog (newest lines at once, older ones on the next ticks)."""
        self.highlighter.search = self.search_edit.text().strip()
        limit = self.text.maximumBlockCount()
        matches = self._filter()
        shown: list[str] = []
        for label, text in reversed(self.lines):
            if matches(label, text):
                shown.append(self._format(label, text))
                if len(shown) >= limit:
                    break
        shown.reverse()
        self._pending.clear()
        self._skipped = 0
        self._stale = False
        self._unseen = 0
        self._backfill = shown[:-REFILTER_CHUNK]
        self.text.setPlainText("\n".join(shown[-REFILTER_CHUNK:]))
        if self.follow.isChecked():
            self.text.verticalScrollBar().setValue(self.text.verticalScrollBar().maximum())
        if self._backfill and not self._flush_timer.isActive():
            self._flush_timer.start()
        self._update_count()

    def changeEvent(self, event: QEvent) -> None:
        super().changeEvent(event)
        if event.type() == QEvent.Type.PaletteChange and hasattr(self, "highlighter"):
            self.highlighter.set_palette(self.palette())
            self.highlighter.rehighlight()

    def showEvent(self, event: QShowEvent) -> None:
        super().showEvent(event)
        if self._stale and self.follow.isChecked():
            self.refilter()

    def hideEvent(self, event: QHideEvent) -> None:
        super().hideEvent(event)
        if self._pending:  # not worth drawing any more: rebuilt from the backlog when shown
            self._pending.clear()
            self._skipped = 0
            self._stale = True

    def clear(self) -> None:
        self.lines.clear()
        self._pending.clear()
        self._backfill = []
        self._skipped = self._unseen = 0
        self._stale = False
        self.text.clear()
        self._update_count()

    def shown_text(self) -> str:
        return self.text.toPlainText()

    def _update_count(self) -> None:
        n = 0 if self.text.document().isEmpty() else self.text.blockCount()
        text = f"{n} lines"
        if self._unseen and not self.follow.isChecked():
            text += f" · follow paused, {self._unseen} new"
        self.count_label.setText(text)

    # -- follow mode: scrolling up pauses it, scrolling back to the end resumes it --------------------

    def _on_follow(self, on: bool) -> None:
        if on:
            if self._stale:
                self.refilter()  # what arrived while paused
            bar = self.text.verticalScrollBar()
            bar.setValue(bar.maximum())
        elif self._pending:  # paused: the text stays as it is; rebuilt from the backlog on resume
            self._pending.clear()
            self._skipped = 0
            self._stale = True

    def _on_scroll(self, value: int) -> None:
        at_end = value >= self.text.verticalScrollBar().maximum() - 2
        if self.follow.isChecked() != at_end and self.text.verticalScrollBar().isSliderDown():
            self.follow.setChecked(at_end)


def sources_for(stack: RenderedStack) -> list[LogSource]:
    """Log sources of a :class:`~stackpanel.core.render.stack.RenderedStack` (access, error, output)."""
    out: list[LogSource] = []
    for name, node in stack.nodes.items():
        out.append(LogSource(name, "out", node.output_log))
        if node.error_log is not None and node.error_log != node.output_log:
            out.append(LogSource(name, "error", node.error_log))
        out.append(LogSource(name, "access", node.access_log))
    return out


__all__ = ["LogHighlighter", "LogView", "is_error_line", "sources_for"]

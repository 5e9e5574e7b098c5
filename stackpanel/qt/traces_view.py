"""The Traces tab: requests followed through every tier (from the access logs), as a list with
filters and, for the one clicked, a waterfall.

The traces come from the session's collector (the bounded sample, the slowest and the failed ones);
the bridge says when new ones completed and the view, when visible, reads the kept set again (an
in-memory read, at most a few times a second). Filtering is the core's :class:`TraceQuery`.
"""
from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from pathlib import Path

from PySide6.QtCore import QRectF, QSize, Qt, QTimer, QUrl
from PySide6.QtGui import QColor, QDesktopServices, QPainter, QPaintEvent, QPalette, QPen, QShowEvent
from PySide6.QtWidgets import (
    QComboBox,
    QDoubleSpinBox,
    QFileDialog,
    QHBoxLayout,
    QHeaderView,
    QLabel,
    QLineEdit,
    QMessageBox,
    QPushButton,
    QScrollArea,
    QSplitter,
    QStackedWidget,
    QTreeWidget,
    QTreeWidgetItem,
    QVBoxLayout,
    QWidget,
)

from stackpanel.core.metrics.otlp import write_otlp
from stackpanel.core.metrics.tracing import Trace, TraceQuery
from stackpanel.core.supervise.events import StackState
from stackpanel.qt.controller import StackController
from stackpanel.qt.operations import Operation
from stackpanel.qt.theme import SERIES_COLOURS, hue_colour

STATUS_FILTERS = ("any status", "2xx", "3xx", "4xx", "5xx", "failed")
ANY_NODE = "any node"
#: the list is read again at most this often while new traces come in
REFRESH_MS = 400
COLUMNS = ("time", "request", "status", "ms at the edge", "tiers", "request id")


def _ms(seconds: float) -> str:
    return f"{seconds * 1000:.2f}"


def waterfall_rows(trace: Trace) -> list[dict[str, str]]:
    """What the waterfall shows for each tier, as text (the painted bars say the same)."""
    t0 = trace.start
    rows = []
    for i, s in enumerate(trace.spans):
        hop = trace.hop_time(i)
        rows.append({"node": s.node, "pid": str(s.pid), "status": str(s.status), "start": _ms(s.start - t0),
                     "duration": _ms(s.duration), "own": _ms(trace.own_time(i)),
                     "hop": "" if hop is None else _ms(hop)})
    return rows


class WaterfallView(QWidget):
    """One trace: a row per tier (pid, status, start offset, duration bar, own time) and the hop
    time between consecutive tiers."""

    ROW = 26
    HOP = 16
    LABEL = 230

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.trace: Trace | None = None
        self.setMinimumHeight(self.ROW * 2)

    def set_trace(self, trace: Trace | None) -> None:
        self.trace = trace
        rows = waterfall_rows(trace) if trace else []
        self.setToolTip("\n".join(f"{r['node']} pid {r['pid']} {r['status']}: start +{r['start']} ms, "
                                  f"{r['duration']} ms, own {r['own']} ms" for r in rows))
        self.updateGeometry()
        self.update()

    def sizeHint(self) -> QSize:
        n = len(self.trace.spans) if self.trace else 1
        return QSize(640, 30 + n * (self.ROW + self.HOP))

    def minimumSizeHint(self) -> QSize:
        return QSize(400, self.sizeHint().height())

    def paintEvent(self, event: QPaintEvent) -> None:
        p = QPainter(self)
        p.setRenderHint(QPainter.RenderHint.Antialiasing)
        text = self.palette().color(QPalette.ColorRole.WindowText)
        muted = QColor(text)
        muted.setAlpha(150)
        trace = self.trace
        if trace is None or not trace.spans:
            p.setPen(muted)
            p.drawText(self.rect(), Qt.AlignmentFlag.AlignCenter, "Click a request above to see it tier by tier")
            return
        total = max(trace.duration, 1e-9)
        x0, x1 = float(self.LABEL), float(self.width() - 190)
        span_w = max(40.0, x1 - x0)
        p.setPen(muted)
        p.drawText(QRectF(x0, 2, span_w, 18), Qt.AlignmentFlag.AlignLeft, "0 ms")
        p.drawText(QRectF(x0, 2, span_w, 18), Qt.AlignmentFlag.AlignRight, f"{_ms(total)} ms")
        y = 24.0
        for i, (s, row) in enumerate(zip(trace.spans, waterfall_rows(trace), strict=True)):
            colour = (hue_colour("red") if s.status >= 500 else hue_colour("orange") if s.status >= 400
                      else QColor(SERIES_COLOURS[i % len(SERIES_COLOURS)]))
            p.setPen(text)
            p.drawText(QRectF(6, y, self.LABEL - 12, self.ROW), Qt.AlignmentFlag.AlignVCenter,
                       f"{s.node}  pid {s.pid}  {s.status}")
            left = x0 + (s.start - trace.start) / total * span_w
            width = max(2.0, s.duration / total * span_w)
            p.setPen(QPen(colour.darker(130), 1))
            p.setBrush(colour)
            p.drawRoundedRect(QRectF(left, y + 5, min(width, x0 + span_w - left + 1), self.ROW - 10), 3, 3)
            p.setPen(text)
            p.drawText(QRectF(x0 + span_w + 8, y, 182, self.ROW), Qt.AlignmentFlag.AlignVCenter,
                       f"+{row['start']} · {row['duration']} ms · own {row['own']}")
            y += self.ROW
            if row["hop"]:
                p.setPen(muted)
                p.drawText(QRectF(18, y, self.LABEL + span_w, self.HOP), Qt.AlignmentFlag.AlignVCenter,
                           f"↳ hop {row['hop']} ms to {trace.spans[i + 1].node}")
                y += self.HOP
        if trace.missing:
            p.setPen(hue_colour("red"))
            p.drawText(QRectF(6, y, self.width() - 12, self.HOP), Qt.AlignmentFlag.AlignVCenter,
                       f"no line from {', '.join(trace.missing)} for this request id")


class TracesView(QWidget):
    """Recent requests (filters: path, status, node, minimum duration; search by id) and the waterfall
    of the one selected. Given a controller it follows the session itself."""

    def __init__(self, parent: QWidget | None = None, controller: StackController | None = None) -> None:
        super().__init__(parent)
        self._controller = controller
        self._traces: tuple[Trace, ...] = ()
        self._shown: tuple[Trace, ...] = ()
        self._dirty = False

        self.path = QLineEdit(placeholderText="path contains")
        self.status = QComboBox()
        self.status.addItems(STATUS_FILTERS)
        self.node = QComboBox()
        self.node.addItem(ANY_NODE)
        self.min_ms = QDoubleSpinBox(suffix=" ms", decimals=1, maximum=600_000.0)
        self.min_ms.setToolTip("minimum duration at the edge")
        self.min_ms.setSpecialValueText("any duration")
        self.search = QLineEdit(placeholderText="request id (X-Request-ID)")
        self.search.setClearButtonEnabled(True)
        self.export_button = QPushButton("Export OTLP…")
        self.export_button.setToolTip("Write the listed traces in the OpenTelemetry JSON encoding (Jaeger, "
                                      "any OTLP-file reader)")
        self.export_button.clicked.connect(self.ask_export)
        filters = QHBoxLayout()
        for w in (self.path, self.status, self.node, self.min_ms, self.search):
            filters.addWidget(w)
        filters.addWidget(self.export_button)
        for edit in (self.path, self.search):
            edit.textChanged.connect(self.apply_filters)
        for combo in (self.status, self.node):
            combo.currentIndexChanged.connect(self.apply_filters)
        self.min_ms.valueChanged.connect(self.apply_filters)

        self.list = QTreeWidget()
        self.list.setHeaderLabels(list(COLUMNS))
        self.list.setRootIsDecorated(False)
        self.list.setUniformRowHeights(True)
        self.list.setSortingEnabled(False)
        self.list.currentItemChanged.connect(self._on_current)
        header = self.list.header()
        header.setStretchLastSection(False)
        for col in range(len(COLUMNS)):
            header.setSectionResizeMode(col, QHeaderView.ResizeMode.ResizeToContents)
        header.setSectionResizeMode(1, QHeaderView.ResizeMode.Stretch)
        self.waterfall = WaterfallView()
        scroll = QScrollArea()
        scroll.setWidgetResizable(True)
        scroll.setWidget(self.waterfall)
        scroll.setMinimumHeight(WaterfallView.ROW * 3 + WaterfallView.HOP * 2 + 30)
        self.summary = QLabel()
        split = QSplitter(Qt.Orientation.Vertical)
        split.addWidget(self.list)
        split.addWidget(scroll)
        split.setStretchFactor(0, 1)
        split.setStretchFactor(1, 1)
        content = QWidget()
        box = QVBoxLayout(content)
        box.setContentsMargins(0, 0, 0, 0)
        box.addLayout(filters)
        box.addWidget(split, 1)
        box.addWidget(self.summary)

        self.empty_text = QLabel(wordWrap=True, alignment=Qt.AlignmentFlag.AlignCenter)
        self.empty_button = QPushButton()
        self.empty_button.clicked.connect(self._empty_action)
        empty = QWidget()
        ebox = QVBoxLayout(empty)
        ebox.addStretch(1)
        ebox.addWidget(self.empty_text)
        ebox.addWidget(self.empty_button, 0, Qt.AlignmentFlag.AlignHCenter)
        ebox.addStretch(1)
        self.pages = QStackedWidget()
        self.pages.addWidget(empty)
        self.pages.addWidget(content)
        layout = QVBoxLayout(self)
        layout.setContentsMargins(4, 4, 4, 4)
        layout.addWidget(self.pages)

        self._timer = QTimer(self, singleShot=True, interval=REFRESH_MS)
        self._timer.timeout.connect(self.refresh)
        if controller is not None:
            controller.bridge.traces.connect(lambda _batch: self._schedule())
            controller.sessionChanged.connect(lambda _s: self.refresh())
            controller.stateChanged.connect(self._update_empty)
            controller.profileLoaded.connect(lambda _lp: self._set_nodes())
        self._set_nodes()
        self._update_empty()

    # -- data in --------------------------------------------------------------------------------

    def set_traces(self, traces: Sequence[Trace]) -> None:
        """Show these traces (the newest first), keeping the filters and the selection."""
        self._traces = tuple(traces)
        self._set_nodes()
        self.apply_filters()

    def _source(self) -> Callable[[], tuple[Trace, ...]] | None:
        session = self._controller.session if self._controller is not None else None
        return getattr(session, "traces", None)

    def refresh(self) -> None:
        """Read the session's kept traces again (in memory, under the collector's lock)."""
        self._dirty = False
        source = self._source()
        self.set_traces(source() if source is not None else ())

    def _schedule(self) -> None:
        if not self.isVisible():
            self._dirty = True
        elif not self._timer.isActive():
            self._timer.start()

    def showEvent(self, event: QShowEvent) -> None:
        super().showEvent(event)
        if self._dirty:
            self.refresh()

    # -- filters, list, selection ----------------------------------------------------------------

    def query(self) -> TraceQuery:
        status = self.status.currentText()
        node = self.node.currentText()
        return TraceQuery(path=self.path.text().strip() or None,
                          status=None if status == STATUS_FILTERS[0] else status,
                          node=None if node == ANY_NODE else node,
                          min_duration=self.min_ms.value() / 1000 if self.min_ms.value() > 0 else None,
                          request_id=self.search.text().strip() or None)

    def clear_filters(self) -> None:
        for w in (self.path, self.search):
            w.clear()
        self.status.setCurrentIndex(0)
        self.node.setCurrentIndex(0)
        self.min_ms.setValue(0)

    def apply_filters(self) -> None:
        q = self.query()
        self._shown = tuple(t for t in self._traces if q.matches(t))
        current = self.selected()
        self.list.blockSignals(True)
        self.list.clear()
        items = []
        for t in self._shown:
            item = QTreeWidgetItem([
                time.strftime("%H:%M:%S", time.localtime(t.start)) + f".{int(t.start * 1000) % 1000:03d}",
                f"{t.root.method} {t.path}", str(t.status), _ms(t.duration), " → ".join(t.nodes), t.request_id])
            item.setData(0, Qt.ItemDataRole.UserRole, t.request_id)
            item.setTextAlignment(3, Qt.AlignmentFlag.AlignRight | Qt.AlignmentFlag.AlignVCenter)
            if t.failed:
                item.setForeground(2, hue_colour("red"))
            items.append(item)
        self.list.addTopLevelItems(items)
        self.list.blockSignals(False)
        keep = next((i for i, t in enumerate(self._shown) if current and t.request_id == current.request_id), None)
        if keep is not None:
            self.list.setCurrentItem(items[keep])
        else:
            self.waterfall.set_trace(None)
        failing = sum(1 for t in self._traces if t.failed)
        self.summary.setText(f"{len(self._shown)} of {len(self._traces)} kept requests shown ({failing} failed); "
                             "kept: a sample of recent requests, the slowest and every failed one")
        self._update_empty()

    def selected(self) -> Trace | None:
        return self.waterfall.trace

    def select(self, request_id: str) -> bool:
        for i, t in enumerate(self._shown):
            item = self.list.topLevelItem(i)
            if t.request_id == request_id and item is not None:
                self.list.setCurrentItem(item)
                return True
        return False

    def _on_current(self, item: QTreeWidgetItem | None, _previous: QTreeWidgetItem | None) -> None:
        rid = item.data(0, Qt.ItemDataRole.UserRole) if item is not None else None
        self.waterfall.set_trace(next((t for t in self._shown if t.request_id == rid), None))

    def _set_nodes(self) -> None:
        loaded = self._controller.loaded if self._controller is not None else None
        nodes = list(loaded.profile.nodes) if loaded is not None and loaded.profile is not None else []
        for t in self._traces:
            nodes.extend(n for n in t.nodes if n not in nodes)
        have = [self.node.itemText(i) for i in range(1, self.node.count())]
        if have != nodes:
            current = self.node.currentText()
            self.node.blockSignals(True)
            self.node.clear()
            self.node.addItems([ANY_NODE, *nodes])
            self.node.setCurrentText(current if current in nodes else ANY_NODE)
            self.node.blockSignals(False)

    # -- empty states ----------------------------------------------------------------------------

    def _update_empty(self) -> None:
        c = self._controller
        running = c is not None and c.has_session and c.stack_state in (StackState.RUNNING, StackState.DEGRADED)
        if self._traces:
            self.pages.setCurrentIndex(1)
            return
        self.pages.setCurrentIndex(0)
        if running and c is not None:
            self.empty_text.setText(f"No requests yet: send one to {c.browser_url} (or curl -i it). Each shows "
                                    "here tier by tier; its X-Request-ID finds it.")
            self.empty_button.setText("Open in browser")
            self.empty_button.setEnabled(True)
        else:
            self.empty_text.setText("No traces yet: start the stack, then send a request. Every tier's access log "
                                    "is read: nothing to change in the app.")
            self.empty_button.setText("Start the stack")
            self.empty_button.setEnabled(c is not None and c.valid and not c.busy)

    def _empty_action(self) -> None:
        c = self._controller
        if c is None:
            return
        if self.empty_button.text() == "Open in browser":
            QDesktopServices.openUrl(QUrl(c.browser_url))
        else:
            c.start()

    # -- export ---------------------------------------------------------------------------------

    def ask_export(self) -> None:
        if not self._shown:
            QMessageBox.information(self, "Export traces", "No trace to export: the list is empty.")
            return
        target, _ = QFileDialog.getSaveFileName(self, "Export traces (OTLP/JSON)", "traces.otlp.json",
                                                "OTLP JSON (*.json)")
        if target:
            self.export_to(Path(target))

    def export_to(self, path: Path) -> Operation[int] | None:
        """Write the listed traces as OTLP/JSON off the GUI thread (the CLI's writer)."""
        if self._controller is None:
            return None
        traces = self._shown
        op = self._controller.reads.submit("export traces", lambda: write_otlp(traces, path))
        return op.then(self._exported)

    def _exported(self, op: Operation[int]) -> None:
        if not op.ok:
            QMessageBox.warning(self, "Export traces", f"The export failed: {op.error}")

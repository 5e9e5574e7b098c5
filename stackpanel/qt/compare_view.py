"""The compare view: run the same load against several profiles in turn; table and chart.

The comparison itself is the core's ``compare_profiles`` (it brings each profile up on free ports,
loads it, stops it); it runs on a worker thread and its progress lines hop to the GUI thread.
"""
from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from PySide6.QtCore import QObject, Qt, Signal
from PySide6.QtGui import QPixmap, QResizeEvent
from PySide6.QtWidgets import (
    QComboBox,
    QFileDialog,
    QFormLayout,
    QHBoxLayout,
    QLabel,
    QListWidget,
    QListWidgetItem,
    QPlainTextEdit,
    QPushButton,
    QScrollArea,
    QSizePolicy,
    QSpinBox,
    QSplitter,
    QTableWidget,
    QTableWidgetItem,
    QVBoxLayout,
    QWidget,
)

from stackpanel.core.profiles.library import list_profiles
from stackpanel.qt.operations import Operation, OperationQueue

if TYPE_CHECKING:
    from PySide6.QtCore import QSettings

    from stackpanel.core.loadgen.compare import Comparison
    from stackpanel.qt.controller import StackController

LOAD_PATHS = ("/api/hello", "/api/wait?ms=50", "/api/cpu?ms=5")
DEFAULT_SELECTION = ("uvicorn-workers", "nginx-uvicorn", "nginx-gunicorn-uvicorn")
#: the chart's text is never scaled below this (device pixels)
MIN_TEXT_PX = 9.0
COLUMNS = ("profile", "req/s", "ratio", "p50 ms", "p99 ms", "errors", "server CPU %", "generator CPU %")


class _Progress(QObject):
    line = Signal(str)


class CompareView(QWidget):
    """Pick profiles and a load, run, read the table and the chart; save PNG/JSON/CSV."""

    finished = Signal(object)  # Comparison

    def __init__(self, parent: QWidget | None = None, controller: StackController | None = None) -> None:
        super().__init__(parent)
        self.comparison: Comparison | None = None
        self._worker = OperationQueue("compare", self)
        self._progress = _Progress(self)
        self._progress.line.connect(self._on_progress)

        self.profiles = QListWidget()
        self.profiles.setDragDropMode(QListWidget.DragDropMode.InternalMove)  # drag to reorder
        rank = {name: i for i, name in enumerate(DEFAULT_SELECTION)}
        for entry in sorted(list_profiles(), key=lambda e: rank.get(e.name, len(rank))):
            item = QListWidgetItem(entry.name)
            item.setFlags(item.flags() | Qt.ItemFlag.ItemIsUserCheckable)
            item.setCheckState(Qt.CheckState.Checked if entry.name in DEFAULT_SELECTION else Qt.CheckState.Unchecked)
            item.setData(Qt.ItemDataRole.UserRole, str(entry.path))
            self.profiles.addItem(item)
        self.connections = QSpinBox(minimum=1, maximum=1024, value=64)
        self.duration = QSpinBox(minimum=1, maximum=600, value=10, suffix=" s")
        self.warmup = QSpinBox(minimum=0, maximum=60, value=2, suffix=" s")
        self.workers = QSpinBox(minimum=0, maximum=64, value=4)
        self.workers.setSpecialValueText("as in each profile")
        self.path = QComboBox(editable=True)
        self.path.addItems(LOAD_PATHS)
        self.run_button = QPushButton("Run comparison")
        self.run_button.clicked.connect(self.run)
        self.save_button = QPushButton("Save PNG / JSON / CSV…")
        self.save_button.setEnabled(False)
        self.save_button.clicked.connect(self._save)

        form = QFormLayout()
        form.addRow("connections", self.connections)
        form.addRow("duration", self.duration)
        form.addRow("warm-up", self.warmup)
        form.addRow("app workers", self.workers)
        form.addRow("path", self.path)
        left = QVBoxLayout()
        left.addWidget(QLabel("Profiles, in order; drag to reorder (the first is the baseline):"))
        left.addWidget(self.profiles, 1)
        left.addLayout(form)
        buttons = QHBoxLayout()
        buttons.addWidget(self.run_button)
        buttons.addWidget(self.save_button)
        left.addLayout(buttons)
        left_box = QWidget()
        left_box.setLayout(left)

        # each profile runs on free ports of its own, not the toolbar's offset: say so where it is set
        ports = QLabel("Ports: each profile runs on free ports chosen for it; the toolbar's port offset "
                       "is not used, so a stack you run meanwhile is not disturbed.")
        ports.setWordWrap(True)
        ports.setEnabled(False)  # the muted colour of a note
        left.insertWidget(left.count() - 1, ports)

        self.table = QTableWidget(0, len(COLUMNS))
        self.table.setHorizontalHeaderLabels(COLUMNS)
        self.table.verticalHeader().setVisible(False)
        self.chart_area = ChartArea()
        self.chart = self.chart_area.label
        chart_scroll = self.chart_area
        self.log = QPlainTextEdit(readOnly=True)
        self.log.setMaximumBlockCount(500)
        right = QSplitter(Qt.Orientation.Vertical)
        right.addWidget(self.table)
        right.addWidget(chart_scroll)
        right.addWidget(self.log)
        right.setSizes([160, 420, 120])

        split = QSplitter()
        split.addWidget(left_box)
        split.addWidget(right)
        split.setSizes([260, 800])
        layout = QVBoxLayout(self)
        layout.setContentsMargins(4, 4, 4, 4)
        layout.addWidget(split)
        if controller is not None:
            controller.shuttingDown.connect(self.shutdown)

    # the comparison last set up is offered again next time (the window's settings)
    def restore_settings(self, settings: QSettings) -> None:
        order = [str(n) for n in _as_list(settings.value("compare/order"))]
        checked = set(str(n) for n in _as_list(settings.value("compare/checked")))
        if order:
            rank = {name: i for i, name in enumerate(order)}
            items = [self.profiles.takeItem(0) for _ in range(self.profiles.count())]
            for item in sorted(items, key=lambda it: rank.get(it.text(), len(rank))):
                item.setCheckState(Qt.CheckState.Checked if item.text() in checked else Qt.CheckState.Unchecked)
                self.profiles.addItem(item)
        for key, box in self._remembered().items():
            value = settings.value(f"compare/{key}")
            if value is not None:
                box.setValue(int(str(value)))
        self.path.setCurrentText(str(settings.value("compare/path", LOAD_PATHS[0])))

    def save_settings(self, settings: QSettings) -> None:
        items = [self.profiles.item(i) for i in range(self.profiles.count())]
        settings.setValue("compare/order", [it.text() for it in items])
        settings.setValue("compare/checked", [it.text() for it in items if it.checkState() == Qt.CheckState.Checked])
        for key, box in self._remembered().items():
            settings.setValue(f"compare/{key}", box.value())
        settings.setValue("compare/path", self.path.currentText())

    def _remembered(self) -> dict[str, QSpinBox]:
        return {"connections": self.connections, "duration": self.duration, "warmup": self.warmup,
                "workers": self.workers}

    def selected_profiles(self) -> list[str]:
        out = []
        for i in range(self.profiles.count()):
            item = self.profiles.item(i)
            if item.checkState() == Qt.CheckState.Checked:
                out.append(item.data(Qt.ItemDataRole.UserRole))
        return out

    def run(self) -> None:
        from stackpanel.core.bench import compare_profiles

        profiles = self.selected_profiles()
        if not profiles:
            self.log.appendPlainText("tick at least one profile")
            return
        connections, duration, warmup = self.connections.value(), float(self.duration.value()), float(
            self.warmup.value())
        path, workers = self.path.currentText().strip() or "/", self.workers.value() or None
        self.run_button.setEnabled(False)
        self.save_button.setEnabled(False)
        self.log.appendPlainText(f"comparing {len(profiles)} profiles: {connections} connections, {duration:g} s "
                                 f"after {warmup:g} s warm-up, GET {path}, app workers {workers or 'as set'}")
        emit = self._progress.line.emit  # called on the worker thread; the signal hops to the GUI
        self._worker.submit("compare", lambda: compare_profiles(
            profiles, connections=connections, duration_s=duration, warmup_s=warmup, path=path, workers=workers,
            progress=lambda p: emit(str(p)))).then(self._on_finished)

    def _on_progress(self, line: str) -> None:
        self.log.appendPlainText(line)

    def _on_finished(self, op: Operation[Comparison]) -> None:
        self.run_button.setEnabled(True)
        if not op.ok:
            self.log.appendPlainText(f"comparison failed: {op.error}")
            return
        self.show_comparison(op.result())
        self.finished.emit(op.result())

    def show_comparison(self, comparison: Comparison) -> None:
        self.comparison = comparison
        self.table.setRowCount(len(comparison.runs))
        for row, run in enumerate(comparison.runs):
            ratio = comparison.ratio(run)
            server_cpu = run.server_cpu_percent()
            cells = [
                run.name if run.ok else f"{run.name} (did not run: {run.reason})",
                f"{run.throughput_rps:,.0f}" if run.ok else "-",
                f"{ratio:.2f}" if ratio is not None else "-",
                f"{run.latency_p50_ms:.1f}" if run.ok else "-",
                f"{run.latency_p99_ms:.1f}" if run.ok else "-",
                str(run.errors_total),
                f"{server_cpu:.0f}" if server_cpu is not None else "-",
                f"{run.generator_cpu_percent:.0f}" if run.ok else "-",
            ]
            for col, text in enumerate(cells):
                item = QTableWidgetItem(text)
                if col:
                    item.setTextAlignment(Qt.AlignmentFlag.AlignRight | Qt.AlignmentFlag.AlignVCenter)
                self.table.setItem(row, col, item)
        self.table.resizeColumnsToContents()
        self.chart_area.set_comparison(comparison)
        self.save_button.setEnabled(True)
        self.log.appendPlainText(comparison.format_table(workers=False))

    def _save(self) -> None:
        from stackpanel.qt.chart import save_chart

        if self.comparison is None:
            return
        path, _ = QFileDialog.getSaveFileName(self, "Save comparison chart", "comparison.png", "PNG (*.png)")
        if not path:
            return
        png = Path(path)
        save_chart(self.comparison, png)
        png.with_suffix(".json").write_text(self.comparison.to_json(), encoding="utf-8")
        png.with_suffix(".csv").write_text(self.comparison.to_csv(), encoding="utf-8")
        self.log.appendPlainText(f"saved {png}, {png.with_suffix('.json')} and {png.with_suffix('.csv')}")

    def shutdown(self) -> None:
        self._worker.shutdown(wait=False)


def _as_list(value: object) -> list[object]:
    """QSettings gives a one-element list back as a plain string (INI), none as None."""
    if value is None:
        return []
    return list(value) if isinstance(value, (list, tuple)) else [value]


class ChartArea(QScrollArea):
    """The comparison chart, drawn for the size of the area: laid out at the area's size divided by
    a display scale, then scaled down by it, so the text is neither huge nor under MIN_TEXT_PX. It
    scrolls only when the area is too small for legible text."""

    #: the largest display scale (at 1 the chart's 38 px title would dominate a large window)
    MAX_SCALE = 0.75

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.label = QLabel("Run a comparison to see the chart.")
        self.label.setAlignment(Qt.AlignmentFlag.AlignCenter)
        # its size is set here (minimumSize), not by the pixmap: a drawn chart never pushes the area
        self.label.setSizePolicy(QSizePolicy.Policy.Ignored, QSizePolicy.Policy.Ignored)
        self.setWidget(self.label)
        self.setWidgetResizable(True)
        self.comparison: Comparison | None = None
        self._drawn_for: tuple[int, int] | None = None

    def set_comparison(self, comparison: Comparison) -> None:
        self.comparison = comparison
        self._drawn_for = None
        self._fit()

    def scale(self) -> float:
        """The display scale for the viewport as it is now."""
        from stackpanel.qt.chart import HEIGHT, SMALLEST_TEXT_PX, WIDTH

        vp = self.viewport().size()
        fit = min(vp.width() / WIDTH, vp.height() / HEIGHT)
        return max(MIN_TEXT_PX / SMALLEST_TEXT_PX, min(self.MAX_SCALE, fit))

    def _fit(self) -> None:
        from stackpanel.qt.chart import render_chart

        vp = self.viewport().size()
        if self.comparison is None or (vp.width(), vp.height()) == self._drawn_for or vp.width() < 10:
            return
        self._drawn_for = (vp.width(), vp.height())
        k = self.scale()
        image = render_chart(self.comparison, width=round(vp.width() / k), height=round(vp.height() / k))
        w, h = round(image.width() * k), round(image.height() * k)
        pixmap = QPixmap.fromImage(image.scaled(w, h, Qt.AspectRatioMode.IgnoreAspectRatio,
                                                Qt.TransformationMode.SmoothTransformation))
        self.label.setPixmap(pixmap)
        # taller than the area (many profiles, a low area): it scrolls; otherwise it follows the area
        self.label.setMinimumSize(0, h if h > vp.height() else 0)

    def resizeEvent(self, event: QResizeEvent) -> None:
        super().resizeEvent(event)
        self._fit()

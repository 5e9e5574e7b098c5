"""Per-worker CPU %, req/s and RSS, per-node latency p50/p95: pyqtgraph, one curve per series.

Curves are created once per worker/node and then only ``setData`` is called, on a redraw timer,
from the newest :class:`~stackpanel.core.metrics.engine.MetricsSnapshot` (its history arrays are
read-only copies of the core's ring buffers). Curves clip to the view and downsample; the time
window (1, 5, 15 min) only changes the slice that is handed over.
"""
from __future__ import annotations

import math
from collections.abc import Iterator, Sequence
from contextlib import ExitStack, contextmanager
from typing import TYPE_CHECKING

import numpy as np
import pyqtgraph as pg
from PySide6.QtCore import Qt, QTimer, Signal
from PySide6.QtGui import QColor, QFontMetrics, QPalette, QResizeEvent
from PySide6.QtWidgets import (
    QCheckBox,
    QComboBox,
    QGridLayout,
    QHBoxLayout,
    QLabel,
    QPushButton,
    QSizePolicy,
    QStackedWidget,
    QVBoxLayout,
    QWidget,
)

from stackpanel.core.metrics.engine import MetricsSnapshot, WorkerHistory
from stackpanel.core.supervise.events import StackState, StackStateChanged
from stackpanel.qt.theme import SERIES_COLOURS, icon

if TYPE_CHECKING:
    from PySide6.QtCore import QSettings

    from stackpanel.qt.controller import LoadedProfile, StackController

WINDOWS_S: tuple[int, ...] = (60, 300, 900)
QWIDGETSIZE_MAX = (1 << 24) - 1
EMPTY_TEXT = "No data yet: start the stack, then put load on it (the Load tab)."
#: separators kept for the most recent run starts
MAX_RUN_LINES = 5
#: grid strength: the grid colour is this blend of text over background, drawn opaque and only at
#: the major ticks (pyqtgraph's alpha-blended grid over three tick levels was ~85 % of a repaint:
#: four plots 25-30 ms -> 4 ms; see benchmarks/RESULTS-gui.md)
GRID_ALPHA = 0.25
#: the value axis is as wide as this many digits whatever the labels: a label that grows (0 -> 10k
#: req/s) would otherwise re-lay out the plot (a y-range change 22-38 ms -> 8-13 ms for four plots)
AXIS_DIGITS = 6
#: a new curve costs ~1 ms (curve item + legend entry); a redraw makes at most this many and leaves
#: the rest to a redraw CONTINUE_MS later (a 32-worker stack's first redraw made ~100 at once). A
#: timer, not singleShot(0): that is a posted event, delivered before any timer in the same pass.
NEW_CURVES_PER_REDRAW = 12
CONTINUE_MS = 10
#: 1 px cosmetic pens take the raster engine's fast path (wider lines cost ~3x per segment)
PEN_WIDTH = 1.0
#: with more workers than this, the busiest (mean req/s over the window) get a curve each and the
#: rest one "others" curve: their mean (a per-worker plot stays per worker)
TOP_WORKERS = 6
OTHERS: tuple[str] = ("others",)
OTHERS_COLOUR = "#8c959f"
#: one legend entry's height at its 8 pt, and what of a plot's height is not beside the data (title, axis);
#: a short plot (a 1280×720 window) shows fewer workers of their own, so that its legend fits in one column
LEGEND_ENTRY_PX, LEGEND_CHROME_PX = 15, 50
WorkerKey = tuple[str, int]


def _tail(t: np.ndarray, start: float) -> int:
    """Index of the first sample at or after ``start`` (``t`` is ascending)."""
    return int(np.searchsorted(t, start, side="left"))


MAX_POINTS = 1500  # per curve handed to Qt; more than a plot is wide in pixels


def decimate(x: np.ndarray, y: np.ndarray, max_points: int = MAX_POINTS) -> tuple[np.ndarray, np.ndarray]:
    """At most ``max_points``: bins of ``k`` samples become their max (peaks stay visible)."""
    n = len(x)
    if n <= max_points:
        return x, y
    k = math.ceil(n / max_points)
    m = (n // k) * k
    head = y[n - m:].reshape(-1, k)
    with np.errstate(all="ignore"):
        peaks = np.where(np.all(np.isnan(head), axis=1), np.nan, np.nanmax(np.nan_to_num(head, nan=-np.inf), axis=1))
    return x[n - m:: k], peaks


class _AgoAxis(pg.AxisItem):
    """Time ticks as "40 s ago" … "now" (x is seconds relative to the newest sample)."""

    def tickStrings(self, values: list[float], scale: float, spacing: float) -> list[str]:
        return ["now" if abs(v) < 1e-9 else f"{-v:g} s ago" for v in values]


class _BatchLegend(pg.LegendItem):
    """A legend whose size update (a walk over every entry, run by pyqtgraph after each add and
    remove: O(n²) for n entries) can be deferred to the end of a batch of changes."""

    _batch_depth = 0
    _size_stale = False

    def updateSize(self) -> None:
        if self._batch_depth:
            self._size_stale = True
            return
        super().updateSize()  # sets the geometry to what the entries need ...
        if self.isVisible():  # ... which the plot's layout would override: ask it for that room
            size = self.geometry().size()
            self.setMinimumSize(size)
            self.setPreferredSize(size)
            self.updateGeometry()

    @contextmanager
    def batch(self) -> Iterator[None]:
        self._batch_depth += 1
        try:
            yield
        finally:
            self._batch_depth -= 1
            if not self._batch_depth and self._size_stale:
                self._size_stale = False
                self.updateSize()


class _SeriesPlot:
    """One PlotWidget with a legend and curves keyed by anything hashable.

    Curves are bare ``PlotCurveItem`` (no per-curve dataset pipeline) and the y range is set from
    the data in one call per redraw instead of pyqtgraph's per-item auto-range: with 32+ curves
    both matter (see benchmarks/RESULTS-gui.md).
    """

    def __init__(self, title: str, units: str) -> None:
        # the time axis says "40 s ago" on its ticks and the title carries the units: no axis
        # titles, whose lines a 1280×720 window cannot spare
        self.widget = pg.PlotWidget(axisItems={"bottom": _AgoAxis(orientation="bottom")})
        self.plot: pg.PlotItem = self.widget.getPlotItem()
        self.plot.setTitle(f"{title} ({units})", size="10pt")
        # the title spans the data and the legend: a long one must not squeeze the legend's column
        self.plot.layout.removeItem(self.plot.titleLabel)
        self.plot.layout.addItem(self.plot.titleLabel, 0, 1, 1, 3)
        left = self.plot.getAxis("left")
        if GRID_ALPHA > 0:
            self.plot.showGrid(x=False, y=True, alpha=GRID_ALPHA)
            left.setStyle(tickAlpha=255, maxTickLevel=0)  # opaque (colour set in apply_palette), major only
        fm = QFontMetrics(left.style["tickFont"] or self.widget.font())
        left.setWidth(fm.horizontalAdvance("0" * AXIS_DIGITS) + left.style["tickTextOffset"][0] + 4)
        self.plot.setMouseEnabled(x=False, y=False)
        self.plot.disableAutoRange()
        self.plot.setYRange(0, 1, padding=0)
        self.plot.hideButtons()
        self.plot.setMenuEnabled(False)
        # the legend beside the data area, never over it (a column of the plot's own layout)
        self.legend = _BatchLegend(offset=None, labelTextSize="8pt", verSpacing=-6)
        self.plot.layout.addItem(self.legend, 1, 3, 3, 1)  # beside the data area and both axes
        self.legend.setSizePolicy(QSizePolicy.Policy.Preferred, QSizePolicy.Policy.Maximum)  # not stretched
        self.plot.layout.setAlignment(self.legend, Qt.AlignmentFlag.AlignTop)
        self.plot.legend = self.legend
        self.curves: dict[object, pg.PlotCurveItem] = {}
        #: curves whose series went (retire_missing), reused for new series before drop_spares
        self._spare: list[pg.PlotCurveItem] = []
        self._ymax = 1.0
        self._run_lines: list[pg.InfiniteLine] = []
        self._ink = QColor("#8c959f")
        self._batching = False
        self._columns_stale = False

    @contextmanager
    def batch(self) -> Iterator[None]:
        """Curves added and dropped inside re-lay out the legend once, at the end (a restart that
        replaces 10 worker curves per plot: 55-84 ms -> see benchmarks/RESULTS-gui.md)."""
        if self._batching:
            yield
            return
        self._batching = True
        try:
            with self.legend.batch():
                yield
                self._batching = False
                if self._columns_stale:
                    self._legend_columns()
        finally:
            self._batching = False

    def curve(self, key: object, name: str, colour: str, dashed: bool = False) -> pg.PlotCurveItem:
        c = self.curves.get(key)
        if c is None:
            pen = pg.mkPen(colour, width=PEN_WIDTH, style=Qt.PenStyle.DashLine if dashed else Qt.PenStyle.SolidLine)
            if self._spare:  # a retired curve and its legend entry: renamed, far cheaper than new ones
                c = self._spare.pop()
                c.setPen(pen)
                c.opts["name"] = name
                label = self.legend.getLabel(c)
                if label is not None:
                    label.setText(name)
                self.legend.update()
            else:
                c = pg.PlotCurveItem(pen=pen, name=name, connect="finite", skipFiniteCheck=False)
                self.plot.addItem(c)
                self._legend_columns()
            self.curves[key] = c
        return c

    def set_curve(self, key: object, name: str, colour: str, x: np.ndarray, y: np.ndarray,
                  dashed: bool = False) -> float:
        """setData on the curve (created on first use); returns the max of ``y`` (0 when all NaN)."""
        x, y = decimate(x, y)
        self.curve(key, name, colour, dashed).setData(x, y, connect="finite")
        if len(y) == 0:
            return 0.0
        with np.errstate(all="ignore"):
            m = float(np.nanmax(y)) if not np.all(np.isnan(y)) else 0.0
        return m

    def set_y_max(self, ymax: float) -> None:
        """Y range 0..ymax with headroom; changed only when the data outgrows it or shrinks a lot."""
        want = max(ymax * 1.15, 1e-9) if ymax > 0 else 1.0
        if want > self._ymax or want < self._ymax * 0.5:
            self._ymax = want
            self.plot.setYRange(0, want, padding=0)

    def retire_missing(self, keep: set[object]) -> None:
        """Curves of series not in ``keep`` become spares (reused by :meth:`curve`)."""
        for key in [k for k in self.curves if k not in keep]:
            self._spare.append(self.curves.pop(key))

    def has_spare(self) -> bool:
        return bool(self._spare)

    def drop_spares(self) -> None:
        for c in self._spare:
            self.plot.removeItem(c)  # and its legend entry
        if self._spare:
            self._spare.clear()
            self._legend_columns()

    def drop_missing(self, keep: set[object]) -> None:
        self.retire_missing(keep)
        self.drop_spares()

    def _legend_columns(self) -> None:
        if self._batching:
            self._columns_stale = True
            return
        self._columns_stale = False
        n = len(self.curves)
        self.legend.setColumnCount(max(1, math.ceil(n / max(self.legend_rows(), TOP_WORKERS + 1))))

    def legend_rows(self) -> int:
        """Legend entries the plot is tall enough for in one column beside its data."""
        return max(3, int((self.widget.height() - LEGEND_CHROME_PX) // LEGEND_ENTRY_PX))

    def set_window(self, seconds: float) -> None:
        self.plot.setXRange(-seconds, 0, padding=0.01)

    def set_legend_visible(self, visible: bool) -> None:
        self.legend.setVisible(visible)
        if visible:
            self.legend.setMaximumWidth(QWIDGETSIZE_MAX)
            self.legend.updateSize()
        else:  # the data area takes its room
            self.legend.setMinimumWidth(0)
            self.legend.setPreferredWidth(0)
            self.legend.setMaximumWidth(0)
        self.plot.layout.setColumnMaximumWidth(3, QWIDGETSIZE_MAX if visible else 0)

    def set_run_starts(self, xs: list[float]) -> None:
        """Dashed vertical lines where a run of the stack started (``xs`` in seconds ago)."""
        while len(self._run_lines) < len(xs):
            pen = pg.mkPen(self._ink, width=1, style=Qt.PenStyle.DashLine)
            line = pg.InfiniteLine(angle=90, movable=False, pen=pen, label="start",
                                   labelOpts={"position": 0.92, "color": self._ink, "anchors": [(0, 0), (0, 0)]})
            self.plot.addItem(line, ignoreBounds=True)
            self._run_lines.append(line)
        for i, line in enumerate(self._run_lines):
            if i < len(xs):
                line.setPos(xs[i])
                line.show()
            else:
                line.hide()

    def run_start_positions(self) -> list[float]:
        return [float(line.value()) for line in self._run_lines if line.isVisible()]

    def apply_palette(self, pal: QPalette) -> None:
        bg = pal.color(QPalette.ColorRole.Base)
        fg = pal.color(QPalette.ColorRole.Text)
        self.widget.setBackground(bg)
        for axis in ("left", "bottom"):
            ax = self.plot.getAxis(axis)
            ax.setPen(fg)
            ax.setTextPen(fg)
        if GRID_ALPHA > 0:
            a = GRID_ALPHA
            grid = QColor.fromRgbF(a * fg.redF() + (1 - a) * bg.redF(), a * fg.greenF() + (1 - a) * bg.greenF(),
                                   a * fg.blueF() + (1 - a) * bg.blueF())
            self.plot.getAxis("left").setTickPen(pg.mkPen(grid, width=1))
        self.plot.titleLabel.setText(self.plot.titleLabel.text, color=fg.name())
        self._ink = QColor(fg)
        for line in self._run_lines:
            line.setPen(pg.mkPen(fg, width=1, style=Qt.PenStyle.DashLine))
            line.label.setColor(fg)
        self.legend.setLabelTextColor(fg)
        lb = QColor(bg)
        lb.setAlpha(200)
        self.legend.setBrush(lb)


class PlotsPanel(QWidget):
    """The four plots plus window selector and pause/resume."""

    pausedChanged = Signal(bool)

    def __init__(self, parent: QWidget | None = None, redraw_ms: int = 250,
                 controller: StackController | None = None) -> None:
        super().__init__(parent)
        self.cpu = _SeriesPlot("CPU per worker", "%")
        self.rps = _SeriesPlot("Requests per worker", "req/s")
        self.latency = _SeriesPlot("Latency per node: p50 solid, p95 dashed", "ms")
        self.rss = _SeriesPlot("Memory (RSS) per worker", "MB")
        self.plots = (self.cpu, self.rps, self.latency, self.rss)
        self.window_s: float = 300
        self.paused = False
        self._latest: MetricsSnapshot | None = None
        self._dirty = False
        self._colours: dict[object, str] = {}
        self.redraws = 0
        #: the node clients talk to (its rate is shown next to the controls)
        self.entry: str | None = None

        self.window_box = QComboBox()
        for s in WINDOWS_S:
            self.window_box.addItem(f"{s // 60} min", s)
        self.window_box.setCurrentIndex(WINDOWS_S.index(300))
        self.window_box.currentIndexChanged.connect(lambda _i: self.set_window(self.window_box.currentData()))
        self.pause_button = QPushButton(icon("pause"), "Pause")
        self.pause_button.setCheckable(True)
        self.pause_button.toggled.connect(self.set_paused)
        self.legend_box = QCheckBox("Legend")
        self.legend_box.setChecked(True)
        self.legend_box.toggled.connect(self.set_legend_visible)
        self.status = QLabel("")
        self.status.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        #: wall-clock times (time.time) at which a run of the stack started, for the separators
        self.run_starts: list[float] = []

        top = QHBoxLayout()
        top.addWidget(QLabel("Window"))
        top.addWidget(self.window_box)
        top.addWidget(self.pause_button)
        top.addWidget(self.legend_box)
        top.addStretch(1)
        top.addWidget(self.status)
        plots = QWidget()
        grid = QGridLayout(plots)
        grid.setContentsMargins(0, 0, 0, 0)
        grid.setSpacing(4)
        for i, p in enumerate(self.plots):
            grid.addWidget(p.widget, i // 2, i % 2)
        # until the first metrics arrive: what to do, not four empty grids
        self.empty = QLabel(EMPTY_TEXT)
        self.empty.setAlignment(Qt.AlignmentFlag.AlignCenter)
        self.empty.setWordWrap(True)
        f = self.empty.font()
        f.setPointSizeF(f.pointSizeF() * 1.2)
        self.empty.setFont(f)
        self.pages = QStackedWidget()
        self.pages.addWidget(self.empty)
        self.pages.addWidget(plots)
        lay = QVBoxLayout(self)
        lay.setContentsMargins(4, 4, 4, 4)
        lay.addLayout(top)
        lay.addWidget(self.pages, 1)
        for p in self.plots:
            p.set_window(self.window_s)
        self.apply_palette()

        self.timer = QTimer(self)
        self.timer.setInterval(redraw_ms)
        self.timer.timeout.connect(self._on_timer)
        self.timer.start()
        if controller is not None:
            self.bind(controller)

    def bind(self, controller: StackController) -> None:
        """Metrics from the bridge; a new session starts with empty plots; the entry node's rate."""

        def loaded(lp: LoadedProfile) -> None:
            if lp.profile is not None:
                self.entry = lp.profile.entry

        def stack_state(ev: StackStateChanged) -> None:
            if ev.state == StackState.STARTING:
                self.mark_run_start(ev.at)

        controller.bridge.metrics.connect(self.apply_metrics)
        controller.bridge.stackStateChanged.connect(stack_state)
        controller.sessionChanged.connect(lambda _s: self.clear())
        controller.profileLoaded.connect(loaded)

    def restore_settings(self, settings: QSettings) -> None:
        """The time window and the legend from ``settings``; every change is written back at once."""
        self.set_window(float(str(settings.value("plots/window", 300))))
        self.legend_box.setChecked(str(settings.value("plots/legend", "true")).lower() == "true")
        self.window_box.currentIndexChanged.connect(lambda _i: settings.setValue("plots/window", self.window_s))
        self.legend_box.toggled.connect(lambda on: settings.setValue("plots/legend", on))

    def save_settings(self, settings: QSettings) -> None:
        settings.setValue("plots/window", self.window_s)
        settings.setValue("plots/legend", self.legend_box.isChecked())

    def set_legend_visible(self, visible: bool) -> None:
        for p in self.plots:
            p.set_legend_visible(visible)
        if self.legend_box.isChecked() != visible:
            self.legend_box.setChecked(visible)

    def mark_run_start(self, wall_time: float) -> None:
        """A run of the stack started at ``wall_time`` (time.time()): a separator on every plot."""
        self.run_starts = [*self.run_starts[-(MAX_RUN_LINES - 1):], wall_time]
        self._dirty = True

    # -- inputs -------------------------------------------------------------------------------------

    def apply_metrics(self, snap: MetricsSnapshot) -> None:
        """Store the newest snapshot; the redraw timer draws it (cheap to call at any rate)."""
        self._latest = snap
        self._dirty = True

    def set_window(self, seconds: float) -> None:
        self.window_s = float(seconds)
        i = self.window_box.findData(int(seconds))
        if i >= 0 and i != self.window_box.currentIndex():
            self.window_box.setCurrentIndex(i)
        for p in self.plots:
            p.set_window(self.window_s)
        self._dirty = True

    def set_paused(self, paused: bool) -> None:
        if paused == self.paused:
            return
        self.paused = paused
        if self.pause_button.isChecked() != paused:
            self.pause_button.setChecked(paused)
        self.pause_button.setText("Resume" if paused else "Pause")
        self.pause_button.setIcon(icon("start" if paused else "pause"))
        self._dirty = True
        self.pausedChanged.emit(paused)

    def clear(self) -> None:
        for p in self.plots:
            with p.batch():
                p.drop_missing(set())
        self._latest = None
        self._colours.clear()
        self.run_starts = []
        for p in self.plots:
            p.set_run_starts([])
        self.status.setText("")
        self.pages.setCurrentWidget(self.empty)

    def apply_palette(self) -> None:
        for p in self.plots:
            p.apply_palette(self.palette())

    def changeEvent(self, event: object) -> None:
        super().changeEvent(event)  # type: ignore[arg-type]
        if hasattr(self, "plots"):
            self.apply_palette()

    def resizeEvent(self, event: QResizeEvent) -> None:
        super().resizeEvent(event)
        self._dirty = True  # the number of workers with a curve of their own follows the plots' height

    # -- drawing ------------------------------------------------------------------------------------

    def colour(self, key: object) -> str:
        """Stable per series for the panel's lifetime: assigned in order of first appearance."""
        c = self._colours.get(key)
        if c is None:
            c = self._colours[key] = SERIES_COLOURS[len(self._colours) % len(SERIES_COLOURS)]
        return c

    def _on_timer(self) -> None:
        # hidden (another tab in front, minimised): nothing to draw; the first tick after it is
        # shown again draws the newest snapshot
        if self._dirty and not self.paused and self._latest is not None and self.isVisible():
            self.redraw()

    def redraw(self) -> None:
        if self._latest is None:
            return
        with ExitStack() as stack:
            for p in self.plots:
                stack.enter_context(p.batch())
            self._redraw(self._latest)

    def _redraw(self, snap: MetricsSnapshot) -> None:
        self._dirty = False
        self.redraws += 1
        now = snap.time
        start = now - self.window_s
        # series that went hand their curves to series that came (a restart replaces every worker)
        keys: set[object] = {(h.node, h.pid) for h in snap.worker_history}
        lat_keys: set[object] = {(nh.node, q) for nh in snap.node_history for q in ("p50", "p95")}
        for p in (self.cpu, self.rps, self.rss):
            p.retire_missing(keys)
        self.latency.retire_missing(lat_keys)
        shown, others = top_workers(snap.worker_history, start, min(TOP_WORKERS, self.cpu.legend_rows() - 1))
        if others:
            keys = {(h.node, h.pid) for h in shown} | {OTHERS}
            for p in (self.cpu, self.rps, self.rss):
                p.retire_missing(keys)
        roles = {(w.node, w.pid): w.role for w in snap.workers}
        ymax = {id(p): 0.0 for p in self.plots}
        budget, more = NEW_CURVES_PER_REDRAW, False
        if others:
            t, cpu, rps, rss = mean_of(others, start)
            name = f"others (mean of {len(others)})"
            for plot, values in ((self.cpu, cpu), (self.rps, rps), (self.rss, rss / 2**20)):
                ymax[id(plot)] = max(ymax[id(plot)], plot.set_curve(OTHERS, name, OTHERS_COLOUR, t - now, values,
                                                                    dashed=True))
        for h in shown:
            key: WorkerKey = (h.node, h.pid)
            if key not in self.cpu.curves and not self.cpu.has_spare():  # 3 new curves (cpu, rps, rss)
                if budget < 3:
                    more = True
                    continue
                budget -= 3
            i = _tail(h.t, start)
            x = h.t[i:] - now
            colour = self.colour(key)
            name = f"{h.node} {h.pid}" + (" master" if roles.get(key) == "master" else "")
            for plot, values in ((self.cpu, h.cpu_percent[i:]), (self.rps, h.rps[i:]),
                                 (self.rss, h.rss_bytes[i:] / 2**20)):
                ymax[id(plot)] = max(ymax[id(plot)], plot.set_curve(key, name, colour, x, values))
        for nh in snap.node_history:
            if (nh.node, "p50") not in self.latency.curves and not self.latency.has_spare():
                if budget < 2:
                    more = True
                    continue
                budget -= 2
            i = _tail(nh.t, start)
            x = nh.t[i:] - now
            colour = self.colour(("node", nh.node))
            for q, arr, dashed in (("p50", nh.latency_p50, False), ("p95", nh.latency_p95, True)):
                m = self.latency.set_curve((nh.node, q), f"{nh.node} {q}", colour, x, arr[i:] * 1000.0, dashed)
                ymax[id(self.latency)] = max(ymax[id(self.latency)], m)
        for p in self.plots:
            p.drop_spares()
        if more:  # the other new series shortly (input, paint and other timers get their turn first)
            self._dirty = True
            QTimer.singleShot(CONTINUE_MS, self._on_timer)
        for p in self.plots:
            p.set_y_max(ymax[id(p)])
            p.set_run_starts([at - snap.wall_time for at in self.run_starts if at - snap.wall_time > -self.window_s])
        self.pages.setCurrentIndex(1)
        entry = snap.node(self.entry) if self.entry else None
        processes, nodes = len(snap.worker_history), len(snap.node_history)
        text = f"{processes} process{'es' if processes != 1 else ''} · {nodes} node{'s' if nodes != 1 else ''}"
        if entry is not None:
            text += f" · {self.entry}: {entry.rps:.0f} req/s, {entry.requests_total} requests"
        self.status.setText(text)

    def curve_count(self) -> int:
        return sum(len(p.curves) for p in self.plots)


def top_workers(history: Sequence[WorkerHistory], start: float,
                top: int = TOP_WORKERS) -> tuple[list[WorkerHistory], list[WorkerHistory]]:
    """(the ``top`` busiest by mean req/s since ``start``, the rest); all shown when they are no
    more than one over ``top`` (an "others" curve of one worker says nothing)."""
    if len(history) <= top + 1:
        return list(history), []

    def rate(h: WorkerHistory) -> float:
        tail = h.rps[_tail(h.t, start):]
        with np.errstate(all="ignore"):
            m = float(np.nanmean(tail)) if len(tail) and not np.all(np.isnan(tail)) else 0.0
        return m

    ranked = sorted(history, key=lambda h: (-rate(h), h.node, h.pid))
    chosen = set(id(h) for h in ranked[:top])
    return [h for h in history if id(h) in chosen], [h for h in history if id(h) not in chosen]


def mean_of(history: Sequence[WorkerHistory], start: float) -> tuple[np.ndarray, ...]:
    """Times since ``start`` and the mean CPU %, req/s and RSS of ``history`` at each (the engine
    samples every worker on the same ticks; a worker that came later is missing, not zero)."""
    t = np.unique(np.concatenate([h.t[_tail(h.t, start):] for h in history]))
    sums = np.zeros((3, len(t)))
    counts = np.zeros((3, len(t)))
    for h in history:
        i = _tail(h.t, start)
        at = np.searchsorted(t, h.t[i:])
        for row, values in enumerate((h.cpu_percent[i:], h.rps[i:], h.rss_bytes[i:])):
            ok = ~np.isnan(values)
            np.add.at(sums[row], at[ok], values[ok])
            np.add.at(counts[row], at[ok], 1)
    with np.errstate(all="ignore"):
        means = np.where(counts > 0, sums / np.maximum(counts, 1), np.nan)
    return t, means[0], means[1], means[2]

"""The live request-path graph: client -> proxies -> app servers -> app, left to right.

Built from a :class:`~stackpanel.core.profiles.schema.Profile` (topology), then fed supervisor
events (node state, workers) and metrics snapshots (edge req/s and errors) through the bridge.
Items are created when the profile is set and when workers come and go; metrics only change
text, pens and colours.
"""
from __future__ import annotations

import itertools
import math
from typing import TYPE_CHECKING

import numpy as np
from PySide6.QtCore import QPointF, QRectF, Qt, Signal
from PySide6.QtGui import (
    QAction,
    QBrush,
    QColor,
    QContextMenuEvent,
    QFont,
    QFontMetricsF,
    QMouseEvent,
    QPainter,
    QPainterPath,
    QPainterPathStroker,
    QPalette,
    QPen,
    QPolygonF,
    QResizeEvent,
    QTransform,
    QWheelEvent,
)
from PySide6.QtWidgets import (
    QApplication,
    QGraphicsItem,
    QGraphicsPathItem,
    QGraphicsScene,
    QGraphicsView,
    QMenu,
    QStyleOptionGraphicsItem,
    QWidget,
)

from stackpanel.core.logformat import APP_ROUTE, STATIC_ROUTE
from stackpanel.core.metrics.engine import MetricsSnapshot
from stackpanel.core.profiles.schema import APP_SERVER_KINDS, Profile
from stackpanel.core.supervise.events import (
    NodeState,
    NodeStateChanged,
    StackSnapshot,
    WorkersChanged,
)
from stackpanel.qt.theme import ERROR_COLOUR, hue_colour, state_colour

if TYPE_CHECKING:
    from stackpanel.qt.controller import LoadedProfile, StackController

NODE_W, NODE_H = 190.0, 92.0
LEAF_W, LEAF_H = 134.0, 58.0
CHIP_W, CHIP_H, CHIP_GAP, CHIPS_PER_ROW = 62.0, 34.0, 4.0, 3
MIN_COL_GAP, ROW_GAP = 100.0, 52.0
#: text sizes in scene pixels; the view never scales the smallest of them below MIN_TEXT_PX
TITLE_PX, BODY_PX, CHIP_PX, LABEL_PX = 14, 12, 11, 12
MIN_TEXT_PX = 9.0
MIN_SCALE = MIN_TEXT_PX / min(TITLE_PX, BODY_PX, CHIP_PX, LABEL_PX)
#: fitting never blows the graph up beyond this (big boxes look clumsy); the wheel zooms to MAX_ZOOM
MAX_FIT_SCALE, MAX_ZOOM = 1.25, 3.0
#: an edge label's plate keeps this much from every line, arrowhead, box and other label
LABEL_CLEARANCE = 4.0


def text_font(px: int, bold: bool = False) -> QFont:
    """The application's font at ``px`` scene pixels (not points: the scale decides what is seen)."""
    f = QFont(QApplication.font())
    f.setPixelSize(px)
    f.setBold(bold)
    return f


def format_rate(rps: float) -> str:
    if rps >= 1000:
        return f"{rps / 1000:.1f}k req/s"
    if rps >= 10 or rps == 0:
        return f"{rps:.0f} req/s"
    return f"{rps:.1f} req/s"


def format_ms(seconds: float | None) -> str:
    if seconds is None or math.isnan(seconds):
        return "–"
    ms = seconds * 1000
    return f"{ms:.0f} ms" if ms >= 100 else f"{ms:.1f} ms"


def format_count(n: int) -> str:
    return f"{n / 1e6:.1f}M" if n >= 1_000_000 else f"{n / 1000:.1f}k" if n >= 10_000 else str(n)


def edge_width(rps: float) -> float:
    """Pen width for an edge carrying ``rps``: 1.5 px idle, ~+2.5 px per decade, at most 14 px."""
    return min(14.0, 1.5 + 2.5 * math.log10(1.0 + max(0.0, rps)))


class _Box(QGraphicsItem):
    """A rounded box with a coloured state stripe and up to three lines of text."""

    def __init__(self, key: str, w: float, h: float) -> None:
        super().__init__()
        self.key = key
        self.w, self.h = w, h
        self.title = key
        self.lines: list[str] = []
        self.colour = state_colour(NodeState.STOPPED)
        self.dashed = False
        self.selected_mark = False
        self.setAcceptHoverEvents(True)
        self.setCursor(Qt.CursorShape.PointingHandCursor)

    def boundingRect(self) -> QRectF:
        return QRectF(-2, -2, self.w + 4, self.h + 4)

    def text_px(self) -> tuple[int, ...]:
        """The scene pixel sizes of the text this item paints."""
        return (TITLE_PX, BODY_PX) if self.lines else (TITLE_PX,)

    def set_content(self, title: str, lines: list[str], colour: QColor | None = None) -> None:
        if title != self.title or lines != self.lines or (colour is not None and colour != self.colour):
            self.title, self.lines = title, lines
            if colour is not None:
                self.colour = colour
            self.update()

    def paint(self, painter: QPainter, option: QStyleOptionGraphicsItem, widget: QWidget | None = None) -> None:
        pal = widget.palette() if widget is not None else QPalette()
        rect = QRectF(0, 0, self.w, self.h)
        painter.setRenderHint(QPainter.RenderHint.Antialiasing)
        fill = QColor(pal.color(QPalette.ColorRole.Base))
        tint = QColor(self.colour)
        tint.setAlpha(38)
        border = QPen(self.colour, 3.0 if self.selected_mark else 1.6)
        if self.dashed:
            border.setStyle(Qt.PenStyle.DashLine)
        painter.setPen(border)
        painter.setBrush(fill)
        painter.drawRoundedRect(rect, 8, 8)
        painter.setBrush(tint)
        painter.drawRoundedRect(rect, 8, 8)
        # state stripe
        painter.setPen(Qt.PenStyle.NoPen)
        painter.setBrush(self.colour)
        stripe = QPainterPath()
        stripe.addRoundedRect(QRectF(0, 0, 9, self.h), 4, 4)
        painter.drawPath(stripe)
        text_colour = pal.color(QPalette.ColorRole.Text)
        f = text_font(TITLE_PX, bold=True)
        painter.setFont(f)
        painter.setPen(text_colour)
        fm = QFontMetricsF(f)
        y = 6 + fm.ascent()
        painter.drawText(QPointF(16, y), fm.elidedText(self.title, Qt.TextElideMode.ElideRight, self.w - 22))
        f = text_font(BODY_PX)
        painter.setFont(f)
        fm = QFontMetricsF(f)
        muted = QColor(text_colour)
        muted.setAlpha(200)
        painter.setPen(muted)
        y += 4
        for line in self.lines:
            y += fm.height()
            if y > self.h - 2:
                break
            painter.drawText(QPointF(16, y), fm.elidedText(line, Qt.TextElideMode.ElideRight, self.w - 22))


class NodeItem(_Box):
    """A server (proxy or app server); ``key`` is the node name."""

    def __init__(self, name: str, kind: str, address: str) -> None:
        super().__init__(name, NODE_W, NODE_H)
        self.kind = kind
        self.address = address
        self.state: str = NodeState.STOPPED
        self.pid: int | None = None
        self.metric_line = ""
        self.refresh()

    def refresh(self) -> None:
        head = f"{self.kind} · {self.address}"
        state = f"{self.state}" + (f" · pid {self.pid}" if self.pid else "")
        lines = [head, state] + (self.metric_line.split("\n") if self.metric_line else [])
        self.set_content(self.key, lines, state_colour(self.state))
        self.setToolTip("\n".join([self.key, *lines, "", "click for details"]))


class LeafItem(_Box):
    """The client, the application, or a static directory (not a process)."""

    def __init__(self, key: str, title: str, lines: list[str]) -> None:
        super().__init__(key, LEAF_W, LEAF_H)
        self.dashed = True
        self.set_content(title, lines, hue_colour("grey"))
        self.setToolTip("\n".join([title, *lines]))


class WorkerChip(QGraphicsItem):
    """One worker process under its master: pid and req/s."""

    def __init__(self, node: str, pid: int) -> None:
        super().__init__()
        self.node, self.pid = node, pid
        self.colour = state_colour(NodeState.READY)
        self.rate = ""
        self.setToolTip(f"{node} worker pid {pid}")

    def boundingRect(self) -> QRectF:
        return QRectF(0, 0, CHIP_W, CHIP_H)

    def text_px(self) -> tuple[int, ...]:
        return (CHIP_PX,)

    def set_rate(self, text: str, tooltip: str) -> None:
        if text != self.rate:
            self.rate = text
            self.update()
        self.setToolTip(tooltip)

    def paint(self, painter: QPainter, option: QStyleOptionGraphicsItem, widget: QWidget | None = None) -> None:
        pal = widget.palette() if widget is not None else QPalette()
        painter.setRenderHint(QPainter.RenderHint.Antialiasing)
        fill = QColor(self.colour)
        fill.setAlpha(60)
        painter.setPen(QPen(self.colour, 1.2))
        painter.setBrush(fill)
        painter.drawRoundedRect(QRectF(0.5, 0.5, CHIP_W - 1, CHIP_H - 1), 5, 5)
        painter.setFont(text_font(CHIP_PX))
        painter.setPen(pal.color(QPalette.ColorRole.Text))
        painter.drawText(QRectF(0, 1, CHIP_W, CHIP_H / 2), Qt.AlignmentFlag.AlignCenter, str(self.pid))
        painter.drawText(QRectF(0, CHIP_H / 2 - 1, CHIP_W, CHIP_H / 2), Qt.AlignmentFlag.AlignCenter, self.rate)


class EdgeLabel(QGraphicsItem):
    """An edge's route(s) and traffic on a plate of the background colour, placed beside the edge
    by :meth:`GraphView.place_labels` (never on it)."""

    PAD_X, PAD_Y = 6.0, 3.0

    def __init__(self) -> None:
        super().__init__()
        self.lines: list[str] = []
        self.fill = QColor("white")
        self.border = QColor("#8c959f")
        self.ink = QColor("black")
        self._size = (0.0, 0.0)

    def text(self) -> str:
        return "\n".join(self.lines)

    def text_px(self) -> tuple[int, ...]:
        return (LABEL_PX,)

    def set_text(self, text: str) -> bool:
        """New text; True if the plate changed size (it must be placed again)."""
        lines = text.split("\n")
        if lines == self.lines:
            return False
        self.lines = lines
        fm = QFontMetricsF(text_font(LABEL_PX))
        # a stable width: "9 req/s" -> "10.2k req/s" does not make the plate jump
        w = max([fm.horizontalAdvance(line) for line in lines] + [fm.horizontalAdvance("00.0k req/s")])
        size = (math.ceil(w + 2 * self.PAD_X), math.ceil(fm.height() * len(lines) + 2 * self.PAD_Y))
        changed = size != self._size
        if changed:
            self.prepareGeometryChange()
            self._size = size
        self.update()
        return changed

    def boundingRect(self) -> QRectF:
        return QRectF(0, 0, *self._size)

    def paint(self, painter: QPainter, option: QStyleOptionGraphicsItem, widget: QWidget | None = None) -> None:
        painter.setRenderHint(QPainter.RenderHint.Antialiasing)
        painter.setPen(QPen(self.border, 1.0))
        painter.setBrush(self.fill)
        painter.drawRoundedRect(self.boundingRect().adjusted(0.5, 0.5, -0.5, -0.5), 5, 5)
        f = text_font(LABEL_PX)
        painter.setFont(f)
        painter.setPen(self.ink)
        fm = QFontMetricsF(f)
        w = self._size[0]
        for i, line in enumerate(self.lines):
            r = QRectF(0, self.PAD_Y + i * fm.height(), w, fm.height())
            painter.drawText(r, Qt.AlignmentFlag.AlignCenter, line)


class EdgeItem(QGraphicsPathItem):
    """source -> target with an arrow head and a label: route(s), req/s, 5xx rate.

    ``route_tag`` is the tag the source writes to its access log for requests that leave by this
    edge (:mod:`stackpanel.core.logformat`): the target node's name, ``STATIC_ROUTE`` or
    ``APP_ROUTE``; None for the client's edge (its traffic is the entry node's)."""

    def __init__(self, source: str, target: str, routes: list[str], route_tag: str | None = None) -> None:
        super().__init__()
        self.source, self.target, self.routes = source, target, routes
        self.route_tag = route_tag
        self.rps = 0.0
        self.error_rps = 0.0
        self.limited_rps = 0.0
        self.label = EdgeLabel()
        self.arrow = QGraphicsPathItem()
        self.setZValue(-1)
        self.label.setZValue(1)
        self._a = QPointF()
        self._b = QPointF()
        self._controls = (QPointF(), QPointF(), QPointF(), QPointF())  # of the cubic, start to end
        self._base_colour = QColor("#6e7781")
        #: the plate changed size: the view places the labels again
        self.label_resized = False
        #: the line's width when the label was placed
        self.placed_width = edge_width(0.0)
        self.set_traffic(0.0, 0.0)

    def add_to(self, scene: QGraphicsScene) -> None:
        scene.addItem(self)
        scene.addItem(self.arrow)
        scene.addItem(self.label)

    def set_ends(self, a: QPointF, b: QPointF) -> None:
        self._a, self._b = a, b
        self._rebuild()

    def set_palette(self, pal: QPalette) -> None:
        self._base_colour = pal.color(QPalette.ColorRole.Text)
        self._base_colour.setAlpha(150)
        self.label.ink = pal.color(QPalette.ColorRole.Text)
        self.label.fill = pal.color(QPalette.ColorRole.Base)
        self.label.border = pal.color(QPalette.ColorRole.PlaceholderText)
        self.label.update()
        self.set_traffic(self.rps, self.error_rps, self.limited_rps)

    @property
    def label_text(self) -> str:
        return self.label.text()

    def set_traffic(self, rps: float, error_rps: float, limited_rps: float = 0.0, share: float | None = None) -> None:
        """`share`: of a balanced route, this backend's part of the route's requests."""
        self.rps, self.error_rps, self.limited_rps = rps, error_rps, limited_rps
        err = error_rps / rps if rps > 0 else 0.0
        colour = QColor(ERROR_COLOUR) if err >= 0.01 else (
            QColor("#1f6feb") if rps > 0 else self._base_colour)
        width = edge_width(rps)
        if abs(width - self.placed_width) > LABEL_CLEARANCE / 2:
            self.label_resized = True  # a line this much wider eats the label's clearance: room again
        pen = QPen(colour, width)
        pen.setCapStyle(Qt.PenCapStyle.RoundCap)
        self.setPen(pen)
        self.arrow.setPen(QPen(colour, 1))
        self.arrow.setBrush(colour)
        # short lines, not one long one: the label sits in the gap between two columns
        route = ", ".join(self.routes)
        lines = [route] if self.routes else []
        lines.append(format_rate(rps))
        if rps > 0:
            errors = f"{err * 100:.1f}% 5xx"
            if limited_rps > 0:  # a rate limit at work: its own kind, not an error of the app
                errors += f" · {limited_rps / rps * 100:.1f}% 429"
            lines.append(errors)
        if share is not None:
            lines.append(f"{share * 100:.0f}% of route")
            self.setToolTip(f"{self.target} served {share * 100:.1f}% of the requests of {route or 'its route'}, "
                            "balanced over its backends")
        if self.label.set_text("\n".join(lines)):
            self.label_resized = True
        self._rebuild_arrow()

    def _rebuild(self) -> None:
        a, b = self._a, self._b
        path = QPainterPath(a)
        dx = (b.x() - a.x()) * 0.5
        self._controls = (a, QPointF(a.x() + dx, a.y()), QPointF(b.x() - dx, b.y()), b - QPointF(9, 0))
        path.cubicTo(*self._controls[1:])
        self.setPath(path)
        self._rebuild_arrow()
        self.label_resized = True

    def _rebuild_arrow(self) -> None:
        b = self._b
        s = 5.0 + self.pen().widthF() * 0.6
        self.arrow.setPath(_polygon_path([b, b + QPointF(-2 * s, -s), b + QPointF(-2 * s, s)]))

    def samples(self) -> np.ndarray:
        """Points at most SAMPLE_PX apart along the line (its control polygon bounds the curve) and
        around the arrowhead, in scene coordinates: what labels keep clear of."""
        p0, p1, p2, p3 = (np.array([p.x(), p.y()]) for p in self._controls)
        bound = sum(float(np.hypot(*(q - p))) for p, q in ((p0, p1), (p1, p2), (p2, p3)))
        t = np.linspace(0.0, 1.0, max(2, math.ceil(bound / SAMPLE_PX) + 1))[:, None]
        line = (1 - t) ** 3 * p0 + 3 * (1 - t) ** 2 * t * p1 + 3 * (1 - t) * t ** 2 * p2 + t ** 3 * p3
        arrow = self.arrow.path()
        corners = [QPointF(arrow.elementAt(i).x, arrow.elementAt(i).y) for i in range(arrow.elementCount())]
        centre = (corners[0] + corners[1] + corners[2]) / 3
        return np.concatenate([line, _samples(corners), _samples([centre, self._controls[-1]])])

    def outline(self, margin: float = 0.0) -> QPainterPath:
        """The area the line and its arrowhead cover, grown by ``margin`` (labels keep out of it)."""
        stroker = QPainterPathStroker()
        stroker.setWidth(self.pen().widthF() + 2 * margin)
        stroker.setCapStyle(Qt.PenCapStyle.RoundCap)
        area = stroker.createStroke(self.path())
        arrow = self.arrow.path()
        return area.united(arrow.united(stroker.createStroke(arrow)) if margin else arrow)


#: where along an edge its label may go (fractions of the path), nearest the middle first
_LABEL_AT = (0.5, 0.42, 0.58, 0.34, 0.66, 0.74, 0.26, 0.82, 0.18, 0.9)
#: ... for an edge of a fan (a box with three or more ways out): nearer its target, where the lines
#: of the fan are apart and the label is read with the box it points at
_FAN_LABEL_AT = (0.7, 0.62, 0.78, 0.54, 0.86, 0.46, 0.38, 0.3)
#: a fan's gap grows by this much per way out beyond two
FAN_GAP = 40.0
#: where the plate is across that point: centred, ending at it, starting at it
_LABEL_ALIGN = (0.5, 1.0, 0.0)


#: spacing of the points that stand for a line when labels are placed (<= 2 * LABEL_CLEARANCE, so
#: a plate clear of every point by half the line's width plus the clearance is clear of the line)
SAMPLE_PX = 4.0


def _samples(points: list[QPointF], spacing: float = SAMPLE_PX) -> np.ndarray:
    """Points every ``spacing`` px (or closer) along the polyline through ``points``: (n, 2)."""
    out = []
    for p, q in itertools.pairwise(points):
        n = max(1, math.ceil(math.hypot(q.x() - p.x(), q.y() - p.y()) / spacing))
        t = np.linspace(0.0, 1.0, n, endpoint=False)[:, None]
        out.append(np.array([p.x(), p.y()]) * (1 - t) + np.array([q.x(), q.y()]) * t)
    out.append(np.array([[points[-1].x(), points[-1].y()]]))
    return np.concatenate(out)


class _Obstacles:
    """What labels keep clear of, as arrays: points along every line and arrowhead, each with the
    distance to keep from it (half the line's width plus the clearance), and rectangles (boxes,
    placed labels) already grown by the clearance. One vectorised test per label's candidates."""

    def __init__(self) -> None:
        self.points = np.empty((0, 2))
        self.radius = np.empty(0)
        self.rects = np.empty((0, 4))  # left, top, right, bottom

    def add_points(self, points: np.ndarray, radius: float) -> None:
        self.points = np.concatenate([self.points, points])
        self.radius = np.concatenate([self.radius, np.full(len(points), radius)])

    def add_rect(self, r: QRectF) -> None:
        c = LABEL_CLEARANCE
        self.rects = np.concatenate([self.rects, [[r.left() - c, r.top() - c, r.right() + c, r.bottom() + c]]])

    def hits(self, left: np.ndarray, top: np.ndarray, w: float, h: float) -> np.ndarray:
        """For each candidate plate (its top-left corners), how many obstacles it touches."""
        # only the points near the candidates matter
        reach = float(self.radius.max()) if len(self.radius) else 0.0
        x0, y0 = float(left.min()) - reach, float(top.min()) - reach
        x1, y1 = float(left.max()) + w + reach, float(top.max()) + h + reach
        near = ((self.points[:, 0] > x0) & (self.points[:, 0] < x1) & (self.points[:, 1] > y0)
                & (self.points[:, 1] < y1))
        cx, cy = left[:, None], top[:, None]
        px, py, r = self.points[near, 0], self.points[near, 1], self.radius[near]
        on_points = ((px > cx - r) & (px < cx + w + r) & (py > cy - r) & (py < cy + h + r)).sum(axis=1)
        rl, rt, rr, rb = (self.rects[:, i] for i in range(4))
        on_rects = ((rl < cx + w) & (rr > cx) & (rt < cy + h) & (rb > cy)).sum(axis=1)
        return np.asarray(on_points + on_rects)


def _label_spot(edge: EdgeItem, size: QRectF, blocked: _Obstacles, fan: bool = False) -> tuple[QPointF, int]:
    """The top-left for ``edge``'s plate: beside the edge, clear of everything in ``blocked`` (its own
    line included), as near the edge's middle as there is room; the least crowded spot otherwise
    (and how many obstacles it touches there). Candidates, in order of preference: plate centred on
    the point, ending at it, starting at it; points from the middle out; above, then below; moved
    away from the line in 6 px steps (a sloped line)."""
    path = edge.path()
    w, h = size.width(), size.height()
    gap = edge.pen().widthF() / 2 + LABEL_CLEARANCE
    at = [path.pointAtPercent(t) for t in (_FAN_LABEL_AT if fan else _LABEL_AT)]
    px = np.array([p.x() for p in at])[None, :, None, None]
    py = np.array([p.y() for p in at])[None, :, None, None]
    align = np.array(_LABEL_ALIGN)[:, None, None, None]
    above = np.array([True, False])[None, None, :, None]
    step = np.arange(10.0)[None, None, None, :] * 6
    shape = (len(_LABEL_ALIGN), len(at), 2, 10)
    left = np.broadcast_to(px - w * align, shape).reshape(-1, 20)  # a row: one point, both sides, all steps
    top = np.broadcast_to(np.where(above, py - gap - h - step, py + gap + step), shape).reshape(-1, 20)
    best: tuple[int, float, float] | None = None
    for row in range(len(left)):  # the first row with a clear spot ends the search (most often the first)
        hits = blocked.hits(left[row], top[row], w, h)
        i = int(np.argmin(hits))
        if best is None or hits[i] < best[0]:
            best = (int(hits[i]), float(left[row, i]), float(top[row, i]))
        if best[0] == 0:
            break
    assert best is not None
    return QPointF(best[1], best[2]), best[0]


def _polygon_path(points: list[QPointF]) -> QPainterPath:
    p = QPainterPath()
    p.addPolygon(QPolygonF(points))
    p.closeSubpath()
    return p


class GraphView(QGraphicsView):
    """The request path of one profile, updated live. ``nodeClicked(name)`` on a click."""

    nodeClicked = Signal(str)

    def __init__(self, parent: QWidget | None = None, controller: StackController | None = None) -> None:
        super().__init__(parent)
        self.setScene(QGraphicsScene(self))
        self.setRenderHint(QPainter.RenderHint.Antialiasing)
        self.setViewportUpdateMode(QGraphicsView.ViewportUpdateMode.BoundingRectViewportUpdate)
        self.setMinimumHeight(220)
        # a graph larger than the view at the smallest legible scale scrolls: drag to pan, wheel to zoom
        self.setDragMode(QGraphicsView.DragMode.ScrollHandDrag)
        self.setTransformationAnchor(QGraphicsView.ViewportAnchor.AnchorUnderMouse)
        #: the scale is the fitted one (resizes and new workers fit again); False once the user zooms
        self.auto_fit = True
        #: what the entry node's context menu offers (the window's Open in browser and Copy URL)
        self.entry_actions: list[QAction] = []
        self.profile: Profile | None = None
        self.nodes: dict[str, NodeItem] = {}
        self.leaves: dict[str, LeafItem] = {}
        self.edges: list[EdgeItem] = []
        self.workers: dict[str, dict[int, WorkerChip]] = {}
        self._depth: dict[str, int] = {}
        self._widen: dict[int, float] = {}
        self._selected: str | None = None
        if controller is not None:
            self.bind(controller)

    def bind(self, controller: StackController) -> None:
        """Follow the controller's profile, selection and snapshots and the bridge's live events."""

        def loaded(lp: LoadedProfile) -> None:
            self.set_profile(lp.profile)

        controller.profileLoaded.connect(loaded)
        controller.snapshotChanged.connect(self.apply_stack_snapshot)
        controller.nodeSelected.connect(self.select)
        controller.bridge.nodeStateChanged.connect(self.apply_event)
        controller.bridge.workersChanged.connect(self.apply_event)
        controller.bridge.metrics.connect(self.apply_metrics)
        self.nodeClicked.connect(controller.select_node)

    # -- topology -----------------------------------------------------------------------------------

    def set_profile(self, profile: Profile | None) -> None:
        scene = self.scene()
        scene.clear()
        self.nodes.clear()
        self.leaves.clear()
        self.edges.clear()
        self.workers.clear()
        self._depth.clear()
        self._widen = {}  # extra room per column gap for its labels (learnt by _layout)
        self.profile = profile
        self.auto_fit = True
        if profile is None:
            return
        entry = profile.entry
        self.leaves["client"] = LeafItem("client", "client", ["browser, curl, load"])
        for name, node in profile.nodes.items():
            address = "unix socket" if profile.listens_on_unix(name) else node.address
            self.nodes[name] = NodeItem(name, node.kind, address)
            self.workers[name] = {}
        # group routes by (source, target): two paths to the same node share one edge
        grouped: dict[tuple[str, str], list[str]] = {("client", entry): []}
        tags: dict[tuple[str, str], str | None] = {("client", entry): None}
        for e in profile.edges():  # an edge's target is the route tag its source logs
            target = e.target if e.target != STATIC_ROUTE else f"static:{e.source}"
            grouped.setdefault((e.source, target), []).append(e.path)
            tags[(e.source, target)] = e.target
            if e.target == STATIC_ROUTE:
                route = next(r for r in profile.nodes[e.source].routes if r.path == e.path)  # type: ignore[union-attr]
                self.leaves[target] = LeafItem(target, "static files", [_short_dir(route.static or "")])
        for name, node in profile.nodes.items():
            if node.kind in APP_SERVER_KINDS:
                key = f"app:{name}"
                module = node.app.module  # type: ignore[union-attr]
                iface = node.app.interface  # type: ignore[union-attr]
                self.leaves[key] = LeafItem(key, "application", [module, iface.upper()])
                grouped[(name, key)] = []
                tags[(name, key)] = APP_ROUTE
        for item in [*self.nodes.values(), *self.leaves.values()]:
            scene.addItem(item)
        pal = self.palette()
        for (src, dst), routes in grouped.items():
            edge = EdgeItem(src, dst, routes, tags[(src, dst)])
            edge.set_palette(pal)
            edge.add_to(scene)
            self.edges.append(edge)
        self._compute_depths()
        self._layout()

    def _compute_depths(self) -> None:
        depth = {"client": 0}
        changed = True
        while changed:  # longest path from the client (topology is acyclic, validated)
            changed = False
            for e in self.edges:
                if e.source in depth and depth.get(e.target, -1) < depth[e.source] + 1:
                    depth[e.target] = depth[e.source] + 1
                    changed = True
        for key in [*self.nodes, *self.leaves]:
            depth.setdefault(key, 1)
        self._depth = depth

    def _item(self, key: str) -> _Box:
        return self.nodes[key] if key in self.nodes else self.leaves[key]

    def _reserved_height(self, key: str) -> float:
        item = self._item(key)
        if key not in self.nodes:
            return item.h
        n = len(self.workers.get(key, {}))
        rows = math.ceil(n / CHIPS_PER_ROW) if n else 0
        return item.h + rows * (CHIP_H + CHIP_GAP) + (CHIP_GAP if rows else 0)

    def _layout(self) -> None:
        widen = self._widen  # kept between layouts of one profile: the next one starts wide enough
        for _attempt in range(6):  # a gap without room for its labels is made wider, and again
            crowded = self._place(widen)
            if not crowded:
                break
            for d in crowded:
                widen[d] = widen.get(d, 0.0) + 50.0
        if self.auto_fit:
            self.fit()

    def _place(self, widen: dict[int, float]) -> set[int]:
        """Boxes in columns by depth, edges between them, labels beside the edges; the gap after
        column d is ``widen[d]`` wider than it needs for its labels."""
        cols: dict[int, list[str]] = {}
        for key in [*self.leaves, *self.nodes]:
            cols.setdefault(self._depth[key], []).append(key)
        # keep the profile's order within a column, leaves after nodes
        order = {k: i for i, k in enumerate([*self.nodes, *self.leaves])}
        x = 0.0
        for d in sorted(cols):
            keys = sorted(cols[d], key=lambda k: order[k])
            width = max(self._item(k).w for k in keys)
            total = sum(self._reserved_height(k) for k in keys) + ROW_GAP * (len(keys) - 1)
            y = -total / 2
            for k in keys:
                item = self._item(k)
                item.setPos(x + (width - item.w) / 2, y)
                self._layout_chips(k)
                y += self._reserved_height(k) + ROW_GAP
            # the gap to the next column holds the labels of the edges that leave this one
            labels = [e.label.boundingRect().width() for e in self.edges if self._depth.get(e.source) == d]
            fan = max([self._fan_out(k) for k in keys] + [0])
            x += width + max([MIN_COL_GAP] + [w + 2 * 14 for w in labels]) + FAN_GAP * max(0, fan - 2)
            x += widen.get(d, 0.0)
        # the edges that leave one box start at points spread down its right side, in the order of
        # their targets: a fan of lines apart from the start, with room for a label between two
        leaving: dict[str, list[EdgeItem]] = {}
        for e in self.edges:
            leaving.setdefault(e.source, []).append(e)
        for source, edges in leaving.items():
            a = self._item(source)
            edges.sort(key=lambda e: self._item(e.target).pos().y())
            for i, e in enumerate(edges):
                b = self._item(e.target)
                y = a.h / 2 if len(edges) == 1 else a.h * (0.2 + 0.6 * i / (len(edges) - 1))
                e.set_ends(a.pos() + QPointF(a.w, y), b.pos() + QPointF(0, b.h / 2))
        return self.place_labels()

    def place_labels(self) -> set[int]:
        """Every edge label beside its edge, clear of lines, arrowheads, boxes and other labels.
        Returns the columns whose gap had no clear spot for a label (the layout widens them)."""
        crowded: set[int] = set()
        for e in self.edges:
            e.label_resized = False
            e.placed_width = e.pen().widthF()
        blocked = _Obstacles()
        for e in self.edges:
            if not e.path().isEmpty():
                blocked.add_points(e.samples(), e.pen().widthF() / 2 + LABEL_CLEARANCE)
        boxes: list[QGraphicsItem] = [*self.nodes.values(), *self.leaves.values()]
        boxes += [chip for chips in self.workers.values() for chip in chips.values()]
        for item in boxes:
            blocked.add_rect(item.sceneBoundingRect())
        for e in self.edges:
            if e.path().isEmpty():
                continue
            pos, hits = _label_spot(e, e.label.boundingRect(), blocked, fan=self._fan_out(e.source) > 2)
            e.label.setPos(pos)
            if hits:
                crowded.add(self._depth.get(e.source, 0))
            blocked.add_rect(e.label.sceneBoundingRect())
        rect = self.scene().itemsBoundingRect().adjusted(-6, -6, 6, 6)
        self.scene().setSceneRect(rect)
        return crowded

    def _fan_out(self, key: str) -> int:
        return sum(1 for e in self.edges if e.source == key)

    def _layout_chips(self, key: str) -> None:
        chips = self.workers.get(key)
        if not chips:
            return
        item = self.nodes[key]
        for i, pid in enumerate(sorted(chips)):
            row, col = divmod(i, CHIPS_PER_ROW)
            chips[pid].setPos(item.pos() + QPointF(4 + col * (CHIP_W + CHIP_GAP),
                                                  item.h + CHIP_GAP + row * (CHIP_H + CHIP_GAP)))

    def text_items(self) -> list[QGraphicsItem]:
        """Every item that paints text (each has ``text_px()``)."""
        return [*self.nodes.values(), *self.leaves.values(), *(e.label for e in self.edges),
                *(chip for chips in self.workers.values() for chip in chips.values())]

    def smallest_text_px(self) -> float:
        """The smallest text of the graph as it is on screen now, in device pixels."""
        sizes = [px for item in self.text_items() for px in item.text_px()]  # type: ignore[attr-defined]
        return min(sizes, default=0.0) * self.transform().m11()

    def fit(self) -> None:
        """The whole graph in view, scaled down no further than legible text allows (then it scrolls)
        and up no more than MAX_FIT_SCALE."""
        self.auto_fit = True
        rect = self.scene().sceneRect()
        if rect.isEmpty():
            return
        vp = self.viewport().size()
        scale = min((vp.width() - 4) / rect.width(), (vp.height() - 4) / rect.height())
        self._set_scale(max(MIN_SCALE, min(MAX_FIT_SCALE, scale)))
        self.centerOn(rect.center())
        if scale < MIN_SCALE:  # it scrolls: start where the requests start, at the client
            self.horizontalScrollBar().setValue(self.horizontalScrollBar().minimum())

    def _set_scale(self, scale: float) -> None:
        self.setTransform(QTransform.fromScale(scale, scale))

    def zoom(self, factor: float) -> None:
        """Zoom by ``factor`` about the mouse (the wheel), between legible and MAX_ZOOM."""
        scale = max(MIN_SCALE, min(MAX_ZOOM, self.transform().m11() * factor))
        self.auto_fit = False
        self.scale(scale / self.transform().m11(), scale / self.transform().m11())

    def wheelEvent(self, event: QWheelEvent) -> None:
        steps = event.angleDelta().y() / 120
        if steps:
            self.zoom(1.15 ** steps)
        event.accept()

    def mouseDoubleClickEvent(self, event: QMouseEvent) -> None:
        self.fit()
        event.accept()

    def resizeEvent(self, event: QResizeEvent) -> None:
        super().resizeEvent(event)
        self.fit()

    # -- live updates (GUI thread, from the bridge) ---------------------------------------------------

    def apply_event(self, ev: object) -> None:
        if isinstance(ev, NodeStateChanged):
            self.set_node_state(ev.node, ev.state, ev.pid)
        elif isinstance(ev, WorkersChanged):
            self.set_workers(ev.node, ev.worker_pids)

    def apply_stack_snapshot(self, snap: StackSnapshot) -> None:
        for n in snap.nodes:
            self.set_node_state(n.name, n.state, n.pid)
            self.set_workers(n.name, n.worker_pids)

    def set_node_state(self, name: str, state: str, pid: int | None) -> None:
        item = self.nodes.get(name)
        if item is None:
            return
        item.state, item.pid = state, pid
        item.refresh()
        for chip in self.workers.get(name, {}).values():
            chip.colour = state_colour(state)
            chip.update()
        if state in (NodeState.STOPPED, NodeState.FAILED):
            self.set_workers(name, ())

    def set_workers(self, name: str, pids: tuple[int, ...] | list[int]) -> None:
        chips = self.workers.get(name)
        if chips is None:
            return
        want = set(pids)
        if want == set(chips):
            return
        for pid in [p for p in chips if p not in want]:
            self.scene().removeItem(chips.pop(pid))
        colour = state_colour(self.nodes[name].state)
        for pid in sorted(want - set(chips)):
            chip = WorkerChip(name, pid)
            chip.colour = colour
            self.scene().addItem(chip)
            chips[pid] = chip
        self._layout()

    def apply_metrics(self, snap: MetricsSnapshot) -> None:
        if self.profile is None:
            return
        for name, item in self.nodes.items():
            nm = snap.node(name)
            if nm is None:
                continue
            p95 = f" · p95 {format_ms(nm.latency_p95)}" if nm.latency_p95 is not None else ""
            ws = f" · {nm.websockets_open} ws" if nm.websockets_open else ""
            item.metric_line = f"{format_rate(nm.rps)}{p95}\n{format_count(nm.requests_total)} requests{ws}"
            item.refresh()
        for w in snap.workers:
            chip = self.workers.get(w.node, {}).get(w.pid)
            if chip is not None:
                cpu = "–" if w.cpu_percent is None else f"{w.cpu_percent:.0f}%"
                chip.set_rate(f"{w.rps:.0f}/s",
                              f"{w.node} {w.role} pid {w.pid}\n{w.rps:.1f} req/s · cpu {cpu} · "
                              f"{w.rss_bytes / 2**20:.0f} MB · {w.requests_total} requests")
        entry = self.profile.entry
        for e in self.edges:
            if e.route_tag is None:  # the client's edge carries what the entry node serves
                nm = snap.node(entry)
                if nm is not None:
                    e.set_traffic(nm.rps, nm.status_rates.get("5xx", 0.0))
                continue
            em = snap.edge(e.source, e.route_tag)
            if em is None and e.route_tag == APP_ROUTE:  # app servers may not tag a route: the node's own rate
                nm = snap.node(e.source)
                if nm is not None:
                    e.set_traffic(nm.rps, nm.status_rates.get("5xx", 0.0))
                continue
            if em is not None:
                e.set_traffic(em.rps, em.error_rps, em.limited_rps, em.share)
        self.refresh_labels()

    def refresh_labels(self) -> None:
        """After traffic changed the labels: a plate or line that changed size gets room again."""
        if any(e.label_resized for e in self.edges):
            self._layout()

    def edge(self, source: str, target: str) -> EdgeItem | None:
        return next((e for e in self.edges if e.source == source and e.target == target), None)

    # -- interaction --------------------------------------------------------------------------------

    def select(self, name: str | None) -> None:
        for key, item in self.nodes.items():
            mark = key == name
            if item.selected_mark != mark:
                item.selected_mark = mark
                item.update()
        self._selected = name

    def mousePressEvent(self, event: QMouseEvent) -> None:
        item = self.itemAt(event.position().toPoint())
        while item is not None and not isinstance(item, (NodeItem, WorkerChip)):
            item = item.parentItem()
        if isinstance(item, WorkerChip):
            self.select(item.node)
            self.nodeClicked.emit(item.node)
        elif isinstance(item, NodeItem):
            self.select(item.key)
            self.nodeClicked.emit(item.key)
        super().mousePressEvent(event)

    def node_menu(self, item: QGraphicsItem | None) -> QMenu | None:
        """The context menu of the box ``item`` belongs to: the entry node offers its URL actions."""
        while item is not None and not isinstance(item, NodeItem):
            item = item.parentItem()
        if not isinstance(item, NodeItem) or self.profile is None or item.key != self.profile.entry:
            return None
        if not self.entry_actions:
            return None
        menu = QMenu(self)
        for action in self.entry_actions:
            menu.addAction(action)
        return menu

    def contextMenuEvent(self, event: QContextMenuEvent) -> None:
        menu = self.node_menu(self.itemAt(event.pos()))
        if menu is not None:
            menu.exec(event.globalPos())
            event.accept()
        else:
            super().contextMenuEvent(event)

    def changeEvent(self, event: object) -> None:  # palette switches (light/dark)
        super().changeEvent(event)  # type: ignore[arg-type]
        pal = self.palette()
        self.setBackgroundBrush(QBrush(pal.color(QPalette.ColorRole.Base)))
        for e in self.edges:
            e.set_palette(pal)
        for name, node in self.nodes.items():  # the state colours' shade for this theme
            node.refresh()
            for chip in self.workers.get(name, {}).values():
                chip.colour = state_colour(node.state)
                chip.update()


def _short_dir(path: str) -> str:
    parts = path.rstrip("/").split("/")
    return "/".join(parts[-2:]) if len(parts) > 2 else path

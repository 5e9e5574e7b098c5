"""The live request-path graph: client -> proxies -> app servers -> app, left to right.

Built from a :class:`~stackpanel.core.profiles.schema.Profile` (topology), then fed supervisor
events (node state, workers) and metrics snapshots (edge req/s and errors) through the bridge.
Items are created when the profile is set and when workers come and go; metrics only change
text, pens and colours.
"""
from __future__ import annotations

import math
from typing import TYPE_CHECKING

from PySide6.QtCore import QPointF, QRectF, Qt, Signal
from PySide6.QtGui import (
    QBrush,
    QColor,
    QFont,
    QFontMetricsF,
    QMouseEvent,
    QPainter,
    QPainterPath,
    QPalette,
    QPen,
    QPolygonF,
    QResizeEvent,
)
from PySide6.QtWidgets import (
    QGraphicsItem,
    QGraphicsPathItem,
    QGraphicsScene,
    QGraphicsSimpleTextItem,
    QGraphicsView,
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
from stackpanel.qt.theme import ERROR_COLOUR, state_colour

if TYPE_CHECKING:
    from stackpanel.qt.controller import LoadedProfile, StackController

NODE_W, NODE_H = 220.0, 76.0
LEAF_W, LEAF_H = 150.0, 48.0
CHIP_W, CHIP_H, CHIP_GAP, CHIPS_PER_ROW = 46.0, 30.0, 4.0, 4
COL_GAP, ROW_GAP = 175.0, 40.0


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
        f = QFont(painter.font())
        f.setBold(True)
        f.setPointSizeF(max(8.0, f.pointSizeF() + 0.5))
        painter.setFont(f)
        painter.setPen(text_colour)
        fm = QFontMetricsF(f)
        y = 6 + fm.ascent()
        painter.drawText(QPointF(16, y), fm.elidedText(self.title, Qt.TextElideMode.ElideRight, self.w - 22))
        f.setBold(False)
        f.setPointSizeF(max(7.0, f.pointSizeF() - 1.5))
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
        lines = [head, state] + ([self.metric_line] if self.metric_line else [])
        self.set_content(self.key, lines, state_colour(self.state))
        self.setToolTip("\n".join([self.key, *lines, "", "click for details"]))


class LeafItem(_Box):
    """The client, the application, or a static directory (not a process)."""

    def __init__(self, key: str, title: str, lines: list[str]) -> None:
        super().__init__(key, LEAF_W, LEAF_H)
        self.dashed = True
        self.set_content(title, lines, QColor("#6e7781"))
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
        f = QFont(painter.font())
        f.setPointSizeF(max(6.5, f.pointSizeF() - 2.0))
        painter.setFont(f)
        painter.setPen(pal.color(QPalette.ColorRole.Text))
        painter.drawText(QRectF(0, 1, CHIP_W, CHIP_H / 2), Qt.AlignmentFlag.AlignCenter, str(self.pid))
        painter.drawText(QRectF(0, CHIP_H / 2 - 1, CHIP_W, CHIP_H / 2), Qt.AlignmentFlag.AlignCenter, self.rate)


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
        self.label = QGraphicsSimpleTextItem()
        self.arrow = QGraphicsPathItem()
        self.setZValue(-1)
        self.label.setZValue(1)
        self._a = QPointF()
        self._b = QPointF()
        self._base_colour = QColor("#6e7781")
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
        self.label.setBrush(pal.color(QPalette.ColorRole.Text))
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
        pen = QPen(colour, edge_width(rps))
        pen.setCapStyle(Qt.PenCapStyle.RoundCap)
        self.setPen(pen)
        self.arrow.setPen(QPen(colour, 1))
        self.arrow.setBrush(colour)
        route = ", ".join(self.routes)
        traffic = format_rate(rps) + (f" · {err * 100:.1f}% 5xx" if rps > 0 else "")
        if limited_rps > 0 and rps > 0:  # a rate limit at work: its own kind, not an error of the app
            traffic += f" · {limited_rps / rps * 100:.1f}% 429"
        if share is not None:
            traffic += f" · {share * 100:.0f}% of route"
            self.setToolTip(f"{self.target} served {share * 100:.1f}% of the requests of {route or 'its route'}, "
                            "balanced over its backends")
        self.label.setText(f"{route}\n{traffic}" if route else traffic)
        self._place_label()
        self._rebuild_arrow()

    def _rebuild(self) -> None:
        a, b = self._a, self._b
        path = QPainterPath(a)
        dx = (b.x() - a.x()) * 0.5
        path.cubicTo(QPointF(a.x() + dx, a.y()), QPointF(b.x() - dx, b.y()), b - QPointF(9, 0))
        self.setPath(path)
        self._place_label()
        self._rebuild_arrow()

    def _rebuild_arrow(self) -> None:
        b = self._b
        s = 5.0 + self.pen().widthF() * 0.6
        self.arrow.setPath(_polygon_path([b, b + QPointF(-2 * s, -s), b + QPointF(-2 * s, s)]))

    def _place_label(self) -> None:
        path = self.path()
        if path.isEmpty():
            return
        mid = path.pointAtPercent(0.5)
        r = self.label.boundingRect()
        self.label.setPos(mid.x() - r.width() / 2, mid.y() - r.height() - 4 - self.pen().widthF() / 2)


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
        self.profile: Profile | None = None
        self.nodes: dict[str, NodeItem] = {}
        self.leaves: dict[str, LeafItem] = {}
        self.edges: list[EdgeItem] = []
        self.workers: dict[str, dict[int, WorkerChip]] = {}
        self._depth: dict[str, int] = {}
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
        self.profile = profile
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
            x += width + COL_GAP
        for e in self.edges:
            a, b = self._item(e.source), self._item(e.target)
            e.set_ends(a.pos() + QPointF(a.w, a.h / 2), b.pos() + QPointF(0, b.h / 2))
        rect = self.scene().itemsBoundingRect().adjusted(-30, -30, 30, 30)
        self.scene().setSceneRect(rect)
        self.fit()

    def _layout_chips(self, key: str) -> None:
        chips = self.workers.get(key)
        if not chips:
            return
        item = self.nodes[key]
        for i, pid in enumerate(sorted(chips)):
            row, col = divmod(i, CHIPS_PER_ROW)
            chips[pid].setPos(item.pos() + QPointF(4 + col * (CHIP_W + CHIP_GAP),
                                                  item.h + CHIP_GAP + row * (CHIP_H + CHIP_GAP)))

    def fit(self) -> None:
        rect = self.scene().sceneRect()
        if rect.isEmpty():
            return
        self.fitInView(rect, Qt.AspectRatioMode.KeepAspectRatio)
        # never blow the graph up beyond 1.25x: big boxes look clumsy on a large window
        scale = self.transform().m11()
        if scale > 1.25:
            self.resetTransform()
            self.scale(1.25, 1.25)
            self.centerOn(rect.center())

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
            item.metric_line = f"{format_rate(nm.rps)}{p95} · {format_count(nm.requests_total)} req{ws}"
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

    def changeEvent(self, event: object) -> None:  # palette switches (light/dark)
        super().changeEvent(event)  # type: ignore[arg-type]
        pal = self.palette()
        self.setBackgroundBrush(QBrush(pal.color(QPalette.ColorRole.Base)))
        for e in self.edges:
            e.set_palette(pal)


def _short_dir(path: str) -> str:
    parts = path.rstrip("/").split("/")
    return "/".join(parts[-2:]) if len(parts) > 2 else path

"""Details of one node: what runs (command line, rendered config), its processes, its last log lines."""
from __future__ import annotations

from typing import TYPE_CHECKING

from PySide6.QtCore import Qt, Signal
from PySide6.QtGui import QFontDatabase
from PySide6.QtWidgets import (
    QComboBox,
    QFormLayout,
    QHBoxLayout,
    QLabel,
    QPlainTextEdit,
    QPushButton,
    QSplitter,
    QVBoxLayout,
    QWidget,
)

from stackpanel.core.metrics.engine import EdgeMetrics, MetricsSnapshot
from stackpanel.core.supervise.events import NodeSnapshot, NodeStateChanged, StackSnapshot, WorkersChanged

if TYPE_CHECKING:
    from stackpanel.qt.controller import StackController


def _mono(widget: QWidget) -> None:
    widget.setFont(QFontDatabase.systemFont(QFontDatabase.SystemFont.FixedFont))


class NodeDetails(QWidget):
    """``show_node`` (static facts), ``set_snapshot`` (live), ``set_last_lines``; given a controller,
    it follows the selected node itself."""

    refreshLogRequested = Signal(str)

    def __init__(self, parent: QWidget | None = None, controller: StackController | None = None) -> None:
        super().__init__(parent)
        self.node: str | None = None
        self._controller: StackController | None = None
        self._files: dict[str, str] = {}
        self.title = QLabel("Click a node in the graph")
        f = self.title.font()
        f.setBold(True)
        f.setPointSizeF(f.pointSizeF() + 1.5)
        self.title.setFont(f)
        self.kind = QLabel("–")
        self.state = QLabel("–")
        self.address = QLabel("–")
        self.pids = QLabel("–")
        self.pids.setWordWrap(True)
        self.restarts = QLabel("–")
        self.backends = QLabel("–")  # a balancing proxy's split: each backend's share of its route
        self.command = QPlainTextEdit()
        self.command.setReadOnly(True)
        self.command.setMaximumHeight(64)
        _mono(self.command)
        for lab in (self.kind, self.state, self.address, self.pids, self.restarts, self.backends):
            lab.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        form = QFormLayout()
        form.addRow("kind", self.kind)
        form.addRow("state", self.state)
        form.addRow("address", self.address)
        form.addRow("processes", self.pids)
        form.addRow("restarts", self.restarts)
        form.addRow("backends", self.backends)
        form.addRow("command", self.command)

        self.file_box = QComboBox()
        self.file_box.currentIndexChanged.connect(self._show_file)
        self.config = QPlainTextEdit()
        self.config.setReadOnly(True)
        self.config.setLineWrapMode(QPlainTextEdit.LineWrapMode.NoWrap)
        self.config.setPlaceholderText("Select a node in the table or the graph: its rendered configuration "
                                       "shows here (read-only)")
        _mono(self.config)
        self.last_lines = QPlainTextEdit()
        self.last_lines.setReadOnly(True)
        self.last_lines.setLineWrapMode(QPlainTextEdit.LineWrapMode.NoWrap)
        self.last_lines.setPlaceholderText("The node's last log lines show here once it has run; Start the stack "
                                           "or the node, then Refresh")
        _mono(self.last_lines)
        refresh = QPushButton("Refresh")
        refresh.clicked.connect(lambda: self.node and self.refreshLogRequested.emit(self.node))

        left = QWidget()
        ll = QVBoxLayout(left)
        ll.setContentsMargins(0, 0, 0, 0)
        ll.addWidget(self.title)
        ll.addLayout(form)
        cfg_bar = QHBoxLayout()
        cfg_bar.addWidget(QLabel("config"))
        cfg_bar.addWidget(self.file_box, 1)
        ll.addLayout(cfg_bar)
        ll.addWidget(self.config, 1)
        right = QWidget()
        rl = QVBoxLayout(right)
        rl.setContentsMargins(0, 0, 0, 0)
        bar = QHBoxLayout()
        bar.addWidget(QLabel("last log lines"))
        bar.addStretch(1)
        bar.addWidget(refresh)
        rl.addLayout(bar)
        rl.addWidget(self.last_lines, 1)
        split = QSplitter()
        split.addWidget(left)
        split.addWidget(right)
        split.setSizes([520, 480])
        lay = QVBoxLayout(self)
        lay.setContentsMargins(4, 4, 4, 4)
        lay.addWidget(split)
        if controller is not None:
            self.bind(controller)

    def bind(self, controller: StackController) -> None:
        """Show the selected node; live state from snapshots, asked for when its events arrive."""
        self._controller = controller
        controller.nodeSelected.connect(self._on_selected)
        controller.snapshotChanged.connect(self._on_snapshot)
        controller.lastLines.connect(self.set_last_lines)
        controller.bridge.nodeStateChanged.connect(self._on_node_event)
        controller.bridge.workersChanged.connect(self._on_node_event)
        controller.bridge.metrics.connect(self._on_metrics)
        self.refreshLogRequested.connect(controller.fetch_last_lines)

    def _on_selected(self, name: str) -> None:
        c = self._controller
        if c is None or c.profile is None or name not in c.profile.nodes:
            return
        node = c.profile.nodes[name]
        rendered = c.rendered_node(name)
        files = {str(p): text for p, text in rendered.files.items()} if rendered is not None else {}
        address = f"unix:{rendered.unix_socket}" if rendered is not None and rendered.unix_socket else node.address
        self.show_node(name, node.kind, address, rendered.command_line if rendered is not None else "", files)
        self.set_snapshot(c.node_snapshot(name))

    def _on_snapshot(self, snap: StackSnapshot) -> None:
        if self.node:
            self.set_snapshot(next((n for n in snap.nodes if n.name == self.node), None))

    def _on_metrics(self, snap: MetricsSnapshot) -> None:
        if self.node:
            self.set_backend_shares(snap.edges_of(self.node))

    def set_backend_shares(self, edges: tuple[EdgeMetrics, ...]) -> None:
        """One line per backend of a balanced route: its share of the route's requests and its rate."""
        lines = [f"{e.route}: {e.share * 100:.0f}% ({e.requests_total} requests, {e.rps:.0f} req/s)"
                 for e in edges if e.share is not None]
        self.backends.setText("\n".join(lines) or "–")

    def _on_node_event(self, ev: NodeStateChanged | WorkersChanged) -> None:
        if self._controller is not None and ev.node == self.node:
            self._controller.refresh_snapshot()

    def show_node(self, name: str, kind: str, address: str, command_line: str,
                  files: dict[str, str]) -> None:
        self.node = name
        self.title.setText(name)
        self.kind.setText(kind)
        self.address.setText(address)
        self.backends.setText("–")
        self.command.setPlainText(command_line or "(not rendered)")
        self._files = dict(files)
        self.file_box.blockSignals(True)
        self.file_box.clear()
        for path in self._files:
            self.file_box.addItem(path.rsplit("/", 1)[-1], path)
        self.file_box.blockSignals(False)
        if not self._files:
            self.config.setPlainText("(app servers are configured on the command line above)")
        else:
            self.file_box.setCurrentIndex(0)
            self._show_file(0)
        self.last_lines.clear()

    def _show_file(self, index: int) -> None:
        path = self.file_box.itemData(index)
        if path is not None:
            self.config.setPlainText(self._files.get(path, ""))

    def set_snapshot(self, snap: NodeSnapshot | None) -> None:
        if snap is None or snap.name != self.node:
            return
        self.state.setText(f"{snap.state}" + (f" – {snap.reason}" if snap.reason else ""))
        procs = []
        if snap.pid:
            procs.append(f"master {snap.pid}")
        workers = [p for p in snap.worker_pids if p != snap.pid]
        if workers:
            procs.append("workers " + ", ".join(str(p) for p in workers))
        self.pids.setText("; ".join(procs) or "not running")
        self.restarts.setText(str(snap.restarts))

    def set_last_lines(self, node: str, lines: list[str]) -> None:
        if node == self.node:
            self.last_lines.setPlainText("\n".join(lines) if lines else "(no output yet)")
            bar = self.last_lines.verticalScrollBar()
            bar.setValue(bar.maximum())

"""The nodes of the loaded profile: a table (state, pids, workers, address, restarts) and the
per-node start/stop/restart buttons. Given the controller, each connects itself."""
from __future__ import annotations

from collections.abc import Callable

from PySide6.QtCore import QEvent, QSize, Qt
from PySide6.QtGui import QFont, QFontMetrics
from PySide6.QtWidgets import (
    QAbstractItemView,
    QHBoxLayout,
    QHeaderView,
    QPushButton,
    QTableWidget,
    QTableWidgetItem,
    QWidget,
)

from stackpanel.core.profiles.schema import Profile
from stackpanel.core.supervise.events import NodeState, NodeStateChanged, StackSnapshot, WorkersChanged
from stackpanel.qt.controller import LoadedProfile, Operation, StackController
from stackpanel.qt.stack_actions import report_failure
from stackpanel.qt.theme import icon, state_colour


class NodeTable(QTableWidget):
    COLUMNS = ("node", "kind", "state", "pid", "workers", "address", "restarts")

    def __init__(self, parent: QWidget | None = None, controller: StackController | None = None) -> None:
        super().__init__(0, len(self.COLUMNS), parent)
        self.setHorizontalHeaderLabels(list(self.COLUMNS))
        self.verticalHeader().hide()
        self.setSelectionBehavior(QAbstractItemView.SelectionBehavior.SelectRows)
        self.setSelectionMode(QAbstractItemView.SelectionMode.SingleSelection)
        self.setEditTriggers(QAbstractItemView.EditTrigger.NoEditTriggers)
        header = self.horizontalHeader()
        # the stretched last column starts from a narrow size (Qt's 100 px default would overflow)
        header.setDefaultSectionSize(40)
        header.resizeSection(len(self.COLUMNS) - 1, 40)
        header.setSectionResizeMode(QHeaderView.ResizeMode.ResizeToContents)
        header.setStretchLastSection(True)
        # every column is shown: the table asks for their width (minimumSizeHint) instead of scrolling
        self.setHorizontalScrollBarPolicy(Qt.ScrollBarPolicy.ScrollBarAlwaysOff)
        self.rows: dict[str, int] = {}
        if controller is not None:
            self.bind(controller)

    def bind(self, controller: StackController) -> None:
        """Rows from the loaded profile, states from events and snapshots; selection both ways."""

        def loaded(lp: LoadedProfile) -> None:
            self.set_profile(lp.profile)

        def node_state(ev: NodeStateChanged) -> None:
            self.set_state(ev.node, ev.state, ev.pid)

        def workers(ev: WorkersChanged) -> None:
            self.set_workers(ev.node, ev.worker_pids)

        def selected() -> None:
            name = self.selected_node()
            if name is not None:
                controller.select_node(name)

        def select(name: str) -> None:
            self.blockSignals(True)
            self.select_node(name)
            self.blockSignals(False)

        controller.profileLoaded.connect(loaded)
        controller.snapshotChanged.connect(self.apply_snapshot)
        controller.nodeSelected.connect(select)
        controller.bridge.nodeStateChanged.connect(node_state)
        controller.bridge.workersChanged.connect(workers)
        self.itemSelectionChanged.connect(selected)

    def set_profile(self, profile: Profile | None) -> None:
        self.setRowCount(0)
        self.rows.clear()
        if profile is None:
            return
        for name in reversed(profile.start_order()):  # entry first, as the request flows
            node = profile.nodes[name]
            r = self.rowCount()
            self.insertRow(r)
            self.rows[name] = r
            # on loopback the port says it all (the full address in the tooltip): a narrower table
            host, _, port = node.address.rpartition(":")
            address = f":{port}" if host in ("127.0.0.1", "localhost", "::1", "[::1]") else node.address
            tip = node.address
            if profile.listens_on_unix(name):  # its port is not bound: the proxy reaches a socket
                address, tip = "socket", "a Unix socket in the run directory (listen: auto or unix)"
            for c, text in enumerate((name, node.kind, NodeState.STOPPED, "", "", address, "0")):
                self.setItem(r, c, QTableWidgetItem(str(text)))
            self.cell(r, 5).setToolTip(tip)
            self._paint_state(r, NodeState.STOPPED)
        self.updateGeometry()

    def columns_width(self) -> int:
        """The width every column needs, the state column wide enough for its longest state."""
        bold = QFont(self.font())
        bold.setBold(True)
        longest_state = max(QFontMetrics(bold).horizontalAdvance(str(s)) for s in NodeState) + 12
        header = self.horizontalHeader()
        widths = [max(header.sectionSizeHint(c), self.sizeHintForColumn(c)) for c in range(self.columnCount())]
        widths[2] = max(widths[2], longest_state)
        return sum(widths)

    def minimumSizeHint(self) -> QSize:
        hint = super().minimumSizeHint()
        scroll = self.verticalScrollBar().sizeHint().width()
        return QSize(max(hint.width(), self.columns_width() + 2 * self.frameWidth() + scroll), hint.height())

    def sizeHint(self) -> QSize:
        hint = super().sizeHint()
        return QSize(max(hint.width(), self.minimumSizeHint().width()), hint.height())

    def changeEvent(self, event: QEvent) -> None:
        super().changeEvent(event)
        if event.type() == QEvent.Type.PaletteChange:  # the states' shade for the new theme
            for r in self.rows.values():
                colour = state_colour(self.cell(r, 2).text())
                if self.cell(r, 2).foreground().color() != colour:
                    self.cell(r, 2).setForeground(colour)

    def cell(self, row: int, column: int) -> QTableWidgetItem:
        """The item at row, column (every cell gets one when its row is added)."""
        item = self.item(row, column)
        if item is None:
            item = QTableWidgetItem()
            self.setItem(row, column, item)
        return item

    def _paint_state(self, row: int, state: str) -> None:
        item = self.cell(row, 2)
        item.setText(str(state))
        item.setForeground(state_colour(state))
        f = item.font()
        f.setBold(True)
        item.setFont(f)

    def set_state(self, name: str, state: str, pid: int | None) -> None:
        r = self.rows.get(name)
        if r is None:
            return
        self._paint_state(r, state)
        self.cell(r, 3).setText(str(pid) if pid else "")
        self.updateGeometry()
        if state in (NodeState.STOPPED, NodeState.FAILED):
            self.cell(r, 4).setText("")

    def set_workers(self, name: str, pids: tuple[int, ...]) -> None:
        r = self.rows.get(name)
        if r is not None:
            self.cell(r, 4).setText(str(len(pids)) if pids else "")
            self.cell(r, 4).setToolTip(", ".join(str(p) for p in pids))
            self.updateGeometry()  # a pid column that grew

    def apply_snapshot(self, snap: StackSnapshot) -> None:
        for n in snap.nodes:
            self.set_state(n.name, n.state, n.pid)
            self.set_workers(n.name, n.worker_pids)
            r = self.rows.get(n.name)
            if r is not None:
                self.cell(r, 6).setText(str(n.restarts))
                self.cell(r, 2).setToolTip(n.reason)

    def state_of(self, name: str) -> str:
        r = self.rows[name]
        return self.cell(r, 2).text()

    def selected_node(self) -> str | None:
        rows = self.selectionModel().selectedRows()
        if not rows:
            return None
        return self.cell(rows[0].row(), 0).text()

    def select_node(self, name: str) -> None:
        r = self.rows.get(name)
        if r is not None:
            self.selectRow(r)


class NodeButtons(QWidget):
    """Start/Stop/Restart node for the row selected in ``table``."""

    def __init__(self, controller: StackController, table: NodeTable, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self._controller = controller
        self.table = table
        self.btn_start = QPushButton(icon("start"), "Start node")
        self.btn_stop = QPushButton(icon("stop"), "Stop node")
        self.btn_restart = QPushButton(icon("restart"), "Restart node")
        lay = QHBoxLayout(self)
        lay.setContentsMargins(0, 0, 0, 0)
        for b in (self.btn_start, self.btn_stop, self.btn_restart):
            lay.addWidget(b)
        c = controller
        self.btn_start.clicked.connect(lambda: self._on_node(c.start_node))
        self.btn_stop.clicked.connect(lambda: self._on_node(c.stop_node))
        self.btn_restart.clicked.connect(lambda: self._on_node(c.restart_node))
        c.stateChanged.connect(self.update_buttons)
        c.nodeSelected.connect(lambda _name: self.update_buttons())
        c.bridge.nodeStateChanged.connect(lambda _ev: self.update_buttons())
        self.table.itemSelectionChanged.connect(self.update_buttons)
        self.update_buttons()

    def _on_node(self, action: Callable[[str], Operation[None] | None]) -> None:
        node = self.table.selected_node()
        op = action(node) if node is not None else None
        if op is not None:
            op.then(lambda o: report_failure(self, self._controller, o))

    def update_buttons(self) -> None:
        c = self._controller
        node = self.table.selected_node()
        state = self.table.state_of(node) if node in self.table.rows else None
        up = state not in (None, NodeState.STOPPED, NodeState.FAILED)
        ready = not c.busy and node is not None
        self.btn_start.setEnabled(ready and c.valid and not up)
        self.btn_stop.setEnabled(ready and c.has_session and up)
        self.btn_restart.setEnabled(ready and c.has_session and up)

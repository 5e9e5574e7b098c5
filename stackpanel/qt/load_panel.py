"""A small load panel: put load on the running stack's entry URL with the core's generator."""
from __future__ import annotations

from typing import TYPE_CHECKING

from PySide6.QtCore import Signal
from PySide6.QtWidgets import (
    QComboBox,
    QDoubleSpinBox,
    QFormLayout,
    QHBoxLayout,
    QLabel,
    QPushButton,
    QSpinBox,
    QVBoxLayout,
    QWidget,
)

from stackpanel.core.loadgen import LoadConfig, LoadgenError, LoadProgress, LoadResult
from stackpanel.core.supervise.events import StackState
from stackpanel.qt.bridge import LoadBridge
from stackpanel.qt.theme import icon

if TYPE_CHECKING:
    from PySide6.QtCore import QSettings

    from stackpanel.qt.controller import StackController

LOAD_PROCESSES = 1
LOAD_PATHS = ("/api/hello", "/api/wait?ms=50", "/api/cpu?ms=5", "/")
NO_TARGET = "Start the stack, then put load on it."


class LoadPanel(QWidget):
    runningChanged = Signal(bool)

    def __init__(self, parent: QWidget | None = None, controller: StackController | None = None) -> None:
        super().__init__(parent)
        self.base_url: str | None = None
        self.bridge = LoadBridge(self)
        self.bridge.progress.connect(self._on_progress)
        self.bridge.done.connect(self._on_done)
        self.path_box = QComboBox()
        self.path_box.setEditable(True)
        self.path_box.addItems(LOAD_PATHS)
        self.connections = QSpinBox(minimum=1, maximum=512, value=16)
        self.rate = QSpinBox(minimum=0, maximum=200_000, value=0, singleStep=100)
        self.rate.setSpecialValueText("as fast as possible")
        self.rate.setSuffix(" req/s")
        self.duration = QDoubleSpinBox(minimum=1, maximum=600, value=30, suffix=" s")
        self.start_button = QPushButton(icon("load"), "Start load")
        self.stop_button = QPushButton(icon("stop"), "Stop load")
        self.stop_button.setEnabled(False)
        self.start_button.clicked.connect(self.start_load)
        self.stop_button.clicked.connect(self.bridge.stop)
        #: what to do next (start the stack / where load goes); the run's progress and result below it
        self.hint = QLabel(NO_TARGET)
        self.hint.setWordWrap(True)
        self.status = QLabel("")
        self.status.setWordWrap(True)
        form = QFormLayout()
        form.addRow("path", self.path_box)
        form.addRow("connections", self.connections)
        form.addRow("rate", self.rate)
        form.addRow("duration", self.duration)
        buttons = QHBoxLayout()
        buttons.addWidget(self.start_button)
        buttons.addWidget(self.stop_button)
        buttons.addStretch(1)
        lay = QVBoxLayout(self)
        lay.addLayout(form)
        lay.addLayout(buttons)
        lay.addWidget(self.hint)
        lay.addWidget(self.status)
        lay.addStretch(1)
        self.set_target(None)
        if controller is not None:
            self.bind(controller)

    def bind(self, controller: StackController) -> None:
        """Load targets the entry URL while the stack runs; a closing stack ends the load run."""

        def state_changed() -> None:
            url = controller.browser_url
            self.set_target(url if controller.stack_state == StackState.RUNNING and url else None)

        controller.stateChanged.connect(state_changed)
        controller.closing.connect(self.bridge.stop)
        controller.shuttingDown.connect(self.bridge.stop)

    def set_target(self, base_url: str | None) -> None:
        """The entry URL of a running stack, or None (load disabled)."""
        self.base_url = base_url
        self.start_button.setEnabled(base_url is not None and not self.bridge.running)
        self.hint.setText(NO_TARGET if base_url is None else f"The stack runs: load goes to {base_url}")
        if base_url is None:
            self.bridge.stop()

    # the load last asked for is offered again next time (the window's settings)
    def restore_settings(self, settings: QSettings) -> None:
        path = str(settings.value("load/path", LOAD_PATHS[0]))
        self.path_box.setCurrentText(path)
        self.connections.setValue(int(str(settings.value("load/connections", self.connections.value()))))
        self.rate.setValue(int(str(settings.value("load/rate", self.rate.value()))))
        self.duration.setValue(float(str(settings.value("load/duration", self.duration.value()))))

    def save_settings(self, settings: QSettings) -> None:
        settings.setValue("load/path", self.path_box.currentText())
        settings.setValue("load/connections", self.connections.value())
        settings.setValue("load/rate", self.rate.value())
        settings.setValue("load/duration", self.duration.value())

    def url(self) -> str:
        assert self.base_url is not None
        return self.base_url.rstrip("/") + "/" + self.path_box.currentText().lstrip("/")

    def start_load(self) -> None:
        if self.base_url is None:
            return
        try:
            config = LoadConfig(
                url=self.url(), connections=self.connections.value(), duration_s=self.duration.value(),
                rate=float(self.rate.value()) or None,
                processes=LOAD_PROCESSES,  # >1: generator in child processes (GIL), slower to start
            )
            self.bridge.start(config)
        except LoadgenError as exc:
            self.status.setText(f"cannot start load: {exc}")
            return
        self.start_button.setEnabled(False)
        self.stop_button.setEnabled(True)
        self.status.setText(f"loading {config.url} …")
        self.runningChanged.emit(True)

    def _on_progress(self, p: LoadProgress) -> None:
        self.status.setText(
            f"{p.elapsed_s:.0f} s · {p.current_rps:.0f} req/s · {p.requests_ok} ok · {p.errors} errors · "
            f"{p.connections_open} connections"
        )

    def _on_done(self, outcome: object) -> None:
        self.start_button.setEnabled(self.base_url is not None)
        self.stop_button.setEnabled(False)
        if isinstance(outcome, LoadResult):
            r = outcome
            self.status.setText(
                f"done ({r.stopped_by or 'finished'}): {r.requests_ok} ok, {r.errors_total} errors, "
                f"{r.rps:.0f} req/s, p50 {r.latency_p50_ms:.1f} ms, p99 {r.latency_p99_ms:.1f} ms"
                + (f" – {r.aborted}" if r.aborted else "")
            )
        else:
            self.status.setText(f"load run failed: {outcome}")
        self.runningChanged.emit(False)

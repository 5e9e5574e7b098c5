"""Stack → Export…: the loaded profile to docker compose, systemd units or process-compose, written
off the GUI thread by the same core function the CLI uses."""
from __future__ import annotations

from pathlib import Path

from PySide6.QtGui import QAction
from PySide6.QtWidgets import QFileDialog, QInputDialog, QMessageBox, QWidget

from stackpanel.core.export import EXPORT_KINDS, ExportKind, export
from stackpanel.qt.controller import StackController
from stackpanel.qt.operations import Operation

_LABELS: dict[ExportKind, str] = {
    "compose": "docker compose (compose.yaml, configs, Dockerfiles)",
    "systemd": "systemd (one unit per node and a target)",
    "process-compose": "process-compose (process-compose.yaml)",
}


class ExportAction(QAction):
    """Enabled while a valid profile is loaded."""

    def __init__(self, controller: StackController, parent: QWidget) -> None:
        super().__init__("Export…", parent)
        self._controller = controller
        self._parent = parent
        self.setToolTip("Write the loaded profile as a docker compose project, systemd units or a "
                        "process-compose file")
        self.triggered.connect(self.ask)
        controller.profileLoaded.connect(lambda loaded: self.setEnabled(loaded.profile is not None))
        self.setEnabled(False)

    def ask(self) -> None:
        loaded = self._controller.loaded
        if loaded is None or loaded.profile is None:
            return
        labels = [_LABELS[k] for k in EXPORT_KINDS]
        label, ok = QInputDialog.getItem(self._parent, "Export", f"Export {loaded.name} as:", labels, 0, False)
        if not ok:
            return
        kind = EXPORT_KINDS[labels.index(label)]
        if kind == "process-compose":
            target, _ = QFileDialog.getSaveFileName(self._parent, "Export to", f"{loaded.name}.process-compose.yaml")
        else:
            target = QFileDialog.getExistingDirectory(self._parent, "Export into (an empty directory)")
        if target:
            self.run(kind, Path(target))

    def run(self, kind: ExportKind, out: Path) -> Operation[str]:
        loaded = self._controller.loaded
        assert loaded is not None and loaded.profile is not None
        profile, name = loaded.profile, loaded.path.stem
        op = self._controller.reads.submit(f"export {kind}", lambda: export(profile, kind, out, name))
        return op.then(self._done)

    def _done(self, op: Operation[str]) -> None:
        if op.ok:
            QMessageBox.information(self._parent, "Export", op.result())
        else:
            QMessageBox.warning(self._parent, "Export", f"The export failed: {op.error}")

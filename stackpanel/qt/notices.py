"""What the user must know about the loaded profile before running it: nodes reachable from the
network, an https entry whose local CA browsers do not trust yet, with the one-click fix."""
from __future__ import annotations

from PySide6.QtWidgets import QHBoxLayout, QLabel, QMessageBox, QPushButton, QVBoxLayout, QWidget

from stackpanel.core.errors import StackpanelError
from stackpanel.core.supervise.events import NodeState
from stackpanel.core.tls import TrustStep, apply_trust, trust_plan
from stackpanel.qt.controller import LoadedProfile, StackController, profile_notices
from stackpanel.qt.operations import Operation
from stackpanel.qt.theme import state_colour


class ProfileNotices(QWidget):
    """Hidden while there is nothing to say; follows every profile load."""

    def __init__(self, controller: StackController, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self._controller = controller
        self.text = QLabel()
        self.text.setWordWrap(True)
        self.text.setStyleSheet(f"color: {state_colour(NodeState.BACKING_OFF).name()};")
        self.trust_button = QPushButton("Trust the local CA…")
        self.trust_button.setToolTip("Add stackpanel's local certificate authority to this system and to "
                                     "Chromium's and Firefox's stores (it shows what it changes first)")
        self.trust_button.clicked.connect(self.ask_to_trust)
        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 4, 0, 4)
        layout.addWidget(self.text)
        row = QHBoxLayout()
        row.addWidget(self.trust_button)
        row.addStretch(1)
        layout.addLayout(row)
        controller.profileLoaded.connect(self.show_loaded)
        # the first https start makes the CA: what the notice said before may no longer be true
        controller.stateChanged.connect(self._refresh_if_tls)
        self.setVisible(False)

    def show_loaded(self, loaded: LoadedProfile) -> None:
        self._show(loaded.notices, loaded.tls_untrusted)

    def _show(self, notices: tuple[str, ...], untrusted: bool) -> None:
        self.text.setText("\n".join(f"⚠ {n}" for n in notices))
        self.trust_button.setVisible(untrusted)
        self.setVisible(bool(notices))

    def _refresh_if_tls(self) -> None:
        loaded = self._controller.loaded
        if loaded is None or loaded.profile is None or not loaded.tls_untrusted:
            return
        profile = loaded.profile
        self._controller.reads.submit("notices", lambda: profile_notices(profile)).then(
            lambda op: self._show(*op.result()) if op.ok and self._controller.loaded is loaded else None)

    def ask_to_trust(self) -> None:
        self._controller.reads.submit("trust plan", trust_plan).then(self._confirm)

    def _confirm(self, op: Operation[list[TrustStep]]) -> None:
        if not op.ok:
            QMessageBox.warning(self, "Trust the local CA", str(op.error))
            return
        plan = op.result()
        if not plan:
            QMessageBox.information(self, "Trust the local CA", "Every store already trusts the CA.")
            return
        details = "\n\n".join(str(step) for step in plan)
        answer = QMessageBox.question(self, "Trust the local CA",
                                      f"This adds stackpanel's local CA (valid only for localhost and the "
                                      f"names your profiles declare) to:\n\n{details}\n\nGo ahead?")
        if answer == QMessageBox.StandardButton.Yes:
            self._controller.reads.submit("trust", lambda: apply_trust(plan)).then(self._done)

    def _done(self, op: Operation[list[str]]) -> None:
        if op.ok:
            QMessageBox.information(self, "Trust the local CA", "Done:\n" + "\n".join(op.result()) +
                                    "\n\nRestart the browser so it reads its certificate store again.")
            self._refresh_if_tls()
        else:
            error = op.error
            text = str(error) if isinstance(error, StackpanelError) else f"unexpected error: {error!r}"
            QMessageBox.warning(self, "Trust the local CA", text)

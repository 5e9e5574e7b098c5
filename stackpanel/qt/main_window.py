"""The main window. For now: the profiles and what each one runs (the full panel is issue #5)."""
from __future__ import annotations

from PySide6.QtWidgets import QLabel, QListWidget, QListWidgetItem, QMainWindow, QSplitter, QTextEdit

from stackpanel.core.errors import ProfileError
from stackpanel.core.profiles.library import DEFAULT_PROFILE, list_profiles
from stackpanel.core.profiles.loader import load_profile


class MainWindow(QMainWindow):
    def __init__(self, initial_profile: str | None = None) -> None:
        super().__init__()
        self.setWindowTitle("stackpanel")
        self.resize(1000, 640)
        self.profile_list = QListWidget()
        self.details = QTextEdit(readOnly=True)
        splitter = QSplitter()
        splitter.addWidget(self.profile_list)
        splitter.addWidget(self.details)
        splitter.setSizes([280, 720])
        self.setCentralWidget(splitter)
        self.statusBar().addWidget(QLabel("Select a profile"))
        want = initial_profile or DEFAULT_PROFILE
        for entry in list_profiles():
            item = QListWidgetItem(entry.name)
            item.setData(256, str(entry.path))
            self.profile_list.addItem(item)
            if entry.name == want:
                self.profile_list.setCurrentItem(item)
        self.profile_list.currentItemChanged.connect(self._show_profile)
        self._show_profile(self.profile_list.currentItem())

    def _show_profile(self, item: QListWidgetItem | None) -> None:
        if item is None:
            return
        try:
            profile = load_profile(item.data(256))
        except ProfileError as exc:
            self.details.setPlainText(str(exc))
            return
        lines = [profile.name, profile.description, "", "Request path:"]
        for name in reversed(profile.start_order()):
            node = profile.nodes[name]
            lines.append(f"  {name}: {node.kind} on {node.address}, {node.workers} worker(s)")
        self.details.setPlainText("\n".join(lines))

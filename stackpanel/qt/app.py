"""Entry point of the desktop panel."""
from __future__ import annotations

import sys


def run_gui(profile: str | None = None) -> int:
    from PySide6.QtWidgets import QApplication

    from stackpanel.qt.main_window import MainWindow

    app = QApplication.instance() or QApplication(sys.argv[:1])
    app.setApplicationName("stackpanel")
    app.setOrganizationName("stackpanel")
    window = MainWindow(initial_profile=profile)
    window.show()
    return app.exec()

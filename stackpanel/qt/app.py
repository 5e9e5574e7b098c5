"""Entry point of the desktop panel."""
from __future__ import annotations

import gc
import sys


def freeze_startup_heap() -> None:
    """Collect once, then move every object alive now (Qt/pyqtgraph modules, wrappers, the window:
    ~95k objects) out of the cyclic collector's reach (:func:`gc.freeze`).

    A full (generation 2) collection walks every tracked object and holds the GIL while it does,
    whichever thread triggers it: with the window built that is 45-62 ms, and under load the log
    follower triggered one every ~15 s, stalling the GUI thread for as long (benchmarks/
    RESULTS-gui.md). Frozen objects are never scanned; objects made later are collected as usual.
    Call once, after the main window is built and before the event loop runs.
    """
    gc.collect()
    gc.freeze()


def run_gui(profile: str | None = None) -> int:
    from PySide6.QtGui import QGuiApplication
    from PySide6.QtWidgets import QApplication

    from stackpanel.qt.main_window import MainWindow

    app = QApplication.instance() or QApplication(sys.argv[:1])
    app.setApplicationName("stackpanel")
    QGuiApplication.setDesktopFileName("stackpanel")  # Wayland app_id: maps the window to stackpanel.desktop
    app.setOrganizationName("stackpanel")
    window = MainWindow(initial_profile=profile)
    freeze_startup_heap()
    window.show()
    return app.exec()

"""Take a screenshot of the real window with a stack running and load applied.

    xvfb-run -a -s "-screen 0 1920x1080x24" .venv/bin/python -m stackpanel.qt.screenshot \
        docs/screenshot-dark-1280x720.png --size 1280x720 --theme dark --seconds 25

Starts PROFILE (default nginx-gunicorn-uvicorn) with a free port offset, puts load on it for
``--seconds``, grabs the window, then closes it (which stops the stack). The README's four
screenshots are this at 1280x720 and 1920x1080, light and dark.
"""
from __future__ import annotations

import argparse
import sys
import time
from typing import Any

from PySide6.QtCore import QSettings, QTimer
from PySide6.QtWidgets import QApplication

from stackpanel.core.supervise.events import StackState
from stackpanel.core.supervise.ports import free_port_offset
from stackpanel.qt.load_panel import LoadPanel
from stackpanel.qt.main_window import MainWindow
from stackpanel.qt.plots import PlotsPanel
from stackpanel.qt.theme import apply_theme


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("out")
    ap.add_argument("--profile", default="nginx-gunicorn-uvicorn")
    ap.add_argument("--path", default="/api/cpu?ms=5")
    ap.add_argument("--rate", type=int, default=300)
    ap.add_argument("--seconds", type=float, default=60)
    ap.add_argument("--theme", default="light", choices=("light", "dark"))
    ap.add_argument("--size", default="1280x720")
    ap.add_argument("--window", type=int, default=60, help="plot window in seconds (60, 300, 900)")
    args = ap.parse_args(argv)
    app = QApplication(sys.argv[:1])
    apply_theme(app, args.theme)
    settings = QSettings("/tmp/stackpanel-screenshot.ini", QSettings.Format.IniFormat)
    settings.clear()
    w = MainWindow(initial_profile=args.profile, settings=settings)
    width, height = (int(x) for x in args.size.split("x"))
    w.resize(width, height)
    w.show()
    t0 = time.monotonic()
    phase: dict[str, Any] = {"name": "load-profile"}

    c = w.controller

    def step() -> None:
        loaded = c.loaded
        if phase["name"] == "load-profile" and loaded is not None:
            assert loaded.profile is not None
            offset = free_port_offset([n.port for n in loaded.profile.nodes.values()])
            w.offset_spin.setValue(offset)
            phase["name"], phase["offset"] = "offset", offset
        elif phase["name"] == "offset" and loaded is not None and loaded.port_offset == phase["offset"]:
            w.act_start.trigger()
            phase["name"] = "starting"
        elif phase["name"] == "starting" and c.stack_state == StackState.RUNNING:
            lp = w.panel(LoadPanel)
            lp.path_box.setCurrentText(args.path)
            lp.rate.setValue(args.rate)
            lp.duration.setValue(args.seconds + 30)
            lp.connections.setValue(8)
            lp.start_load()
            phase["name"], phase["load_t"] = "loading", time.monotonic()
        elif phase["name"] == "loading" and time.monotonic() - phase["load_t"] > args.seconds:
            plots = w.panel(PlotsPanel)
            w.tabs.setCurrentWidget(plots)
            plots.set_window(args.window)
            c.select_node("app")
            plots.redraw()
            app.processEvents()
            w.grab().save(args.out)
            print(f"saved {args.out}")
            phase["name"] = "done"
            w.close()
        elif time.monotonic() - t0 > args.seconds + 180:
            print("timed out in phase", phase["name"], file=sys.stderr)
            w.close()

    timer = QTimer()
    timer.timeout.connect(step)
    timer.start(200)

    def quit_when_closed() -> None:
        if not w.isVisible():
            app.quit()

    closer = QTimer()
    closer.timeout.connect(quit_when_closed)
    closer.start(500)
    # closing with a running stack asks; this script has already decided
    w._close_confirmed = True
    return app.exec()


if __name__ == "__main__":
    raise SystemExit(main())

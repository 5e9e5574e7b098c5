"""Colours, icons and the light/dark theme. One place for every colour the panel draws with."""
from __future__ import annotations

from functools import cache
from pathlib import Path

from PySide6.QtGui import QColor, QIcon, QPalette
from PySide6.QtWidgets import QApplication

from stackpanel.core.supervise.events import NodeState, StackState

#: Node fill colours by state; mid-tones that stay readable with dark or light text around them.
STATE_COLOURS: dict[str, str] = {
    NodeState.STOPPED: "#8c959f",
    NodeState.STARTING: "#d4a72c",
    NodeState.READY: "#2ea043",
    NodeState.CRASHED: "#e5534b",
    NodeState.BACKING_OFF: "#db6d28",
    NodeState.STOPPING: "#c69026",
    NodeState.FAILED: "#b62324",
}
STACK_COLOURS: dict[str, str] = {
    StackState.STOPPED: STATE_COLOURS[NodeState.STOPPED],
    StackState.STARTING: STATE_COLOURS[NodeState.STARTING],
    StackState.RUNNING: STATE_COLOURS[NodeState.READY],
    StackState.DEGRADED: STATE_COLOURS[NodeState.BACKING_OFF],
    StackState.STOPPING: STATE_COLOURS[NodeState.STOPPING],
    StackState.FAILED: STATE_COLOURS[NodeState.FAILED],
}
#: Series colours (per worker / per node), distinguishable on white and on near-black.
SERIES_COLOURS: tuple[str, ...] = (
    "#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#17becf",
    "#bcbd22", "#7f7f7f", "#393b79", "#e7ba52", "#637939", "#ad494a", "#6b6ecf", "#3182bd",
)
ERROR_COLOUR = "#e5534b"
WARNING_COLOUR = "#d4a72c"

THEMES = ("system", "light", "dark")


def state_colour(state: str | None) -> QColor:
    return QColor(STATE_COLOURS.get(state or NodeState.STOPPED, STATE_COLOURS[NodeState.STOPPED]))


def resource_dirs() -> list[Path]:
    # Inside the package so wheels carry them; the repository's top-level resources/ links here.
    return [Path(__file__).resolve().parents[1] / "resources"]


def resource_path(name: str) -> Path | None:
    for d in resource_dirs():
        p = d / name
        if p.is_file():
            return p
    return None


@cache
def icon(name: str) -> QIcon:
    """An icon from ``resources/icons/<name>.svg`` (an empty icon if it is missing)."""
    path = resource_path(f"icons/{name}.svg")
    return QIcon(str(path)) if path is not None else QIcon()


def _dark_palette() -> QPalette:
    p = QPalette()
    c = QColor
    p.setColor(QPalette.ColorRole.Window, c("#1e2227"))
    p.setColor(QPalette.ColorRole.WindowText, c("#e6edf3"))
    p.setColor(QPalette.ColorRole.Base, c("#161a1f"))
    p.setColor(QPalette.ColorRole.AlternateBase, c("#22272e"))
    p.setColor(QPalette.ColorRole.ToolTipBase, c("#2d333b"))
    p.setColor(QPalette.ColorRole.ToolTipText, c("#e6edf3"))
    p.setColor(QPalette.ColorRole.Text, c("#e6edf3"))
    p.setColor(QPalette.ColorRole.PlaceholderText, c("#7d8590"))
    p.setColor(QPalette.ColorRole.Button, c("#2d333b"))
    p.setColor(QPalette.ColorRole.ButtonText, c("#e6edf3"))
    p.setColor(QPalette.ColorRole.BrightText, c("#ff7b72"))
    p.setColor(QPalette.ColorRole.Link, c("#58a6ff"))
    p.setColor(QPalette.ColorRole.Highlight, c("#1f6feb"))
    p.setColor(QPalette.ColorRole.HighlightedText, c("#ffffff"))
    p.setColor(QPalette.ColorRole.Mid, c("#444c56"))
    p.setColor(QPalette.ColorRole.Dark, c("#0d1117"))
    for role in (QPalette.ColorRole.Text, QPalette.ColorRole.ButtonText, QPalette.ColorRole.WindowText):
        p.setColor(QPalette.ColorGroup.Disabled, role, c("#6e7681"))
    return p


def _light_palette() -> QPalette:
    p = QPalette()
    c = QColor
    p.setColor(QPalette.ColorRole.Window, c("#f6f8fa"))
    p.setColor(QPalette.ColorRole.WindowText, c("#1f2328"))
    p.setColor(QPalette.ColorRole.Base, c("#ffffff"))
    p.setColor(QPalette.ColorRole.AlternateBase, c("#f0f3f6"))
    p.setColor(QPalette.ColorRole.ToolTipBase, c("#ffffff"))
    p.setColor(QPalette.ColorRole.ToolTipText, c("#1f2328"))
    p.setColor(QPalette.ColorRole.Text, c("#1f2328"))
    p.setColor(QPalette.ColorRole.PlaceholderText, c("#6e7781"))
    p.setColor(QPalette.ColorRole.Button, c("#eef1f4"))
    p.setColor(QPalette.ColorRole.ButtonText, c("#1f2328"))
    p.setColor(QPalette.ColorRole.Link, c("#0969da"))
    p.setColor(QPalette.ColorRole.Highlight, c("#0969da"))
    p.setColor(QPalette.ColorRole.HighlightedText, c("#ffffff"))
    for role in (QPalette.ColorRole.Text, QPalette.ColorRole.ButtonText, QPalette.ColorRole.WindowText):
        p.setColor(QPalette.ColorGroup.Disabled, role, c("#8c959f"))
    return p


_system_palette: QPalette | None = None


def apply_theme(app: QApplication, mode: str) -> None:
    """``system`` keeps the desktop's palette; ``light``/``dark`` use Fusion with our palette."""
    global _system_palette
    if _system_palette is None:
        _system_palette = QPalette(app.palette())
    if mode == "dark":
        app.setStyle("Fusion")
        app.setPalette(_dark_palette())
    elif mode == "light":
        app.setStyle("Fusion")
        app.setPalette(_light_palette())
    else:
        app.setPalette(_system_palette)

"""Colours, icons and the light/dark theme. One place for every colour the panel draws with."""
from __future__ import annotations

from functools import cache
from pathlib import Path

from PySide6.QtCore import QRectF
from PySide6.QtGui import QColor, QIcon, QPainter, QPalette, QPen
from PySide6.QtWidgets import QApplication, QProxyStyle, QStyle, QStyleOption, QWidget

from stackpanel.core.supervise.events import NodeState, StackState

#: One palette of states for both themes: a hue per kind of state, in a shade for light backgrounds
#: and one for dark ones, each readable as text (>= 4.5:1) on that theme's window and base colours.
STATE_HUES: dict[str, tuple[str, str]] = {
    "grey": ("#59636e", "#9198a1"),
    "blue": ("#0969da", "#4c9bff"),
    "green": ("#1a7f37", "#3fb950"),
    "orange": ("#a35200", "#e3823b"),
    "red": ("#cf222e", "#ff6a63"),
}
#: stopped grey, starting (and stopping) blue, ready green, degraded orange, failed red
NODE_STATE_HUES: dict[str, str] = {
    NodeState.STOPPED: "grey",
    NodeState.STARTING: "blue",
    NodeState.READY: "green",
    NodeState.CRASHED: "red",
    NodeState.BACKING_OFF: "orange",
    NodeState.STOPPING: "blue",
    NodeState.FAILED: "red",
}
STACK_STATE_HUES: dict[str, str] = {
    StackState.STOPPED: "grey",
    StackState.STARTING: "blue",
    StackState.RUNNING: "green",
    StackState.DEGRADED: "orange",
    StackState.STOPPING: "blue",
    StackState.FAILED: "red",
}
#: Series colours (per worker / per node), distinguishable on white and on near-black.
SERIES_COLOURS: tuple[str, ...] = (
    "#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#17becf",
    "#bcbd22", "#7f7f7f", "#393b79", "#e7ba52", "#637939", "#ad494a", "#6b6ecf", "#3182bd",
)
ERROR_COLOUR = "#e5534b"

THEMES = ("system", "light", "dark")


def is_dark(palette: QPalette | None = None) -> bool:
    pal = palette if palette is not None else QApplication.palette()
    return pal.color(QPalette.ColorRole.Base).lightness() < 128


def hue_colour(hue: str, palette: QPalette | None = None) -> QColor:
    """``hue`` (a key of STATE_HUES) in the shade for ``palette`` (default: the application's)."""
    light, dark = STATE_HUES[hue]
    return QColor(dark if is_dark(palette) else light)


def state_colour(state: str | None, palette: QPalette | None = None) -> QColor:
    """A node's state colour for ``palette`` (default: the application's)."""
    return hue_colour(NODE_STATE_HUES.get(state or NodeState.STOPPED, "grey"), palette)


def stack_colour(state: str | None, palette: QPalette | None = None) -> QColor:
    return hue_colour(STACK_STATE_HUES.get(state or StackState.STOPPED, "grey"), palette)


def contrast_ratio(a: QColor, b: QColor) -> float:
    """WCAG 2 contrast ratio of two colours (1 to 21)."""

    def luminance(c: QColor) -> float:
        def channel(v: float) -> float:
            return v / 12.92 if v <= 0.04045 else ((v + 0.055) / 1.055) ** 2.4
        return 0.2126 * channel(c.redF()) + 0.7152 * channel(c.greenF()) + 0.0722 * channel(c.blueF())

    hi, lo = sorted((luminance(a), luminance(b)), reverse=True)
    return (hi + 0.05) / (lo + 0.05)


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


class PanelStyle(QProxyStyle):
    """Fusion, with an unchecked check box that can be seen: Fusion outlines it in a shade of the
    window colour, which all but vanishes on a dark base. The outline here is the placeholder-text
    colour (>= 3:1 against the base in both themes)."""

    def __init__(self) -> None:
        super().__init__("Fusion")

    def drawPrimitive(self, element: QStyle.PrimitiveElement, option: QStyleOption, painter: QPainter,
                      widget: QWidget | None = None) -> None:
        super().drawPrimitive(element, option, painter, widget)
        if element in (QStyle.PrimitiveElement.PE_IndicatorCheckBox,
                       QStyle.PrimitiveElement.PE_IndicatorItemViewItemCheck):
            painter.save()
            painter.setRenderHint(QPainter.RenderHint.Antialiasing)
            painter.setPen(QPen(option.palette.color(QPalette.ColorRole.PlaceholderText), 1.0))  # type: ignore[attr-defined]
            painter.setBrush(QColor(0, 0, 0, 0))
            r = QRectF(option.rect).adjusted(0.5, 0.5, -1.5, -1.5)  # type: ignore[attr-defined]
            painter.drawRoundedRect(r, 2, 2)
            painter.restore()


_system_palette: QPalette | None = None


def apply_theme(app: QApplication, mode: str) -> None:
    """``system`` keeps the desktop's palette; ``light``/``dark`` use Fusion with our palette."""
    global _system_palette
    if _system_palette is None:
        _system_palette = QPalette(app.palette())
    if mode == "dark":
        app.setStyle(PanelStyle())
        app.setPalette(_dark_palette())
    elif mode == "light":
        app.setStyle(PanelStyle())
        app.setPalette(_light_palette())
    else:
        app.setPalette(_system_palette)

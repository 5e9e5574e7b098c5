"""A comparison as a PNG for a slide: one horizontal bar of req/s per profile, ratio and p99 labels.

Drawn with Qt (QImage + QPainter), offscreen when there is no display. Qt is imported inside
the functions, so `stackpanel bench` pays for it only with --png. Call it from the thread that
owns the QApplication (the main thread in the CLI); one is created when none exists.
"""
from __future__ import annotations

import math
import os
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from stackpanel.core.errors import StackpanelError

if TYPE_CHECKING:
    from stackpanel.core.bench import Comparison

WIDTH, HEIGHT = 1600, 900  # 16:9
#: the smallest text of the chart (the footer), in image pixels: a view scaling it down keeps this legible
SMALLEST_TEXT_PX = 17

# colours (a light theme that prints and projects well)
_INK = "#1f2933"
_MUTED = "#616e7c"
_GRID = "#e4e7eb"
_BASELINE = "#52606d"
_BAR = "#2f80ed"
_BAR_SLOWER = "#f2994a"  # well below the baseline
_FAILED = "#c0392b"

_app: Any = None  # the QGuiApplication this module created, kept alive


class ChartError(StackpanelError):
    """The chart could not be drawn or written."""


def _has_display() -> bool:
    return sys.platform in ("darwin", "win32") or bool(
        os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY")
    )


def _ensure_gui_app() -> None:
    """Fonts need a Qt application object; offscreen when there is no display.

    A QApplication (not just a QGuiApplication) is created, so that widgets created later in the
    same process (the panel, GUI tests) still work.
    """
    global _app
    try:
        from PySide6.QtGui import QGuiApplication
    except ImportError as exc:  # pragma: no cover - PySide6 is a dependency
        raise ChartError(f"the chart needs PySide6 ({exc}); install stackpanel's dependencies") from None
    if QGuiApplication.instance() is None:
        if not _has_display():
            os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
        try:
            from PySide6.QtWidgets import QApplication
        except ImportError:  # pragma: no cover
            _app = QGuiApplication(["stackpanel-chart"])
        else:
            _app = QApplication(["stackpanel-chart"])


def _compact(n: float) -> str:
    if n >= 10_000:
        return f"{n / 1000:.0f}k"
    if n >= 1000:
        return f"{n / 1000:.1f}k"
    return f"{n:.0f}"


def _nice_max(value: float) -> tuple[float, float]:
    """An axis end >= value and a tick step (1, 2, 2.5 or 5 × 10^k, about 5 ticks)."""
    if value <= 0 or not math.isfinite(value):
        return 1.0, 0.2
    raw = value / 5
    mag = 10 ** math.floor(math.log10(raw))
    step = next(m * mag for m in (1, 2, 2.5, 5, 10) if m * mag >= raw)
    return step * math.ceil(value * 1.0001 / step), step


_HEADER_H, _FOOTER_H, _AXIS_H, _ROW_MIN = 150.0, 70.0, 64.0, 70.0  # axis: tick labels and title


def min_height(runs: int) -> int:
    """The least height that holds ``runs`` bars."""
    return round(_HEADER_H + 20 + max(1, runs) * _ROW_MIN + _AXIS_H + _FOOTER_H)


def render_chart(comparison: Comparison, *, width: int = WIDTH, height: int | None = None,
                 title: str | None = None) -> Any:
    """Draw the chart into a new ``QImage`` and return it. ``height``: 16:9 when not given; never
    less than the profile count needs (:func:`min_height`)."""
    _ensure_gui_app()
    from PySide6.QtCore import QPointF, QRectF, Qt
    from PySide6.QtGui import QColor, QFont, QFontMetricsF, QImage, QPainter, QPen

    runs = comparison.runs
    n = max(1, len(runs))
    margin = width * 0.035
    header_h, footer_h, axis_h = _HEADER_H, _FOOTER_H, _AXIS_H
    row_min, row_max = _ROW_MIN, 200.0
    height = max(min_height(n), round(width * 9 / 16) if height is None else height)
    image = QImage(width, height, QImage.Format.Format_ARGB32_Premultiplied)
    image.fill(QColor("white"))
    p = QPainter(image)
    try:
        p.setRenderHint(QPainter.RenderHint.Antialiasing)
        p.setRenderHint(QPainter.RenderHint.TextAntialiasing)

        def font(px: float, bold: bool = False) -> QFont:
            f = QFont("DejaVu Sans")
            f.setPixelSize(max(8, round(px)))
            f.setBold(bold)
            return f

        def text(x: float, y: float, w: float, h: float, s: str, f: QFont, color: str,
                 align: Qt.AlignmentFlag = Qt.AlignmentFlag.AlignLeft | Qt.AlignmentFlag.AlignVCenter) -> None:
            p.setFont(f)
            p.setPen(QColor(color))
            p.drawText(QRectF(x, y, w, h), int(align), s)

        def elide(s: str, f: QFont, w: float) -> str:
            return QFontMetricsF(f).elidedText(s, Qt.TextElideMode.ElideRight, w)

        s = comparison.settings
        heading = title or f"Throughput by topology · GET {s.path}"
        text(margin, 28, width - 2 * margin, 50, heading, font(38, True), _INK)
        sub = comparison.describe_load()
        text(margin, 82, width - 2 * margin, 30, elide(sub, font(22), width - 2 * margin), font(22), _MUTED)
        machine = comparison.describe_machine()
        if machine:
            text(margin, 110, width - 2 * margin, 28, elide(f"machine: {machine}", font(20), width - 2 * margin),
                 font(20), _MUTED)

        label_w = width * 0.27
        value_w = width * 0.22
        plot_x = margin + label_w + 20
        plot_w = width - plot_x - value_w - margin
        top = header_h + 20
        bottom = height - footer_h - axis_h
        row_h = max(row_min, min(row_max, (bottom - top) / n))
        ok_values = [r.throughput_rps for r in runs if r.ok and math.isfinite(r.throughput_rps)]
        axis_max, step = _nice_max(max(ok_values, default=1.0))

        # grid and axis labels
        p.setPen(QPen(QColor(_GRID), 1.5))
        ticks = max(1, round(axis_max / step))
        for i in range(ticks + 1):
            x = plot_x + plot_w * i / ticks
            p.drawLine(QPointF(x, top - 8), QPointF(x, top + row_h * n))
        for i in range(ticks + 1):
            x = plot_x + plot_w * i / ticks
            text(x - 60, top + row_h * n + 4, 120, 26, _compact(step * i), font(18), _MUTED,
                 Qt.AlignmentFlag.AlignHCenter | Qt.AlignmentFlag.AlignTop)
        text(plot_x, top + row_h * n + 28, plot_w, 26, "successful requests per second", font(18), _MUTED,
             Qt.AlignmentFlag.AlignHCenter | Qt.AlignmentFlag.AlignTop)

        base = comparison.baseline
        bar_h = min(row_h * 0.56, 84.0)
        for i, r in enumerate(runs):
            y = top + i * row_h
            cy = y + row_h / 2
            name_f = font(min(26, row_h * 0.3), True)
            title_f = font(max(SMALLEST_TEXT_PX, min(18, row_h * 0.22)))
            name_h, title_h = name_f.pixelSize() * 1.4, title_f.pixelSize() * 1.4
            text(margin, cy - name_h, label_w, name_h, elide(r.name, name_f, label_w), name_f, _INK,
                 Qt.AlignmentFlag.AlignRight | Qt.AlignmentFlag.AlignBottom)
            sub_label = r.title
            if r.ok and r.app_workers:
                sub_label = f"{r.title} · {r.app_workers} app workers" if r.title else f"{r.app_workers} app workers"
            text(margin, cy + 2, label_w, title_h, elide(sub_label, title_f, label_w), title_f,
                 _MUTED, Qt.AlignmentFlag.AlignRight | Qt.AlignmentFlag.AlignTop)
            by = y + (row_h - bar_h) / 2
            if not r.ok:
                reason = " ".join(r.reason.split()) or "did not run"
                f = font(max(SMALLEST_TEXT_PX, min(20, row_h * 0.24)))
                f.setItalic(True)
                text(plot_x, by, plot_w + value_w, bar_h, elide(f"did not run: {reason}", f, plot_w + value_w),
                     f, _FAILED)
                continue
            ratio = comparison.ratio(r)
            is_base = base is not None and r is base
            colour = _BASELINE if is_base else (_BAR_SLOWER if ratio is not None and ratio < 0.7 else _BAR)
            w = plot_w * (r.throughput_rps / axis_max) if axis_max > 0 else 0.0
            p.setPen(Qt.PenStyle.NoPen)
            p.setBrush(QColor(colour))
            p.drawRoundedRect(QRectF(plot_x, by, max(w, 2.0), bar_h), 6, 6)
            # value, ratio, p99 to the right of the bar
            vx = plot_x + w + 14
            big = font(min(24, row_h * 0.28), True)
            small = font(max(SMALLEST_TEXT_PX, min(18, row_h * 0.21)))
            ratio_s = "baseline" if is_base else ("" if ratio is None else f"×{ratio:.2f}")
            head = f"{r.throughput_rps:,.0f} req/s" + (f"  {ratio_s}" if ratio_s else "")
            p99 = r.latency_p99_ms
            p50 = r.latency_p50_ms
            tail = (f"p50 {p50:,.1f} ms · " if math.isfinite(p50) else "") + (
                f"p99 {p99:,.1f} ms" if math.isfinite(p99) else "p99 -")
            if r.errors_total:
                tail += f" · {r.errors_total:,} errors"
            avail = width - margin - vx
            big_h, small_h = big.pixelSize() * 1.4, small.pixelSize() * 1.4
            text(vx, cy - big_h, avail, big_h, elide(head, big, avail), big, _INK,
                 Qt.AlignmentFlag.AlignLeft | Qt.AlignmentFlag.AlignBottom)
            text(vx, cy + 2, avail, small_h, elide(tail, small, avail), small,
                 _FAILED if r.errors_total else _MUTED, Qt.AlignmentFlag.AlignLeft | Qt.AlignmentFlag.AlignTop)

        # baseline marker
        if base is not None and axis_max > 0:
            bx = plot_x + plot_w * base.throughput_rps / axis_max
            pen = QPen(QColor(_BASELINE), 2, Qt.PenStyle.DashLine)
            p.setPen(pen)
            p.drawLine(QPointF(bx, top - 8), QPointF(bx, top + row_h * n))

        when = time.strftime("%Y-%m-%d %H:%M", time.localtime(comparison.started_at or time.time()))
        foot = (f"stackpanel bench · {when} · ratio = throughput / {base.name if base else 'first profile'}"
                " · bars in orange are below 0.7 of it")
        foot_f = font(SMALLEST_TEXT_PX)
        text(margin, height - footer_h + 26, width - 2 * margin, 30, elide(foot, foot_f, width - 2 * margin),
             foot_f, _MUTED)
    finally:
        p.end()
    return image


def chart_png(comparison: Comparison, **kwargs: Any) -> bytes:
    """The chart as PNG bytes."""
    from PySide6.QtCore import QBuffer, QByteArray, QIODevice

    image = render_chart(comparison, **kwargs)
    data = QByteArray()
    buf = QBuffer(data)
    buf.open(QIODevice.OpenModeFlag.WriteOnly)
    if not image.save(buf, "PNG"):
        raise ChartError("Qt could not encode the chart as PNG")
    buf.close()
    return bytes(data.data())


def save_chart(comparison: Comparison, path: str | os.PathLike[str], **kwargs: Any) -> Path:
    """Write the chart as a PNG file (parent directories are created) and return its path."""
    out = Path(path)
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_bytes(chart_png(comparison, **kwargs))
    except OSError as exc:
        raise ChartError(f"cannot write the chart to {out}: {exc.strerror or exc}") from None
    return out

"""The tabs of the main window, in order: one entry per panel.

A panel is a widget made from the :class:`~stackpanel.qt.controller.StackController`; it connects
its own slots to the controller and its bridge, so adding one (a profile editor, a traces view)
is one more :class:`PanelSpec` here and touches neither the window nor the controller's callers.
A panel that remembers something between runs implements :class:`RemembersSettings`.
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol, runtime_checkable

from PySide6.QtCore import QSettings
from PySide6.QtWidgets import QWidget

from stackpanel.qt.compare_view import CompareView
from stackpanel.qt.controller import StackController
from stackpanel.qt.details import NodeDetails
from stackpanel.qt.editor import ProfileEditor
from stackpanel.qt.event_log import EventLog
from stackpanel.qt.load_panel import LoadPanel
from stackpanel.qt.log_view import LogView
from stackpanel.qt.plots import PlotsPanel
from stackpanel.qt.traces_view import TracesView


@runtime_checkable
class RemembersSettings(Protocol):
    def restore_settings(self, settings: QSettings) -> None: ...

    def save_settings(self, settings: QSettings) -> None: ...


@dataclass(frozen=True)
class PanelSpec:
    """A tab: its key (for lookups and settings), title, optional icon name, and how to make it."""

    key: str
    title: str
    make: Callable[[StackController], QWidget]
    icon: str | None = None


TAB_PANELS: tuple[PanelSpec, ...] = (
    PanelSpec("plots", "Plots", lambda c: PlotsPanel(controller=c)),
    PanelSpec("logs", "Logs", lambda c: LogView(controller=c)),
    PanelSpec("traces", "Traces", lambda c: TracesView(controller=c)),
    PanelSpec("node", "Node", lambda c: NodeDetails(controller=c)),
    PanelSpec("load", "Load", lambda c: LoadPanel(controller=c), icon="load"),
    PanelSpec("events", "Events", EventLog),
    PanelSpec("compare", "Compare", lambda c: CompareView(controller=c)),
    PanelSpec("editor", "Edit profile", lambda c: ProfileEditor(controller=c)),
)


@runtime_checkable
class GuardsUnsavedWork(Protocol):
    """A panel with work that closing the window would drop: ``may_close`` asks the user."""

    def may_close(self) -> bool: ...

"""Hand a profile's topology to the engines people deploy with: docker compose, systemd, process-compose.

Qt-free; the compose and systemd exporters render through :func:`stackpanel.core.render.render_stack`
and return an :class:`ExportPlan` (files and copied trees) that ``write(dir)`` puts on disk.
"""
from stackpanel.core.export.common import ExportError, ExportPlan
from stackpanel.core.export.compose import export_compose
from stackpanel.core.export.process_compose import export_process_compose
from stackpanel.core.export.systemd import export_systemd

__all__ = ["ExportError", "ExportPlan", "export_compose", "export_process_compose", "export_systemd"]

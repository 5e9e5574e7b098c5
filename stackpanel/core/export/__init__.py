"""Hand a profile's topology to the engines people deploy with: docker compose, systemd, process-compose.

Qt-free; the compose and systemd exporters render through :func:`stackpanel.core.render.render_stack`
and return an :class:`ExportPlan` (files and copied trees) that ``write(dir)`` puts on disk.
"""
from __future__ import annotations

from pathlib import Path
from typing import Literal

from stackpanel.core.export.common import ExportError, ExportPlan
from stackpanel.core.export.compose import export_compose
from stackpanel.core.export.process_compose import export_process_compose
from stackpanel.core.export.systemd import export_systemd
from stackpanel.core.profiles.schema import Profile

ExportKind = Literal["compose", "systemd", "process-compose"]
EXPORT_KINDS: tuple[ExportKind, ...] = ("compose", "systemd", "process-compose")

__all__ = ["EXPORT_KINDS", "ExportError", "ExportKind", "ExportPlan", "export", "export_compose",
           "export_process_compose", "export_systemd"]


def export(profile: Profile, kind: ExportKind, out: Path, name: str, *, publish_address: str = "127.0.0.1",
           run_dir: Path | None = None) -> str:
    """Write the export of `kind` to `out` (a directory; a file for process-compose) and say what
    was written and how to run it: the one path the CLI and the panel both take."""
    if kind == "process-compose":
        run = export_process_compose(profile, out, run_dir=run_dir)
        return f"wrote {out} (configs in {run}); run: process-compose -f {out} up"
    plan = export_compose(profile, name, publish_address=publish_address) if kind == "compose" else \
        export_systemd(profile, name)
    plan.write(out)
    return f"wrote {len(plan.files)} files into {out}; see {out / 'README.md'}"

"""The bench floor (above the session): bring profiles up in turn, load them, compare.

:mod:`.compare` drives a :class:`~stackpanel.core.session.StackSession` and the load generator;
:mod:`.report` holds the values it returns and their exports.
"""
from __future__ import annotations

from stackpanel.core.bench.compare import (
    BeforeStart,
    CompareError,
    Generator,
    ProfileSpec,
    app_worker_count,
    compare_profiles,
    free_port_offset,
    join_url,
    with_app_workers,
)
from stackpanel.core.bench.report import (
    CompareProgress,
    CompareSettings,
    Comparison,
    ProfileRun,
    ProgressCallback,
    WorkerShare,
)
from stackpanel.core.machine import machine_info

__all__ = [
    "BeforeStart",
    "CompareError",
    "CompareProgress",
    "CompareSettings",
    "Comparison",
    "Generator",
    "ProfileRun",
    "ProfileSpec",
    "ProgressCallback",
    "WorkerShare",
    "app_worker_count",
    "compare_profiles",
    "free_port_offset",
    "join_url",
    "machine_info",
    "with_app_workers",
]

"""Load generation: the built-in asyncio generator, the wrk adapter, and the loopback guard.

Qt-free. See :mod:`stackpanel.core.loadgen.generator` for the model and threading rules.
"""
from __future__ import annotations

from stackpanel.core.loadgen.errors import LoadConfigError, LoadgenError, LoadTargetError, WrkError
from stackpanel.core.loadgen.generator import (
    LoadConfig,
    LoadRun,
    build_request,
    new_event_loop,
    run_load,
    run_load_async,
    uvloop_available,
)
from stackpanel.core.loadgen.histogram import LatencyHistogram
from stackpanel.core.loadgen.http import ResponseParseError, ResponseParser
from stackpanel.core.loadgen.result import ErrorKind, LoadMode, LoadProgress, LoadResult
from stackpanel.core.loadgen.target import LoadTarget, parse_target
from stackpanel.core.loadgen.wrk import parse_wrk_output, run_wrk, wrk_available, wrk_command

__all__ = [
    "ErrorKind",
    "LatencyHistogram",
    "LoadConfig",
    "LoadConfigError",
    "LoadMode",
    "LoadProgress",
    "LoadResult",
    "LoadRun",
    "LoadTarget",
    "LoadTargetError",
    "LoadgenError",
    "ResponseParseError",
    "ResponseParser",
    "WrkError",
    "build_request",
    "new_event_loop",
    "parse_target",
    "parse_wrk_output",
    "run_load",
    "run_load_async",
    "run_wrk",
    "uvloop_available",
    "wrk_available",
    "wrk_command",
]

"""One request through every tier, from the access logs alone (no change to the app).

Every tier logs the same request id, its duration and the time it finished (see logformat), so
the lines of one id lay out as a waterfall: each tier's start (end − duration), its own time (its
duration minus the next tier's) and the hop between tiers. Resolution: nginx logs milliseconds,
Apache and the app tiers microseconds.
"""
from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

from stackpanel.core.metrics.tracing import Span, Trace, parse_span

__all__ = ["ACCESS_SUFFIX", "Span", "Trace", "find_trace", "recent_logs_dirs"]

ACCESS_SUFFIX = ".access.log"


def find_trace(request_id: str, logs_dirs: Iterable[Path]) -> Trace:
    """The spans of `request_id` in the access logs of the first run directory's logs that has it."""
    needle = f" {request_id} "
    for logs in logs_dirs:
        spans: list[Span] = []
        for log in sorted(logs.glob(f"*{ACCESS_SUFFIX}")):
            node = log.name.removesuffix(ACCESS_SUFFIX)
            try:
                with open(log, encoding="utf-8", errors="replace") as fh:
                    for line in fh:
                        if needle in line and line.split(" ", 5)[4:5] == [request_id]:
                            span = parse_span(node, line.rstrip("\n"))
                            if span is not None:
                                spans.append(span)
            except OSError:
                continue
        if spans:
            # outermost first: the edge started first and ran longest
            spans.sort(key=lambda s: (s.start, -s.duration))
            return Trace(request_id, tuple(spans))
    return Trace(request_id, ())


def recent_logs_dirs(runs_root: Path) -> list[Path]:
    """Every run's current logs, the most recently written first."""
    dirs = [d / "logs" for d in runs_root.iterdir() if (d / "logs").is_dir()] if runs_root.is_dir() else []
    return sorted(dirs, key=lambda d: max((p.stat().st_mtime for p in d.iterdir()), default=0), reverse=True)

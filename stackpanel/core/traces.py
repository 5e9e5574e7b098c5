"""One request through every tier, from the access logs alone (no change to the app).

Every tier logs the same request id, its duration and the time it finished (see logformat), so
the lines of one id lay out as a waterfall: each tier's start (end − duration), its own time (its
duration minus the next tier's) and the hop between tiers. Resolution: nginx logs milliseconds,
Apache and the app tiers microseconds.
"""
from __future__ import annotations

import math
from collections.abc import Iterable
from pathlib import Path

from stackpanel.core.metrics.tracing import Span, Trace, TraceCollector, TraceQuery, parse_span

__all__ = ["ACCESS_SUFFIX", "Span", "Trace", "entry_of", "find_trace", "recent_logs_dirs", "traces_from_logs"]

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


def entry_of(logs: Path) -> str | None:
    """The node in front: the one whose access log no other node's routes name."""
    nodes = {p.name.removesuffix(ACCESS_SUFFIX) for p in logs.glob(f"*{ACCESS_SUFFIX}")}
    routed: set[bytes] = set()
    for node in nodes:
        try:
            with open(logs / f"{node}{ACCESS_SUFFIX}", "rb") as fh:
                routed.update(fields[3] for fields in (line.split(b" ", 4) for line in fh) if len(fields) == 5)
        except OSError:
            continue
    fronts = sorted(n for n in nodes if n.encode() not in routed)
    return fronts[0] if len(fronts) == 1 else None


def traces_from_logs(logs: Path, limit: int = 1000) -> tuple[Trace, ...]:
    """Every request of a run's access logs assembled as the live collector does (the newest ``limit``),
    the newest first: what `stackpanel trace --otlp` exports after the fact."""
    entry = entry_of(logs)
    if entry is None:
        return ()
    files = {p.name.removesuffix(ACCESS_SUFFIX): p for p in logs.glob(f"*{ACCESS_SUFFIX}")}
    lines = {node: path.read_bytes().splitlines() for node, path in files.items()}
    total = sum(len(v) for v in lines.values())
    collector = TraceCollector(entry, recent_max=limit, slowest_max=1, failed_max=1,
                               sample_per_chunk=max(1, len(lines[entry])), pending_max=total + 1)
    for node in files:
        collector.add_node(node)
    for node in sorted(files, key=lambda n: n == entry):  # the inner tiers first, then the entry
        collector.feed(node, lines[node], now=0.0)
    collector.complete(now=math.inf)
    return collector.query(TraceQuery(), limit)

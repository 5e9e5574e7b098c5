"""One request through every tier, from the access logs alone (no change to the app).

Every tier logs the same request id, its duration and the time it finished (see logformat), so
the lines of one id lay out as a waterfall: each tier's start (end − duration), its own time (its
duration minus the next tier's) and the hop between tiers. Resolution: nginx logs milliseconds,
Apache and the app tiers microseconds.
"""
from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from stackpanel.core.metrics.ingest import parse_latency

ACCESS_SUFFIX = ".access.log"


@dataclass(frozen=True)
class Span:
    """One tier's part of a request."""

    node: str
    pid: int
    status: int
    start: float  # epoch seconds
    duration: float  # seconds
    route: str
    request: str  # method and path, for people

    @property
    def end(self) -> float:
        return self.start + self.duration


@dataclass(frozen=True)
class Trace:
    request_id: str
    spans: tuple[Span, ...]  # outermost first (the edge), then inwards

    def own_time(self, i: int) -> float:
        """Span i's duration minus the next tier's (what the tier itself spent)."""
        inner = self.spans[i + 1].duration if i + 1 < len(self.spans) else 0.0
        return max(0.0, self.spans[i].duration - inner)

    def format(self) -> str:
        if not self.spans:
            return f"request {self.request_id}: not found"
        t0 = self.spans[0].start
        lines = [f"request {self.request_id}: {self.spans[0].request}, {self.spans[0].duration * 1000:.2f} ms "
                 f"at the edge, {len(self.spans)} tier(s)",
                 f"{'node':<12} {'pid':>7} {'status':>6} {'start ms':>9} {'duration ms':>12} {'own ms':>8}  waterfall"]
        total = max(self.spans[0].duration, 1e-9)
        for i, s in enumerate(self.spans):
            offset = (s.start - t0) * 1000
            left = round((s.start - t0) / total * 40)
            width = max(1, round(s.duration / total * 40))
            bar = " " * max(0, left) + "█" * width
            lines.append(f"{s.node:<12} {s.pid:>7} {s.status:>6} {offset:>9.2f} {s.duration * 1000:>12.2f} "
                         f"{self.own_time(i) * 1000:>8.2f}  {bar}")
        return "\n".join(lines)


def _span(node: str, line: str) -> Span | None:
    fields = line.split(" ", 5)
    if len(fields) < 6:
        return None
    pid, status, seconds, route, _rid, rest = fields
    duration = parse_latency(seconds.encode())
    *request, end = rest.rsplit(" ", 1)
    try:
        end_time = float(end)
    except ValueError:
        return None
    if duration is None or not pid.isdigit() or not status.isdigit():
        return None
    return Span(node, int(pid), int(status), end_time - duration, duration, route, " ".join(request))


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
                            span = _span(node, line.rstrip("\n"))
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

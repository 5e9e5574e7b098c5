"""Live traces: one request through every tier of its path, assembled from the access logs the
metrics engine already tails (no second reader, no change to the app).

Every tier logs the request id, its duration and the time it finished (:mod:`stackpanel.core.logformat`),
and its ``route`` field names the node it sent the request on to (``static`` / ``-`` end the path).
So the lines of one id, followed from the entry node along the routes, are a trace.

Cost, on the engine's tick (the same chunks of lines the counts come from):

* an inner tier's lines are indexed by request id in C (``dict(zip(ids, lines))``) and kept for
  :attr:`TraceCollector.keep_s` (nginx flushes its log once a second, so the entry's line can come
  a second after the inner tiers'); they are parsed only when their request is kept;
* the entry's lines are split in C too; statuses and durations are compared in numpy, and only
  the lines kept are parsed in Python: a bounded sample per chunk (every line at a human's pace),
  every failed one (status ≥ 500) and any slower than the slowest kept so far.

Bounded: ``recent_max`` sampled traces, the ``slowest_max`` slowest of the run, the ``failed_max``
latest failed ones; pending lines by :attr:`keep_s` and ``pending_max`` lines per node.
"""
from __future__ import annotations

import heapq
import itertools
import math
import random
import threading
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from operator import itemgetter, methodcaller
from typing import Any

import numpy as np

from stackpanel.core.logformat import APP_ROUTE, STATIC_ROUTE
from stackpanel.core.metrics.ingest import parse_latency
from stackpanel.core.pubsub import Subscribers

_SPLIT6 = methodcaller("split", b" ", 5)
_SPLIT4 = methodcaller("split", b" ", 3)
_ID = itemgetter(4)
_STATUS = itemgetter(1)
_SECONDS = itemgetter(2)
#: defaults: traces kept of each kind
RECENT_MAX = 500
SLOWEST_MAX = 20
FAILED_MAX = 200
#: sampled traces per chunk of the entry's log (one chunk per engine tick): every request at a
#: human's pace, a systematic sample under load
SAMPLE_PER_CHUNK = 16
#: how long an inner tier's line waits for its entry line (nginx flushes once a second), and an
#: entry line for the inner tiers' (they log after their response is out, a few ms later)
KEEP_S = 3.0
#: per inner node (~180 bytes each with the index: ~18 MB at most); under more load than that the
#: oldest lines go first and their traces name the tier as missing
PENDING_MAX = 100_000


@dataclass(frozen=True)
class Span:
    """One tier's part of a request."""

    node: str
    pid: int
    status: int
    start: float  # epoch seconds
    duration: float  # seconds
    route: str
    request: str  # method and path, for people: GET "/api/x?y=1"

    @property
    def end(self) -> float:
        return self.start + self.duration

    @property
    def method(self) -> str:
        return self.request.partition(" ")[0]

    @property
    def target(self) -> str:
        """Path and query as the tier logged them."""
        return self.request.partition(" ")[2].strip('"')


@dataclass(frozen=True)
class Trace:
    request_id: str
    spans: tuple[Span, ...]  # outermost first (the edge), then inwards
    #: nodes the routes named that logged nothing for this id within the wait (a tier that died,
    #: a request it never got)
    missing: tuple[str, ...] = ()

    @property
    def root(self) -> Span:
        return self.spans[0]

    @property
    def duration(self) -> float:
        return self.spans[0].duration if self.spans else 0.0

    @property
    def start(self) -> float:
        return self.spans[0].start if self.spans else 0.0

    @property
    def status(self) -> int:
        """The status the client got (the entry's)."""
        return self.spans[0].status if self.spans else 0

    @property
    def path(self) -> str:
        return self.spans[0].target.partition("?")[0] if self.spans else ""

    @property
    def failed(self) -> bool:
        return any(s.status >= 500 for s in self.spans)

    @property
    def nodes(self) -> tuple[str, ...]:
        return tuple(s.node for s in self.spans)

    def own_time(self, i: int) -> float:
        """Span i's duration minus the next tier's (what the tier itself spent)."""
        inner = self.spans[i + 1].duration if i + 1 < len(self.spans) else 0.0
        return max(0.0, self.spans[i].duration - inner)

    def hop_time(self, i: int) -> float | None:
        """From tier i's start to tier i+1's (the proxy's work before it forwarded, plus the network):
        None for the last tier. Clamped at 0 (the tiers' clocks have different resolutions)."""
        if i + 1 >= len(self.spans):
            return None
        return max(0.0, self.spans[i + 1].start - self.spans[i].start)

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
        if self.missing:
            lines.append(f"(no line from {', '.join(self.missing)} for this id)")
        return "\n".join(lines)


def parse_span(node: str, line: str) -> Span | None:
    """One access line (the common format, ending with its finish time) as a span; None if it is not one."""
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
    if duration is None or not pid.isdigit() or not status.isdigit() or not math.isfinite(end_time):
        return None
    return Span(node, int(pid), int(status), end_time - duration, duration, route, " ".join(request))


def trace_to_json(trace: Trace) -> dict[str, Any]:
    """The shape `up --traces FILE` writes, one object a line (README: Traces)."""
    return {
        "request_id": trace.request_id,
        "start": trace.start,
        "duration": trace.duration,
        "status": trace.status,
        "method": trace.root.method if trace.spans else "",
        "path": trace.path,
        "failed": trace.failed,
        "missing": list(trace.missing),
        "spans": [
            {"node": s.node, "pid": s.pid, "status": s.status, "start": s.start, "duration": s.duration,
             "own": trace.own_time(i), "hop": trace.hop_time(i), "route": s.route, "request": s.request}
            for i, s in enumerate(trace.spans)
        ],
    }


@dataclass(frozen=True)
class TraceQuery:
    """Filters of :meth:`TraceCollector.query`; every one that is set must hold."""

    path: str | None = None  # substring of the path
    status: str | None = None  # "500", "5xx" or "failed"
    node: str | None = None  # a tier on the path
    min_duration: float | None = None  # seconds, at the edge
    request_id: str | None = None  # substring of the id

    def matches(self, t: Trace) -> bool:
        if self.path and self.path not in t.path:
            return False
        if self.status:
            s = self.status.lower()
            if s == "failed":
                if not t.failed:
                    return False
            elif s.endswith("xx"):
                if str(t.status)[:1] != s[:1]:
                    return False
            elif str(t.status) != s:
                return False
        if self.node and self.node not in t.nodes:
            return False
        if self.min_duration is not None and t.duration < self.min_duration:
            return False
        return not (self.request_id and self.request_id not in t.request_id)


@dataclass
class _Pending:
    """A kept request whose inner tiers have not all logged yet."""

    request_id: bytes
    since: float
    spans: list[Span]
    want: str | None  # the next node on the path, None when complete
    kinds: set[str] = field(default_factory=set)  # "sample", "slow", "failed"


class TraceCollector:
    """Assembles traces from the lines the metrics engine hands over (:meth:`feed`, engine thread)
    and keeps bounded sets of them; :meth:`query` and :meth:`get` may be called from any thread.
    :meth:`subscribe` callbacks get each completed trace, on the engine's thread, outside its locks."""

    def __init__(self, entry: str, *, recent_max: int = RECENT_MAX, slowest_max: int = SLOWEST_MAX,
                 failed_max: int = FAILED_MAX, sample_per_chunk: int = SAMPLE_PER_CHUNK, keep_s: float = KEEP_S,
                 pending_max: int = PENDING_MAX) -> None:
        self.entry = entry
        self.keep_s = keep_s
        self.sample_per_chunk = sample_per_chunk
        self.pending_max = pending_max
        self._nodes: set[str] = {entry}
        self._lock = threading.Lock()  # the kept sets (queries from any thread)
        self._recent: deque[Trace] = deque(maxlen=recent_max)
        self._failed: deque[Trace] = deque(maxlen=failed_max)
        self._failed_max = failed_max
        self._slowest: list[tuple[float, int, Trace]] = []  # min-heap of the slowest
        self._slowest_max = slowest_max
        self._seq = itertools.count()
        # engine thread only:
        self._lines: dict[str, deque[tuple[float, dict[bytes, bytes]]]] = {}  # inner node -> chunks by id
        self._waiting: dict[bytes, _Pending] = {}
        self._done: list[Trace] = []
        self._subscribers: Subscribers[Trace] = Subscribers()
        self.completed_total = 0
        self.now = 0.0

    # -- setup ----------------------------------------------------------------------------------

    def add_node(self, name: str) -> None:
        self._nodes.add(name)
        if name != self.entry:
            self._lines.setdefault(name, deque())

    def subscribe(self, callback: Callable[[Trace], None]) -> Callable[[], None]:
        return self._subscribers.add(callback)

    def reset(self) -> None:
        """A new run: forget every trace and pending line."""
        with self._lock:
            self._recent.clear()
            self._failed.clear()
            self._slowest.clear()
        for chunks in self._lines.values():
            chunks.clear()
        self._waiting.clear()
        self._done.clear()

    # -- ingest (engine thread) -------------------------------------------------------------------

    def feed(self, node: str, lines: list[bytes], now: float | None = None) -> None:
        """The complete lines a node's log gained (what the counts were made from); ``now`` is the
        engine clock (default: :attr:`now`, which the engine sets at each tick)."""
        if not lines or node not in self._nodes:
            return
        now = self.now if now is None else now
        if node == self.entry:
            self._feed_entry(lines, now)
            return
        try:
            chunk = dict(zip(map(_ID, map(_SPLIT6, lines)), lines, strict=True))  # in C
        except IndexError:  # a short line somewhere: keep the ones with an id
            chunk = {p[4]: ln for ln in lines if len(p := ln.split(b" ", 5)) == 6}
        chunk.pop(b"-", None)
        chunks = self._lines[node]
        chunks.append((now, chunk))
        held = sum(len(c) for _, c in chunks)
        while len(chunks) > 1 and (chunks[0][0] < now - self.keep_s or held > self.pending_max):  # keep the newest
            held -= len(chunks.popleft()[1])
        for rid in chunk.keys() & self._waiting.keys():
            pending = self._waiting[rid]
            if pending.want == node:
                self._advance(pending)

    def _feed_entry(self, lines: list[bytes], now: float) -> None:
        # only status and seconds for every line (in C); the id and the rest for the lines kept
        try:
            heads = list(map(_SPLIT4, lines))
            codes = np.array(list(map(_STATUS, heads)), dtype="S3")
            durations = _durations(list(map(_SECONDS, heads)))
        except IndexError:  # a short line somewhere: drop those
            lines = [ln for ln in lines if ln.count(b" ") >= 5]
            if not lines:
                return
            heads = list(map(_SPLIT4, lines))
            codes = np.array(list(map(_STATUS, heads)), dtype="S3")
            durations = _durations(list(map(_SECONDS, heads)))
        keep: dict[int, set[str]] = {}
        n = len(lines)
        step = -(-n // self.sample_per_chunk) if self.sample_per_chunk > 0 else 0
        if step:
            for i in range(random.randrange(step) if step > 1 else 0, n, step):
                keep.setdefault(i, set()).add("sample")
        for i in np.flatnonzero(codes >= b"500")[-self._failed_max:].tolist():  # older ones would be dropped
            keep.setdefault(i, set()).add("failed")
        with self._lock:
            floor = self._slowest[0][0] if len(self._slowest) >= self._slowest_max else -1.0
        slow = np.flatnonzero(durations > floor)
        if len(slow) > self._slowest_max:  # only the slowest of them can enter the set
            slow = slow[np.argpartition(durations[slow], -self._slowest_max)[-self._slowest_max:]]
        for i in slow.tolist():
            keep.setdefault(i, set()).add("slow")
        for i, kinds in keep.items():
            fields = lines[i].split(b" ", 5)
            rid = fields[4] if len(fields) == 6 else b"-"
            if rid == b"-" or rid in self._waiting:
                continue
            span = parse_span(self.entry, lines[i].decode("utf-8", "replace"))
            if span is None:
                continue
            pending = _Pending(rid, now, [span], _next_node(span, self._nodes), kinds)
            self._waiting[rid] = pending
            self._advance(pending)

    def _advance(self, pending: _Pending) -> None:
        """Follow the routes through the inner tiers' lines held for this id."""
        while pending.want is not None:
            line = next((c[pending.request_id] for _, c in reversed(self._lines.get(pending.want, ()))
                         if pending.request_id in c), None)
            if line is None:
                return
            span = parse_span(pending.want, line.decode("utf-8", "replace"))
            if span is None:  # a line that is not in the format: that tier's part is unknown
                self._finish(pending, (pending.want,))
                return
            pending.spans.append(span)
            pending.want = _next_node(span, self._nodes)
            if pending.want in pending_nodes(pending):  # a loop in the routes: stop
                break
        self._finish(pending, ())

    def complete(self, now: float) -> None:
        """Finish the requests whose inner tiers have not logged within :attr:`keep_s` (call once a tick)."""
        for pending in [p for p in self._waiting.values() if p.since < now - self.keep_s]:
            self._finish(pending, (pending.want,) if pending.want else ())

    def _finish(self, pending: _Pending, missing: tuple[str | None, ...]) -> None:
        self._waiting.pop(pending.request_id, None)
        trace = Trace(pending.request_id.decode("utf-8", "replace"), tuple(pending.spans),
                      tuple(m for m in missing if m))
        with self._lock:
            if "sample" in pending.kinds:
                self._recent.append(trace)
            if "failed" in pending.kinds or trace.failed:
                self._failed.append(trace)
            if "slow" in pending.kinds:
                item = (trace.duration, next(self._seq), trace)
                if len(self._slowest) < self._slowest_max:
                    heapq.heappush(self._slowest, item)
                elif item[0] > self._slowest[0][0]:
                    heapq.heapreplace(self._slowest, item)
        self._done.append(trace)
        self.completed_total += 1

    def publish(self) -> None:
        """Hand the traces completed since the last call to subscribers (outside the engine's locks)."""
        done, self._done = self._done, []
        for trace in done:
            self._subscribers.publish(trace)

    # -- queries (any thread) ---------------------------------------------------------------------

    def traces(self) -> tuple[Trace, ...]:
        """Every kept trace once (sampled, slowest, failed), the newest first."""
        with self._lock:
            kept = [*self._recent, *self._failed, *(t for _, _, t in self._slowest)]
        unique = {t.request_id: t for t in sorted(kept, key=lambda t: t.start)}
        return tuple(reversed(unique.values()))

    def slowest(self) -> tuple[Trace, ...]:
        with self._lock:
            return tuple(t for _, _, t in sorted(self._slowest, reverse=True))

    def failed(self) -> tuple[Trace, ...]:
        with self._lock:
            return tuple(reversed(self._failed))

    def query(self, q: TraceQuery = TraceQuery(), limit: int | None = None) -> tuple[Trace, ...]:
        found = [t for t in self.traces() if q.matches(t)]
        return tuple(found[:limit] if limit is not None else found)

    def get(self, request_id: str) -> Trace | None:
        return next((t for t in self.traces() if t.request_id == request_id), None)

    def sizes(self) -> dict[str, int]:
        """How much is held (bounds checked by tests and the memory benchmark)."""
        with self._lock:
            held = {"recent": len(self._recent), "failed": len(self._failed), "slowest": len(self._slowest)}
        held["pending_lines"] = sum(len(c) for chunks in self._lines.values() for _, c in chunks)
        held["waiting"] = len(self._waiting)
        return held


def pending_nodes(pending: _Pending) -> set[str]:
    return {s.node for s in pending.spans}


def _next_node(span: Span, nodes: Iterable[str]) -> str | None:
    route = span.route
    if route in (STATIC_ROUTE, APP_ROUTE) or route not in nodes:
        return None
    return route


def _durations(fields: list[bytes]) -> np.ndarray:
    """Seconds per field, aligned with ``fields`` (NaN where there is none): one tier's log is uniform,
    converted in C; anything odd field by field."""
    try:
        if fields[0].endswith(b"us"):
            return np.fromiter(map(int, map(methodcaller("removesuffix", b"us"), fields)), np.float64,
                               len(fields)) * 1e-6
        return np.fromiter(map(float, fields), np.float64, len(fields))
    except ValueError:
        return np.array([math.nan if (v := parse_latency(f)) is None else v for f in fields], np.float64)

"""The metrics engine: process sampling + access-log ingest + ring buffers -> immutable snapshots.

The engine reads only files and /proc and never talks to Qt. One ``tick`` = sample every known
process once, ingest what each node's access log gained, append one point to each ring buffer and
build a :class:`MetricsSnapshot` (frozen dataclasses, tuples, read-only mappings and read-only
numpy copies) that can be handed to any thread.

Threading rules
---------------
* ``register_node`` / ``unregister_node`` / ``set_workers`` / ``subscribe`` / ``snapshot`` may be
  called from any thread. ``set_workers`` and ``snapshot`` never wait for a tick in progress.
* ``tick`` serialises itself; call it yourself (tests, CLI) or let ``run_in_thread`` call it.
* Subscribers are called on the ticking thread (the engine's daemon thread under
  ``run_in_thread``), after the tick, outside every engine lock. They must be cheap and must not
  block (a Qt bridge should only emit a queued signal). Exceptions from subscribers are logged
  and swallowed.
"""
from __future__ import annotations

import functools
import logging
import math
import os
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import Any

import numpy as np
import numpy.typing as npt

from stackpanel.core.metrics.ingest import AccessLogIngest, IngestBatch
from stackpanel.core.metrics.ringbuffer import (
    DEFAULT_HISTORY_SECONDS,
    MAX_RATE_HZ,
    TimeSeriesRing,
    capacity_for,
)
from stackpanel.core.metrics.sampler import ProcessSample, ProcessSampler, Role
from stackpanel.core.metrics.tracing import TraceCollector
from stackpanel.core.pubsub import Subscribers

log = logging.getLogger("stackpanel.metrics")

MIN_RATE_HZ = 0.5
#: Latency values kept per node over the sliding window (spread over its ticks).
LATENCY_SAMPLES_PER_WINDOW = 4096
#: Per node, request counts of at most this many workers that have gone are kept by pid; older
#: ones are added up under pid 0 (``FOLDED_PID``), so a stack that replaces workers all the time
#: (gunicorn ``max_requests``, reloads) does not grow the engine's memory without bound.
KEEP_GONE_PIDS = 128

FloatArray = npt.NDArray[np.float64]
_EMPTY: Mapping[Any, Any] = MappingProxyType({})


# --------------------------------------------------------------------------------------------------
# Snapshot types (immutable)
# --------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class WorkerMetrics:
    node: str
    pid: int
    role: Role
    #: CPU % over the last interval, 100 = one core; None on a process's first sample
    cpu_percent: float | None
    rss_bytes: int
    #: requests logged by this pid per second over the last interval
    rps: float
    #: requests logged by this pid since the node was registered
    requests_total: int


@dataclass(frozen=True)
class NodeMetrics:
    name: str
    kind: str
    rps: float
    requests_total: int
    #: access-log lines that were not in the expected format (skipped)
    unparseable_total: int
    #: every pid seen in the log (including workers that have gone): sums to ``requests_total``.
    #: Beyond ``KEEP_GONE_PIDS`` gone workers, the oldest are added up under pid 0.
    requests_by_pid: Mapping[int, int]
    #: "2xx" -> count since registration / per second over the last interval
    status_totals: Mapping[str, int]
    status_rates: Mapping[str, float]
    #: seconds, over the sliding latency window; None when there is no duration in the log
    latency_p50: float | None
    latency_p95: float | None
    latency_p99: float | None
    #: sampled latency values behind the percentiles
    latency_samples: int
    #: sums over the node's live processes (master + workers)
    cpu_percent: float | None
    rss_bytes: int
    process_count: int
    #: WebSockets open right now (app tiers that count them; 0 elsewhere): long-lived, so req/s misses them
    websockets_open: int = 0


@dataclass(frozen=True)
class EdgeMetrics:
    """Requests a node sent along one route (upstream node name, ``static``, or ``-`` = the app)."""

    node: str
    route: str
    rps: float
    requests_total: int
    errors_total: int  # 5xx
    error_rps: float
    #: 429: requests a rate limit turned away (their own kind: the proxy working, not the app failing)
    limited_total: int = 0
    limited_rps: float = 0.0
    #: of a balanced route: this backend's part of the requests the route's backends got (0..1);
    #: None for a route with one backend
    share: float | None = None


@dataclass(frozen=True)
class WorkerHistory:
    node: str
    pid: int
    t: FloatArray  # engine clock (monotonic) seconds; plot ``t - snapshot.time``
    cpu_percent: FloatArray  # NaN where unknown
    rps: FloatArray
    rss_bytes: FloatArray


@dataclass(frozen=True)
class NodeHistory:
    node: str
    t: FloatArray
    rps: FloatArray
    latency_p50: FloatArray  # seconds, NaN where unknown
    latency_p95: FloatArray
    latency_p99: FloatArray
    rss_bytes: FloatArray
    cpu_percent: FloatArray


class _HistorySource:
    """The rings a snapshot's histories come from, copied on first read (then kept).

    A tick publishes only what changed (its values, in ``workers``/``nodes``/``edges``); copying
    every series' whole history for every tick cost ~5 MB of copies per tick at 10 Hz with 16
    workers, mostly for nobody (the CLI never reads them, the plots only when visible). A history
    read later than its own tick is cut at the snapshot's time; points the ring has dropped since
    are missing at the old end.
    """

    __slots__ = ("_lock", "_node_cache", "_nodes", "_until", "_worker_cache", "_workers")

    def __init__(self, lock: threading.Lock, until: float,
                 workers: tuple[tuple[str, int, TimeSeriesRing], ...],
                 nodes: tuple[tuple[str, TimeSeriesRing], ...]) -> None:
        self._lock = lock
        self._until = until
        self._workers = workers
        self._nodes = nodes
        self._worker_cache: tuple[WorkerHistory, ...] | None = None
        self._node_cache: tuple[NodeHistory, ...] | None = None

    def _copy(self, ring: TimeSeriesRing) -> tuple[FloatArray, FloatArray]:
        with self._lock:
            t, v = ring.copy_view()
        end = int(np.searchsorted(t, self._until, side="right"))
        return t[:end], v[:end]

    def workers(self) -> tuple[WorkerHistory, ...]:
        if self._worker_cache is None:
            out = []
            for node, pid, ring in self._workers:
                t, v = self._copy(ring)
                out.append(WorkerHistory(node, pid, t, v[:, 0], v[:, 1], v[:, 2]))
            self._worker_cache = tuple(out)
        return self._worker_cache

    def nodes(self) -> tuple[NodeHistory, ...]:
        if self._node_cache is None:
            out = []
            for node, ring in self._nodes:
                t, v = self._copy(ring)
                out.append(NodeHistory(node, t, *(v[:, i] for i in range(len(_NODE_CHANNELS)))))
            self._node_cache = tuple(out)
        return self._node_cache


@dataclass(frozen=True)
class MetricsSnapshot:
    """One tick: its values, and (read on demand) every series' history up to it."""

    time: float  # engine clock (time.monotonic by default)
    wall_time: float  # time.time() at the tick, for exports
    #: seconds since the previous tick; None on the first tick (rates are then 0)
    interval: float | None
    workers: tuple[WorkerMetrics, ...]
    nodes: tuple[NodeMetrics, ...]
    edges: tuple[EdgeMetrics, ...]
    _history: _HistorySource | None = field(default=None, repr=False, compare=False)

    @property
    def worker_history(self) -> tuple[WorkerHistory, ...]:
        """Per live process, its series (read-only arrays), copied on first access."""
        return self._history.workers() if self._history is not None else ()

    @property
    def node_history(self) -> tuple[NodeHistory, ...]:
        """Per node, its series (read-only arrays), copied on first access."""
        return self._history.nodes() if self._history is not None else ()

    def node(self, name: str) -> NodeMetrics | None:
        return next((n for n in self.nodes if n.name == name), None)

    def workers_of(self, node: str) -> tuple[WorkerMetrics, ...]:
        return tuple(w for w in self.workers if w.node == node)

    def edge(self, node: str, route: str) -> EdgeMetrics | None:
        return next((e for e in self.edges if e.node == node and e.route == route), None)

    def edges_of(self, node: str) -> tuple[EdgeMetrics, ...]:
        return tuple(e for e in self.edges if e.node == node)


EMPTY_SNAPSHOT = MetricsSnapshot(0.0, 0.0, None, (), (), ())


def _none_if_nan(x: float | None) -> float | None:
    return None if x is None or math.isnan(x) else x


def snapshot_to_json(snapshot: MetricsSnapshot) -> dict[str, Any]:
    """A JSON-serialisable dict (one JSON line per snapshot): per worker node, pid, role, cpu (%,
    null when unknown), rss (bytes), rps, requests; per node and per edge the headline figures."""
    return {
        "t": snapshot.wall_time,
        "interval": snapshot.interval,
        "workers": [
            {
                "node": w.node,
                "pid": w.pid,
                "role": w.role,
                "cpu": _none_if_nan(w.cpu_percent),
                "rss": w.rss_bytes,
                "rps": w.rps,
                "requests": w.requests_total,
            }
            for w in snapshot.workers
        ],
        "nodes": [
            {
                "node": n.name,
                "kind": n.kind,
                "rps": n.rps,
                "requests": n.requests_total,
                "unparseable": n.unparseable_total,
                "status": dict(n.status_totals),
                "websockets_open": n.websockets_open,
                "p50": n.latency_p50,
                "p95": n.latency_p95,
                "p99": n.latency_p99,
                "cpu": _none_if_nan(n.cpu_percent),
                "rss": n.rss_bytes,
            }
            for n in snapshot.nodes
        ],
        "edges": [
            {"node": e.node, "route": e.route, "rps": e.rps, "requests": e.requests_total, "errors": e.errors_total,
             "rate_limited": e.limited_total, **({"share": e.share} if e.share is not None else {})}
            for e in snapshot.edges
        ],
    }


# --------------------------------------------------------------------------------------------------
# Helpers
# --------------------------------------------------------------------------------------------------


def weighted_percentiles(values: FloatArray, weights: FloatArray, qs: Iterable[float]) -> list[float]:
    """Percentiles (``qs`` in 0..100) of ``values`` where value ``i`` counts ``weights[i]`` times
    (lower/"inverted CDF" definition: the smallest value whose cumulative weight reaches q %)."""
    order = np.argsort(values, kind="stable")
    v = values[order]
    cw = np.cumsum(weights[order])
    targets = np.asarray(list(qs), dtype=np.float64) / 100.0 * cw[-1]
    idx = np.searchsorted(cw, targets, side="left").clip(0, len(v) - 1)
    return [float(x) for x in v[idx]]


def _nan(x: float | None) -> float:
    return math.nan if x is None else x


@dataclass(frozen=True)
class _Tick:
    now: float
    interval: float | None  # None on the first tick or when the clock did not move

    def rate(self, n: int) -> float:
        return n / self.interval if self.interval else 0.0


_NODE_CHANNELS = ("rps", "p50", "p95", "p99", "rss", "cpu")
_WORKER_CHANNELS = ("cpu", "rps", "rss")


class _NodeState:
    def __init__(self, name: str, kind: str, ingest: AccessLogIngest | None, routes: Iterable[str],
                 balanced: Iterable[Iterable[str]] = ()):
        self.name = name
        self.kind = kind
        self.ingest = ingest
        self.routes: dict[str, None] = dict.fromkeys(routes)
        #: route tag → the tags of the balanced route it belongs to
        self.groups: dict[str, tuple[str, ...]] = {t: tuple(g) for g in map(tuple, balanced) for t in g}
        self.master: int | None = None
        self.workers: tuple[int, ...] = ()
        self.latency_window: deque[tuple[float, FloatArray, float]] = deque()
        self.ring: TimeSeriesRing | None = None
        self.websockets_dir: Path | None = None

    def websockets_open(self) -> int:
        """The live workers' counts (a gone worker's file is stale: its connections died with it)."""
        if self.websockets_dir is None:
            return 0
        total = 0
        for pid in self.workers or ((self.master,) if self.master is not None else ()):
            try:
                total += int((self.websockets_dir / str(pid)).read_text() or 0)
            except (OSError, ValueError):
                continue
        return total

    def pids(self) -> list[tuple[int, Role]]:
        out: list[tuple[int, Role]] = []
        if self.master is not None:
            out.append((self.master, "master"))
        out.extend((p, "worker") for p in self.workers if p != self.master)
        return out


# --------------------------------------------------------------------------------------------------
# Engine
# --------------------------------------------------------------------------------------------------


class MetricsEngine:
    """Combines :class:`ProcessSampler`, one :class:`AccessLogIngest` per node and ring buffers."""

    def __init__(
        self,
        *,
        history_seconds: float = DEFAULT_HISTORY_SECONDS,
        rate_hz: float = 1.0,
        latency_window_s: float = 10.0,
        clock: Callable[[], float] = time.monotonic,
        sampler: ProcessSampler | None = None,
        traces: TraceCollector | None = None,
    ) -> None:
        self._check_rate(rate_hz)
        #: assembles traces from the same lines the counts are made of (None: no tracing)
        self.traces = traces
        self.history_seconds = history_seconds
        self.latency_window_s = latency_window_s
        self._rate_hz = rate_hz
        self._clock = clock
        self._sampler = sampler if sampler is not None else ProcessSampler(clock=clock)
        self._lock = threading.Lock()  # config: nodes, members, subscribers, latest snapshot
        self._tick_lock = threading.Lock()  # one tick at a time; node (un)registration
        self._rings_lock = threading.Lock()  # ring appends (tick) vs history copies (any thread)
        self._nodes: dict[str, _NodeState] = {}
        self._worker_rings: dict[tuple[str, int], TimeSeriesRing] = {}
        self._subscribers: Subscribers[MetricsSnapshot] = Subscribers()
        self._last_tick: float | None = None
        self._latest = EMPTY_SNAPSHOT
        self._thread: threading.Thread | None = None
        self._stop = threading.Event()

    # -- configuration (any thread) -----------------------------------------------------------------

    @staticmethod
    def _check_rate(hz: float) -> None:
        if not (MIN_RATE_HZ <= hz <= MAX_RATE_HZ):
            raise ValueError(f"sample rate must be between {MIN_RATE_HZ} and {MAX_RATE_HZ} Hz, got {hz}")

    def _latency_sample_max(self) -> int:
        ticks = max(1.0, self.latency_window_s * self._rate_hz)
        return max(32, math.ceil(LATENCY_SAMPLES_PER_WINDOW / ticks))

    def register_node(
        self,
        name: str,
        kind: str,
        access_log_path: str | os.PathLike[str] | None,
        routes: Iterable[str] = (),
        websockets_dir: str | os.PathLike[str] | None = None,
        balanced: Iterable[Iterable[str]] = (),
    ) -> None:
        """Watch a node. ``routes`` are the route names its log will carry (edges are listed from
        the start, at 0); routes seen in the log that are not listed are added as they appear.
        ``balanced``: the backends of each balanced route, whose edges report their ``share``."""
        ingest = self._new_ingest(name, access_log_path) if access_log_path is not None else None
        if self.traces is not None:
            self.traces.add_node(name)
        with self._tick_lock, self._lock:
            if name in self._nodes:
                if ingest is not None:
                    ingest.close()
                raise ValueError(f"node {name!r} is already registered")
            self._nodes[name] = _NodeState(name, kind, ingest, routes, balanced)
            self._nodes[name].websockets_dir = Path(websockets_dir) if websockets_dir is not None else None

    def _new_ingest(self, name: str, path: str | os.PathLike[str]) -> AccessLogIngest:
        ingest = AccessLogIngest(path, latency_sample_max=self._latency_sample_max())
        if self.traces is not None:
            ingest.line_sink = functools.partial(self.traces.feed, name)
        return ingest

    def restart_counts(self) -> None:
        """A new run of the same stack: every node's counts start again from its (new, empty) log."""
        with self._tick_lock, self._lock:
            for node in self._nodes.values():
                if node.ingest is not None and node.ingest.tailer is not None:
                    path = node.ingest.tailer.path
                    node.ingest.close()
                    node.ingest = self._new_ingest(node.name, path)
                node.latency_window.clear()
            if self.traces is not None:
                self.traces.reset()

    def unregister_node(self, name: str) -> None:
        with self._tick_lock, self._lock:
            node = self._nodes.pop(name, None)
            for key in [k for k in self._worker_rings if k[0] == name]:
                del self._worker_rings[key]
        self._sampler.remove_node(name)
        if node is not None and node.ingest is not None:
            node.ingest.close()

    def set_workers(self, node: str, master_pid: int | None, worker_pids: Iterable[int]) -> None:
        """Tell the engine which processes make up ``node`` now (call whenever workers change)."""
        workers = tuple(dict.fromkeys(worker_pids))
        with self._lock:
            state = self._nodes.get(node)
            if state is None:
                raise KeyError(f"node {node!r} is not registered")
            state.master = master_pid
            state.workers = workers
        self._sampler.set_node(node, master_pid, workers)

    def subscribe(self, callback: Callable[[MetricsSnapshot], None]) -> Callable[[], None]:
        """Call ``callback(snapshot)`` after every tick (on the ticking thread). Returns unsubscribe."""
        return self._subscribers.add(callback)

    def snapshot(self) -> MetricsSnapshot:
        """The snapshot of the latest tick (``EMPTY_SNAPSHOT`` before the first)."""
        with self._lock:
            return self._latest

    # -- ticking ------------------------------------------------------------------------------------

    def tick(self, now: float | None = None) -> MetricsSnapshot:
        """One sample + ingest step; appends to the ring buffers, publishes and returns the snapshot."""
        with self._tick_lock:
            snap = self._tick(self._clock() if now is None else now)
            with self._lock:
                self._latest = snap
        self._subscribers.publish(snap)  # outside every engine lock
        if self.traces is not None:
            self.traces.publish()
        return snap

    def _tick(self, now: float) -> MetricsSnapshot:
        wall = time.time()
        interval = None if self._last_tick is None else now - self._last_tick
        tick = _Tick(now, interval if interval is not None and interval > 0 else None)
        self._last_tick = now
        with self._lock:
            nodes = list(self._nodes.values())
            members = {n.name: n.pids() for n in nodes}
        samples = {(s.node, s.pid): s for s in self._sampler.sample()}
        sample_max = self._latency_sample_max()
        if self.traces is not None:
            self.traces.now = now

        workers: list[WorkerMetrics] = []
        node_metrics: list[NodeMetrics] = []
        edges: list[EdgeMetrics] = []
        points: list[tuple[TimeSeriesRing, tuple[float, ...]]] = []
        worker_series: list[tuple[str, int, TimeSeriesRing]] = []
        node_series: list[tuple[str, TimeSeriesRing]] = []
        for node in nodes:
            batch, totals = self._ingest(node, members[node.name], sample_max)
            procs = self._processes(node, members[node.name], samples, batch, totals, tick)
            nm = self._node_metrics(node, batch, totals, procs, tick)
            edges.extend(self._edges(node, batch, totals, tick))
            workers.extend(procs)
            node_metrics.append(nm)
            for w in procs:
                ring = self._worker_ring(node.name, w.pid)
                points.append((ring, (_nan(w.cpu_percent), w.rps, w.rss_bytes)))
                worker_series.append((node.name, w.pid, ring))
            if node.ring is None:
                node.ring = self._new_ring(len(_NODE_CHANNELS))
            points.append((node.ring, (nm.rps, _nan(nm.latency_p50), _nan(nm.latency_p95), _nan(nm.latency_p99),
                                       nm.rss_bytes, _nan(nm.cpu_percent))))
            node_series.append((node.name, node.ring))

        if self.traces is not None:
            self.traces.complete(now)
        with self._rings_lock:  # snapshots copy histories under it, from any thread
            for ring, values in points:
                ring.append(now, *values)
        live = {(n, pid) for n, pid, _ in worker_series}
        for key in [k for k in self._worker_rings if k not in live]:
            del self._worker_rings[key]
        return MetricsSnapshot(
            time=now, wall_time=wall, interval=tick.interval,
            workers=tuple(workers), nodes=tuple(node_metrics), edges=tuple(edges),
            _history=_HistorySource(self._rings_lock, now, tuple(worker_series), tuple(node_series)),
        )

    @staticmethod
    def _ingest(node: _NodeState, members: list[tuple[int, Role]], sample_max: int) -> tuple[IngestBatch, IngestBatch]:
        """What the node's access log gained (and the running totals); new routes become edges."""
        if node.ingest is None:
            return IngestBatch(), IngestBatch()
        node.ingest.latency_sample_max = sample_max
        batch = node.ingest.poll()
        totals = node.ingest.totals
        for route in batch.by_route:
            node.routes.setdefault(route)
        if len(totals.by_pid) > KEEP_GONE_PIDS + len(members) + 1:
            totals.fold_pids({p for p, _ in members} | batch.by_pid.keys(), KEEP_GONE_PIDS)
        return batch, totals

    @staticmethod
    def _processes(node: _NodeState, members: list[tuple[int, Role]],
                   samples: Mapping[tuple[str, int], ProcessSample], batch: IngestBatch, totals: IngestBatch,
                   tick: _Tick) -> list[WorkerMetrics]:
        """One value per sampled process of the node (a process not sampled this tick is left out)."""
        out = []
        for pid, role in members:
            s = samples.get((node.name, pid))
            if s is not None:
                out.append(WorkerMetrics(node.name, pid, role, s.cpu_percent, s.rss_bytes,
                                         tick.rate(batch.by_pid.get(pid, 0)), totals.by_pid.get(pid, 0)))
        return out

    def _latency(self, node: _NodeState, now: float, batch: IngestBatch) -> tuple[list[float | None], int]:
        """p50, p95, p99 over the sliding window (None without durations) and the sample count."""
        win = node.latency_window
        if batch.latencies.size:
            win.append((now, batch.latencies, batch.latency_weight))
        while win and win[0][0] < now - self.latency_window_s:
            win.popleft()
        count = sum(len(v) for _, v, _ in win)
        if not count:
            return [None, None, None], 0
        values = np.concatenate([v for _, v, _ in win])
        weights = np.concatenate([np.full(len(v), w) for _, v, w in win])
        return list(weighted_percentiles(values, weights, (50, 95, 99))), count

    def _node_metrics(self, node: _NodeState, batch: IngestBatch, totals: IngestBatch,
                      procs: list[WorkerMetrics], tick: _Tick) -> NodeMetrics:
        cpu = [w.cpu_percent for w in procs if w.cpu_percent is not None]
        (p50, p95, p99), count = self._latency(node, tick.now, batch)
        return NodeMetrics(
            name=node.name,
            kind=node.kind,
            rps=tick.rate(batch.lines),
            requests_total=totals.lines,
            unparseable_total=totals.unparseable,
            requests_by_pid=MappingProxyType(dict(totals.by_pid)),
            status_totals=MappingProxyType(dict(sorted(totals.by_status.items()))),
            status_rates=MappingProxyType({c: tick.rate(batch.by_status.get(c, 0)) for c in sorted(totals.by_status)}),
            latency_p50=p50,
            latency_p95=p95,
            latency_p99=p99,
            latency_samples=count,
            cpu_percent=sum(cpu) if cpu else None,
            rss_bytes=sum(w.rss_bytes for w in procs),
            process_count=len(procs),
            websockets_open=node.websockets_open(),
        )

    @staticmethod
    def _edges(node: _NodeState, batch: IngestBatch, totals: IngestBatch, tick: _Tick) -> list[EdgeMetrics]:
        by_route = totals.by_route

        def share(route: str) -> float | None:
            group = node.groups.get(route)
            if group is None:
                return None
            together = sum(by_route.get(r, 0) for r in group)
            return by_route.get(route, 0) / together if together else 0.0

        return [
            EdgeMetrics(node.name, route, tick.rate(batch.by_route.get(route, 0)), by_route.get(route, 0),
                        totals.errors_by_route.get(route, 0), tick.rate(batch.errors_by_route.get(route, 0)),
                        totals.limited_by_route.get(route, 0), tick.rate(batch.limited_by_route.get(route, 0)),
                        share(route))
            for route in node.routes
        ]

    def _worker_ring(self, node: str, pid: int) -> TimeSeriesRing:
        ring = self._worker_rings.get((node, pid))
        if ring is None:
            ring = self._worker_rings[(node, pid)] = self._new_ring(len(_WORKER_CHANNELS))
        return ring

    def _new_ring(self, channels: int) -> TimeSeriesRing:
        return TimeSeriesRing(capacity_for(self.history_seconds, self._rate_hz), channels)

    # -- background thread --------------------------------------------------------------------------

    @property
    def running(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def run_in_thread(self, hz: float | None = None) -> threading.Thread:
        """Start a daemon thread calling :meth:`tick` at ``hz`` (0.5-10; default: the constructor's
        ``rate_hz``). Ring buffers created after this hold ``history_seconds`` at this rate."""
        hz = self._rate_hz if hz is None else hz
        self._check_rate(hz)
        if self.running:
            raise RuntimeError("the metrics engine is already running; stop() it first")
        self._rate_hz = hz
        self._stop.clear()
        self._thread = threading.Thread(
            target=self._run, args=(1.0 / hz,), name="stackpanel-metrics", daemon=True
        )
        self._thread.start()
        return self._thread

    def _run(self, period: float) -> None:
        next_t = time.monotonic()
        while not self._stop.is_set():
            try:
                self.tick()
            except Exception:
                log.exception("metrics tick failed")
            next_t += period
            delay = next_t - time.monotonic()
            if delay < 0:  # fell behind: skip the missed ticks, don't burst
                next_t = time.monotonic()
                delay = 0.0
            if self._stop.wait(delay):
                break

    def stop(self, timeout: float = 5.0) -> None:
        """Stop the thread (idempotent); waits up to ``timeout`` for the current tick."""
        self._stop.set()
        thread = self._thread
        if thread is not None and thread is not threading.current_thread():
            thread.join(timeout)
        self._thread = None

    def close(self) -> None:
        """Stop and close every log file."""
        self.stop()
        with self._tick_lock, self._lock:
            nodes = list(self._nodes.values())
        for n in nodes:
            if n.ingest is not None:
                n.ingest.close()
        with self._tick_lock:
            self._sampler.close()

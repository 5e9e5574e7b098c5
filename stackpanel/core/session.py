"""A running stack: the one owner of its lifecycle. The CLI, the bench and the GUI all use it.

:class:`StackSession` renders a profile, owns the supervisor and the metrics engine that watch
it, and is the only door to them: start, stop, reload, node actions, the metrics mode, state and
snapshots. Nothing outside reaches past it (the supervisor and the engine are private).

Data flows one way: supervisor events (workers come and go) feed the metrics engine; both
publish immutable values to subscribers.

Threading: the actions (``start``, ``stop``, ``reload``, node actions, ``close``) block; call them
from a worker thread in a GUI. ``request_stop`` and the observers (``subscribe*``, ``snapshot``,
``state``, ``last_lines``, ``workers``, ``metrics_snapshot``) may be called from any thread.
Subscribers run on core threads and must be cheap.
"""
from __future__ import annotations

import hashlib
import re
import threading
from collections.abc import Callable
from pathlib import Path
from types import TracebackType
from typing import Literal

import platformdirs

from stackpanel.core.metrics import MetricsEngine, MetricsSnapshot
from stackpanel.core.metrics.tracing import Trace, TraceCollector, TraceQuery
from stackpanel.core.profiles.schema import Profile, ProxyNode
from stackpanel.core.render import RenderedStack, render_stack
from stackpanel.core.supervise.events import (
    Event,
    NodeState,
    NodeStateChanged,
    StackSnapshot,
    StackState,
    WorkersChanged,
)
from stackpanel.core.supervise.rundirs import prune_run_dirs
from stackpanel.core.supervise.supervisor import Supervisor

#: "thread": :meth:`StackSession.start` starts the engine's own ticking thread (the panel, ``up``).
#: "manual": no thread; the owner calls :meth:`StackSession.tick_metrics` (the bench ticks right
#: before and right after a load, so CPU % covers exactly the load).
MetricsMode = Literal["thread", "manual"]


def runs_root() -> Path:
    return Path(platformdirs.user_state_dir("stackpanel")) / "runs"


def default_run_dir(profile: Profile) -> Path:
    """One stable directory per profile and ports, so the next run finds a crashed run's leftovers."""
    ports = ",".join(str(n.port) for n in profile.nodes.values())
    slug = re.sub(r"[^a-z0-9]+", "-", profile.name.lower()).strip("-")[:40] or "stack"
    digest = hashlib.sha1(f"{profile.name}|{ports}".encode()).hexdigest()[:8]
    return runs_root() / f"{slug}-{digest}"


class StackSession:
    def __init__(self, profile: Profile, *, run_dir: Path | None = None, metrics_hz: float = 1.0,
                 use_guardian: bool = True, metrics_mode: MetricsMode = "thread", traces: bool = True) -> None:
        if metrics_mode not in ("thread", "manual"):
            raise ValueError(f"metrics_mode must be 'thread' or 'manual' (got {metrics_mode!r})")
        self._profile = profile
        if run_dir is None:  # our own runs root: keep the newest few per profile, remove the rest
            run_dir = default_run_dir(profile)
            prune_run_dirs(runs_root(), spare=run_dir)
        self._stack: RenderedStack = render_stack(profile, run_dir)
        self._metrics_mode: MetricsMode = metrics_mode
        self._started_once = False
        self._supervisor = Supervisor(self._stack, use_guardian=use_guardian)
        # traces ride on the metrics engine's ingest (the same lines, one reader): off, it skips them
        self._traces = TraceCollector(profile.entry) if traces else None
        self._metrics = MetricsEngine(rate_hz=metrics_hz, traces=self._traces)
        for name, rendered in self._stack.nodes.items():
            node = profile.nodes[name]
            routes = [t for r in node.routes for t in r.targets] if isinstance(node, ProxyNode) else []
            balanced = [r.backends for r in node.routes if r.is_balanced] if isinstance(node, ProxyNode) else []
            self._metrics.register_node(name, rendered.kind, rendered.access_log, routes, rendered.websockets_dir,
                                        balanced)
        self._supervisor.subscribe(self._feed_metrics)

    def _feed_metrics(self, event: Event) -> None:
        if isinstance(event, WorkersChanged):
            self._metrics.set_workers(event.node, event.master_pid, event.worker_pids)
        elif isinstance(event, NodeStateChanged) and event.state in (NodeState.STOPPED, NodeState.FAILED,
                                                                      NodeState.CRASHED):
            self._metrics.set_workers(event.node, None, ())

    # --- what runs (read-only) ---

    @property
    def profile(self) -> Profile:
        return self._profile

    @property
    def stack(self) -> RenderedStack:
        return self._stack

    @property
    def run_dir(self) -> Path:
        return self._stack.paths.root

    @property
    def metrics_mode(self) -> MetricsMode:
        return self._metrics_mode

    # --- observing (any thread; callbacks run on core threads: keep them cheap) ---

    @property
    def state(self) -> StackState:
        return self._supervisor.state

    def subscribe(self, on_event: Callable[[Event], None]) -> Callable[[], None]:
        return self._supervisor.subscribe(on_event)

    def subscribe_metrics(self, on_snapshot: Callable[[MetricsSnapshot], None]) -> Callable[[], None]:
        return self._metrics.subscribe(on_snapshot)

    def snapshot(self) -> StackSnapshot:
        return self._supervisor.snapshot()

    def subscribe_traces(self, on_trace: Callable[[Trace], None]) -> Callable[[], None]:
        """Each completed trace that was kept (sampled, among the slowest, or failed), on the engine's thread."""
        if self._traces is None:
            return lambda: None
        return self._traces.subscribe(on_trace)

    def traces(self, query: TraceQuery | None = None, limit: int | None = None) -> tuple[Trace, ...]:
        """The kept traces of this run, the newest first, filtered by ``query``."""
        return () if self._traces is None else self._traces.query(query or TraceQuery(), limit)

    def trace(self, request_id: str) -> Trace | None:
        return None if self._traces is None else self._traces.get(request_id)

    def traces_held(self) -> dict[str, int]:
        """What the trace collector holds (kept traces by kind, pending lines) and has completed."""
        if self._traces is None:
            return {}
        return {**self._traces.sizes(), "completed": self._traces.completed_total}

    def last_lines(self, node: str, n: int = 50) -> list[str]:
        return self._supervisor.last_lines(node, n)

    def workers(self, node: str) -> tuple[int, ...]:
        """The node's current worker pids (its master's pid when it has no workers)."""
        return self._supervisor.workers(node)

    def metrics_snapshot(self) -> MetricsSnapshot:
        """The metrics of the latest tick (an empty snapshot before the first)."""
        return self._metrics.snapshot()

    def start_metrics(self, hz: float | None = None) -> threading.Thread:
        """Start the engine's ticking thread now, at ``hz`` (0.5-10; default: the session's rate),
        whatever the metrics mode; returns the thread (benchmarks read its CPU time)."""
        return self._metrics.run_in_thread(hz)

    def stop_metrics(self) -> None:
        """Stop the engine's ticking thread (idempotent); the stack keeps running."""
        self._metrics.stop()

    def tick_metrics(self) -> MetricsSnapshot:
        """Sample and ingest now, publish to metrics subscribers and return the snapshot
        (``metrics_mode="manual"``; harmless but uneven next to the engine's own thread)."""
        return self._metrics.tick()

    # --- actions (blocking: call from a worker thread in a GUI) ---

    def start(self) -> None:
        """Bring the stack up (backends first, each probed ready); in ``"thread"`` metrics mode,
        start the engine's ticking thread too. Raises a StackpanelError if the stack cannot come up
        (nothing it started is left running)."""
        if self._started_once:
            self._metrics.restart_counts()  # the logs of the last run were archived: count from zero
        self._started_once = True
        self._supervisor.start()
        if self._metrics_mode == "thread" and not self._metrics.running:
            self._metrics.run_in_thread()

    def request_stop(self) -> None:
        """Make a start in progress give up promptly; non-blocking, safe from any thread."""
        self._supervisor.request_stop()

    def stop(self) -> None:
        self._supervisor.stop()
        self._metrics.stop()

    def restart_node(self, name: str) -> None:
        self._supervisor.restart_node(name)

    def stop_node(self, name: str) -> None:
        self._supervisor.stop_node(name)

    def start_node(self, name: str) -> None:
        self._supervisor.start_node(name)

    def reload(self, profile: Profile) -> list[str]:
        """Apply an edited profile to the running stack: changed configs are tested by the servers
        themselves and reloaded gracefully; a bad one raises ReloadError and nothing changes."""
        new_stack = render_stack(profile, self._stack.paths.root)
        changed = self._supervisor.reload(new_stack)
        self._profile, self._stack = profile, new_stack
        return changed

    def close(self) -> None:
        """Stop everything and release the files; the session cannot be used afterwards."""
        try:
            self._supervisor.close()
        finally:
            self._metrics.close()

    def __enter__(self) -> StackSession:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()

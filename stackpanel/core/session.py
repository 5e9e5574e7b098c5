"""A running stack: supervisor + metrics engine wired together. The CLI and the GUI both use it.

Data flows one way: supervisor events (workers come and go) feed the metrics engine; both
publish immutable values to subscribers.
"""
from __future__ import annotations

import hashlib
import re
from collections.abc import Callable
from pathlib import Path

import platformdirs

from stackpanel.core.metrics import MetricsEngine, MetricsSnapshot
from stackpanel.core.profiles.schema import Profile, ProxyNode
from stackpanel.core.render import RenderedStack, render_stack
from stackpanel.core.supervise.events import Event, NodeState, NodeStateChanged, StackSnapshot, WorkersChanged
from stackpanel.core.supervise.supervisor import Supervisor


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
                 use_guardian: bool = True) -> None:
        self.profile = profile
        self.stack: RenderedStack = render_stack(profile, run_dir or default_run_dir(profile))
        self.supervisor = Supervisor(self.stack, use_guardian=use_guardian)
        self.metrics = MetricsEngine(rate_hz=metrics_hz)
        for name, rendered in self.stack.nodes.items():
            node = profile.nodes[name]
            routes = [r.target for r in node.routes] if isinstance(node, ProxyNode) else []
            self.metrics.register_node(name, rendered.kind, rendered.access_log, routes)
        self.supervisor.subscribe(self._feed_metrics)

    def _feed_metrics(self, event: Event) -> None:
        if isinstance(event, WorkersChanged):
            self.metrics.set_workers(event.node, event.master_pid, event.worker_pids)
        elif isinstance(event, NodeStateChanged) and event.state in (NodeState.STOPPED, NodeState.FAILED,
                                                                      NodeState.CRASHED):
            self.metrics.set_workers(event.node, None, ())

    # --- observing (callbacks run on core threads; keep them cheap) ---

    def subscribe(self, on_event: Callable[[Event], None]) -> Callable[[], None]:
        return self.supervisor.subscribe(on_event)

    def subscribe_metrics(self, on_snapshot: Callable[[MetricsSnapshot], None]) -> Callable[[], None]:
        return self.metrics.subscribe(on_snapshot)

    def snapshot(self) -> StackSnapshot:
        return self.supervisor.snapshot()

    def last_lines(self, node: str, n: int = 50) -> list[str]:
        return self.supervisor.last_lines(node, n)

    # --- actions (blocking: call from a worker thread in a GUI) ---

    def start(self) -> None:
        self.supervisor.start()
        if not self.metrics.running:
            self.metrics.run_in_thread()

    def request_stop(self) -> None:
        """Make a start in progress give up promptly; non-blocking, safe from any thread."""
        self.supervisor.request_stop()

    def stop(self) -> None:
        self.supervisor.stop()
        self.metrics.stop()

    def restart_node(self, name: str) -> None:
        self.supervisor.restart_node(name)

    def stop_node(self, name: str) -> None:
        self.supervisor.stop_node(name)

    def start_node(self, name: str) -> None:
        self.supervisor.start_node(name)

    def reload(self, profile: Profile) -> list[str]:
        """Apply an edited profile to the running stack: changed configs are tested by the servers
        themselves and reloaded gracefully; a bad one raises ReloadError and nothing changes."""
        new_stack = render_stack(profile, self.stack.paths.root)
        changed = self.supervisor.reload(new_stack)
        self.profile, self.stack = profile, new_stack
        return changed

    def close(self) -> None:
        try:
            self.supervisor.close()
        finally:
            self.metrics.close()

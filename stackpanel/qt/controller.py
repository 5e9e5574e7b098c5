"""The Qt-side owner of a stack's lifecycle: which profile is loaded, which session runs it, and the
blocking session calls, run off the GUI thread.

Every operation returns an :class:`~stackpanel.qt.operations.Operation`, a typed future whose
completion callbacks (``then``) run on the GUI thread. Nothing is routed by name: a caller that
wants to know how its start ended attaches its own callback to the start it asked for.

The controller is the panels' model (napari style): panels are given it, connect their own slots
to its signals and to :attr:`StackController.bridge` (core events as Qt signals), and call its
methods. No widget here, no dialog; the window only lays the panels out.

Threads: an :class:`~stackpanel.qt.operations.OperationQueue` runs blocking calls one at a time on
a worker thread. Two queues: ``ops`` (prepare, start, stop, restart, node actions, close: one at a
time, in order) and ``reads`` (profile loading, snapshots, last log lines, free-port search: never
wait behind a start).
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, TypeVar

from PySide6.QtCore import QObject, Signal, Slot

from stackpanel.core.errors import ProfileError, StackpanelError
from stackpanel.core.profiles.loader import load_profile
from stackpanel.core.profiles.schema import Profile
from stackpanel.core.session import StackSession
from stackpanel.core.supervise.events import (
    NodeSnapshot,
    NodeState,
    NodeStateChanged,
    StackSnapshot,
    StackState,
    StackStateChanged,
    WorkersChanged,
)
from stackpanel.core.supervise.ports import free_port_offset
from stackpanel.qt.bridge import SessionBridge
from stackpanel.qt.operations import Operation, OperationQueue

if TYPE_CHECKING:
    from stackpanel.core.render import RenderedNode, RenderedStack

T = TypeVar("T")

ACTIVE_STATES = (StackState.STARTING, StackState.RUNNING, StackState.DEGRADED, StackState.STOPPING)
#: last log lines fetched for the node details
LAST_LINES = 60


# --------------------------------------------------------------------------------------------------
# Profiles, loaded off the GUI thread
# --------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class LoadedProfile:
    """The outcome of loading a profile off the GUI thread (``profile`` or ``error``) and, when it
    could be rendered, a preview of every node (command line and config files) for the details."""

    name: str
    path: Path
    port_offset: int
    profile: Profile | None = None
    error: ProfileError | None = None
    preview: RenderedStack | None = None
    preview_error: str = ""
    #: what the user must know before running it (exposed nodes, an untrusted local CA)
    notices: tuple[str, ...] = ()
    #: the entry serves https with a CA browsers do not trust yet (the panel offers `trust`)
    tls_untrusted: bool = False

    @property
    def key(self) -> tuple[str, int]:
        """What a session is made for: the file and the port offset."""
        return str(self.path), self.port_offset


def load_and_preview(name: str, path: Path, port_offset: int) -> LoadedProfile:
    """Worker-thread job: read and validate the profile, render it (no files written)."""
    try:
        profile = load_profile(path, port_offset=port_offset)
    except ProfileError as exc:
        return LoadedProfile(name, path, port_offset, error=exc)
    try:
        from stackpanel.core.render import render_stack
        from stackpanel.core.session import default_run_dir

        notices, untrusted = profile_notices(profile)
        preview = render_stack(profile, default_run_dir(profile))
        return LoadedProfile(name, path, port_offset, profile, preview=preview, notices=notices,
                             tls_untrusted=untrusted)
    except StackpanelError as exc:
        return LoadedProfile(name, path, port_offset, profile, preview_error=str(exc))


def profile_notices(profile: Profile) -> tuple[tuple[str, ...], bool]:
    """Worker-thread job: the exposure warnings, and why a browser would warn about https."""
    from stackpanel.core.headless import trust_notice
    from stackpanel.core.profiles.exposure import exposure_warnings

    trust = trust_notice(profile)
    return tuple(exposure_warnings(profile)) + ((trust.strip().removeprefix("note: "),) if trust else ()), bool(trust)


def find_free_offset(ports: list[int]) -> int | None:
    """Worker-thread job: the smallest multiple of 100 that moves every port to a free one."""
    try:
        return free_port_offset(ports, step=100, smallest=True)
    except StackpanelError:
        return None


class SessionPrepareError(StackpanelError):
    """The session for the loaded profile could not be made (render or run directory failed)."""

    def __init__(self, cause: BaseException) -> None:
        self.cause = cause
        super().__init__(str(cause))


# --------------------------------------------------------------------------------------------------
# The controller
# --------------------------------------------------------------------------------------------------


class StackController(QObject):
    """Loaded profile, session, stack state and the selected node; operations return futures.

    Signals (GUI thread):

    * ``profileLoading(name)``, ``profileLoaded(LoadedProfile)``: a profile is being loaded / became
      the current one (valid or not);
    * ``sessionChanged(StackSession | None)``: a new session is attached to the bridge;
    * ``snapshotChanged(StackSnapshot)``; ``stateChanged()``: anything the controls depend on (busy,
      stack state, session, profile);
    * ``nodeSelected(str)``; ``lastLines(node, lines)``; ``journal(level, text)``: one line for the
      event log; ``operationStarted(name)`` / ``operationFinished(name)`` for the status bar;
    * ``portOffsetChanged(int)``; ``closing()``: the stack is being closed (stop load on it);
      ``shuttingDown()``: the window goes, stop threads.
    """

    profileLoading = Signal(str)  # name
    profileLoaded = Signal(object)  # LoadedProfile
    sessionChanged = Signal(object)  # StackSession | None
    snapshotChanged = Signal(object)  # StackSnapshot
    stateChanged = Signal()
    nodeSelected = Signal(str)
    lastLines = Signal(str, list)
    journal = Signal(str, str)
    operationStarted = Signal(str)
    operationFinished = Signal(str)
    portOffsetChanged = Signal(int)
    logRequested = Signal(str)  # node: show its log (the Logs tab, filtered to it)
    closing = Signal()
    shuttingDown = Signal()

    def __init__(self, parent: QObject | None = None,
                 session_factory: Callable[[Profile], StackSession] = StackSession) -> None:
        super().__init__(parent)
        self.bridge = SessionBridge(self)
        self.ops = OperationQueue("op", self)  # start/stop/restart: one at a time
        self.reads = OperationQueue("read", self)  # quick reads: never wait behind a start
        self._session_factory = session_factory
        self.session: StackSession | None = None  # attached to the bridge (GUI thread)
        self._session_key: tuple[str, int] | None = None
        #: the newest session made, touched only on the ops thread (closed by close())
        self._owned: StackSession | None = None
        self.loaded: LoadedProfile | None = None
        self.stack_state: str = StackState.STOPPED
        self.last_snapshot: StackSnapshot | None = None
        self.selected_node: str | None = None
        self.port_offset = 0
        self._load_seq = 0
        self._requested: tuple[str, Path] | None = None  # the newest profile asked for
        self._snapshot_relay = _SnapshotRelay(self)
        self._snapshot_relay.arrived.connect(self._on_snapshot)

        self.ops.started.connect(self.operationStarted)
        self.ops.finished.connect(self.operationFinished)
        self.ops.busyChanged.connect(lambda _busy: self.stateChanged.emit())
        b = self.bridge
        b.nodeStateChanged.connect(self._on_node_state)
        b.workersChanged.connect(self._on_workers)
        b.stackStateChanged.connect(self._on_stack_state)
        b.message.connect(lambda ev: self.journal.emit(ev.level, ev.text))

    # ------------------------------------------------------------------ state (GUI thread)

    @property
    def busy(self) -> bool:
        return self.ops.busy

    @property
    def profile(self) -> Profile | None:
        return self.loaded.profile if self.loaded is not None else None

    @property
    def valid(self) -> bool:
        return self.profile is not None

    @property
    def active(self) -> bool:
        return self.stack_state in ACTIVE_STATES

    @property
    def has_session(self) -> bool:
        return self.session is not None

    @property
    def entry_url(self) -> str:
        """The plain URL of the entry (load, bench)."""
        p = self.profile
        return p.entry_url if p is not None else ""

    @property
    def browser_url(self) -> str:
        """What a person opens: https when the entry has tls."""
        p = self.profile
        return p.browser_url if p is not None else ""

    def session_matches(self) -> bool:
        """True if the attached session runs the loaded profile at its port offset."""
        return (self.session is not None and self.loaded is not None
                and self._session_key == self.loaded.key)

    def rendered_node(self, name: str) -> RenderedNode | None:
        """What runs for ``name``: the session's stack if it runs the loaded profile, else the preview."""
        stack = self.session.stack if self.session is not None and self.session_matches() else (
            self.loaded.preview if self.loaded is not None else None)
        return stack.nodes.get(name) if stack is not None else None

    def node_snapshot(self, name: str) -> NodeSnapshot | None:
        snap = self.last_snapshot
        return next((n for n in snap.nodes if n.name == name), None) if snap is not None else None

    def log(self, level: str, text: str) -> None:
        """One line for the event log (and the status bar when it is an error)."""
        self.journal.emit(level, text)

    # ------------------------------------------------------------------ profiles

    def load_profile(self, name: str, path: Path) -> Operation[LoadedProfile]:
        """Load ``path`` at the current port offset; when it is still the newest load once it ends,
        it becomes :attr:`loaded` (``profileLoaded``) before the caller's callbacks run."""
        self._load_seq += 1
        seq, offset = self._load_seq, self.port_offset
        self._requested = (name, path)
        self.profileLoading.emit(name)
        op = self.reads.submit(f"load {name}", lambda: load_and_preview(name, path, offset))
        return op.then(lambda o: self._on_loaded(seq, o))

    def set_port_offset(self, offset: int) -> Operation[LoadedProfile] | None:
        """Move every port by ``offset`` and reload the profile asked for last with it."""
        if offset != self.port_offset:
            self.port_offset = offset
            self.portOffsetChanged.emit(offset)
        if self._requested is None:
            return None
        return self.load_profile(*self._requested)

    def _on_loaded(self, seq: int, op: Operation[LoadedProfile]) -> None:
        if seq != self._load_seq or not op.ok:
            return
        loaded = op.result()
        self.loaded = loaded
        if self.stack_state == StackState.FAILED and not self.session_matches():
            self.stack_state = StackState.STOPPED  # that failure was another profile's (or offset's)
        self.profileLoaded.emit(loaded)
        if loaded.profile is not None:
            self.select_node(loaded.profile.entry)
        self.stateChanged.emit()

    def show_log(self, node: str) -> None:
        """Ask the window to show ``node``'s log lines (a failed start offers this)."""
        self.logRequested.emit(node)

    def acknowledge_failure(self) -> None:
        """The person has read why the start failed (the dialog is closed): the stack is stopped now,
        and the toolbar no longer says "failed"."""
        if self.stack_state == StackState.FAILED and not self.busy:
            self._set_stack_state(StackState.STOPPED)

    def is_current(self, op: Operation[LoadedProfile]) -> bool:
        """True if ``op`` is the load whose profile is the current one."""
        return op.ok and self.loaded is op.result()

    # ------------------------------------------------------------------ selection

    def select_node(self, name: str) -> None:
        p = self.profile
        if p is None or name not in p.nodes:
            return
        self.selected_node = name
        self.nodeSelected.emit(name)
        self.fetch_last_lines(name)

    def fetch_last_lines(self, node: str) -> Operation[list[str]] | None:
        s = self.session
        if s is None or node not in s.stack.nodes:
            return None
        op = self.reads.submit(f"last lines {node}", lambda: s.last_lines(node, LAST_LINES))
        return op.then(lambda o: self.publish_last_lines(node, o.result()) if o.ok else None)

    def publish_last_lines(self, node: str, lines: list[str]) -> None:
        self.lastLines.emit(node, lines)

    def refresh_snapshot(self) -> Operation[StackSnapshot] | None:
        s = self.session
        if s is None:
            return None
        relay = self._snapshot_relay
        return self.reads.submit("snapshot", lambda: relay.take(s))

    def find_free_offset(self) -> Operation[int | None]:
        """The offset (the one in use plus the smallest multiple of 100) that moves every port of the
        loaded profile to a free one: the user's own offset is kept and moved on, never reset."""
        p, offset = self.profile, self.loaded.port_offset if self.loaded is not None else 0
        ports = [port for n in p.nodes.values() for _h, port in n.listen_addresses] if p is not None else []

        def find() -> int | None:
            more = find_free_offset(ports)
            return None if more is None else offset + more

        return self.reads.submit("find offset", find)

    # ------------------------------------------------------------------ stack operations

    def start(self) -> Operation[None] | None:
        """Start the loaded profile (making its session first if needed); None if it cannot."""
        if not self.valid or self.busy:
            return None
        return self._with_session("start", lambda s: s.start())

    def stop(self) -> Operation[None] | None:
        """Stop the stack; a start in progress gives up promptly (queued after it)."""
        s = self.session
        if s is None:
            return None
        s.request_stop()  # non-blocking, safe from any thread
        return self._run("stop", s, lambda s: s.stop())

    def restart(self) -> Operation[None] | None:
        s = self.session
        if s is None or self.busy:
            return None

        def restart(s: StackSession) -> None:
            s.stop()
            s.start()

        return self._run("restart", s, restart)

    def start_node(self, node: str) -> Operation[None] | None:
        if self.busy or not self.valid:
            return None
        return self._with_session(f"start_node:{node}", lambda s: s.start_node(node))

    def restart_node(self, node: str) -> Operation[None] | None:
        if self.busy or not self.valid:
            return None
        return self._with_session(f"restart_node:{node}", lambda s: s.restart_node(node))

    def stop_node(self, node: str) -> Operation[None] | None:
        s = self.session
        if self.busy or s is None or not self.session_matches():
            return None
        return self._run(f"stop_node:{node}", s, lambda s: s.stop_node(node))

    def close(self) -> Operation[None]:
        """Stop and close every session this controller made (the window is closing)."""
        self.closing.emit()
        s = self.session
        if s is not None:
            s.request_stop()
        return self.ops.submit("close", self._close_owned)

    def shutdown(self) -> None:
        """The window goes: detach, stop the threads (waits for a running operation)."""
        self.shuttingDown.emit()
        self.bridge.detach()
        self.ops.shutdown(wait=True)
        self.reads.shutdown(wait=False)

    # -- internals --------------------------------------------------------------------------------

    def _close_owned(self) -> None:  # ops thread
        s, self._owned = self._owned, None
        if s is not None:
            s.close()

    def _run(self, name: str, session: StackSession, fn: Callable[[StackSession], T]) -> Operation[T]:
        """``fn(session)`` on the ops thread; the stack's snapshot after it reaches every panel
        before the operation's own callbacks run."""
        relay = self._snapshot_relay

        def run() -> T:
            try:
                return fn(session)
            finally:
                relay.take(session)

        op = self.ops.submit(name, run)
        self.stateChanged.emit()
        return op

    def _with_session(self, name: str, fn: Callable[[StackSession], T]) -> Operation[T]:
        session = self.session
        if session is not None and self.session_matches():
            return self._run(name, session, fn)
        outer: Operation[T] = Operation(name)

        def prepared(p: Operation[StackSession]) -> None:
            if not p.ok:
                outer._settle(error=SessionPrepareError(p.error or RuntimeError("cancelled")))
                return
            session = p.result()
            self._attach(session)
            self._run(name, session, fn).then(outer._settle_like)

        self._prepare().then(prepared)
        return outer

    def _prepare(self) -> Operation[StackSession]:
        assert self.loaded is not None and self.loaded.profile is not None
        profile, factory = self.loaded.profile, self._session_factory
        self._session_key = self.loaded.key
        self.bridge.detach()
        self.session = None

        def prepare() -> StackSession:  # ops thread
            self._close_owned()
            self._owned = factory(profile)
            return self._owned

        return self.ops.submit("prepare", prepare)

    def _attach(self, session: StackSession) -> None:
        self.session = session
        self.bridge.attach(session)
        self.sessionChanged.emit(session)
        self._on_snapshot(session.snapshot())

    # -- core events (GUI thread, from the bridge) -----------------------------------------------

    @Slot(object)
    def _on_snapshot(self, snap: StackSnapshot) -> None:
        self.last_snapshot = snap
        self.snapshotChanged.emit(snap)
        self._set_stack_state(snap.state)

    def _set_stack_state(self, state: str) -> None:
        self.stack_state = state
        self.stateChanged.emit()

    def _on_node_state(self, ev: NodeStateChanged) -> None:
        level = "error" if ev.state in (NodeState.CRASHED, NodeState.FAILED) else "info"
        self.journal.emit(level, f"{ev.node}: {ev.previous} → {ev.state}" + (f" ({ev.reason})" if ev.reason else ""))

    def _on_workers(self, ev: WorkersChanged) -> None:
        if ev.added or ev.removed:
            self.journal.emit("info", f"{ev.node}: workers {list(ev.worker_pids)}"
                              + (f" (+{list(ev.added)})" if ev.added else "")
                              + (f" (-{list(ev.removed)})" if ev.removed else ""))

    def _on_stack_state(self, ev: StackStateChanged) -> None:
        self._set_stack_state(ev.state)
        self.journal.emit("info", f"stack: {ev.state}" + (f" ({ev.reason})" if ev.reason else ""))


class _SnapshotRelay(QObject):
    """Takes a session's snapshot on a worker thread and hands it to the GUI thread (queued)."""

    arrived = Signal(object)  # StackSnapshot

    def take(self, session: StackSession) -> StackSnapshot:
        snap = session.snapshot()
        self.arrived.emit(snap)
        return snap


__all__ = [
    "ACTIVE_STATES", "LoadedProfile", "Operation", "SessionPrepareError", "StackController", "find_free_offset",
    "load_and_preview",
]

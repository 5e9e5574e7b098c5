"""The one door between the Qt-free core and the widgets.

* :class:`SessionBridge` subscribes to a session's supervisor events and metrics snapshots (both
  delivered on core threads) and re-emits them as Qt signals. The bridge lives on the GUI thread,
  so every emit from a core thread is a queued connection: widgets always run on the GUI thread.
  Metrics are coalesced: if the GUI thread has not yet picked up the previous snapshot, the newer
  one replaces it (a busy GUI never builds up a backlog of snapshots). Completed traces (a session
  that has them) are batched the same way: one ``traces`` signal carries all that came meanwhile.
* Blocking session calls run on :class:`~stackpanel.qt.controller.OperationQueue`s owned by the
  :class:`~stackpanel.qt.controller.StackController`.
* :class:`LogFollower` tails the nodes' log files on a background thread with the core's
  :class:`~stackpanel.core.metrics.ingest.LogTailer` and emits batches of new lines.

Nothing here touches processes, sockets or files on the GUI thread.
"""
from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

from PySide6.QtCore import QObject, Signal, Slot

from stackpanel.core.metrics import MetricsSnapshot
from stackpanel.core.metrics.ingest import LogTailer
from stackpanel.core.metrics.tracing import Trace
from stackpanel.core.supervise.events import (
    Event,
    NodeStateChanged,
    StackMessage,
    StackStateChanged,
    WorkersChanged,
)

if TYPE_CHECKING:
    from stackpanel.core.loadgen import LoadConfig, LoadRun

log = logging.getLogger("stackpanel.qt")
#: completed traces held for a GUI thread that has not picked them up yet
TRACES_BATCH_MAX = 2000


class SessionLike(Protocol):
    """What the bridge needs from :class:`stackpanel.core.session.StackSession`."""

    def subscribe(self, on_event: Callable[[Event], None]) -> Callable[[], None]: ...

    def subscribe_metrics(self, on_snapshot: Callable[[MetricsSnapshot], None]) -> Callable[[], None]: ...


class SessionBridge(QObject):
    """Core events and snapshots in, Qt signals (on the GUI thread) out."""

    nodeStateChanged = Signal(object)  # NodeStateChanged
    workersChanged = Signal(object)  # WorkersChanged
    stackStateChanged = Signal(object)  # StackStateChanged
    message = Signal(object)  # StackMessage
    #: the newest MetricsSnapshot (older ones the GUI had no time for are dropped)
    metrics = Signal(object)
    #: list[Trace]: the traces completed since the last emit (at most TRACES_BATCH_MAX, the newest)
    traces = Signal(object)

    _eventQueued = Signal(object)
    _metricsQueued = Signal()
    _tracesQueued = Signal()

    def __init__(self, parent: QObject | None = None) -> None:
        super().__init__(parent)
        self._unsubscribe: list[Callable[[], None]] = []
        self._lock = threading.Lock()
        self._pending_metrics: MetricsSnapshot | None = None
        self._generation = 0
        self.metrics_received = 0
        self.metrics_dropped = 0
        # Emitted from core threads; the receivers live on this object's (GUI) thread: queued.
        self._eventQueued.connect(self._deliver_event)
        self._metricsQueued.connect(self._deliver_metrics)
        self._tracesQueued.connect(self._deliver_traces)
        self._pending_traces: list[Trace] = []

    # -- wiring (GUI thread) ------------------------------------------------------------------------

    def attach(self, session: SessionLike) -> None:
        """Subscribe to ``session`` (detaching from any previous one)."""
        self.detach()
        with self._lock:
            self._generation += 1
            gen = self._generation
        self._unsubscribe.append(session.subscribe(lambda ev: self._on_core_event(gen, ev)))
        self._unsubscribe.append(session.subscribe_metrics(lambda snap: self._on_core_metrics(gen, snap)))
        subscribe_traces = getattr(session, "subscribe_traces", None)  # sessions without traces: none
        if subscribe_traces is not None:
            self._unsubscribe.append(subscribe_traces(lambda trace: self._on_core_trace(gen, trace)))

    def detach(self) -> None:
        for unsubscribe in self._unsubscribe:
            try:
                unsubscribe()
            except Exception:
                log.exception("unsubscribing from the session failed")
        self._unsubscribe.clear()
        with self._lock:
            self._generation += 1
            self._pending_metrics = None
            self._pending_traces = []

    # -- called on core threads: cheap, never block ---------------------------------------------------

    def _on_core_event(self, gen: int, ev: Event) -> None:
        if gen == self._generation:
            self._eventQueued.emit(ev)

    def _on_core_metrics(self, gen: int, snap: MetricsSnapshot) -> None:
        with self._lock:
            if gen != self._generation:
                return
            self.metrics_received += 1
            already_queued = self._pending_metrics is not None
            if already_queued:
                self.metrics_dropped += 1
            self._pending_metrics = snap
        if not already_queued:
            self._metricsQueued.emit()

    def _on_core_trace(self, gen: int, trace: Trace) -> None:
        with self._lock:
            if gen != self._generation:
                return
            first = not self._pending_traces
            self._pending_traces.append(trace)
            if len(self._pending_traces) > TRACES_BATCH_MAX:
                del self._pending_traces[:-TRACES_BATCH_MAX]
        if first:
            self._tracesQueued.emit()

    # -- GUI thread ---------------------------------------------------------------------------------

    @Slot(object)
    def _deliver_event(self, ev: object) -> None:
        if isinstance(ev, NodeStateChanged):
            self.nodeStateChanged.emit(ev)
        elif isinstance(ev, WorkersChanged):
            self.workersChanged.emit(ev)
        elif isinstance(ev, StackStateChanged):
            self.stackStateChanged.emit(ev)
        elif isinstance(ev, StackMessage):
            self.message.emit(ev)

    @Slot()
    def _deliver_metrics(self) -> None:
        with self._lock:
            snap, self._pending_metrics = self._pending_metrics, None
        if snap is not None:
            self.metrics.emit(snap)

    @Slot()
    def _deliver_traces(self) -> None:
        with self._lock:
            batch, self._pending_traces = self._pending_traces, []
        if batch:
            self.traces.emit(batch)


# --------------------------------------------------------------------------------------------------
# Log files, tailed off the GUI thread
# --------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class LogSource:
    """One log file shown in the log view: ``node`` and which of its logs (access/error/output)."""

    node: str
    stream: str
    path: Path

    @property
    def label(self) -> str:
        return f"{self.node}.{self.stream}"


class LogFollower(QObject):
    """Polls a set of log files on a daemon thread; emits ``lines(list[(label, text)])``.

    The first read of each file starts at most ``backlog_bytes`` before its end, so opening the
    view over a big log costs little.
    """

    lines = Signal(object)  # list[tuple[str, str]]

    def __init__(self, period_s: float = 0.25, backlog_bytes: int = 64 * 1024,
                 parent: QObject | None = None) -> None:
        super().__init__(parent)
        self._period = period_s
        self._backlog = backlog_bytes
        self._lock = threading.Lock()
        self._sources: list[LogSource] = []
        self._changed = True
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def set_sources(self, sources: Iterable[LogSource]) -> None:
        with self._lock:
            self._sources = list(sources)
            self._changed = True

    def start(self) -> None:
        if self._thread is not None and self._thread.is_alive():
            return
        self._stop.clear()
        self._thread = threading.Thread(target=self._run, name="stackpanel-logfollow", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(2.0)
        self._thread = None

    def _run(self) -> None:
        tailers: dict[Path, tuple[LogSource, LogTailer]] = {}
        wanted: dict[Path, LogSource] = {}
        try:
            while not self._stop.is_set():
                with self._lock:
                    if self._changed:
                        wanted = {s.path: s for s in self._sources}
                        for path in [p for p in tailers if p not in wanted]:
                            tailers.pop(path)[1].close()
                        opened = [p for p in wanted if p not in tailers]
                        self._changed = False
                    else:
                        opened = []
                backlog: dict[Path, list[bytes]] = {}
                for path in opened:
                    tailer, backlog[path] = self._open(wanted[path])
                    tailers[path] = (wanted[path], tailer)
                batch: list[tuple[str, str]] = []
                for path, (src, tailer) in tailers.items():
                    try:
                        chunks = backlog.get(path, []) + tailer.read()
                    except OSError as exc:
                        log.debug("reading %s: %s", src.path, exc)
                        continue
                    for chunk in chunks:
                        text = chunk.decode("utf-8", "replace")
                        batch.extend((src.label, line) for line in text.splitlines())
                if batch:
                    self.lines.emit(batch)
                self._stop.wait(self._period)
        finally:
            for _, tailer in tailers.values():
                tailer.close()

    def _open(self, src: LogSource) -> tuple[LogTailer, list[bytes]]:
        """A tailer for ``src`` and the backlog to show first (at most ``backlog_bytes``)."""
        try:
            size = src.path.stat().st_size
        except OSError:
            return LogTailer(src.path), []
        if size <= self._backlog:
            return LogTailer(src.path), []
        try:
            with open(src.path, "rb") as f:
                f.seek(size - self._backlog)
                data = f.read(self._backlog)
        except OSError:
            return LogTailer(src.path), []
        first_nl, last_nl = data.find(b"\n"), data.rfind(b"\n")
        backlog = [data[first_nl + 1: last_nl + 1]] if first_nl != last_nl else []
        tailer = LogTailer(src.path, start_at_end=True)
        tailer.read()  # position at the end now; new lines come from here on
        return tailer, backlog


# --------------------------------------------------------------------------------------------------
# Load runs (the core's LoadRun calls back on its own thread)
# --------------------------------------------------------------------------------------------------


class LoadBridge(QObject):
    """Starts a :class:`~stackpanel.core.loadgen.LoadRun` and re-emits its callbacks on the GUI thread."""

    progress = Signal(object)  # LoadProgress
    done = Signal(object)  # LoadResult or the exception the run raised

    def __init__(self, parent: QObject | None = None) -> None:
        super().__init__(parent)
        self.run: LoadRun | None = None

    @property
    def running(self) -> bool:
        return self.run is not None and not self.run.done()

    def start(self, config: LoadConfig) -> None:
        from stackpanel.core.loadgen import LoadRun

        self.stop()
        self.run = LoadRun(config, progress=self.progress.emit, on_done=self.done.emit).start()

    def stop(self) -> None:
        if self.run is not None:
            self.run.stop()

"""The bridge: core-thread callbacks arrive as signals on the GUI thread; metrics are coalesced.
The operation queue: blocking calls off the GUI thread, completions back on it. No sleeps: every
wait is on a signal or a condition."""
from __future__ import annotations

import os
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from PySide6.QtCore import QThread
from PySide6.QtWidgets import QApplication

from stackpanel.core.metrics import MetricsEngine, MetricsSnapshot
from stackpanel.core.metrics.synthetic import access_line
from stackpanel.core.supervise.events import NodeState, NodeStateChanged, StackMessage, WorkersChanged
from stackpanel.qt.bridge import LogFollower, LogSource, SessionBridge
from stackpanel.qt.operations import Operation, OperationQueue

pytestmark = pytest.mark.gui


class EventSource:
    """The supervisor half of a session: a real subscriber list, events published from threads."""

    def __init__(self, engine: MetricsEngine) -> None:
        self.engine = engine
        self.subscribers: list[Callable[[Any], None]] = []

    def subscribe(self, cb: Callable[[Any], None]) -> Callable[[], None]:
        self.subscribers.append(cb)
        return lambda: self.subscribers.remove(cb)

    def subscribe_metrics(self, cb: Callable[[MetricsSnapshot], None]) -> Callable[[], None]:
        return self.engine.subscribe(cb)

    def publish(self, ev: object) -> None:
        for cb in list(self.subscribers):
            cb(ev)


def test_events_from_a_core_thread_arrive_on_the_gui_thread(qtbot: Any) -> None:
    engine = MetricsEngine()
    src = EventSource(engine)
    bridge = SessionBridge()
    bridge.attach(src)
    got: list[tuple[str, object, bool]] = []
    gui = QApplication.instance().thread()  # type: ignore[union-attr]
    bridge.nodeStateChanged.connect(lambda ev: got.append(("node", ev, QThread.currentThread() is gui)))
    bridge.workersChanged.connect(lambda ev: got.append(("workers", ev, QThread.currentThread() is gui)))
    bridge.message.connect(lambda ev: got.append(("message", ev, QThread.currentThread() is gui)))
    events = [
        NodeStateChanged("app", NodeState.STARTING, NodeState.STOPPED, 10),
        WorkersChanged("app", 10, (11, 12), (11, 12), ()),
        StackMessage("info", "hello"),
    ]
    t = threading.Thread(target=lambda: [src.publish(e) for e in events])
    t.start()
    t.join()
    qtbot.waitUntil(lambda: len(got) == 3, timeout=2000)
    assert [g[0] for g in got] == ["node", "workers", "message"]
    assert [g[1] for g in got] == events
    assert all(g[2] for g in got)
    bridge.detach()
    src.publish(events[0])  # after detach: nothing (no subscriber left)
    assert src.subscribers == []
    engine.close()


def test_metrics_are_coalesced_newest_wins(qtbot: Any, tmp_path: Path) -> None:
    log = tmp_path / "app.log"
    engine = MetricsEngine()
    engine.register_node("app", "uvicorn", log, routes=["-"])
    engine.set_workers("app", os.getpid(), [])
    src = EventSource(engine)
    bridge = SessionBridge()
    bridge.attach(src)
    received: list[MetricsSnapshot] = []
    bridge.metrics.connect(received.append)

    def tick_many() -> None:  # a core thread ticking faster than the GUI drains its queue
        for i in range(50):
            with open(log, "a") as f:
                f.write(access_line("uvicorn", os.getpid(), 200, 0, "-") + "\n")
            engine.tick(float(i + 1))

    t = threading.Thread(target=tick_many)
    t.start()
    t.join()
    # the newest snapshot always arrives, and last: once it is in, nothing is left queued
    qtbot.waitUntil(lambda: bool(received) and received[-1].node("app").requests_total == 50,  # type: ignore[union-attr]
                    timeout=2000)
    assert 1 <= len(received) < 50
    assert bridge.metrics_received == 50
    assert bridge.metrics_dropped == 50 - len(received)
    last = received[-1].node("app")
    assert last is not None and last.requests_total == 50  # the newest snapshot always arrives
    engine.close()


def test_operations_run_off_the_gui_thread_and_complete_on_it(qtbot: Any) -> None:
    queue = OperationQueue()
    gui_thread = threading.get_ident()
    calls: list[tuple[str, int, bool]] = []

    def record(op: Operation[Any]) -> None:  # completion: on the GUI thread, queue no longer busy
        calls.append((op.name, threading.get_ident(), queue.busy))

    with qtbot.waitSignal(queue.finished, timeout=2000) as finished:
        ok = queue.submit("ident", threading.get_ident).then(record)
        assert queue.busy
    assert finished.args == ["ident"]
    assert ok.done() and ok.ok and ok.error is None and ok.result() != gui_thread
    assert calls == [("ident", gui_thread, False)]
    ok.then(record)  # added after completion: called at once
    assert len(calls) == 2

    bad = queue.submit("boom", lambda: 1 / 0).then(record)
    qtbot.waitUntil(bad.done, timeout=2000)
    assert not bad.ok and isinstance(bad.error, ZeroDivisionError)
    with pytest.raises(ZeroDivisionError):
        bad.result()
    assert not queue.busy
    queue.shutdown()
    late = queue.submit("late", lambda: 1).then(record)  # after shutdown: cancelled, never calls back
    assert late.future.cancelled() and not late.done() and len(calls) == 3


def test_operations_run_one_at_a_time_in_order(qtbot: Any) -> None:
    queue = OperationQueue()
    release = threading.Event()
    order: list[str] = []
    first = queue.submit("first", lambda: release.wait(5) and order.append("first"))
    second = queue.submit("second", lambda: order.append("second"))
    assert queue.busy and not first.done()
    release.set()
    qtbot.waitUntil(second.done, timeout=2000)
    assert order == ["first", "second"] and first.done()
    assert not queue.busy
    queue.shutdown()


def test_log_follower_reads_backlog_then_new_lines(qtbot: Any, tmp_path: Path) -> None:
    path = tmp_path / "web.error.log"
    path.write_text("".join(f"old line {i}\n" for i in range(5000)))  # > backlog: only the tail
    follower = LogFollower(period_s=0.05, backlog_bytes=1000)
    lines: list[tuple[str, str]] = []
    follower.lines.connect(lines.extend)
    follower.set_sources([LogSource("web", "error", path)])
    follower.start()
    try:
        qtbot.waitUntil(lambda: bool(lines), timeout=2000)
        assert lines[-1] == ("web.error", "old line 4999")
        assert 50 < len(lines) < 120 and all(t.startswith("old line ") for _, t in lines)
        with open(path, "a") as f:
            f.write("new line\npartial")
        qtbot.waitUntil(lambda: lines[-1][1] == "new line", timeout=2000)
        path.write_text("")  # copy-truncate
        with open(path, "a") as f:
            f.write("after truncate\n")
        qtbot.waitUntil(lambda: lines[-1][1] == "after truncate", timeout=2000)
    finally:
        follower.stop()

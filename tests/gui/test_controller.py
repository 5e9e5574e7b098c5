"""The controller: profiles load off the GUI thread and the newest wins; operations make their
session first, run off the GUI thread, and complete on it after the panels saw the new snapshot.

The session here is a stand-in that records threads and order (timing logic only); the real
session under the real window is exercised end to end in test_main_window.py."""
from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

import pytest

from stackpanel.core.metrics import MetricsSnapshot
from stackpanel.core.profiles.library import resolve_profile
from stackpanel.core.profiles.schema import Profile
from stackpanel.core.render import render_stack
from stackpanel.core.supervise.events import (
    Event,
    NodeSnapshot,
    NodeState,
    StackSnapshot,
    StackState,
    StackStateChanged,
)
from stackpanel.qt.controller import LoadedProfile, Operation, SessionPrepareError, StackController

pytestmark = pytest.mark.gui


class RecordingSession:
    """What the controller calls on a StackSession, with the thread of each call."""

    def __init__(self, profile: Profile, tmp: Any, log: list[tuple[str, int]]) -> None:
        self.profile = profile
        self.stack = render_stack(profile, tmp)
        self.state = StackState.STOPPED
        self.log = log
        self.subscribers: list[Callable[[Event], None]] = []

    def _call(self, name: str) -> None:
        self.log.append((name, threading.get_ident()))

    def subscribe(self, cb: Callable[[Event], None]) -> Callable[[], None]:
        self.subscribers.append(cb)
        return lambda: self.subscribers.remove(cb)

    def subscribe_metrics(self, cb: Callable[[MetricsSnapshot], None]) -> Callable[[], None]:
        return lambda: None

    def snapshot(self) -> StackSnapshot:
        nodes = tuple(NodeSnapshot(n, node.kind, NodeState.READY if self.state == StackState.RUNNING
                                   else NodeState.STOPPED, None, (), 0, node.address)
                      for n, node in self.profile.nodes.items())
        return StackSnapshot(self.state, nodes, self.profile.entry_url)

    def start(self) -> None:
        self._call("start")
        self.state = StackState.RUNNING
        for cb in list(self.subscribers):
            cb(StackStateChanged(StackState.RUNNING))

    def request_stop(self) -> None:
        self._call("request_stop")

    def stop(self) -> None:
        self._call("stop")
        self.state = StackState.STOPPED

    def restart_node(self, name: str) -> None:
        self._call(f"restart_node {name}")

    def reload(self, profile: Profile) -> list[str]:
        self._call(f"reload web.workers={profile.nodes['web'].workers}")
        return ["web"]

    def last_lines(self, node: str, n: int = 50) -> list[str]:
        return [f"{node} line"]

    def close(self) -> None:
        self._call("close")


def loaded_controller(qtbot: Any, factory: Callable[[Profile], Any], name: str = "nginx-uvicorn") -> StackController:
    c = StackController(session_factory=factory)
    with qtbot.waitSignal(c.profileLoaded, timeout=10_000):
        c.load_profile(name, resolve_profile(name))
    return c


def test_the_newest_load_wins_and_selects_the_entry(qtbot: Any) -> None:
    c = StackController()
    seen: list[str] = []
    selected: list[str] = []
    c.profileLoaded.connect(lambda lp: seen.append(lp.name))
    c.nodeSelected.connect(selected.append)
    first = c.load_profile("nginx-split", resolve_profile("nginx-split"))
    second = c.load_profile("nginx-uvicorn", resolve_profile("nginx-uvicorn"))
    qtbot.waitUntil(lambda: first.done() and second.done(), timeout=10_000)
    assert seen == ["nginx-uvicorn"] and c.is_current(second) and not c.is_current(first)
    assert isinstance(c.loaded, LoadedProfile) and c.loaded.profile is not None
    assert selected == ["web"] and c.selected_node == "web"
    assert c.rendered_node("app") is not None  # the preview, before any session exists
    # a new offset reloads the profile asked for last
    reload = c.set_port_offset(200)
    assert reload is not None
    qtbot.waitUntil(reload.done, timeout=10_000)
    assert c.loaded.port_offset == 200 and c.loaded.profile.nodes["web"].port == 8080 + 200
    c.shutdown()


def test_start_makes_the_session_runs_off_the_gui_thread_and_completes_after_the_snapshot(
        qtbot: Any, tmp_path: Any) -> None:
    calls: list[tuple[str, int]] = []
    made: list[RecordingSession] = []

    def factory(profile: Profile) -> RecordingSession:
        calls.append(("make", threading.get_ident()))
        made.append(RecordingSession(profile, tmp_path / "run", calls))
        return made[-1]

    c = loaded_controller(qtbot, factory)
    gui = threading.get_ident()
    order: list[str] = []
    c.sessionChanged.connect(lambda s: order.append("session"))
    c.snapshotChanged.connect(lambda snap: order.append(f"snapshot {snap.state}"))
    c.bridge.stackStateChanged.connect(lambda ev: order.append(f"event {ev.state}"))

    def done(op: Operation[None]) -> None:
        order.append(f"done ok={op.ok} busy={c.busy} thread-is-gui={threading.get_ident() == gui}")

    op = c.start()
    assert op is not None and c.busy
    assert c.start() is None  # one at a time: a second start while busy is refused
    op.then(done)
    qtbot.waitUntil(op.done, timeout=5000)
    assert [name for name, _ in calls] == ["make", "start"]
    assert all(thread != gui for _, thread in calls)
    assert order == ["session", "snapshot stopped", "event running", "snapshot running",
                     "done ok=True busy=False thread-is-gui=True"]
    assert c.session is made[0] and c.session_matches() and c.stack_state == StackState.RUNNING

    # a node action on the same profile reuses the session; stop asks a start to give up first
    node_op = c.restart_node("app")
    assert node_op is not None
    qtbot.waitUntil(node_op.done, timeout=5000)
    stop = c.stop()
    assert stop is not None
    qtbot.waitUntil(stop.done, timeout=5000)
    assert [name for name, _ in calls][2:] == ["restart_node app", "request_stop", "stop"]
    assert len(made) == 1 and c.stack_state == StackState.STOPPED

    closed = c.close()
    qtbot.waitUntil(closed.done, timeout=5000)
    assert calls[-1][0] == "close"
    c.shutdown()


def test_a_session_that_cannot_be_made_fails_the_start_it_was_made_for(qtbot: Any) -> None:
    def factory(profile: Profile) -> Any:
        raise OSError("run directory is read-only")

    c = loaded_controller(qtbot, factory)
    op = c.start()
    assert op is not None
    qtbot.waitUntil(op.done, timeout=5000)
    assert isinstance(op.error, SessionPrepareError) and "read-only" in str(op.error)
    assert c.session is None and not c.busy
    c.shutdown()


def test_reload_rereads_the_file_off_the_gui_thread_and_refuses_a_broken_one(qtbot: Any, tmp_path: Any) -> None:
    from PySide6.QtWidgets import QWidget

    from stackpanel.core.errors import ProfileError
    from stackpanel.core.profiles.library import builtin_dir
    from stackpanel.qt.stack_actions import StackActions

    path = tmp_path / "mine.yaml"
    path.write_text((builtin_dir() / "nginx-uvicorn.yaml").read_text().replace("../apps/site", str(
        builtin_dir().parent / "apps" / "site")).replace("module:", f"working_dir: {builtin_dir()}\n      module:"))
    calls: list[tuple[str, int]] = []
    c = StackController(session_factory=lambda profile: RecordingSession(profile, tmp_path / "run", calls))
    with qtbot.waitSignal(c.profileLoaded, timeout=10_000):
        c.load_profile("mine", path)
    window = QWidget()
    actions = StackActions(c, window)
    assert not actions.reload.isEnabled() and c.reload() is None  # nothing runs: nothing to reload
    start = c.start()
    assert start is not None
    qtbot.waitUntil(lambda: start.done() and actions.reload.isEnabled(), timeout=5000)

    path.write_text(path.read_text().replace("    workers: 1\n", "    workers: 2\n", 1))
    with qtbot.waitSignal(c.profileLoaded, timeout=10_000):  # the re-read profile becomes the loaded one
        actions.reload.trigger()
    assert calls[-1][0] == "reload web.workers=2" and calls[-1][1] != threading.get_ident()
    assert c.profile is not None and c.profile.nodes["web"].workers == 2

    path.write_text(path.read_text().replace("kind: nginx", "kind: nginx\n    colour: red"))
    op = c.reload()
    assert op is not None
    qtbot.waitUntil(op.done, timeout=5000)
    assert isinstance(op.error, ProfileError) and "unknown key 'colour'" in str(op.error)
    assert f"{path}:" in str(op.error)
    assert [name for name, _ in calls].count("reload web.workers=2") == 1  # the session never saw it
    c.shutdown()

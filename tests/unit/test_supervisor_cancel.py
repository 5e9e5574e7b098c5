"""A stop request is never lost, whenever it lands relative to a start (no process is spawned here:
the start is refused before it prepares anything, or ``_prepare`` is replaced by a marker)."""
from __future__ import annotations

from pathlib import Path

import pytest

from stackpanel.core.errors import StackpanelError
from stackpanel.core.profiles.library import builtin_dir
from stackpanel.core.profiles.loader import load_profile
from stackpanel.core.render import render_stack
from stackpanel.core.supervise.events import Event, NodeState, NodeStateChanged, StackState
from stackpanel.core.supervise.supervisor import Supervisor


class Prepared(StackpanelError):
    """Raised by the stand-in for ``_prepare``: the start went past every cancel check."""


@pytest.fixture
def sup(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    profile = load_profile(builtin_dir() / "uvicorn-workers.yaml")
    supervisor = Supervisor(render_stack(profile, tmp_path / "run"), use_guardian=False)

    def prepare() -> None:
        raise Prepared("would prepare and spawn now")

    monkeypatch.setattr(supervisor, "_prepare", prepare)
    yield supervisor
    supervisor.close()


def starting_events(events: list[Event]) -> list[Event]:
    return [e for e in events if isinstance(e, NodeStateChanged) and e.state == NodeState.STARTING]


def test_a_stop_requested_before_start_takes_the_lock_cancels_it(sup: Supervisor) -> None:
    # The GUI and `up` call request_stop() the moment the user asks, while the start may still be
    # queued on a worker thread. Before the fix, start() cleared the flag and started everything.
    events: list[Event] = []
    sup.subscribe(events.append)
    sup.request_stop()
    sup.start()  # returns without preparing (Prepared would propagate) or spawning anything
    assert sup.state == StackState.STOPPED
    assert starting_events(events) == []


def test_the_stop_that_follows_honours_the_request_and_the_next_start_runs(sup: Supervisor) -> None:
    sup.request_stop()
    sup.start()
    sup.stop()
    with pytest.raises(Prepared):
        sup.start()


def test_a_request_landing_during_a_stop_outlives_it(sup: Supervisor, monkeypatch: pytest.MonkeyPatch) -> None:
    # Stop clicked twice: the second request comes while the first stop runs, with a start queued
    # between them. The first stop must not swallow the second request.
    real_stop_all = sup._stop_all

    def stop_all_with_a_request_meanwhile(final: StackState, reason: str) -> None:
        sup.request_stop()
        real_stop_all(final, reason)

    monkeypatch.setattr(sup, "_stop_all", stop_all_with_a_request_meanwhile)
    sup.stop()
    monkeypatch.setattr(sup, "_stop_all", real_stop_all)
    sup.start()  # cancelled: no Prepared
    assert sup.state == StackState.STOPPED
    sup.stop()
    with pytest.raises(Prepared):
        sup.start()


def test_start_node_does_nothing_while_a_stop_is_pending(sup: Supervisor) -> None:
    events: list[Event] = []
    sup.subscribe(events.append)
    sup.request_stop()
    sup.start_node("app")
    assert starting_events(events) == []

"""`stackpanel up`: run a stack in the foreground, print what happens, stop cleanly on Ctrl-C/TERM.

Above the session: it drives a :class:`~stackpanel.core.session.StackSession` and nothing below it.
"""
from __future__ import annotations

import json
import os
import signal
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import TextIO

from stackpanel.core.errors import StackpanelError
from stackpanel.core.metrics import MetricsSnapshot, snapshot_to_json
from stackpanel.core.metrics.tracing import Trace, trace_to_json
from stackpanel.core.profiles.exposure import exposure_warnings
from stackpanel.core.profiles.schema import Profile, ProxyNode
from stackpanel.core.session import StackSession
from stackpanel.core.supervise import runcontrol
from stackpanel.core.supervise.events import (
    Event,
    NodeState,
    NodeStateChanged,
    StackMessage,
    StackState,
    StackStateChanged,
    WorkersChanged,
)
from stackpanel.core.tls import trust_status


def format_event(event: Event) -> str:
    stamp = time.strftime("%H:%M:%S", time.localtime(event.at)) + f".{int(event.at * 1000) % 1000:03d}"
    if isinstance(event, NodeStateChanged):
        pid = f" pid {event.pid}" if event.pid else ""
        return f"{stamp} {event.node:<10} {event.state.value:<11}{pid}  {event.reason}"
    if isinstance(event, WorkersChanged):
        change = " ".join([*(f"+{p}" for p in event.added), *(f"-{p}" for p in event.removed)])
        return f"{stamp} {event.node:<10} workers     {len(event.worker_pids)} ({change})"
    if isinstance(event, StackStateChanged):
        return f"{stamp} {'stack':<10} {event.state.value:<11} {event.reason}"
    return f"{stamp} {'note':<10} {event.level:<11} {event.text}"


def format_metrics_table(snap: MetricsSnapshot) -> str:
    lines = [f"{'node':<10} {'pid':>7} {'role':<7} {'cpu %':>6} {'rss MB':>7} {'req/s':>8} {'total':>8}"]
    for w in snap.workers:
        cpu = "-" if w.cpu_percent is None else f"{w.cpu_percent:.1f}"
        lines.append(f"{w.node:<10} {w.pid:>7} {w.role:<7} {cpu:>6} {w.rss_bytes / 1e6:>7.1f} "
                     f"{w.rps:>8.1f} {w.requests_total:>8}")
    return "\n".join(lines)


def run_headless(profile: Profile, *, run_dir: Path | None = None, metrics_table: bool = False,
                 metrics_json: Path | None = None, traces_json: Path | None = None, out: TextIO = sys.stdout,
                 reload_profile: Callable[[], Profile] | None = None, keep_going: bool = False,
                 profile_file: Path | None = None) -> int:
    """Run until Ctrl-C/SIGTERM. SIGHUP re-reads the profile through ``reload_profile`` and applies
    it gracefully (the servers test their new configs first; a bad one leaves the stack as it was).
    With ``profile_file`` (the file ``reload_profile`` reads) `stackpanel reload` finds this run.

    A node that has failed for good (its restarts used up) ends the run with exit status 1, unless
    ``keep_going``: then what still works keeps serving and the run stays up, degraded."""
    session = StackSession(profile, run_dir=run_dir)
    print_lock = threading.Lock()

    def say(text: str) -> None:
        with print_lock:
            print(text, file=out, flush=True)

    session.subscribe(lambda e: say(format_event(e)))
    failed_for_good: list[str] = []

    def watch_failures(event: Event) -> None:
        if isinstance(event, NodeStateChanged) and event.state == NodeState.FAILED and session.state in (
                StackState.RUNNING, StackState.DEGRADED):
            failed_for_good.append(f"{event.node} ({event.reason})")
            wake.set()

    session.subscribe(watch_failures)
    reloading = threading.Event()
    reload_notes: list[str] = []  # what the nodes said during the reload under way, for `stackpanel reload`

    def note_reload(event: Event) -> None:
        if isinstance(event, StackMessage) and reloading.is_set():
            reload_notes.append(f"{event.level}: {event.text}")

    session.subscribe(note_reload)
    failures: list[str] = []  # reasons of the stack's "failed" events, as printed
    session.subscribe(lambda e: failures.append(e.reason) if isinstance(e, StackStateChanged)
                      and e.state == StackState.FAILED else None)
    json_file = open(metrics_json, "a", encoding="utf-8") if metrics_json else None  # noqa: SIM115

    def on_metrics(snap: MetricsSnapshot) -> None:
        if json_file is not None:
            json_file.write(json.dumps(snapshot_to_json(snap)) + "\n")
            json_file.flush()
        if metrics_table:
            say(format_metrics_table(snap))

    session.subscribe_metrics(on_metrics)
    traces_file = open(traces_json, "a", encoding="utf-8") if traces_json else None  # noqa: SIM115
    if traces_file is not None:
        def on_trace(trace: Trace) -> None:  # the engine's thread, once per completed trace
            traces_file.write(json.dumps(trace_to_json(trace)) + "\n")
            traces_file.flush()

        session.subscribe_traces(on_trace)
    stop = threading.Event()
    wake = threading.Event()
    reload_wanted = threading.Event()
    wanted = {signal.SIGINT: "stop", signal.SIGTERM: "stop", signal.SIGHUP: "reload" if reload_profile else "stop"}

    def act(signum: int) -> None:  # on the signal thread below, never in a handler
        if wanted[signal.Signals(signum)] == "reload":
            reload_wanted.set()
        else:
            stop.set()
            session.request_stop()  # a start in progress gives up promptly
        wake.set()

    # The handlers take no lock: a handler runs between two bytecodes of the main thread and may
    # interrupt another handler inside Event.set (300 SIGHUPs deadlocked `up` that way). The C-level
    # wakeup fd carries each signal's number to a thread that acts on it; 0 ends that thread.
    read_fd, write_fd = os.pipe2(os.O_CLOEXEC)
    os.set_blocking(write_fd, False)
    previous = {s: signal.signal(s, lambda *_: None) for s in wanted}
    previous_fd = signal.set_wakeup_fd(write_fd, warn_on_full_buffer=False)

    def signals() -> None:
        while data := os.read(read_fd, 512):
            for signum in data:
                if signum == 0:
                    return
                if signum in wanted:
                    act(signum)

    signal_thread = threading.Thread(target=signals, name="stackpanel-signals", daemon=True)
    signal_thread.start()
    for warning in exposure_warnings(profile):
        say(f"warning: {warning}")

    def run() -> int:
        try:
            session.start()
        except StackpanelError as exc:
            text = str(exc)
            if failures and text.startswith(failures[-1]):  # its "failed" event said the first line: once
                text = text[len(failures[-1]):].lstrip("\n")
            say("stackpanel: the stack did not come up" + (f":\n{text}" if text.strip() else " (above)"))
            return 1
        if stop.is_set() or session.state != StackState.RUNNING:
            return 0 if stop.is_set() else 1
        hint = "Ctrl-C stops it" + (f"; kill -HUP {os.getpid()} reloads the profile" if reload_profile else "")
        say(f"\n  {profile.name} is up: open {profile.browser_url}\n  ({hint})\n")
        notice = trust_notice(profile)
        if notice:
            say(notice)
        if reload_profile is not None and profile_file is not None:
            runcontrol.announce(session.run_dir, profile_file, profile.port_offset, profile.name)
        while not stop.is_set():
            wake.wait(0.5)
            wake.clear()
            if failed_for_good and not keep_going:
                say(f"stackpanel: node {failed_for_good[0]} has failed for good; stopping the stack "
                    "(`up --keep-going` keeps serving what still works)")
                return 1
            if reload_wanted.is_set() and reload_profile is not None and not stop.is_set():
                reload_wanted.clear()
                reloading.set()
                try:
                    changed = session.reload(reload_profile())
                    outcome, ok = f"reloaded: {', '.join(changed) if changed else 'nothing changed'}", True
                except StackpanelError as exc:
                    outcome, ok = f"reload refused, the stack keeps running as it was:\n{exc}", False
                say(outcome)
                runcontrol.record_outcome(session.run_dir, ok, "\n".join([*reload_notes, outcome]))
                reload_notes.clear()
                reloading.clear()
        say("stopping ...")
        return 0

    try:
        return run()
    finally:
        runcontrol.withdraw(session.run_dir)
        session.close()
        signal.set_wakeup_fd(previous_fd)
        for s, handler in previous.items():
            signal.signal(s, handler)
        os.write(write_fd, b"\0")
        signal_thread.join()
        os.close(read_fd)
        os.close(write_fd)
        for f in (json_file, traces_file):
            if f is not None:
                f.close()


def trust_notice(profile: Profile) -> str | None:
    """Why a browser would warn about the entry's https URL, and the command that fixes it."""
    entry = profile.nodes[profile.entry]
    if not isinstance(entry, ProxyNode) or entry.tls is None:
        return None
    status = trust_status()
    return None if status.trusted else f"  note: {status.message}"

"""`stackpanel up`: run a stack in the foreground, print what happens, stop cleanly on Ctrl-C/TERM."""
from __future__ import annotations

import json
import signal
import sys
import threading
import time
from pathlib import Path
from typing import TextIO

from stackpanel.core.errors import StackpanelError
from stackpanel.core.metrics import MetricsSnapshot, snapshot_to_json
from stackpanel.core.profiles.schema import Profile
from stackpanel.core.session import StackSession
from stackpanel.core.supervise.events import (
    Event,
    NodeStateChanged,
    StackState,
    StackStateChanged,
    WorkersChanged,
)


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
                 metrics_json: Path | None = None, out: TextIO = sys.stdout) -> int:
    session = StackSession(profile, run_dir=run_dir)
    print_lock = threading.Lock()

    def say(text: str) -> None:
        with print_lock:
            print(text, file=out, flush=True)

    session.subscribe(lambda e: say(format_event(e)))
    json_file = open(metrics_json, "a", encoding="utf-8") if metrics_json else None  # noqa: SIM115

    def on_metrics(snap: MetricsSnapshot) -> None:
        if json_file is not None:
            json_file.write(json.dumps(snapshot_to_json(snap)) + "\n")
            json_file.flush()
        if metrics_table:
            say(format_metrics_table(snap))

    session.subscribe_metrics(on_metrics)
    stop = threading.Event()

    def request_stop(signum: int, _frame: object) -> None:
        stop.set()
        session.supervisor.request_stop()  # a start in progress gives up promptly

    previous = {s: signal.signal(s, request_stop) for s in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)}
    try:
        try:
            session.start()
        except StackpanelError as exc:
            say(f"stackpanel: the stack did not come up:\n{exc}")
            return 1
        if stop.is_set() or session.supervisor.state != StackState.RUNNING:
            return 0 if stop.is_set() else 1
        say(f"\n  {profile.name} is up: open {profile.entry_url}\n  (Ctrl-C stops it)\n")
        while not stop.wait(0.5):
            pass
        say("stopping ...")
        return 0
    finally:
        session.close()
        for s, handler in previous.items():
            signal.signal(s, handler)
        if json_file is not None:
            json_file.close()

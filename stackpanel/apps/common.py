"""What the FastAPI and Flask demo apps share: the same bodies, limits and CPU burner.

Kept free of any web framework so each app imports only its own.
"""
from __future__ import annotations

import json
import os
import time

MAX_MS = 10_000
#: One request may burn at most this much CPU: /cpu is a load-test knob, not a way to pin a worker.
MAX_CPU_MS = 1_000
FORWARDED_HEADERS = ("host", "x-forwarded-for", "x-forwarded-proto", "x-forwarded-host", "x-forwarded-prefix",
                     "x-real-ip", "x-request-id")
HEALTHZ_BODY = b'{"ok": true}'

_hello_cache: dict[str, tuple[int, bytes]] = {}


def hello_body(app_name: str) -> bytes:
    """Serialised once per process (the pid changes after a fork)."""
    pid = os.getpid()
    cached = _hello_cache.get(app_name)
    if cached is None or cached[0] != pid:
        body = {"message": "hello from stackpanel", "app": app_name, "pid": pid}
        cached = _hello_cache[app_name] = (pid, json.dumps(body).encode())
    return cached[1]


def clamp_ms(raw: str | None, limit: int = MAX_MS) -> int:
    """A query-string millisecond count as an int in 0..limit (junk, nan and inf count as 0)."""
    try:
        value = int(float(raw)) if raw is not None else 0
    except (ValueError, OverflowError):
        return 0
    return max(0, min(limit, value))


MAX_EVENTS = 1_000
#: Server-sent events tell proxies not to buffer them (nginx honours X-Accel-Buffering per response).
EVENT_HEADERS = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}


def status_code(raw: str | None) -> int:
    """``/status?code=N``: N as an HTTP status in 200..599 (junk: 500), for failing on purpose."""
    try:
        value = int(raw) if raw is not None else 500
    except ValueError:
        return 500
    return value if 200 <= value <= 599 else 500


def clamp_count(raw: str | None, default: int = 5, limit: int = MAX_EVENTS) -> int:
    try:
        value = int(raw) if raw is not None else default
    except ValueError:
        return default
    return max(1, min(limit, value))


def event_chunk(i: int) -> bytes:
    """One server-sent event; the pid says which worker streams it."""
    return f"id: {i}\ndata: {json.dumps({'i': i, 'pid': os.getpid()})}\n\n".encode()


def drip_chunk(i: int) -> bytes:
    """One line of a plain streamed response (no event-stream type, no proxy hint)."""
    return f"chunk {i}\n".encode()


def burn_cpu(ms: int) -> None:
    """Busy-loop until this thread has used `ms` milliseconds of CPU."""
    deadline = time.thread_time() + ms / 1000
    while time.thread_time() < deadline:
        pass

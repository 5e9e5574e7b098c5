"""The built-in HTTP/1.1 load generator: asyncio (uvloop when installed) + hand-written protocol.

Model
-----
* ``connections`` keep-alive connections, each with at most one request in flight (no
  pipelining), like wrk. A connection the server closes (``Connection: close``, idle timeout,
  error) is reopened.
* **max mode** (``rate=None``): closed loop, the next request leaves as soon as the previous
  response is complete.
* **rate mode** (``rate=R``): request *k* is due at ``start + k/R`` (across all connections).
  A free connection takes the next due slot; if the slot is already past (every connection was
  busy, i.e. the server fell behind), the request goes at once and its latency is measured from
  the slot's *intended* time, so a stall shows up in the latencies of everything queued behind it
  (no coordinated omission). If the slot is in the future the connection waits for it and the
  latency starts at the actual send (timer slack of the generator is not blamed on the server).
  The achievable rate is bounded by ``connections / latency``; give enough connections.
* Stops at ``duration_s``, after ``requests`` requests, on :meth:`LoadRun.stop`, or at a hard
  deadline (``max_duration_s``), whichever comes first. At a duration/stop deadline, requests in
  flight are abandoned and not counted; a count run waits for its last responses (bounded by the
  per-request timeout). A request counts toward ``requests`` when it ends in any way, including a
  failed connection attempt, so a count run against a dead server still ends.
* The first connects are spread over ``ramp_s`` (<= 0.5 ms apart): a burst of simultaneous
  connects lets one worker of a multi-worker server (shared listening socket) accept most of
  them (measured: 55 of 64 connections on one of two uvicorn workers), which skews the test.
* ``give_up_after_s``: if not one connection succeeded in that time, the run stops with
  ``aborted`` set (a stopped server gives an answer in ~2 s, not after the whole duration).
* Latency goes into a :class:`LatencyHistogram` (µs buckets, no samples kept).
* ``processes=K`` splits connections (and rate and count) over K worker processes, each with its
  own event loop, and merges their counts and histograms.

Threading
---------
:func:`run_load` blocks the calling thread (which must not be running an event loop) and calls
``progress`` from that thread. :class:`LoadRun` runs :func:`run_load` in its own daemon thread:
``progress`` and ``on_done`` are called from that thread (a GUI must hop to its own thread);
``stop()`` and ``result()`` may be called from any thread.
"""
from __future__ import annotations

import asyncio
import logging
import math
import multiprocessing
import queue
import ssl
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from stackpanel.core.loadgen.errors import LoadConfigError, LoadgenError
from stackpanel.core.loadgen.histogram import LatencyHistogram
from stackpanel.core.loadgen.http import ResponseParseError, ResponseParser
from stackpanel.core.loadgen.result import (
    GENERATOR_ERROR_KINDS,
    ErrorKind,
    LoadMode,
    LoadProgress,
    LoadResult,
)
from stackpanel.core.loadgen.target import LoadTarget, parse_target
from stackpanel.core.tls import ca_dir

log = logging.getLogger("stackpanel.loadgen")

ProgressCallback = Callable[[LoadProgress], None]
DoneCallback = Callable[["LoadResult | BaseException"], None]

_TICK_S = 0.05  # watchdog period: timeouts, deadline, stop flag
_BACKOFF_START_S = 0.005
_BACKOFF_MAX_S = 0.1

try:  # pragma: no cover - depends on the environment
    import uvloop as _uvloop
except ImportError:  # pragma: no cover
    _uvloop = None  # type: ignore[assignment]


def new_event_loop() -> asyncio.AbstractEventLoop:
    """A fresh event loop: uvloop's when installed (2-3x cheaper per request), else asyncio's."""
    if _uvloop is not None:
        return _uvloop.new_event_loop()
    return asyncio.new_event_loop()


def uvloop_available() -> bool:
    return _uvloop is not None


@dataclass(frozen=True)
class LoadConfig:
    """What to run. At least one of ``duration_s`` and ``requests`` must be set."""

    url: str
    connections: int = 16
    duration_s: float | None = 10.0
    requests: int | None = None  # total request count; with duration_s, whichever comes first
    rate: float | None = None  # fixed total requests/s; None = as fast as possible
    processes: int = 1
    timeout_s: float = 5.0  # per request: send -> complete response
    connect_timeout_s: float = 2.0
    method: str = "GET"
    headers: tuple[tuple[str, str], ...] = ()
    progress_interval_s: float = 0.25
    max_duration_s: float = 600.0  # hard deadline whatever else is set
    give_up_after_s: float | None = 2.0  # stop when no connection has succeeded for this long
    # multiprocessing start method for processes > 1. "spawn" is safe in a threaded (Qt) process;
    # like any spawn, it re-imports the caller's __main__, which must be guarded by
    # ``if __name__ == "__main__":``. "fork" starts faster but must not be used from a GUI process.
    start_method: str = "spawn"
    ramp_s: float = 0.05  # spread the first connects over up to this long (0.5 ms apart at most)

    def __post_init__(self) -> None:
        problems = []
        if self.connections < 1:
            problems.append(f"connections must be >= 1 (got {self.connections})")
        if self.duration_s is None and self.requests is None:
            problems.append("give a duration, a request count, or both")
        if self.duration_s is not None and not (0 < self.duration_s <= self.max_duration_s):
            problems.append(f"duration must be > 0 and <= {self.max_duration_s:g} s (got {self.duration_s})")
        if self.requests is not None and self.requests < 1:
            problems.append(f"requests must be >= 1 (got {self.requests})")
        if self.rate is not None and not (self.rate > 0 and math.isfinite(self.rate)):
            problems.append(f"rate must be a positive number of requests/s (got {self.rate})")
        if self.processes < 1:
            problems.append(f"processes must be >= 1 (got {self.processes})")
        if not 0 <= self.ramp_s <= 10:
            problems.append(f"ramp must be between 0 and 10 s (got {self.ramp_s})")
        if not self.timeout_s > 0 or not self.connect_timeout_s > 0:
            problems.append("timeouts must be > 0")
        if self.method not in ("GET", "HEAD"):
            problems.append(f"method must be GET or HEAD (got {self.method!r})")
        for name, value in self.headers:
            if any(c in name + value for c in "\r\n") or ":" in name or not name:
                problems.append(f"header {name!r} is not a valid header line")
        if self.start_method not in multiprocessing.get_all_start_methods():
            problems.append(f"start method {self.start_method!r} is not available here")
        if problems:
            raise LoadConfigError("invalid load settings: " + "; ".join(problems))

    @property
    def mode(self) -> LoadMode:
        return "max" if self.rate is None else "rate"


def build_request(target: LoadTarget, method: str = "GET", headers: tuple[tuple[str, str], ...] = ()) -> bytes:
    """The exact bytes sent for every request."""
    lines = [
        f"{method} {target.path} HTTP/1.1",
        f"Host: {target.host_header}",
        "User-Agent: stackpanel-loadgen",
        "Accept: */*",
    ]
    lines += [f"{name}: {value}" for name, value in headers]
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")


@dataclass
class _Partial:
    """One engine's counts, picklable (crosses the process boundary in process mode)."""

    ok: int
    responses: int
    errors: dict[str, int]
    hist: LatencyHistogram
    duration_s: float
    cpu_s: float
    stopped_by: str
    aborted: str | None = None


class _Conn(asyncio.Protocol):
    """One keep-alive connection; the request/response cycle runs in callbacks (no await per request)."""

    __slots__ = ("closed", "deadline", "e", "inflight", "parser", "sent_at", "slot_time", "timer", "transport")

    def __init__(self, engine: _Engine, closed: asyncio.Future[None]) -> None:
        self.e = engine
        self.closed = closed
        self.transport: asyncio.Transport | None = None
        self.parser = ResponseParser(head_only=engine.head_only)
        self.sent_at = 0.0
        self.deadline = 0.0
        self.inflight = False
        self.timer: asyncio.TimerHandle | None = None
        self.slot_time: float | None = None

    def as_factory(self) -> _Conn:
        """Protocol factory for ``create_connection`` that hands out this very object."""
        return self

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def send(self, intended: float | None) -> None:
        now = time.perf_counter()
        self.sent_at = intended if intended is not None and intended < now else now
        self.deadline = now + self.e.timeout_s
        self.inflight = True
        assert self.transport is not None
        self.transport.write(self.e.request)

    def send_when_due(self) -> None:
        self.timer = None
        self.slot_time = None
        if self.e.running and self.transport is not None and not self.transport.is_closing():
            self.send(None)

    def data_received(self, data: bytes) -> None:
        e = self.e
        if not self.inflight:
            # Bytes nobody asked for (or after a timeout): this connection is no longer trustworthy.
            if self.transport is not None:
                self.transport.abort()
            return
        try:
            done = self.parser.feed(data)
        except ResponseParseError as exc:
            log.debug("parse error from %s: %s", e.target_text, exc)
            self.inflight = False
            e.request_failed(ErrorKind.PARSE)
            assert self.transport is not None
            self.transport.abort()
            return
        if not done:
            return
        now = time.perf_counter()
        self.inflight = False
        status, close = done[0]
        e.response_received(status, now - self.sent_at)
        if len(done) > 1:  # more responses than requests
            e.request_failed(ErrorKind.PARSE, counted=False)
            close = True
        if close or not e.running:
            assert self.transport is not None
            self.transport.close()
            return
        e.next_request(self)

    def eof_received(self) -> bool:
        return False  # close our side too; connection_lost decides what it meant

    def connection_lost(self, exc: Exception | None) -> None:
        e = self.e
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None
            if self.slot_time is not None and e.running:
                e.orphan_slots.append(self.slot_time)
            self.slot_time = None
        if self.inflight:
            self.inflight = False
            try:
                complete = self.parser.feed_eof()
            except ResponseParseError:
                complete = None
            if complete is not None:
                e.response_received(complete[0], time.perf_counter() - self.sent_at)
            elif e.running:
                e.request_failed(ErrorKind.RESET)
        if not self.closed.done():
            self.closed.set_result(None)

    def shutdown(self) -> None:
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None
        self.inflight = False  # abandoned, not counted
        if self.transport is not None:
            self.transport.abort()


@dataclass(frozen=True)
class _Share:
    """One engine's part of the load: all of it in a single process, a k-th of it in process mode."""

    connections: int
    requests: int | None
    rate: float | None

    @classmethod
    def whole(cls, config: LoadConfig) -> _Share:
        return cls(config.connections, config.requests, config.rate)


def _split(total: int, k: int) -> list[int]:
    return [total // k + (1 if i < total % k else 0) for i in range(k)]


def _shares(config: LoadConfig, k: int) -> list[_Share]:
    conns = _split(config.connections, k)
    counts: list[int | None] = list(_split(config.requests, k)) if config.requests is not None else [None] * k
    return [_Share(c, n, config.rate * c / config.connections if config.rate else None)
            for c, n in zip(conns, counts, strict=True)]


class _Engine:
    """One event loop's worth of connections and counters, for ``share`` of ``config``."""

    def __init__(
        self,
        config: LoadConfig,
        target: LoadTarget,
        share: _Share,
        *,
        progress: ProgressCallback | None = None,
        stop_check: Callable[[], bool] | None = None,
        cpu_clock: Callable[[], float] = time.thread_time,
    ) -> None:
        self.target = target
        # https: verified against stackpanel's local CA (the only CA a loopback stack's leaf has)
        self._tls = ssl.create_default_context(cafile=str(ca_dir() / "ca.pem")) if target.tls else None
        self.target_text = f"{target.address}:{target.port}"
        self.request = build_request(target, config.method, config.headers)
        self.head_only = config.method == "HEAD"
        # the first connects spread over at most 0.5 ms per connection of the whole run
        self.ramp_s = min(config.ramp_s, config.connections * 0.0005)
        self.connections = share.connections
        self.requests = share.requests
        self.interval = 1.0 / share.rate if share.rate else 0.0
        self.duration_s = config.duration_s
        self.timeout_s = config.timeout_s
        self.connect_timeout_s = config.connect_timeout_s
        self.max_duration_s = config.max_duration_s
        self.give_up_after_s = config.give_up_after_s
        self.progress_interval_s = config.progress_interval_s
        self.progress = progress
        self.stop_check = stop_check
        self.cpu_clock = cpu_clock

        self.hist = LatencyHistogram()
        self.errors: dict[str, int] = {k.value: 0 for k in GENERATOR_ERROR_KINDS}
        self.ok = 0
        self.responses = 0
        self.issued = 0  # requests started (count budget)
        self.finished = 0  # requests ended, any way
        self.slot = 0  # rate mode: next slot number
        self.orphan_slots: list[float] = []
        self.conns: set[_Conn] = set()
        self.ever_connected = False
        self.running = False
        self.stopped_by = ""
        self.aborted: str | None = None
        self.start = 0.0
        self.end = 0.0
        self.end_at = 0.0
        self._done: asyncio.Future[None] | None = None
        self._loop: asyncio.AbstractEventLoop | None = None

    # -- accounting (called from protocol callbacks) --------------------------------------------
    def response_received(self, status: int, latency_s: float) -> None:
        self.hist.record_us(int(latency_s * 1_000_000))
        self.responses += 1
        if status < 400:
            self.ok += 1
        elif status >= 500:
            self.errors[ErrorKind.HTTP_5XX] += 1
        else:
            self.errors[ErrorKind.HTTP_4XX] += 1
        self.finished += 1
        if self.requests is not None and self.finished >= self.requests:
            self.finish("count")

    def request_failed(self, kind: ErrorKind, counted: bool = True) -> None:
        self.errors[kind] += 1
        if counted:
            self.finished += 1
            if self.requests is not None and self.finished >= self.requests:
                self.finish("count")

    def connect_failed(self, kind: ErrorKind) -> None:
        if self.requests is not None:
            if self.issued >= self.requests:
                return
            self.issued += 1
        self.request_failed(kind)

    def next_request(self, conn: _Conn) -> None:
        if not self.running:
            return
        if self.orphan_slots:
            due = self.orphan_slots.pop()
        elif self.requests is not None and self.issued >= self.requests:
            return  # budget spent: stay idle until the last responses are in
        else:
            self.issued += 1
            if not self.interval:
                conn.send(None)
                return
            due = self.start + self.slot * self.interval
            self.slot += 1
        delay = due - time.perf_counter()
        if delay > 0.0005:
            assert self._loop is not None
            conn.slot_time = due
            conn.timer = self._loop.call_later(delay, conn.send_when_due)
        else:
            conn.send(due)

    def finish(self, reason: str, aborted: str | None = None) -> None:
        if not self.running:
            return
        self.running = False
        self.end = time.perf_counter()
        self.stopped_by = reason
        self.aborted = aborted
        for conn in list(self.conns):
            conn.shutdown()
        if self._done is not None and not self._done.done():
            self._done.set_result(None)

    # -- tasks ----------------------------------------------------------------------------------
    async def run(self) -> _Partial:
        loop = asyncio.get_running_loop()
        self._loop = loop
        self._done = loop.create_future()
        cpu0 = self.cpu_clock()
        self.start = time.perf_counter()
        limit = self.max_duration_s if self.duration_s is None else min(self.duration_s, self.max_duration_s)
        self.end_at = self.start + limit
        self.running = True
        tasks = [loop.create_task(self._connection_slot(i)) for i in range(self.connections)]
        watchdog = loop.create_task(self._watchdog())
        try:
            await self._done
        finally:
            self.finish("cancelled")
            for task in tasks:
                task.cancel()
            watchdog.cancel()
            await asyncio.gather(*tasks, watchdog, return_exceptions=True)
            await asyncio.sleep(0)  # let aborted transports report connection_lost
        cpu = self.cpu_clock() - cpu0
        return _Partial(
            ok=self.ok,
            responses=self.responses,
            errors=dict(self.errors),
            hist=self.hist,
            duration_s=max(self.end - self.start, 1e-9),
            cpu_s=cpu,
            stopped_by=self.stopped_by,
            aborted=self.aborted,
        )

    async def _connection_slot(self, index: int) -> None:
        loop = self._loop
        assert loop is not None
        if self.ramp_s > 0 and index:
            await asyncio.sleep(self.ramp_s * index / self.connections)
        target = self.target
        backoff = _BACKOFF_START_S
        while self.running:
            if self.requests is not None and self.issued >= self.requests and not self.orphan_slots:
                return
            closed: asyncio.Future[None] = loop.create_future()
            conn = _Conn(self, closed)
            kind: ErrorKind | None = None
            try:
                await asyncio.wait_for(
                    loop.create_connection(conn.as_factory, target.address, target.port, ssl=self._tls),
                    self.connect_timeout_s,
                )
            except TimeoutError:
                kind = ErrorKind.TIMEOUT
            except ConnectionRefusedError:
                kind = ErrorKind.CONNECT_REFUSED
            except OSError as exc:
                log.debug("connect to %s failed: %s", self.target_text, exc)
                kind = ErrorKind.CONNECT
            if kind is not None:
                if not self.running:
                    return
                self.connect_failed(kind)
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, _BACKOFF_MAX_S)
                continue
            if not self.running:
                conn.shutdown()
                return
            backoff = _BACKOFF_START_S
            self.ever_connected = True
            self.conns.add(conn)
            try:
                self.next_request(conn)
                await closed
            finally:
                self.conns.discard(conn)

    async def _watchdog(self) -> None:
        interval = self.progress_interval_s
        next_progress = self.start + interval
        last_ok, last_t = 0, self.start
        while self.running:
            now = time.perf_counter()
            await asyncio.sleep(max(0.0, min(_TICK_S, self.end_at - now)))
            now = time.perf_counter()
            if now >= self.end_at:
                self.finish("duration" if self.duration_s is not None else "deadline")
                return
            if self.stop_check is not None and self.stop_check():
                self.finish("stopped")
                return
            if (
                self.give_up_after_s is not None
                and not self.ever_connected
                and now - self.start >= self.give_up_after_s
            ):
                failed = {k: v for k, v in self.errors.items() if v}
                self.finish(
                    "gave up",
                    aborted=(
                        f"could not connect to {self.target_text} in {self.give_up_after_s:g} s "
                        f"({', '.join(f'{k}: {v}' for k, v in failed.items()) or 'no answer'}); "
                        "is the server running?"
                    ),
                )
                return
            for conn in list(self.conns):
                if conn.inflight and now > conn.deadline:
                    conn.inflight = False
                    self.request_failed(ErrorKind.TIMEOUT)
                    if conn.transport is not None:
                        conn.transport.abort()
            if self.progress is not None and now >= next_progress:
                dt = now - last_t
                snapshot = LoadProgress(
                    elapsed_s=now - self.start,
                    requests_ok=self.ok,
                    errors=sum(self.errors.values()),
                    current_rps=(self.ok - last_ok) / dt if dt > 0 else 0.0,
                    connections_open=len(self.conns),
                    errors_by_kind=dict(self.errors),
                )
                last_ok, last_t = self.ok, now
                next_progress = now + interval
                try:
                    self.progress(snapshot)
                except Exception:  # a broken observer must not break the run
                    log.exception("load progress callback failed; no more progress reports")
                    self.progress = None


def _merge(config: LoadConfig, target: LoadTarget, parts: list[_Partial], processes: int) -> LoadResult:
    hist = LatencyHistogram()
    errors = {k.value: 0 for k in GENERATOR_ERROR_KINDS}
    for p in parts:
        hist.merge(p.hist)
        for k, v in p.errors.items():
            errors[k] = errors.get(k, 0) + v
    ok = sum(p.ok for p in parts)
    duration = max(p.duration_s for p in parts)
    aborted = [p.aborted for p in parts if p.aborted]
    return LoadResult(
        target=target.url,
        mode=config.mode,
        connections=config.connections,
        duration_s=duration,
        requests_ok=ok,
        errors=errors,
        rps=ok / duration,
        latency_p50_ms=hist.percentile_ms(50),
        latency_p90_ms=hist.percentile_ms(90),
        latency_p99_ms=hist.percentile_ms(99),
        latency_max_ms=hist.max_us / 1000.0 if hist.count else math.nan,
        cpu_percent=100.0 * sum(p.cpu_s for p in parts) / duration,
        processes=processes,
        generator="builtin",
        rate_target=config.rate,
        latency_mean_ms=hist.mean_us / 1000.0,
        responses=sum(p.responses for p in parts),
        stopped_by=parts[0].stopped_by if len({p.stopped_by for p in parts}) == 1 else "mixed",
        aborted=aborted[0] if aborted and len(aborted) == len(parts) else None,
        extra={"uvloop": uvloop_available()},
    )


def run_load(
    config: LoadConfig,
    progress: ProgressCallback | None = None,
    *,
    stop_event: threading.Event | None = None,
) -> LoadResult:
    """Run a load test to the end and return its result. Blocks the calling thread.

    ``progress`` is called from this thread ~every ``progress_interval_s``. Setting
    ``stop_event`` (from any thread) ends the run within ~50 ms.
    """
    target = parse_target(config.url)
    processes = min(config.processes, config.connections)
    if processes > 1:
        return _run_processes(config, target, processes, progress, stop_event)
    loop = new_event_loop()
    try:
        engine = _Engine(config, target, _Share.whole(config), progress=progress,
                         stop_check=stop_event.is_set if stop_event is not None else None)
        part = loop.run_until_complete(engine.run())
    finally:
        loop.close()
    return _merge(config, target, [part], 1)


async def run_load_async(config: LoadConfig, progress: ProgressCallback | None = None) -> LoadResult:
    """Run inside the caller's event loop (single process). With ``processes > 1`` a thread runs it."""
    if min(config.processes, config.connections) > 1:
        return await asyncio.to_thread(run_load, config, progress)
    target = parse_target(config.url)
    part = await _Engine(config, target, _Share.whole(config), progress=progress).run()
    return _merge(config, target, [part], 1)


# -- process mode ----------------------------------------------------------------------------------
_READY_TIMEOUT_S = 60.0


def _worker_main(index: int, config: LoadConfig, share: _Share, messages: Any, go: Any, stop: Any) -> None:
    """Entry point of a worker process (module level so 'spawn' can import it)."""
    try:
        target = parse_target(config.url)
        messages.put(("ready", index, None))
        if not go.wait(_READY_TIMEOUT_S):
            return
        if stop.is_set():
            return

        def report(p: LoadProgress) -> None:
            messages.put(("progress", index, p))

        engine = _Engine(config, target, share, progress=report, stop_check=stop.is_set, cpu_clock=time.process_time)
        loop = new_event_loop()
        try:
            part = loop.run_until_complete(engine.run())
        finally:
            loop.close()
        messages.put(("result", index, part))
    except BaseException as exc:
        messages.put(("error", index, f"{type(exc).__name__}: {exc}"))


class _Workers:
    """K generator processes, their message queue and the go/stop events they wait on."""

    def __init__(self, config: LoadConfig, k: int) -> None:
        ctx: Any = multiprocessing.get_context(config.start_method)
        self.k = k
        self.messages = ctx.Queue()
        self.go = ctx.Event()
        self.stop = ctx.Event()
        self.procs = [
            ctx.Process(target=_worker_main, args=(i, config, share, self.messages, self.go, self.stop),
                        name=f"stackpanel-loadgen-{i}", daemon=True)
            for i, share in enumerate(_shares(config, k))
        ]
        for p in self.procs:
            p.start()

    def wait_ready(self, stop_event: threading.Event | None) -> None:
        ready: set[int] = set()
        ready_by = time.monotonic() + _READY_TIMEOUT_S
        while len(ready) < self.k:
            if stop_event is not None and stop_event.is_set():
                raise LoadgenError("load run stopped before its worker processes were ready")
            try:
                kind, index, payload = self.messages.get(timeout=0.1)
            except queue.Empty:
                dead = [p.name for p in self.procs if p.exitcode is not None]
                if dead or time.monotonic() > ready_by:
                    raise LoadgenError(
                        f"load worker processes did not start ({', '.join(dead) or 'timeout'})") from None
                continue
            if kind == "error":
                raise LoadgenError(f"load worker {index} failed: {payload}")
            ready.add(index)

    def collect(self, config: LoadConfig, progress: ProgressCallback | None,
                stop_event: threading.Event | None) -> list[_Partial]:
        """Let the workers go and gather their results, merging their progress reports."""
        self.go.set()
        started = time.monotonic()
        limit = config.max_duration_s if config.duration_s is None else config.duration_s
        hard_deadline = started + limit + config.timeout_s + 10.0
        merger = _ProgressMerger(started, config.progress_interval_s, progress)
        parts: dict[int, _Partial] = {}
        while len(parts) < self.k:
            if stop_event is not None and stop_event.is_set():
                self.stop.set()
            try:
                kind, index, payload = self.messages.get(timeout=0.05)
            except queue.Empty:
                kind, index, payload = "", -1, None
            if kind == "result":
                parts[index] = payload
            elif kind == "progress":
                merger.latest[index] = payload
            elif kind == "error":
                raise LoadgenError(f"load worker {index} failed: {payload}")
            merger.maybe_report()
            if kind == "":
                missing = [p.name for i, p in enumerate(self.procs) if i not in parts and p.exitcode is not None]
                if missing:
                    raise LoadgenError(f"load worker process(es) died: {', '.join(missing)}")
                if time.monotonic() > hard_deadline:
                    raise LoadgenError("load worker processes did not finish by the deadline")
        return [parts[i] for i in range(self.k)]

    def close(self) -> None:
        self.stop.set()
        self.go.set()  # release workers still waiting (they see stop and leave)
        for p in self.procs:
            p.join(timeout=2.0)
        for p in self.procs:
            if p.is_alive():
                p.terminate()
                p.join(timeout=1.0)
        self.messages.close()
        self.messages.join_thread()


class _ProgressMerger:
    """Adds up the workers' latest progress reports into one, every ``interval`` seconds."""

    def __init__(self, started: float, interval: float, progress: ProgressCallback | None) -> None:
        self.latest: dict[int, LoadProgress] = {}
        self._started = started
        self._interval = interval
        self._progress = progress
        self._next = started + interval
        self._last_ok, self._last_t = 0, started

    def maybe_report(self) -> None:
        now = time.monotonic()
        if self._progress is None or not self.latest or now < self._next:
            return
        ok = sum(p.requests_ok for p in self.latest.values())
        by_kind: dict[str, int] = {}
        for p in self.latest.values():
            for kind, n in p.errors_by_kind.items():
                by_kind[kind] = by_kind.get(kind, 0) + n
        snapshot = LoadProgress(
            elapsed_s=now - self._started,
            requests_ok=ok,
            errors=sum(by_kind.values()),
            current_rps=(ok - self._last_ok) / (now - self._last_t),
            connections_open=sum(p.connections_open for p in self.latest.values()),
            errors_by_kind=by_kind,
        )
        self._last_ok, self._last_t, self._next = ok, now, now + self._interval
        try:
            self._progress(snapshot)
        except Exception:
            log.exception("load progress callback failed; no more progress reports")
            self._progress = None


def _run_processes(
    config: LoadConfig,
    target: LoadTarget,
    k: int,
    progress: ProgressCallback | None,
    stop_event: threading.Event | None,
) -> LoadResult:
    workers = _Workers(config, k)
    try:
        workers.wait_ready(stop_event)
        parts = workers.collect(config, progress, stop_event)
    finally:
        workers.close()
    return _merge(config, target, parts, k)


# -- background runs -------------------------------------------------------------------------------
class LoadRun:
    """A load run in a background thread with its own event loop (for the GUI and the CLI).

    ``LoadRun(config, progress, on_done).start()``; ``stop()`` from any thread ends it within
    ~50 ms (a few hundred ms in process mode); ``result(timeout)`` waits for and returns the
    :class:`LoadResult` or raises what the run raised. Callbacks run on the generator thread.
    """

    def __init__(
        self,
        config: LoadConfig,
        progress: ProgressCallback | None = None,
        on_done: DoneCallback | None = None,
    ) -> None:
        parse_target(config.url)  # refuse a bad target in the caller's thread, before any thread starts
        self.config = config
        self._progress = progress
        self._on_done = on_done
        self._stop = threading.Event()
        self._finished = threading.Event()
        self._result: LoadResult | None = None
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._main, name="stackpanel-loadgen", daemon=True)

    def start(self) -> LoadRun:
        self._thread.start()
        return self

    def _main(self) -> None:
        outcome: LoadResult | BaseException
        try:
            self._result = outcome = run_load(self.config, self._progress, stop_event=self._stop)
        except BaseException as exc:
            log.exception("load run failed")
            self._error = outcome = exc
        self._finished.set()
        if self._on_done is not None:
            try:
                self._on_done(outcome)
            except Exception:
                log.exception("load on_done callback failed")

    def stop(self) -> None:
        """Ask the run to end now (idempotent, any thread). The partial result stays available."""
        self._stop.set()

    def done(self) -> bool:
        return self._finished.is_set()

    @property
    def stopping(self) -> bool:
        return self._stop.is_set()

    def result(self, timeout: float | None = None) -> LoadResult:
        if not self._finished.wait(timeout):
            raise TimeoutError(f"load run still going after {timeout} s")
        if self._error is not None:
            raise self._error
        assert self._result is not None
        return self._result

"""Side-by-side comparison of topologies: the same load against each profile, one after another.

:func:`compare_profiles` brings each profile up in turn with a :class:`StackSession` (every port
shifted by a free offset, run directory in a temporary directory), warms it up, applies the same
load (built-in generator or wrk), reads per-worker request counts and CPU from the metrics engine,
stops it and checks that nothing is left (no process, no port held), then goes on to the next. A
profile that fails to come up becomes a row with the reason; the comparison goes on.

How the figures are taken
-------------------------
* The metrics engine is ticked by hand (its 1 Hz thread is not started): once right before the
  load and once right after it, so a process's CPU % in the result is its CPU time over exactly
  that interval (100 = one core). Request counts are read after the access logs have settled
  (nginx buffers its log for up to 1 s): per-worker counts are the deltas of the access-log
  counts between the settled state before the load and the settled state after it.
* ``server_requests`` is what the entry node logged during the load. With a request budget
  (``requests=N``) the generator waits for every answer, so it equals the generator's complete
  responses exactly. In duration mode the generator abandons the requests in flight at the
  deadline without counting them while the server still serves them, so the server's count is
  higher by at most ``connections`` (the gap is reported as ``server_minus_client``).
* The warm-up always uses the built-in generator (wrk only takes whole seconds) with the same
  connection count; its requests are not part of any figure.

Threading: :func:`compare_profiles` blocks for the whole comparison and calls ``progress`` from
the calling thread. Keep it off a GUI thread; a GUI hops to its own thread in the callback.
Qt-free (the chart lives in :mod:`stackpanel.qt.chart`).
"""
from __future__ import annotations

import csv
import io
import json
import logging
import math
import os
import random
import tempfile
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any, Literal

import psutil

from stackpanel.core.errors import StackpanelError
from stackpanel.core.loadgen.generator import LoadConfig, run_load
from stackpanel.core.loadgen.result import ErrorKind, LoadResult
from stackpanel.core.loadgen.wrk import run_wrk, wrk_available
from stackpanel.core.machine import machine_info
from stackpanel.core.profiles.schema import AppServerNode, Profile, UvicornNode
from stackpanel.core.supervise.ports import free_port_offset as ports_free_offset
from stackpanel.core.supervise.process import alive_pids
from stackpanel.core.supervise.spawner import SuperviseError

log = logging.getLogger("stackpanel.loadgen")

Generator = Literal["builtin", "wrk"]
ProfileSpec = str | os.PathLike[str] | Profile

#: error kinds that are complete HTTP responses (the server answered, with an error status)
HTTP_ERROR_KINDS = (ErrorKind.HTTP_5XX.value, ErrorKind.HTTP_4XX.value, ErrorKind.HTTP_ERROR.value)
#: how long the access-log counts must stay unchanged to count as settled (nginx flushes each 1 s)
SETTLE_QUIET_S = 1.2
SETTLE_TIMEOUT_S = 8.0


class CompareError(StackpanelError):
    """The comparison itself cannot run (bad settings, no free ports)."""


# --------------------------------------------------------------------------------------------------
# values
# --------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class WorkerShare:
    """One process of one node over the load: requests it logged and its CPU %."""

    node: str
    pid: int
    role: str  # "master" | "worker" | "gone" (logged requests but was not sampled at the end)
    requests: int
    cpu_percent: float | None  # 100 = one core, over the load interval; None when unknown


@dataclass(frozen=True)
class ProfileRun:
    """What one profile did under the load (or why it did not run)."""

    name: str  # as given (CLI name or path stem)
    title: str = ""  # the profile's own name, e.g. "Nginx → Uvicorn"
    ok: bool = False
    reason: str = ""  # why it did not run (ok False), or a warning (ok True)
    url: str = ""
    entry_node: str = ""
    port_offset: int = 0
    app_workers: int = 0  # sum of the app-server nodes' workers
    throughput_rps: float = math.nan  # successful responses per second
    latency_p50_ms: float = math.nan
    latency_p90_ms: float = math.nan
    latency_p99_ms: float = math.nan
    latency_max_ms: float = math.nan
    requests_ok: int = 0
    responses: int = 0  # complete responses, any status
    errors: dict[str, int] = field(default_factory=dict)
    duration_s: float = 0.0
    generator: str = "builtin"
    generator_cpu_percent: float = math.nan
    server_requests: int = 0  # requests the entry node logged during the load
    node_cpu_percent: dict[str, float | None] = field(default_factory=dict)  # master + workers
    node_requests: dict[str, int] = field(default_factory=dict)
    workers: tuple[WorkerShare, ...] = ()
    clean_stop: bool = True
    stop_problem: str = ""
    load: dict[str, Any] | None = None  # LoadResult.to_dict()

    @property
    def errors_total(self) -> int:
        return sum(self.errors.values())

    @property
    def error_responses(self) -> int:
        """Requests the server answered with a 4xx/5xx status."""
        return sum(self.errors.get(k, 0) for k in HTTP_ERROR_KINDS)

    @property
    def client_requests(self) -> int:
        """Requests the generator saw answered: successful ones plus error responses."""
        return self.requests_ok + self.error_responses

    @property
    def server_minus_client(self) -> int:
        return self.server_requests - self.client_requests

    def workers_of(self, node: str) -> tuple[WorkerShare, ...]:
        return tuple(w for w in self.workers if w.node == node)

    def server_cpu_percent(self) -> float | None:
        values = [v for v in self.node_cpu_percent.values() if v is not None]
        return sum(values) if values else None

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["errors_total"] = self.errors_total
        d["error_responses"] = self.error_responses
        d["client_requests"] = self.client_requests
        d["server_minus_client"] = self.server_minus_client
        d["server_cpu_percent"] = self.server_cpu_percent()
        return _json_ready(d)


@dataclass(frozen=True)
class CompareSettings:
    connections: int
    duration_s: float
    path: str
    warmup_s: float
    generator: str
    requests: int | None = None
    workers: int | None = None  # app-server worker override, None = as in each profile


@dataclass(frozen=True)
class Comparison:
    """Every profile's figures under the same load. Ratios are to the first profile that ran."""

    settings: CompareSettings
    runs: tuple[ProfileRun, ...]
    machine: dict[str, Any] = field(default_factory=dict)
    started_at: float = 0.0  # time.time()

    @property
    def baseline(self) -> ProfileRun | None:
        """The first profile that ran and served something: every ratio is relative to it."""
        return next((r for r in self.runs if r.ok and r.throughput_rps > 0), None)

    def ratio(self, run: ProfileRun) -> float | None:
        """``run``'s throughput over the baseline's; None when either did not run."""
        base = self.baseline
        if base is None or not run.ok or not math.isfinite(run.throughput_rps):
            return None
        return run.throughput_rps / base.throughput_rps

    @property
    def ratios(self) -> dict[str, float | None]:
        return {r.name: self.ratio(r) for r in self.runs}

    @property
    def all_ran(self) -> bool:
        return bool(self.runs) and all(r.ok for r in self.runs)

    @property
    def failed(self) -> tuple[ProfileRun, ...]:
        return tuple(r for r in self.runs if not r.ok)

    def describe_load(self) -> str:
        s = self.settings
        amount = f"{s.requests:,} requests (cap {s.duration_s:g} s)" if s.requests else f"{s.duration_s:g} s"
        text = (f"{s.connections} connections, {amount} after {s.warmup_s:g} s warm-up, GET {s.path}, "
                f"{s.generator} generator")
        if s.workers:
            text += f", {s.workers} app workers each"
        return text

    def describe_machine(self) -> str:
        m = self.machine
        if not m:
            return ""
        return (f"{m.get('nproc', '?')} × {m.get('cpu_model', '?')}, Python {m.get('python', '?')}, "
                f"{m.get('system', '?')}")

    # -- exports -------------------------------------------------------------------------------------

    def to_dict(self) -> dict[str, Any]:
        base = self.baseline
        runs = []
        for r in self.runs:
            d = r.to_dict()
            d["ratio"] = _finite(self.ratio(r))
            runs.append(d)
        return _json_ready({
            "settings": asdict(self.settings),
            "machine": dict(self.machine),
            "started_at": self.started_at,
            "baseline": base.name if base else None,
            "all_ran": self.all_ran,
            "runs": runs,
        })

    def to_json(self, indent: int | None = 2) -> str:
        return json.dumps(self.to_dict(), indent=indent, ensure_ascii=False, allow_nan=False)

    CSV_FIELDS = (
        "profile", "title", "ok", "reason", "generator", "connections", "duration_s", "path", "app_workers",
        "requests_per_s", "ratio", "latency_p50_ms", "latency_p90_ms", "latency_p99_ms", "latency_max_ms",
        "requests_ok", "errors_total", "errors", "generator_cpu_percent", "server_cpu_percent",
        "server_requests", "server_minus_client", "workers",
    )

    def to_csv(self) -> str:
        """One row per profile. ``workers`` is ``node:pid=requests@cpu%`` items joined by ``;``."""
        out = io.StringIO()
        w = csv.writer(out, lineterminator="\n")
        w.writerow(self.CSV_FIELDS)
        s = self.settings
        for r in self.runs:
            ratio = self.ratio(r)
            errors = ";".join(f"{k}={v}" for k, v in r.errors.items() if v)
            workers = ";".join(
                f"{x.node}:{x.pid}={x.requests}@{_num(x.cpu_percent, 1)}" for x in r.workers
            )
            w.writerow([
                r.name, r.title, int(r.ok), _one_line(r.reason, 2000), r.generator if r.ok else s.generator,
                s.connections,
                _num(r.duration_s, 3) if r.ok else "", s.path, r.app_workers or "",
                _num(r.throughput_rps, 1), _num(ratio, 4),
                _num(r.latency_p50_ms, 3), _num(r.latency_p90_ms, 3), _num(r.latency_p99_ms, 3),
                _num(r.latency_max_ms, 3),
                r.requests_ok if r.ok else "", r.errors_total if r.ok else "", errors,
                _num(r.generator_cpu_percent, 1), _num(r.server_cpu_percent(), 1),
                r.server_requests if r.ok else "", r.server_minus_client if r.ok else "", workers,
            ])
        return out.getvalue()

    def format_table(self, *, workers: bool = True) -> str:
        """An aligned text table, one profile per row, with the ratio to the baseline; then (with
        ``workers``) each profile's per-process requests and CPU %."""
        lines = [f"load: {self.describe_load()}"]
        if self.machine:
            lines.append(f"machine: {self.describe_machine()}")
        lines.append("")
        header = ("profile", "req/s", "ratio", "p50 ms", "p90 ms", "p99 ms", "errors", "gen CPU",
                  "server CPU", "workers")
        rows: list[tuple[str, ...]] = []
        notes: list[str] = []
        for r in self.runs:
            if not r.ok:
                rows.append((r.name, "FAILED", "", "", "", "", "", "", "", ""))
                notes.append(f"{r.name}: did not run: {_one_line(r.reason)}")
                continue
            ratio = self.ratio(r)
            rows.append((
                r.name,
                f"{r.throughput_rps:,.0f}",
                "" if ratio is None else f"{ratio:.2f}",
                _fmt(r.latency_p50_ms), _fmt(r.latency_p90_ms), _fmt(r.latency_p99_ms),
                f"{r.errors_total:,}",
                _pct(r.generator_cpu_percent),
                _pct(r.server_cpu_percent()),
                str(r.app_workers) if r.app_workers else "",
            ))
            if r.errors_total:
                kinds = ", ".join(f"{k} {v:,}" for k, v in r.errors.items() if v)
                notes.append(f"{r.name}: errors: {kinds}")
            if r.reason:
                notes.append(f"{r.name}: {_one_line(r.reason)}")
            if not r.clean_stop:
                notes.append(f"{r.name}: not stopped cleanly: {r.stop_problem}")
        right = {1, 2, 3, 4, 5, 6, 7, 8, 9}
        widths = [max(len(h), *(len(row[i]) for row in rows)) if rows else len(h) for i, h in enumerate(header)]

        def line(cells: Sequence[str]) -> str:
            return "  ".join(c.rjust(widths[i]) if i in right else c.ljust(widths[i])
                             for i, c in enumerate(cells)).rstrip()

        lines.append(line(header))
        lines.append("  ".join("-" * w for w in widths))
        lines.extend(line(row) for row in rows)
        base = self.baseline
        if base is not None:
            lines.append("")
            lines.append(f"ratio = req/s / {base.name}'s; CPU % over the load, 100 = one core "
                         f"(gen = the load generator itself, server = every process of the stack)")
        if notes:
            lines.append("")
            lines.extend(notes)
        if workers:
            detail = self._format_workers()
            if detail:
                lines.append("")
                lines.extend(detail)
        return "\n".join(lines)

    def _format_workers(self) -> list[str]:
        out: list[str] = []
        for r in self.runs:
            if not r.ok or not r.workers:
                continue
            out.append(f"{r.name}: requests (CPU %) per process during the load")
            nodes = list(dict.fromkeys(w.node for w in r.workers))
            for node in nodes:
                shares = sorted(r.workers_of(node), key=lambda w: (w.role != "master", -w.requests, w.pid))
                items = []
                for w in shares:
                    tag = "master " if w.role == "master" else ("gone " if w.role == "gone" else "")
                    items.append(f"{tag}{w.pid}: {w.requests:,} ({_pct(w.cpu_percent)})")
                total = r.node_requests.get(node, 0)
                out.append(f"  {node:<8} {total:>9,} req  " + "  ".join(items))
        return out


@dataclass(frozen=True)
class CompareProgress:
    """One step of a comparison, for a progress line or a status bar."""

    index: int  # 0-based position of the profile
    total: int
    profile: str
    phase: str  # "start" | "warmup" | "load" | "settle" | "stop" | "done" | "failed"
    message: str

    def __str__(self) -> str:
        return f"[{self.index + 1}/{self.total}] {self.profile}: {self.message}"


ProgressCallback = Callable[[CompareProgress], None]
#: called as ``hook(name, session)`` after a profile is rendered and before anything starts
BeforeStart = Callable[[str, Any], None]


# --------------------------------------------------------------------------------------------------
# helpers
# --------------------------------------------------------------------------------------------------


def _finite(x: float | None) -> float | None:
    return x if x is not None and math.isfinite(x) else None


def _json_ready(value: Any) -> Any:
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {str(k): _json_ready(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_json_ready(v) for v in value]
    return value


def _num(x: float | None, digits: int) -> str:
    return "" if x is None or not math.isfinite(x) else f"{x:.{digits}f}"


def _fmt(ms: float) -> str:
    if not math.isfinite(ms):
        return "-"
    return f"{ms:.2f}" if ms < 100 else f"{ms:.0f}"


def _pct(x: float | None) -> str:
    return "-" if x is None or not math.isfinite(x) else f"{x:.0f}%"


def _one_line(text: str, limit: int = 300) -> str:
    flat = " | ".join(p.strip() for p in text.strip().splitlines() if p.strip())
    return flat if len(flat) <= limit else flat[: limit - 1] + "…"


def free_port_offset(ports: Iterable[int], *, rng: random.Random | None = None, step: int = 10) -> int:
    """A random free offset (see :func:`stackpanel.core.supervise.ports.free_port_offset`)."""
    try:
        return ports_free_offset(ports, rng=rng, step=step)
    except SuperviseError as exc:
        raise CompareError(str(exc)) from None


def with_app_workers(profile: Profile, workers: int) -> Profile:
    """The profile with every app-server node (gunicorn, uvicorn) running ``workers`` workers.

    A uvicorn node with ``reload`` keeps its single worker (``--reload`` cannot run more).
    """
    if workers < 1:
        raise CompareError(f"workers must be >= 1 (got {workers})")
    nodes = {
        name: node.model_copy(update={"workers": workers})
        if isinstance(node, AppServerNode) and not (isinstance(node, UvicornNode) and node.reload)
        else node
        for name, node in profile.nodes.items()
    }
    return profile.model_copy(update={"nodes": nodes})


def app_worker_count(profile: Profile) -> int:
    return sum(n.workers for n in profile.nodes.values() if isinstance(n, AppServerNode))


def _label(spec: ProfileSpec) -> str:
    if isinstance(spec, Profile):
        return spec.name
    p = Path(spec)
    return p.stem if p.suffix in (".yaml", ".yml") else p.name


def _load_spec(spec: ProfileSpec) -> Profile:
    if isinstance(spec, Profile):
        return spec
    from stackpanel.core.profiles.library import resolve_profile
    from stackpanel.core.profiles.loader import load_profile

    return load_profile(resolve_profile(str(spec)))


def _slug(name: str) -> str:
    return "".join(c if c.isalnum() or c in "-_" else "-" for c in name)[:40] or "profile"


def join_url(base: str, path: str) -> str:
    return base.rstrip("/") + "/" + path.lstrip("/")


# --------------------------------------------------------------------------------------------------
# one profile
# --------------------------------------------------------------------------------------------------


class _Reporter:
    def __init__(self, index: int, total: int, name: str, progress: ProgressCallback | None) -> None:
        self.index, self.total, self.name, self.progress = index, total, name, progress

    def __call__(self, phase: str, message: str) -> None:
        event = CompareProgress(self.index, self.total, self.name, phase, message)
        log.info("%s", event)
        if self.progress is not None:
            try:
                self.progress(event)
            except Exception:  # a broken observer must not break the comparison
                log.exception("comparison progress callback failed; no more progress reports")
                self.progress = None


def _settle(session: Any, timeout: float = SETTLE_TIMEOUT_S, quiet_s: float = SETTLE_QUIET_S) -> Any:
    """Tick until no node's access-log count changed for ``quiet_s``; returns the last snapshot."""
    deadline = time.monotonic() + timeout
    snap = session.metrics.tick()
    totals = {n.name: n.requests_total for n in snap.nodes}
    since = time.monotonic()
    while time.monotonic() < deadline:
        time.sleep(0.2)
        snap = session.metrics.tick()
        now_totals = {n.name: n.requests_total for n in snap.nodes}
        if now_totals != totals:
            totals, since = now_totals, time.monotonic()
        elif time.monotonic() - since >= quiet_s:
            break
    return snap


def _stack_pids(session: Any) -> set[int]:
    """Every process of the running stack: leaders, their workers, and their descendants."""
    pids: set[int] = set()
    for node in session.snapshot().nodes:
        if node.pid is not None:
            pids.add(node.pid)
            try:
                pids.update(c.pid for c in psutil.Process(node.pid).children(recursive=True))
            except psutil.Error:
                pass
        pids.update(node.worker_pids)
    return pids


def _check_stopped(profile: Profile, pids: set[int], timeout: float = 3.0) -> str:
    """'' when no process of the stack is alive and every port can be bound again; else what is left."""
    from stackpanel.core.supervise.ports import wait_ports_free

    deadline = time.monotonic() + timeout
    left = alive_pids(pids)
    while left and time.monotonic() < deadline:
        time.sleep(0.05)
        left = alive_pids(left)
    problems = []
    if left:
        problems.append(f"processes still alive: {', '.join(map(str, sorted(left)))}")
    conflicts = wait_ports_free([(n.host, n.port) for n in profile.nodes.values()],
                                timeout=max(0.1, deadline - time.monotonic()))
    problems.extend(c.message for c in conflicts)
    return "; ".join(problems)


def _apply_load(url: str, settings: CompareSettings, report: Callable[[str, str], None]) -> LoadResult:
    if settings.generator == "wrk":
        return run_wrk(url, connections=settings.connections, duration_s=settings.duration_s)
    last = [0.0]

    def on_progress(p: Any) -> None:
        if p.elapsed_s - last[0] >= 1.0:
            last[0] = p.elapsed_s
            report("load", f"{p.elapsed_s:4.1f} s: {p.current_rps:,.0f} req/s, {p.requests_ok:,} ok, "
                           f"{p.errors:,} errors")

    config = LoadConfig(url=url, connections=settings.connections, duration_s=settings.duration_s,
                        requests=settings.requests)
    return run_load(config, on_progress)


def _run_one(spec: ProfileSpec, settings: CompareSettings, run_root: Path, report: _Reporter,
             use_guardian: bool, before_start: BeforeStart | None = None) -> ProfileRun:
    from stackpanel.core.session import StackSession

    name = _label(spec)
    try:
        base = _load_spec(spec)
        if settings.workers:
            base = with_app_workers(base, settings.workers)
        offset = free_port_offset(n.port for n in base.nodes.values())
        profile = base.with_port_offset(offset)
    except StackpanelError as exc:
        report("failed", f"cannot load: {_one_line(str(exc))}")
        return ProfileRun(name=name, reason=str(exc))

    run = ProfileRun(name=name, title=profile.name, port_offset=offset, entry_node=profile.entry,
                     app_workers=app_worker_count(profile),
                     url=join_url(profile.entry_url, settings.path), generator=settings.generator)
    session = None
    pids: set[int] = set()
    try:
        report("start", f"starting {profile.name} (ports +{offset})")
        session = StackSession(profile, run_dir=run_root / f"{report.index:02d}-{_slug(name)}",
                               use_guardian=use_guardian)
        if before_start is not None:
            before_start(name, session)
        t0 = time.monotonic()
        # Not session.start(): the engine's 1 Hz thread stays off, ticks are taken by hand so the
        # CPU % covers exactly the load.
        session.supervisor.start()
        pids = _stack_pids(session)
        report("start", f"up in {time.monotonic() - t0:.1f} s; {run.url}")

        if settings.warmup_s > 0:
            report("warmup", f"warming up for {settings.warmup_s:g} s")
            warm = run_load(LoadConfig(url=run.url, connections=settings.connections,
                                       duration_s=settings.warmup_s))
            if warm.aborted:
                raise _RunFailed(f"warm-up failed: {warm.aborted}")
        before = _settle(session)
        pids |= _stack_pids(session)
        report("load", f"{settings.generator}: {settings.connections} connections, "
                       + (f"{settings.requests:,} requests" if settings.requests else f"{settings.duration_s:g} s"))
        result = _apply_load(run.url, settings, report)
        during = session.metrics.tick()  # CPU % over exactly the load
        report("settle", f"{result.rps:,.0f} req/s; waiting for the access logs")
        after = _settle(session)
        pids |= _stack_pids(session)
        run = _figures(run, profile, result, before, during, after)
        if result.aborted:
            run = replace(run, ok=False, reason=result.aborted)
        elif result.requests_ok == 0:
            run = replace(run, ok=False, reason=f"no successful response ({_errors_text(result.errors)})")
    except _RunFailed as exc:
        run = replace(run, ok=False, reason=str(exc))
    except StackpanelError as exc:
        run = replace(run, ok=False, reason=str(exc))
    except Exception as exc:  # one broken profile must not end the comparison
        log.exception("comparison: %s failed", name)
        run = replace(run, ok=False, reason=f"{type(exc).__name__}: {exc}")
    finally:
        if session is not None:
            report("stop", "stopping")
            try:
                pids |= _stack_pids(session)
                session.close()
            except Exception as exc:  # still check below what is left
                log.exception("comparison: stopping %s failed", name)
                run = replace(run, clean_stop=False, stop_problem=f"stop failed: {exc}")
            problem = _check_stopped(profile, pids)
            if problem:
                run = replace(run, clean_stop=False,
                              stop_problem="; ".join(p for p in (run.stop_problem, problem) if p))
    if run.ok:
        report("done", f"{run.throughput_rps:,.0f} req/s, p99 {_fmt(run.latency_p99_ms)} ms"
                       + ("" if run.clean_stop else f"; NOT STOPPED CLEANLY: {run.stop_problem}"))
    else:
        report("failed", _one_line(run.reason))
    return run


class _RunFailed(Exception):
    pass


def _errors_text(errors: Mapping[str, int]) -> str:
    return ", ".join(f"{k} {v}" for k, v in errors.items() if v) or "no errors either"


def _figures(run: ProfileRun, profile: Profile, result: LoadResult, before: Any, during: Any,
             after: Any) -> ProfileRun:
    workers: list[WorkerShare] = []
    node_cpu: dict[str, float | None] = {}
    node_requests: dict[str, int] = {}
    for name in profile.start_order()[::-1]:  # entry first
        b, a = before.node(name), after.node(name)
        if a is None:
            continue
        b_by_pid = dict(b.requests_by_pid) if b is not None else {}
        req = {pid: n - b_by_pid.get(pid, 0) for pid, n in a.requests_by_pid.items()}
        req = {pid: n for pid, n in req.items() if n}
        node_requests[name] = a.requests_total - (b.requests_total if b is not None else 0)
        dn = during.node(name)
        node_cpu[name] = dn.cpu_percent if dn is not None else None
        sampled = {w.pid: w for w in during.workers_of(name)}
        for pid, w in sampled.items():
            workers.append(WorkerShare(name, pid, w.role, req.pop(pid, 0), w.cpu_percent))
        for pid, n in req.items():  # logged requests, but not among the sampled processes
            workers.append(WorkerShare(name, pid, "gone", n, None))
    return replace(
        run,
        ok=True,
        throughput_rps=result.rps,
        latency_p50_ms=result.latency_p50_ms,
        latency_p90_ms=result.latency_p90_ms,
        latency_p99_ms=result.latency_p99_ms,
        latency_max_ms=result.latency_max_ms,
        requests_ok=result.requests_ok,
        responses=result.responses,
        errors=dict(result.errors),
        duration_s=result.duration_s,
        generator=result.generator,
        generator_cpu_percent=result.cpu_percent,
        server_requests=node_requests.get(profile.entry, 0),
        node_cpu_percent=node_cpu,
        node_requests=node_requests,
        workers=tuple(workers),
        load=_json_ready(result.to_dict()),
    )


# --------------------------------------------------------------------------------------------------
# the comparison
# --------------------------------------------------------------------------------------------------


def compare_profiles(
    profiles: Sequence[ProfileSpec],
    *,
    connections: int = 64,
    duration_s: float = 10.0,
    path: str = "/api/hello",
    warmup_s: float = 2.0,
    generator: Generator = "builtin",
    requests: int | None = None,
    workers: int | None = None,
    progress: ProgressCallback | None = None,
    run_dir: Path | None = None,
    use_guardian: bool = True,
    before_start: BeforeStart | None = None,
) -> Comparison:
    """Run the same load against each profile in turn and return every figure side by side.

    ``profiles``: names or paths (see ``stackpanel profiles``) or loaded :class:`Profile` values;
    their own ports are ignored (a free offset is chosen for each). ``path`` is requested on each
    profile's entry URL (``/api/hello`` works on every built-in profile). ``requests`` turns the
    load into a request-count run (``duration_s`` is then its cap). ``workers`` sets every
    app-server node's worker count, so topologies are compared at the same worker count.
    ``run_dir``: where the run directories go (default: a temporary directory, removed after).
    ``before_start(name, session)`` runs after each profile is rendered and before it starts: for
    experiments that change a rendered file (``session.stack.nodes[node].files``) by hand.
    Blocks; ``progress`` is called from the calling thread.
    """
    if not profiles:
        raise CompareError("give at least one profile to compare")
    if generator not in ("builtin", "wrk"):
        raise CompareError(f"generator must be 'builtin' or 'wrk' (got {generator!r})")
    if generator == "wrk":
        if not wrk_available():
            raise CompareError("wrk is not installed (Debian/Ubuntu: apt install wrk); use the built-in generator")
        if requests is not None:
            raise CompareError("wrk runs for a duration only; drop the request count or use the built-in generator")
    if connections < 1:
        raise CompareError(f"connections must be >= 1 (got {connections})")
    if not 0 < duration_s <= 600:
        raise CompareError(f"duration must be > 0 and <= 600 s (got {duration_s})")
    if not 0 <= warmup_s <= 120:
        raise CompareError(f"warm-up must be between 0 and 120 s (got {warmup_s})")
    if requests is not None and requests < 1:
        raise CompareError(f"requests must be >= 1 (got {requests})")
    if workers is not None and workers < 1:
        raise CompareError(f"workers must be >= 1 (got {workers})")
    if not path.startswith("/"):
        path = "/" + path
    # the same check every load run applies; fail before starting anything
    LoadConfig(url="http://127.0.0.1:1" + path, connections=connections, duration_s=duration_s, requests=requests)
    settings = CompareSettings(connections=connections, duration_s=duration_s, path=path, warmup_s=warmup_s,
                               generator=generator, requests=requests, workers=workers)
    started = time.time()
    machine = machine_info()
    runs: list[ProfileRun] = []
    with tempfile.TemporaryDirectory(prefix="stackpanel-bench-") as tmp:
        root = Path(run_dir) if run_dir is not None else Path(tmp)
        root.mkdir(parents=True, exist_ok=True)
        for i, spec in enumerate(profiles):
            report = _Reporter(i, len(profiles), _label(spec), progress)
            runs.append(_run_one(spec, settings, root, report, use_guardian, before_start))
    return Comparison(settings=settings, runs=tuple(runs), machine=machine, started_at=started)

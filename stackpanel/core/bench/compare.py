"""The bench: the same load against each profile, one after another (above the session).

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

import logging
import os
import random
import tempfile
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Literal

import psutil

from stackpanel.core.bench.report import (
    CompareProgress,
    CompareSettings,
    Comparison,
    ProfileRun,
    ProgressCallback,
    WorkerShare,
    fmt_ms,
    json_ready,
    one_line,
)
from stackpanel.core.errors import StackpanelError
from stackpanel.core.loadgen.errors import LoadConfigError
from stackpanel.core.loadgen.generator import LoadConfig, run_load
from stackpanel.core.loadgen.result import ErrorKind, LoadProgress, LoadResult
from stackpanel.core.loadgen.target import parse_target
from stackpanel.core.loadgen.wrk import run_wrk, wrk_available
from stackpanel.core.machine import machine_info
from stackpanel.core.metrics import MetricsSnapshot
from stackpanel.core.profiles.library import profile_label, resolve_profile
from stackpanel.core.profiles.loader import load_profile
from stackpanel.core.profiles.schema import AppServerNode, Profile, UvicornNode
from stackpanel.core.session import StackSession
from stackpanel.core.supervise.ports import free_port_offset as ports_free_offset
from stackpanel.core.supervise.ports import wait_ports_free
from stackpanel.core.supervise.process import alive_pids
from stackpanel.core.supervise.spawner import SuperviseError

log = logging.getLogger("stackpanel.bench")

Generator = Literal["builtin", "wrk"]
ProfileSpec = str | os.PathLike[str] | Profile
#: called as ``hook(name, session)`` after a profile is rendered and before anything starts
BeforeStart = Callable[[str, StackSession], None]

#: how long the access-log counts must stay unchanged to count as settled (nginx flushes each 1 s)
SETTLE_QUIET_S = 1.2
SETTLE_TIMEOUT_S = 8.0


class CompareError(StackpanelError):
    """The comparison itself cannot run (bad settings, no free ports)."""


# --------------------------------------------------------------------------------------------------
# helpers
# --------------------------------------------------------------------------------------------------


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
    return spec.name if isinstance(spec, Profile) else profile_label(str(spec))


def _slug(name: str) -> str:
    return "".join(c if c.isalnum() or c in "-_" else "-" for c in name)[:40] or "profile"


def join_url(base: str, path: str) -> str:
    return base.rstrip("/") + "/" + path.lstrip("/")


# --------------------------------------------------------------------------------------------------
# before anything starts: every profile loaded, its entry URL through the loopback guard
# --------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Prepared:
    name: str
    profile: Profile  # with the worker override applied; ports not shifted yet


def bench_path(profile: Profile, settings: CompareSettings) -> str:
    """The path loaded: the one asked for, else the entry's readiness probe path (what the profile
    itself says answers; a proxy's reaches through to its `/` backend)."""
    return settings.path or profile.nodes[profile.entry].readiness_probe.http_get.path


def _prepare(spec: ProfileSpec, settings: CompareSettings) -> _Prepared | ProfileRun:
    """Load ``spec`` and check that its entry URL is one the load generator may hit; a failed row
    (nothing started) when not."""
    name = _label(spec)
    try:
        profile = spec if isinstance(spec, Profile) else load_profile(resolve_profile(str(spec)))
        if settings.workers:
            profile = with_app_workers(profile, settings.workers)
        parse_target(join_url(profile.browser_url, bench_path(profile, settings)))
    except StackpanelError as exc:
        return ProfileRun(name=name, reason=str(exc))
    return _Prepared(name, profile)


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


def _settle(session: StackSession, timeout: float = SETTLE_TIMEOUT_S,
            quiet_s: float = SETTLE_QUIET_S) -> MetricsSnapshot:
    """Tick until no node's access-log count changed for ``quiet_s``; returns the last snapshot."""
    deadline = time.monotonic() + timeout
    snap = session.tick_metrics()
    totals = {n.name: n.requests_total for n in snap.nodes}
    since = time.monotonic()
    while time.monotonic() < deadline:
        time.sleep(0.2)  # polls the servers' log buffers (nginx flushes once a second)
        snap = session.tick_metrics()
        now_totals = {n.name: n.requests_total for n in snap.nodes}
        if now_totals != totals:
            totals, since = now_totals, time.monotonic()
        elif time.monotonic() - since >= quiet_s:
            break
    return snap


def _stack_pids(session: StackSession) -> set[int]:
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


def _apply_load(load: LoadConfig, settings: CompareSettings, report: Callable[[str, str], None]) -> LoadResult:
    if settings.generator == "wrk":
        return run_wrk(load.url, connections=load.connections, duration_s=settings.duration_s)
    last = [0.0]

    def on_progress(p: LoadProgress) -> None:
        if p.elapsed_s - last[0] >= 1.0:
            last[0] = p.elapsed_s
            report("load", f"{p.elapsed_s:4.1f} s: {p.current_rps:,.0f} req/s, {p.requests_ok:,} ok, "
                           f"{p.errors:,} errors")

    return run_load(load, on_progress)


def _run_one(prepared: _Prepared, settings: CompareSettings, load: LoadConfig, run_root: Path,
             report: _Reporter, use_guardian: bool, before_start: BeforeStart | None = None) -> ProfileRun:
    name = prepared.name
    try:
        offset = (settings.port_offset if settings.port_offset is not None
                  else free_port_offset(n.port for n in prepared.profile.nodes.values()))
        profile = prepared.profile.with_port_offset(offset)
    except StackpanelError as exc:
        report("failed", f"cannot load: {one_line(str(exc))}")
        return ProfileRun(name=name, reason=str(exc))

    url = join_url(profile.browser_url, bench_path(profile, settings))
    run = ProfileRun(name=name, title=profile.name, port_offset=offset, entry_node=profile.entry,
                     app_workers=app_worker_count(profile), url=url, generator=settings.generator)
    load = replace(load, url=url)
    session: StackSession | None = None
    pids: set[int] = set()
    try:
        parse_target(url)  # the loopback guard, before anything of this profile starts
        report("start", f"starting {profile.name} (ports +{offset})")
        # metrics ticked by hand, right before and right after the load: CPU % covers exactly it
        session = StackSession(profile, run_dir=run_root / f"{report.index:02d}-{_slug(name)}",
                               use_guardian=use_guardian, metrics_mode="manual")
        if before_start is not None:
            before_start(name, session)
        t0 = time.monotonic()
        session.start()
        pids = _stack_pids(session)
        report("start", f"up in {time.monotonic() - t0:.1f} s; {run.url}")

        if settings.warmup_s > 0:
            report("warmup", f"warming up for {settings.warmup_s:g} s")
            warm = run_load(replace(load, duration_s=settings.warmup_s, requests=None))
            if warm.aborted:
                raise _RunFailed(f"warm-up failed: {warm.aborted}")
        before = _settle(session)
        pids |= _stack_pids(session)
        report("load", f"{settings.generator}: {settings.connections} connections, "
                       + (f"{settings.requests:,} requests" if settings.requests else f"{settings.duration_s:g} s"))
        result = _apply_load(load, settings, report)
        during = session.tick_metrics()  # CPU % over exactly the load
        report("settle", f"{result.rps:,.0f} req/s; waiting for the access logs")
        after = _settle(session)
        pids |= _stack_pids(session)
        run = _figures(run, profile, result, before, during, after)
        if result.aborted:
            run = replace(run, ok=False, reason=result.aborted)
        elif result.requests_ok == 0:
            hint = ""
            if {k for k, v in result.errors.items() if v} <= {ErrorKind.HTTP_4XX, ErrorKind.HTTP_ERROR}:
                hint = f"; every answer to {url} was an HTTP error: give --path a path the app answers"
            run = replace(run, ok=False, reason=f"no successful response ({_errors_text(result.errors)}){hint}")
    except (_RunFailed, StackpanelError) as exc:
        run = replace(run, ok=False, reason=str(exc))
    except Exception as exc:  # one broken profile must not end the comparison
        log.exception("comparison: %s failed", name)
        run = replace(run, ok=False, reason=f"{type(exc).__name__}: {exc}")
    finally:
        if session is not None:
            run = _stop(session, profile, pids, run, report)
    if run.ok:
        report("done", f"{run.throughput_rps:,.0f} req/s, p99 {fmt_ms(run.latency_p99_ms)} ms"
                       + ("" if run.clean_stop else f"; NOT STOPPED CLEANLY: {run.stop_problem}"))
    else:
        report("failed", one_line(run.reason))
    return run


def _stop(session: StackSession, profile: Profile, pids: set[int], run: ProfileRun,
          report: _Reporter) -> ProfileRun:
    """Close the session, then check that no process is left and every port is free again."""
    report("stop", "stopping")
    try:
        pids |= _stack_pids(session)
        session.close()
    except Exception as exc:  # still check below what is left
        log.exception("comparison: stopping %s failed", run.name)
        run = replace(run, clean_stop=False, stop_problem=f"stop failed: {exc}")
    problem = _check_stopped(profile, pids)
    if problem:
        run = replace(run, clean_stop=False, stop_problem="; ".join(p for p in (run.stop_problem, problem) if p))
    return run


class _RunFailed(Exception):
    pass


def _errors_text(errors: Mapping[str, int]) -> str:
    return ", ".join(f"{k} {v}" for k, v in errors.items() if v) or "no errors either"


def _figures(run: ProfileRun, profile: Profile, result: LoadResult, before: MetricsSnapshot,
             during: MetricsSnapshot, after: MetricsSnapshot) -> ProfileRun:
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
        load=json_ready(result.to_dict()),
    )


# --------------------------------------------------------------------------------------------------
# the comparison
# --------------------------------------------------------------------------------------------------


def _load_settings(connections: int, duration_s: float, path: str, requests: int | None) -> LoadConfig:
    """The load every profile gets, checked once by :class:`LoadConfig` (its URL is set per profile)."""
    try:
        return LoadConfig(url="http://127.0.0.1:1" + path, connections=connections, duration_s=duration_s,
                          requests=requests)
    except LoadConfigError as exc:
        raise CompareError(str(exc)) from None


def compare_profiles(
    profiles: Sequence[ProfileSpec],
    *,
    connections: int = 64,
    duration_s: float = 10.0,
    path: str | None = None,
    warmup_s: float = 2.0,
    generator: Generator = "builtin",
    requests: int | None = None,
    workers: int | None = None,
    port_offset: int | None = None,
    progress: ProgressCallback | None = None,
    run_dir: Path | None = None,
    use_guardian: bool = True,
    before_start: BeforeStart | None = None,
) -> Comparison:
    """Run the same load against each profile in turn and return every figure side by side.

    ``profiles``: names or paths (see ``stackpanel profiles``) or loaded :class:`Profile` values;
    their ports are shifted by ``port_offset``, or by a free offset chosen for each. ``path`` is
    requested on each profile's entry URL (default: the entry's readiness probe path;
    ``/api/hello`` works on every built-in profile). ``requests`` turns the
    load into a request-count run (``duration_s`` is then its cap). ``workers`` sets every
    app-server node's worker count, so topologies are compared at the same worker count.
    ``run_dir``: where the run directories go (default: a temporary directory, removed after).
    ``before_start(name, session)`` runs after each profile is rendered and before it starts: for
    experiments that change a rendered file (``session.stack.nodes[node].files``) by hand.
    Every profile is loaded and its entry URL checked by the loopback guard before the first
    stack starts; one that fails becomes a row with the reason. Blocks; ``progress`` is called
    from the calling thread.
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
    if not 0 <= warmup_s <= 120:
        raise CompareError(f"warm-up must be between 0 and 120 s (got {warmup_s})")
    if workers is not None and workers < 1:
        raise CompareError(f"workers must be >= 1 (got {workers})")
    if path is not None and not path.startswith("/"):
        path = "/" + path
    load = _load_settings(connections, duration_s, path or "/", requests)
    settings = CompareSettings(connections=connections, duration_s=duration_s, path=path, warmup_s=warmup_s,
                               generator=generator, requests=requests, workers=workers, port_offset=port_offset)
    started = time.time()
    machine = machine_info()
    prepared = [_prepare(spec, settings) for spec in profiles]
    runs: list[ProfileRun] = []
    with tempfile.TemporaryDirectory(prefix="stackpanel-bench-") as tmp:
        root = Path(run_dir) if run_dir is not None else Path(tmp)
        root.mkdir(parents=True, exist_ok=True)
        for i, item in enumerate(prepared):
            if isinstance(item, ProfileRun):
                report = _Reporter(i, len(profiles), item.name, progress)
                report("failed", f"cannot load: {one_line(item.reason)}")
                runs.append(item)
                continue
            report = _Reporter(i, len(profiles), item.name, progress)
            runs.append(_run_one(item, settings, load, root, report, use_guardian, before_start))
    return Comparison(settings=settings, runs=tuple(runs), machine=machine, started_at=started)

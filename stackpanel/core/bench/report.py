"""The comparison report: what each profile did under the same load, and its exports.

Values only (frozen dataclasses), with the ratio math, the text table, CSV and JSON. They know
nothing of how the figures were taken: :mod:`stackpanel.core.bench.compare` runs the stacks and
fills them in; :mod:`stackpanel.qt.chart` draws them.
"""
from __future__ import annotations

import csv
import io
import json
import math
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any
from urllib.parse import urlsplit

from stackpanel.core.loadgen.result import ErrorKind

#: error kinds that are complete HTTP responses (the server answered, with an error status)
HTTP_ERROR_KINDS = (ErrorKind.HTTP_5XX.value, ErrorKind.HTTP_4XX.value, ErrorKind.HTTP_ERROR.value)


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
        return json_ready(d)


@dataclass(frozen=True)
class CompareSettings:
    connections: int
    duration_s: float
    path: str | None  # None: each profile's entry probe path
    warmup_s: float
    generator: str
    requests: int | None = None
    workers: int | None = None  # app-server worker override, None = as in each profile
    port_offset: int | None = None  # None: a free offset per profile


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
        path = s.path or "each entry's probe path"
        text = (f"{s.connections} connections, {amount} after {s.warmup_s:g} s warm-up, GET {path}, "
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
        return json_ready({
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
                r.name, r.title, int(r.ok), one_line(r.reason, 2000), r.generator if r.ok else s.generator,
                s.connections,
                _num(r.duration_s, 3) if r.ok else "", urlsplit(r.url).path if r.url else s.path or "",
                r.app_workers or "",
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
                notes.append(f"{r.name}: did not run: {one_line(r.reason)}")
                continue
            ratio = self.ratio(r)
            rows.append((
                r.name,
                f"{r.throughput_rps:,.0f}",
                "" if ratio is None else f"{ratio:.2f}",
                fmt_ms(r.latency_p50_ms), fmt_ms(r.latency_p90_ms), fmt_ms(r.latency_p99_ms),
                f"{r.errors_total:,}",
                _pct(r.generator_cpu_percent),
                _pct(r.server_cpu_percent()),
                str(r.app_workers) if r.app_workers else "",
            ))
            if r.errors_total:
                kinds = ", ".join(f"{k} {v:,}" for k, v in r.errors.items() if v)
                notes.append(f"{r.name}: errors: {kinds}")
            if r.reason:
                notes.append(f"{r.name}: {one_line(r.reason)}")
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


# --------------------------------------------------------------------------------------------------
# helpers
# --------------------------------------------------------------------------------------------------


# --------------------------------------------------------------------------------------------------
# helpers
# --------------------------------------------------------------------------------------------------


def _finite(x: float | None) -> float | None:
    return x if x is not None and math.isfinite(x) else None


def json_ready(value: Any) -> Any:
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {str(k): json_ready(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [json_ready(v) for v in value]
    return value


def _num(x: float | None, digits: int) -> str:
    return "" if x is None or not math.isfinite(x) else f"{x:.{digits}f}"


def fmt_ms(ms: float) -> str:
    if not math.isfinite(ms):
        return "-"
    return f"{ms:.2f}" if ms < 100 else f"{ms:.0f}"


def _pct(x: float | None) -> str:
    return "-" if x is None or not math.isfinite(x) else f"{x:.0f}%"


def one_line(text: str, limit: int = 300) -> str:
    flat = " | ".join(p.strip() for p in text.strip().splitlines() if p.strip())
    return flat if len(flat) <= limit else flat[: limit - 1] + "…"


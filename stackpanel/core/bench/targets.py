"""The proxy-path targets (issue 12): each proxied built-in's wrk rate as a ratio to direct uvicorn
with the same app workers, measured in A/B pairs side by side (`stackpanel bench --wrk` with no
profiles).

A pair is one comparison of the baseline and one proxied profile, back to back, the order
alternating from pair to pair; its ratio is taken within the pair, so a slow phase of a shared
machine hits both sides. The result per target is the median of its pairs, with the range.
"""
from __future__ import annotations

import json
import math
import os
import statistics
from dataclasses import asdict, dataclass, field
from typing import Any

from stackpanel.core.bench.compare import compare_profiles
from stackpanel.core.bench.report import ProfileRun, ProgressCallback
from stackpanel.core.machine import machine_info

#: Direct uvicorn: what every ratio is taken against.
BASELINE = "uvicorn-workers"


@dataclass(frozen=True)
class Target:
    profile: str
    at_least: float  # ratio of its rate to the baseline's


#: The targets, as ratios to direct uvicorn with the same workers.
#: What the targets load: the same app route through every tier (a profile's probe path may be
#: one the proxy answers itself, e.g. nginx-uvicorn's static index page).
TARGETS_PATH = "/api/hello"

PROXY_TARGETS: tuple[Target, ...] = (
    Target("nginx-uvicorn", 0.85),
    Target("nginx-gunicorn-uvicorn", 0.85),
    Target("apache-uvicorn", 0.65),
    Target("nginx-apache-uvicorn", 0.55),
)


@dataclass(frozen=True)
class TargetPair:
    baseline_first: bool
    baseline_rps: float
    proxied_rps: float
    problem: str = ""  # why a side did not run ("" when both did)
    #: CPU-µs per request of every server process and wrk together, per side
    baseline_cpu_us: float = math.nan
    proxied_cpu_us: float = math.nan

    @property
    def ratio(self) -> float:
        if self.problem or not self.baseline_rps or not math.isfinite(self.baseline_rps):
            return math.nan
        return self.proxied_rps / self.baseline_rps

    @property
    def cpu_ratio(self) -> float:
        """The ratio the rates would have if CPU were all that limits them: baseline cost over
        proxied cost. On a machine shared with other work the rates follow the CPU share each
        side gets (a stack of more processes gets more), this does not."""
        if self.problem or not self.proxied_cpu_us or not math.isfinite(self.proxied_cpu_us):
            return math.nan
        return self.baseline_cpu_us / self.proxied_cpu_us


@dataclass(frozen=True)
class TargetResult:
    target: Target
    pairs: tuple[TargetPair, ...]

    @property
    def ratios(self) -> list[float]:
        return [p.ratio for p in self.pairs if math.isfinite(p.ratio)]

    @property
    def median(self) -> float:
        return statistics.median(self.ratios) if self.ratios else math.nan

    @property
    def cpu_median(self) -> float:
        values = [p.cpu_ratio for p in self.pairs if math.isfinite(p.cpu_ratio)]
        return statistics.median(values) if values else math.nan

    @property
    def met(self) -> bool | None:
        """None when no pair ran: nothing was measured, so nothing is claimed."""
        return None if not self.ratios else self.median >= self.target.at_least


@dataclass(frozen=True)
class TargetReport:
    results: tuple[TargetResult, ...]
    settings: dict[str, Any]
    machine: dict[str, Any] = field(default_factory=dict)
    loadavg_end: float | None = None

    @property
    def all_met(self) -> bool:
        return all(r.met for r in self.results)

    def format_table(self) -> str:
        s = self.settings
        lines = [
            f"proxy-path targets: wrk rate as a ratio to {BASELINE} (direct uvicorn) with {s['workers']} app "
            f"workers; {s['pairs']} A/B pairs of {s['duration_s']:g} s, {s['connections']} connections, "
            f"GET {s['path']}; medians (range)",
            f"machine: {self.machine.get('nproc')} cores, load average {self.machine.get('loadavg_1m', '?')} at "
            f"start, {self.loadavg_end if self.loadavg_end is not None else '?'} at the end "
            "(a busy machine lowers and spreads every ratio)",
            "",
            f"{'profile':<24} {'ratio':>6} {'range':>11} {'target':>7}  result   {'by CPU':>6}  "
            "pairs (baseline req/s → proxied)",
        ]
        for r in self.results:
            rng = f"{min(r.ratios):.2f}–{max(r.ratios):.2f}" if r.ratios else "-"
            verdict = {True: "met", False: "BELOW", None: "no data"}[r.met]
            pairs = ", ".join(f"{p.baseline_rps:,.0f}→{p.proxied_rps:,.0f}" if not p.problem else "failed"
                              for p in r.pairs)
            ratio = f"{r.median:.2f}" if r.ratios else "-"
            by_cpu = f"{r.cpu_median:.2f}" if math.isfinite(r.cpu_median) else "-"
            lines.append(f"{r.target.profile:<24} {ratio:>6} {rng:>11} {r.target.at_least:>7.2f}  {verdict:<8} "
                         f"{by_cpu:>6}  {pairs}")
        lines.append("by CPU: baseline CPU-µs per request over the proxied profile's (servers and wrk), the "
                     "rate ratio an otherwise idle machine would show")
        problems = [f"  {r.target.profile}: {p.problem}" for r in self.results for p in r.pairs if p.problem]
        if problems:
            lines += ["", "pairs that did not run:", *problems]
        return "\n".join(lines)

    def to_json(self) -> str:
        return json.dumps({
            "baseline": BASELINE, "settings": self.settings, "machine": self.machine, "loadavg_end": self.loadavg_end,
            "results": [{"profile": r.target.profile, "target": r.target.at_least,
                         "median": r.median if r.ratios else None, "met": r.met,
                         "cpu_median": r.cpu_median if math.isfinite(r.cpu_median) else None,
                         "pairs": [_finite(asdict(p) | {"ratio": p.ratio, "cpu_ratio": p.cpu_ratio})
                                   for p in r.pairs]} for r in self.results],
        }, indent=1)


def _finite(d: dict[str, Any]) -> dict[str, Any]:
    return {k: None if isinstance(v, float) and not math.isfinite(v) else v for k, v in d.items()}


def _rps(run: ProfileRun) -> float:
    return run.throughput_rps if run.ok else math.nan


def cpu_us_per_request(run: ProfileRun) -> float:
    """CPU-µs per successful request of the run's server processes and its generator."""
    server = run.server_cpu_percent()
    if not run.ok or server is None or not run.throughput_rps or not math.isfinite(run.generator_cpu_percent):
        return math.nan
    return (server + run.generator_cpu_percent) / 100.0 / run.throughput_rps * 1e6


def run_targets(*, pairs: int = 5, duration_s: float = 4.0, warmup_s: float = 1.0, connections: int = 64,
                workers: int = 2, path: str = TARGETS_PATH, targets: tuple[Target, ...] = PROXY_TARGETS,
                progress: ProgressCallback | None = None) -> TargetReport:
    """Every target measured in `pairs` A/B pairs with wrk (pairs of different targets interleave,
    so each target's pairs spread over the whole run)."""
    machine = machine_info()
    found: dict[str, list[TargetPair]] = {t.profile: [] for t in targets}
    for i in range(pairs):
        for j, target in enumerate(targets):
            baseline_first = (i + j) % 2 == 0
            order = [BASELINE, target.profile] if baseline_first else [target.profile, BASELINE]
            comparison = compare_profiles(order, connections=connections, duration_s=duration_s, warmup_s=warmup_s,
                                          path=path, generator="wrk", workers=workers, progress=progress)
            by_name = {r.name: r for r in comparison.runs}
            base, proxied = by_name[BASELINE], by_name[target.profile]
            problem = "; ".join(f"{r.name}: {r.reason}" for r in (base, proxied) if not r.ok)
            found[target.profile].append(TargetPair(baseline_first, _rps(base), _rps(proxied), problem,
                                                    cpu_us_per_request(base), cpu_us_per_request(proxied)))
    try:
        end: float | None = round(os.getloadavg()[0], 2)
    except OSError:
        end = None
    settings = {"pairs": pairs, "duration_s": duration_s, "warmup_s": warmup_s, "connections": connections,
                "workers": workers, "path": path, "generator": "wrk"}
    return TargetReport(tuple(TargetResult(t, tuple(found[t.profile])) for t in targets), settings, machine, end)

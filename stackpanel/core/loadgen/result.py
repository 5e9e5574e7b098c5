"""Immutable values a load run produces: the final :class:`LoadResult` and live :class:`LoadProgress`."""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from enum import StrEnum
from typing import Any, Literal

LoadMode = Literal["max", "rate", "wrk"]


class ErrorKind(StrEnum):
    """Why a request did not produce a 2xx/3xx response."""

    CONNECT_REFUSED = "connect_refused"  # nothing listens on the port
    CONNECT = "connect"  # any other failure to connect (e.g. out of ephemeral ports)
    TIMEOUT = "timeout"  # no complete response (or connection) within the timeout
    RESET = "reset"  # connection reset or closed before the response was complete
    HTTP_5XX = "http_5xx"
    HTTP_4XX = "http_4xx"
    HTTP_ERROR = "http_error"  # 4xx or 5xx, not told apart (wrk reports them together)
    PARSE = "parse"  # the bytes received were not a valid HTTP/1.x response


#: the kinds the built-in generator can report (always present, zero or not, in its results)
GENERATOR_ERROR_KINDS: tuple[ErrorKind, ...] = (
    ErrorKind.CONNECT_REFUSED,
    ErrorKind.CONNECT,
    ErrorKind.TIMEOUT,
    ErrorKind.RESET,
    ErrorKind.HTTP_5XX,
    ErrorKind.HTTP_4XX,
    ErrorKind.PARSE,
)


@dataclass(frozen=True)
class LoadResult:
    """What one load run measured.

    ``rps`` counts only successful (2xx/3xx) responses per second of ``duration_s``. Latency
    percentiles cover every complete HTTP response, whatever its status (as wrk does); in
    ``rate`` mode they are measured from each request's intended send time, so time spent queued
    behind a stalled server counts. ``cpu_percent`` is the generator's own CPU time over wall time
    (100 = one core; with several processes it is their sum).
    """

    target: str
    mode: LoadMode
    connections: int
    duration_s: float
    requests_ok: int
    errors: dict[str, int]
    rps: float
    latency_p50_ms: float
    latency_p90_ms: float
    latency_p99_ms: float
    latency_max_ms: float
    cpu_percent: float
    processes: int = 1
    generator: str = "builtin"  # "builtin" or "wrk"
    rate_target: float | None = None  # requested req/s in rate mode
    latency_mean_ms: float = math.nan
    responses: int = 0  # complete HTTP responses of any status
    stopped_by: str = ""  # "duration", "count", "stopped", "deadline", or why it gave up
    aborted: str | None = None  # set when the run gave up (e.g. nothing could connect)
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def errors_total(self) -> int:
        return sum(self.errors.values())

    @property
    def requests_total(self) -> int:
        """Requests that ended, successfully or not."""
        return self.requests_ok + self.errors_total

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["errors_total"] = self.errors_total
        for k, v in d.items():  # JSON has no NaN
            if isinstance(v, float) and math.isnan(v):
                d[k] = None
        return d

    def summary(self) -> str:
        """One line for a log or a terminal."""
        errs = ", ".join(f"{k} {v}" for k, v in self.errors.items() if v) or "none"
        return (
            f"{self.generator} {self.mode} {self.target} c={self.connections} p={self.processes}: "
            f"{self.rps:,.0f} req/s ok over {self.duration_s:.2f}s, p50 {self.latency_p50_ms:.2f} ms, "
            f"p99 {self.latency_p99_ms:.2f} ms, max {self.latency_max_ms:.2f} ms, errors: {errs}; "
            f"generator CPU {self.cpu_percent:.0f}%"
        )


@dataclass(frozen=True)
class LoadProgress:
    """A live snapshot, delivered ~4x/s to a progress callback while a run is going."""

    elapsed_s: float
    requests_ok: int
    errors: int
    current_rps: float  # successful responses per second since the previous snapshot
    connections_open: int
    errors_by_kind: dict[str, int] = field(default_factory=dict)

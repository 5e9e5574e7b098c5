"""Access-log ingest: tail a growing log file and count lines per worker, status class and route.

Every tier writes the one line format of :mod:`stackpanel.core.logformat`::

    <pid> <status> <seconds> <route> <request_id> <rest...>

Throughput is the design constraint (a stack proxying 30k req/s writes 30k lines/s per tier and a
regex per line manages ~20k/s). So:

* :class:`LogTailer` hands over big byte chunks of *complete* lines (partial last lines are kept
  for the next read), not lines.
* :func:`parse_chunk` splits a chunk once (``bytes.split(b"\\n")``), then counts the key
  ``(pid, status, route)`` of every line with ``Counter(map(itemgetter(0, 1, 3),
  map(methodcaller("split", b" ", 4), lines)))`` -- the whole loop runs in C, with no Python call
  per line. Only the few *distinct* keys are validated and decoded afterwards; lines whose key is
  not valid (pid not decimal, status not 3 digits) are counted as unparseable.
* Latency is parsed only for a bounded, systematic sample of lines (every ``step``-th line); each
  sampled value stands for ``step`` lines (``IngestBatch.latency_weight``).

The ``seconds`` field is therefore not validated for lines outside the latency sample.
"""
from __future__ import annotations

import logging
import math
import os
import random
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from operator import itemgetter, methodcaller
from pathlib import Path
from typing import Self, TypeVar

import numpy as np
import numpy.typing as npt

log = logging.getLogger("stackpanel.metrics")

#: Default bound on the latency values parsed per chunk.
DEFAULT_LATENCY_SAMPLE_MAX = 1024
#: A "line" longer than this without a newline is dropped (binary garbage, not an access log).
MAX_PARTIAL_BYTES = 1 << 20
#: Upper bound on bytes read from one file per :meth:`LogTailer.read`.
DEFAULT_MAX_READ_BYTES = 64 << 20

_SPLIT_FIELDS = methodcaller("split", b" ", 4)
_KEY_FIELDS = itemgetter(0, 1, 3)
_TOO_MANY = b"429"
_FIVE = ord("5")
_SPLIT_LATENCY = methodcaller("split", b" ", 3)
_LATENCY_FIELD = itemgetter(2)
_ENDS_US = methodcaller("endswith", b"us")
_STRIP_US = methodcaller("removesuffix", b"us")
#: :meth:`IngestBatch.fold_pids` adds the counts of forgotten workers under this key (no process
#: logs as pid 0, the kernel's idle task).
FOLDED_PID = 0

LineKey = tuple[bytes, bytes, bytes]
K = TypeVar("K")


# --------------------------------------------------------------------------------------------------
# Tailing
# --------------------------------------------------------------------------------------------------


@dataclass
class _OpenFile:
    fd: int
    dev: int
    ino: int
    offset: int = 0
    partial: bytes = b""
    last_growth: float = 0.0
    skip_to_newline: bool = False  # opened mid-line (start_at_end): drop up to the next newline


class LogTailer:
    """Incremental reader of a growing (and possibly rotated) file.

    :meth:`read` returns chunks that each end with ``b"\\n"`` (complete lines only); a partial last
    line is carried over to the next read. Handled:

    * the file does not exist yet: ``read()`` returns ``[]`` and keeps trying. If the path
      disappears while a file is open (renamed/deleted, nothing new yet), the open file stays the
      current one -- its writer may still be appending -- until a new file appears at the path;
    * rotation by rename/delete + new file (inode changed): the old file stays open and is drained
      on every read -- a server keeps writing to it until it reopens its log -- and is closed once
      it has not grown for ``drain_grace_s``; its last partial line, if any, is then emitted as a
      line. The new file is read from offset 0. Old-file chunks come before new-file chunks.
    * copy-truncate (same inode, size < offset): reading restarts at 0; the partial line is dropped.
      A truncation followed by more writes than the old offset before the next read cannot be
      detected (no tailer can); keep read intervals short.

    Not thread-safe; one owner.
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        start_at_end: bool = False,
        max_read_bytes: int = DEFAULT_MAX_READ_BYTES,
        drain_grace_s: float = 2.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.path = Path(path)
        self._start_at_end = start_at_end
        self._max_read = max_read_bytes
        self._grace = drain_grace_s
        self._clock = clock
        self._cur: _OpenFile | None = None
        self._draining: list[_OpenFile] = []
        self._opened_once = False
        #: number of rotations (new inode) and truncations seen
        self.rotations = 0
        self.truncations = 0
        #: bytes dropped: partial lines lost to truncation, over-long "lines"
        self.dropped_bytes = 0

    # -- public -------------------------------------------------------------------------------------

    @property
    def offset(self) -> int:
        """Read offset in the current file (bytes consumed, including a carried partial line)."""
        return self._cur.offset if self._cur else 0

    @property
    def inode(self) -> int | None:
        return self._cur.ino if self._cur else None

    @property
    def is_open(self) -> bool:
        return self._cur is not None

    def read(self) -> list[bytes]:
        """New complete lines since the last call, as a list of byte chunks (possibly empty)."""
        now = self._clock()
        chunks: list[bytes] = []
        try:
            st: os.stat_result | None = os.stat(self.path)
        except OSError:
            st = None
        cur = self._cur
        if cur is not None and st is not None and (st.st_dev, st.st_ino) != (cur.dev, cur.ino):
            log.debug("%s rotated (inode %d -> %d)", self.path, cur.ino, st.st_ino)
            self.rotations += 1
            cur.last_growth = now
            self._draining.append(cur)
            self._cur = cur = None
        if cur is None and st is not None:
            cur = self._open(now)

        for old in list(self._draining):
            data = self._read_more(old)
            if data:
                old.last_growth = now
                chunks.append(data)
            elif now - old.last_growth >= self._grace:
                if old.partial:
                    chunks.append(old.partial + b"\n")
                    old.partial = b""
                self._close(old)
                self._draining.remove(old)

        if cur is not None:
            try:
                size = os.fstat(cur.fd).st_size
            except OSError:
                size = cur.offset
            if size < cur.offset:
                log.debug("%s truncated (%d < %d)", self.path, size, cur.offset)
                self.truncations += 1
                self.dropped_bytes += len(cur.partial)
                cur.offset = 0
                cur.partial = b""
            data = self._read_more(cur)
            if data:
                chunks.append(data)
        return chunks

    def close(self) -> None:
        for f in self._draining:
            self._close(f)
        self._draining.clear()
        if self._cur is not None:
            self._close(self._cur)
            self._cur = None

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- internals ----------------------------------------------------------------------------------

    def _open(self, now: float) -> _OpenFile | None:
        try:
            fd = os.open(self.path, os.O_RDONLY | getattr(os, "O_CLOEXEC", 0))
        except OSError:
            return None
        st = os.fstat(fd)
        f = _OpenFile(fd=fd, dev=st.st_dev, ino=st.st_ino, last_growth=now)
        if self._start_at_end and not self._opened_once and st.st_size:
            # Skip what was there before us; if the file ends mid-line, skip up to the next newline.
            f.offset = st.st_size
            f.skip_to_newline = os.pread(fd, 1, st.st_size - 1) != b"\n"
        self._opened_once = True
        self._cur = f
        return f

    def _read_more(self, f: _OpenFile) -> bytes:
        try:
            size = os.fstat(f.fd).st_size
        except OSError:
            return b""
        want = min(size - f.offset, self._max_read)
        if want <= 0:
            return b""
        try:
            data = os.pread(f.fd, want, f.offset)
        except OSError:
            return b""
        if not data:
            return b""
        f.offset += len(data)
        if f.skip_to_newline:
            nl = data.find(b"\n")
            if nl < 0:
                return b""
            f.skip_to_newline = False
            data = data[nl + 1 :]
        if f.partial:
            data = f.partial + data
            f.partial = b""
        cut = data.rfind(b"\n")
        if cut == len(data) - 1:
            return data
        if cut < 0:
            f.partial = data
            data = b""
        else:
            f.partial = data[cut + 1 :]
            data = data[: cut + 1]
        if len(f.partial) > MAX_PARTIAL_BYTES:
            log.warning("%s: dropping %d bytes without a newline", self.path, len(f.partial))
            self.dropped_bytes += len(f.partial)
            f.partial = b""
        return data

    @staticmethod
    def _close(f: _OpenFile) -> None:
        try:
            os.close(f.fd)
        except OSError:
            pass


# --------------------------------------------------------------------------------------------------
# Parsing
# --------------------------------------------------------------------------------------------------


@dataclass
class IngestBatch:
    """Counts from one chunk/poll. Keys are decoded: pid ``int``, status class ``"2xx"``, route ``str``."""

    lines: int = 0
    unparseable: int = 0
    by_pid: dict[int, int] = field(default_factory=dict)
    by_pid_status: dict[tuple[int, str], int] = field(default_factory=dict)
    by_status: dict[str, int] = field(default_factory=dict)
    by_route: dict[str, int] = field(default_factory=dict)
    errors_by_route: dict[str, int] = field(default_factory=dict)
    #: 429 answers by route: a rate limit at work, its own kind in the live view (not an error of the app)
    limited_by_route: dict[str, int] = field(default_factory=dict)
    #: latency sample, seconds (lines without a duration, ``-``, contribute nothing)
    latencies: npt.NDArray[np.float64] = field(default_factory=lambda: np.empty(0, dtype=np.float64))
    #: how many lines each sampled latency stands for (the sampling step)
    latency_weight: float = 1.0

    def merge(self, other: IngestBatch) -> None:
        """Add the counts of ``other`` into this batch (latency samples are not merged)."""
        self.lines += other.lines
        self.unparseable += other.unparseable
        _add(self.by_pid, other.by_pid)
        _add(self.by_pid_status, other.by_pid_status)
        _add(self.by_status, other.by_status)
        _add(self.by_route, other.by_route)
        _add(self.errors_by_route, other.errors_by_route)
        _add(self.limited_by_route, other.limited_by_route)


    def fold_pids(self, keep: set[int] | frozenset[int], keep_others: int) -> int:
        """Bound the per-pid tables: apart from the pids in ``keep``, keep the ``keep_others``
        most recently *first seen* pids and add the counts of older ones into :data:`FOLDED_PID`
        (sums stay exact). Returns the number of pids folded."""
        others = [p for p in self.by_pid if p not in keep and p != FOLDED_PID]
        old = others[: max(0, len(others) - keep_others)]
        if not old:
            return 0
        by_pid = self.by_pid
        folded = sum(by_pid.pop(p) for p in old)
        # re-insert so the folded bucket does not look "old" itself
        by_pid[FOLDED_PID] = by_pid.pop(FOLDED_PID, 0) + folded
        gone = set(old)
        bps = self.by_pid_status
        for key in [k for k in bps if k[0] in gone]:
            fk = (FOLDED_PID, key[1])
            bps[fk] = bps.get(fk, 0) + bps.pop(key)
        return len(old)


def _add(dst: dict[K, int], src: dict[K, int]) -> None:
    for k, n in src.items():
        dst[k] = dst.get(k, 0) + n


def _count_keys_slow(lines: list[bytes]) -> tuple[Counter[LineKey], int]:
    """Fallback when some line has fewer than 4 fields: per-line loop, blank lines ignored."""
    keys: Counter[LineKey] = Counter()
    short = 0
    for line in lines:
        parts = line.split(b" ", 4)
        if len(parts) < 4:
            if line.strip():
                short += 1
            continue
        keys[(parts[0], parts[1], parts[3])] += 1
    return keys, short


def parse_latency(field_: bytes) -> float | None:
    """``b"0.0123"`` -> 0.0123, ``b"1234us"`` -> 0.001234, ``b"-"`` / garbage -> None.

    The one rule for the ``seconds`` field of every tier (Apache writes whole microseconds with a
    ``us`` suffix, nginx and gunicorn seconds, uvicorn ``-``); :func:`parse_latencies` applies it
    to many fields at once."""
    try:
        if field_.endswith(b"us"):
            v = int(field_[:-2]) * 1e-6
        else:
            v = float(field_)
    except ValueError:
        return None
    return v if 0.0 <= v < math.inf else None


def parse_latencies(fields: list[bytes]) -> npt.NDArray[np.float64]:
    """:func:`parse_latency` over ``fields``, values that are None dropped. Uniform fields (all
    ``us``, all seconds, all ``-``: one tier's log) are converted in C with ``map``; anything
    else field by field."""
    if not fields:
        return np.empty(0, dtype=np.float64)
    try:
        if fields[0].endswith(b"us"):
            if all(map(_ENDS_US, fields)):
                v = np.fromiter(map(int, map(_STRIP_US, fields)), dtype=np.float64, count=len(fields)) * 1e-6
                return v[(v >= 0.0) & (v < math.inf)]
        elif fields.count(b"-") == len(fields):
            return np.empty(0, dtype=np.float64)
        else:
            v = np.fromiter(map(float, fields), dtype=np.float64, count=len(fields))
            return v[(v >= 0.0) & (v < math.inf)]
    except ValueError:
        pass  # mixed or odd fields
    values = [v for v in map(parse_latency, fields) if v is not None]
    return np.fromiter(values, dtype=np.float64, count=len(values))


def _latency_fields(sampled: list[bytes], all_valid: bool) -> list[bytes]:
    """The ``seconds`` field of each sampled line whose key fields are valid."""
    if all_valid:
        try:
            return list(map(_LATENCY_FIELD, map(_SPLIT_LATENCY, sampled)))  # in C
        except IndexError:
            pass
    fields = []
    for line in sampled:
        parts = line.split(b" ", 3)
        if len(parts) >= 3 and parts[0].isdigit() and len(parts[1]) == 3 and parts[1].isdigit():
            fields.append(parts[2])
    return fields


def _sample_latencies(
    lines: list[bytes], sample_max: int, all_valid: bool = False
) -> tuple[npt.NDArray[np.float64], float]:
    """Latencies of a systematic sample of at most ``sample_max`` lines (random start), and how
    many lines each sampled value stands for."""
    n = len(lines)
    if n == 0 or sample_max <= 0:
        return np.empty(0, dtype=np.float64), 1.0
    step = -(-n // sample_max)
    start = random.randrange(step) if step > 1 else 0
    return parse_latencies(_latency_fields(lines[start::step], all_valid)), float(step)


def split_lines(data: bytes) -> list[bytes]:
    """The lines of ``data`` (``\\n``-separated; a final segment without newline counts as a line)."""
    lines = data.split(b"\n")
    if lines and not lines[-1]:
        lines.pop()
    return lines


def parse_chunk(data: bytes, latency_sample_max: int = DEFAULT_LATENCY_SAMPLE_MAX) -> IngestBatch:
    """Count the lines of ``data`` (``\\n``-separated; a final segment without newline counts as a
    line). Never raises on bad input: bad lines are counted in ``unparseable``, blank lines ignored."""
    return parse_lines(split_lines(data), latency_sample_max)


def parse_lines(lines: list[bytes], latency_sample_max: int = DEFAULT_LATENCY_SAMPLE_MAX) -> IngestBatch:
    """:func:`parse_chunk` of lines already split."""
    batch = IngestBatch()
    if not lines:
        return batch
    try:
        keys: Counter[LineKey] = Counter(map(_KEY_FIELDS, map(_SPLIT_FIELDS, lines)))
        bad = 0
    except IndexError:  # a blank or short line somewhere in the chunk
        keys, bad = _count_keys_slow(lines)

    good = 0
    route_names: dict[bytes, str] = {}
    by_pid = batch.by_pid
    by_pid_status = batch.by_pid_status
    by_status = batch.by_status
    by_route = batch.by_route
    errors = batch.errors_by_route
    limited = batch.limited_by_route
    for (pid_b, status_b, route_b), n in keys.items():
        if not (pid_b.isdigit() and len(status_b) == 3 and status_b.isdigit() and route_b):
            bad += n
            continue
        good += n
        pid = int(pid_b)
        cls = f"{status_b[:1].decode()}xx"
        route = route_names.get(route_b)
        if route is None:
            route = route_names[route_b] = route_b.decode("utf-8", "replace").rstrip("\r")
        by_pid[pid] = by_pid.get(pid, 0) + n
        k = (pid, cls)
        by_pid_status[k] = by_pid_status.get(k, 0) + n
        by_status[cls] = by_status.get(cls, 0) + n
        by_route[route] = by_route.get(route, 0) + n
        if status_b[0] == _FIVE:
            errors[route] = errors.get(route, 0) + n
        elif status_b == _TOO_MANY:
            limited[route] = limited.get(route, 0) + n
    batch.lines = good
    batch.unparseable = bad
    batch.latencies, batch.latency_weight = _sample_latencies(lines, latency_sample_max, all_valid=not bad)
    return batch


class AccessLogIngest:
    """Tails one access log and keeps cumulative counts; :meth:`poll` returns what was new.

    ``totals`` is the running sum of every batch (``latencies`` there stay empty). ``line_sink``, if
    set, gets every chunk's lines after they are counted (the trace collector: one reader for both).
    Not thread-safe; the engine calls it from its tick.
    """

    def __init__(
        self,
        path: str | os.PathLike[str] | None = None,
        *,
        latency_sample_max: int = DEFAULT_LATENCY_SAMPLE_MAX,
        tailer: LogTailer | None = None,
    ) -> None:
        if tailer is None and path is not None:
            tailer = LogTailer(path)
        self.tailer = tailer
        self.latency_sample_max = latency_sample_max
        self.totals = IngestBatch()
        self.line_sink: Callable[[list[bytes]], None] | None = None

    def feed(self, data: bytes) -> IngestBatch:
        """Parse complete lines from memory (no file); updates :attr:`totals`."""
        lines = split_lines(data)
        batch = parse_lines(lines, self.latency_sample_max)
        self.totals.merge(batch)
        if self.line_sink is not None:
            self.line_sink(lines)
        return batch

    def poll(self) -> IngestBatch:
        """Read what the tailer has, parse it, update :attr:`totals` and return the new counts."""
        if self.tailer is None:
            return IngestBatch()
        chunks = self.tailer.read()
        if not chunks:
            return IngestBatch()
        if len(chunks) == 1:
            return self.feed(chunks[0])
        return self.feed(b"".join(chunks))

    def close(self) -> None:
        if self.tailer is not None:
            self.tailer.close()

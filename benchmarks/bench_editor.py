"""What the profile editor costs per action, on every built-in profile (medians of --reps).

    PYTHONPATH=. .venv/bin/python benchmarks/bench_editor.py [--reps 30]

* edit, cold: a form edit (set_workers) on text just typed: ruamel's round-trip parse, the dump
  of the unchanged tree (to find lines ruamel would normalise), the dump after the edit. GUI thread.
* edit, warm: the next form edit on text the last edit wrote (parse and first dump kept). GUI thread.
* check: collect_problems with the file checks (the module checks run in this interpreter), on the
  read queue: a keystroke costs this once the debounce ends.
"""
from __future__ import annotations

import argparse
import os
import statistics
import time
from collections.abc import Callable

from stackpanel.core.profiles.edit import ProfileDocument
from stackpanel.core.profiles.library import list_profiles
from stackpanel.core.profiles.loader import collect_problems


def median_ms(fn: Callable[[], object], reps: int) -> float:
    times = []
    for _ in range(reps):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return statistics.median(times) * 1000


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--reps", type=int, default=30)
    args = ap.parse_args()
    print(f"load average before: {os.getloadavg()[0]:.1f}")
    print(f"{'profile':24} {'edit cold':>10} {'edit warm':>10} {'check':>8}  (ms, median of {args.reps})")
    for entry in (e for e in list_profiles() if e.group == "built-in"):
        text = entry.path.read_text()
        node = list(ProfileDocument(text).node_kinds())[-1]
        cold = median_ms(lambda: ProfileDocument(text).set_workers(node, 3), args.reps)  # noqa: B023
        warm_doc = ProfileDocument(text)
        warm_doc.set_workers(node, 3)
        counts = iter(range(4, 10**6))
        warm = median_ms(lambda: warm_doc.set_workers(node, next(counts) % 60 + 1), args.reps)  # noqa: B023
        check = median_ms(lambda: collect_problems(text, entry.path), args.reps)  # noqa: B023
        print(f"{entry.name:24} {cold:10.1f} {warm:10.1f} {check:8.1f}")
    print(f"load average after: {os.getloadavg()[0]:.1f}")


if __name__ == "__main__":
    main()

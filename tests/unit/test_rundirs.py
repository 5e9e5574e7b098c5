"""Old run directories are removed, the newest few per profile kept, never one in use."""
from __future__ import annotations

import os
from pathlib import Path

from stackpanel.core.supervise.rundirs import prune_run_dirs, run_dirs_usage
from stackpanel.core.supervise.runlock import RunLock


def _run(root: Path, name: str, age: int) -> Path:
    d = root / name
    (d / "logs").mkdir(parents=True)
    log = d / "logs" / "web.access.log"
    log.write_text("x" * 100)
    os.utime(log, (1_000_000 + age, 1_000_000 + age))
    os.utime(d, (1_000_000 + age, 1_000_000 + age))
    return d


def test_keeps_the_newest_per_profile_and_spares_what_is_in_use(tmp_path: Path) -> None:
    runs = [_run(tmp_path, f"nginx-uvicorn-{i:08x}", age=i) for i in range(6)]
    other = _run(tmp_path, "nginx-split-0000000a", age=0)
    held = RunLock(runs[0])
    held.acquire()  # the oldest one is running right now
    try:
        removed = prune_run_dirs(tmp_path, keep=3, spare=runs[1])
    finally:
        held.release()
    # the running one (0) was just used, so it is among the 3 newest with 5 and 4; 1 is spared
    assert sorted(removed) == sorted([runs[2], runs[3]])
    assert all(d.exists() for d in [runs[5], runs[4], runs[0], runs[1], other])
    count, size = run_dirs_usage(tmp_path)
    assert count == 5 and size >= 500

"""`stackpanel selftest [PROFILE...]`: is this machine ready for the workshop?

Doctor first, then for each profile: up → one request through the entry (edge) node → stop → check
that no process of the stack is left and no port is still held. One PASS/FAIL line per step on
stdout, exit code 0 only when every line is a PASS. It is what an instructor runs on each laptop
before the session starts; the package install test runs it inside a clean Debian root.

Uses only the public session API (`StackSession`) and `discovery` (doctor).
"""
from __future__ import annotations

import shutil
import socket
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

from stackpanel.core.errors import StackpanelError

STOP_GRACE_S = 5.0  # processes get this long to vanish after stop() returned


@dataclass(frozen=True)
class StepResult:
    name: str
    ok: bool
    detail: str

    def line(self) -> str:
        return f"{'PASS' if self.ok else 'FAIL'}  {self.name}: {self.detail}"


def default_profiles() -> list[str]:
    """The workshop group when the package has one, else every built-in profile."""
    from stackpanel.core.profiles.library import list_profiles

    entries = list_profiles()
    workshop = [e.name for e in entries if e.group == "workshop"]
    return workshop or [e.name for e in entries if e.group == "built-in"]


def _needs(profiles: Iterable[object]) -> tuple[set[str], str | None]:
    needs: set[str] = set()
    python: str | None = None
    for profile in profiles:
        needs |= set(profile.kinds())  # type: ignore[attr-defined]
        for node in profile.nodes.values():  # type: ignore[attr-defined]
            if getattr(node, "effective_worker_class", None) == "uvicorn":
                needs |= {"uvicorn", "uvicorn_worker"}
            if hasattr(node, "app") and python is None:
                python = node.app.interpreter
    return needs, python


def check_doctor(profiles: list[object]) -> StepResult:
    from stackpanel.core import discovery

    needs, python = _needs(profiles)
    report = discovery.run_doctor(needs=cast(Any, needs) or None, python=python)
    if report.ok:
        return StepResult("doctor", True, f"everything the profiles need is installed ({', '.join(sorted(needs))})")
    first = discovery.format_report(report).strip().splitlines()
    problems = [line.strip() for line in first if "missing" in line.lower() or "install" in line.lower()]
    return StepResult("doctor", False, "; ".join(problems[:3]) or "see `stackpanel doctor`")


def _port_held(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=0.5):
            return True
    except OSError:
        return False


def _get(url: str, timeout: float = 10.0) -> tuple[int, str]:
    request = urllib.request.Request(url, headers={"User-Agent": "stackpanel-selftest"})
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))  # loopback: never a proxy
    try:
        with opener.open(request, timeout=timeout) as response:
            return response.status, response.read(200).decode("utf-8", "replace")
    except urllib.error.HTTPError as exc:
        return exc.code, exc.reason or ""


def _alive(pids: Iterable[int]) -> list[int]:
    import psutil

    left = []
    for pid in pids:
        try:
            if psutil.Process(pid).status() != psutil.STATUS_ZOMBIE:
                left.append(pid)
        except psutil.Error:
            pass
    return left


def check_profile(name: str, profile: object, *, run_root: Path) -> StepResult:
    """up → GET the entry URL → stop → nothing left. Never raises for stack problems."""
    from stackpanel.core.session import StackSession

    run_dir = run_root / name.replace("/", "_")
    session = StackSession(profile, run_dir=run_dir)  # type: ignore[arg-type]
    pids: set[int] = set()
    t0 = time.monotonic()
    try:
        try:
            session.start()
        except StackpanelError as exc:
            return StepResult(name, False, f"did not come up: {str(exc).splitlines()[0]}")
        up_s = time.monotonic() - t0
        snap = session.snapshot()
        for node in snap.nodes:
            pids.update(p for p in (node.pid, *node.worker_pids) if p)
        url = session.profile.entry_url
        t1 = time.monotonic()
        try:
            status, _body = _get(url)
        except OSError as exc:
            return StepResult(name, False, f"up in {up_s:.1f} s, but GET {url} failed: {exc}")
        req_ms = (time.monotonic() - t1) * 1000
        if not 200 <= status < 400:
            return StepResult(name, False, f"up in {up_s:.1f} s, but GET {url} answered {status}")
        t2 = time.monotonic()
        session.stop()
        stop_s = time.monotonic() - t2
    finally:
        try:
            session.stop()
        finally:
            session.close()
    deadline = time.monotonic() + STOP_GRACE_S
    left = _alive(pids)
    while left and time.monotonic() < deadline:
        time.sleep(0.1)
        left = _alive(left)
    held = [f"{n.address}" for n in snap.nodes if _address_held(n.address)]
    if left or held:
        what = ([f"pids {', '.join(map(str, left))} still running"] if left else []) + \
               ([f"ports still held: {', '.join(held)}"] if held else [])
        return StepResult(name, False, f"GET {url} → {status}, but after stop: {'; '.join(what)}")
    return StepResult(name, True, f"up {up_s:.1f} s, GET {url} → {status} in {req_ms:.0f} ms, "
                                  f"stopped in {stop_s:.1f} s, {len(pids)} processes gone, ports free")


def _address_held(address: str) -> bool:
    host, _, port = address.rpartition(":")
    if not port.isdigit():
        return False
    return _port_held(host.strip("[]") or "127.0.0.1", int(port))


def run_selftest(names: list[str], *, port_offset: int = 0, say: Callable[[str], None] = print) -> int:
    """Print one PASS/FAIL line per step; return 0 when all passed, 1 otherwise."""
    from stackpanel.core.errors import ProfileError
    from stackpanel.core.profiles.library import resolve_profile
    from stackpanel.core.profiles.loader import load_profile

    names = names or default_profiles()
    results: list[StepResult] = []
    loaded: list[tuple[str, object]] = []
    for name in names:
        try:
            loaded.append((name, load_profile(resolve_profile(name), port_offset=port_offset)))
        except ProfileError as exc:
            results.append(StepResult(name, False, f"profile does not load: {str(exc).splitlines()[0]}"))
            say(results[-1].line())
    doctor = check_doctor([p for _, p in loaded])
    results.append(doctor)
    say(doctor.line())
    run_root = Path(tempfile.mkdtemp(prefix="stackpanel-selftest-"))
    try:
        for name, profile in loaded:
            result = check_profile(name, profile, run_root=run_root)
            results.append(result)
            say(result.line())
    finally:
        shutil.rmtree(run_root, ignore_errors=True)
    failed = [r for r in results if not r.ok]
    say(f"selftest: {len(failed)} of {len(results)} checks failed" if failed
        else f"selftest: all {len(results)} checks passed")
    return 1 if failed else 0

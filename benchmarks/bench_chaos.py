"""Chaos: faults injected into running stacks, as a reliability tester would (issue #18).

    .venv/bin/python benchmarks/bench_chaos.py handoff --reps 5          # kill -9 of masters under load, A/B
    .venv/bin/python benchmarks/bench_chaos.py faults --trials 60 --seed 1
    .venv/bin/python benchmarks/bench_chaos.py kill-stackpanel --trials 1000 --seed 1 --minutes 40
    .venv/bin/python benchmarks/bench_chaos.py double-start --pairs 100
    .venv/bin/python benchmarks/bench_chaos.py hung --trials 20
    .venv/bin/python benchmarks/bench_chaos.py soak --minutes 30 --seed 1

* handoff: a stack under constant load (the built-in generator, 16 connections, at the edge); kill -9
  of the app master (uvicorn, gunicorn) or the nginx master; failed requests by kind and the time from
  the kill to the node's readiness, with the supervisor's socket handoff on and off in alternating pairs.
* faults: a seeded random schedule on nginx → gunicorn (4 uvicorn workers) under load: kill -9 of
  masters and workers of both, SIGSTOP/SIGCONT of workers and masters; per fault the failed requests
  by kind and the time until every node is ready with its workers again and the load flows.
* kill-stackpanel: `stackpanel up` killed with SIGKILL at a random moment of its start, run or stop;
  then any process of the run still alive after 5 s (an orphan) and any port of the profile still held.
* double-start: two `stackpanel up` of the same profile, offset and run directory at the same moment:
  exactly one runs, the other is refused with a message.
* hung: SIGSTOP of a uvicorn with a liveness probe: the time until it is found unhealthy, against the
  bound its probe sets (period × threshold + timeout).
* soak: `stackpanel up` under load with a fault every few seconds for N minutes: its RSS over time
  (the first minute is warm-up), orphans and ports at the end.
"""
from __future__ import annotations

import argparse
import dataclasses
import os
import random
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path

import psutil

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from stackpanel.core.loadgen import LoadConfig, LoadResult, run_load
from stackpanel.core.loadgen.result import LoadProgress
from stackpanel.core.machine import describe_machine
from stackpanel.core.profiles.library import builtin_dir
from stackpanel.core.profiles.loader import load_profile, load_profile_text
from stackpanel.core.profiles.schema import AppServerNode, Profile
from stackpanel.core.render import render_stack
from stackpanel.core.supervise.events import Event, NodeState, NodeStateChanged, StackMessage
from stackpanel.core.supervise.ports import free_port_offset, wait_ports_free
from stackpanel.core.supervise.supervisor import Supervisor

PY = sys.executable
ROOT = Path(__file__).resolve().parent.parent


def offset_for(profile_name: str) -> int:
    ports = [p for n in load_profile(builtin_dir() / f"{profile_name}.yaml").nodes.values()
             for _h, p in n.listen_addresses]
    return free_port_offset(ports)


def builtin(name: str, offset: int | None = None) -> Profile:
    return load_profile(builtin_dir() / f"{name}.yaml", port_offset=offset_for(name) if offset is None else offset)


def ports_of(profile: Profile) -> list[tuple[str, int]]:
    return [a for n in profile.nodes.values() for a in n.listen_addresses]


def held_ports(profile: Profile, grace: float = 2.0) -> list[int]:
    """Ports of the profile still taken after `grace` seconds (a process in the middle of its exit
    has no command line left to be found by, but may hold its socket for a moment)."""
    deadline = time.monotonic() + grace
    while True:
        held = [port for host, port in ports_of(profile) if wait_ports_free([(host, port)], 0)]
        if not held or time.monotonic() >= deadline:
            return held
        time.sleep(0.05)


def median(values: list[float]) -> float:
    return statistics.median(values) if values else float("nan")


# ------------------------------------------------------------------------------------- load


class Load:
    """The built-in generator on a thread, as long as the block runs; progress is kept."""

    def __init__(self, url: str, connections: int = 16, rate: float | None = None) -> None:
        self.config = LoadConfig(url=url, connections=connections, duration_s=3600, max_duration_s=3600, timeout_s=10,
                                 give_up_after_s=None, progress_interval_s=0.05, rate=rate)
        self._cond = threading.Condition()
        self.progress: LoadProgress | None = None
        self._stop = threading.Event()
        self._out: list[LoadResult] = []
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        self._out.append(run_load(self.config, self._on, stop_event=self._stop))

    def _on(self, p: LoadProgress) -> None:
        with self._cond:
            self.progress = p
            self._cond.notify_all()

    def ok(self) -> int:
        return self.progress.requests_ok if self.progress else 0

    def errors(self) -> dict[str, int]:
        return dict(self.progress.errors_by_kind) if self.progress else {}

    def wait_ok(self, n: int, timeout: float = 30) -> bool:
        with self._cond:
            return self._cond.wait_for(lambda: self.ok() >= n, timeout)

    def __enter__(self) -> Load:
        self._thread.start()
        if not self.wait_ok(50):
            raise RuntimeError("the load never got going")
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(30)

    @property
    def result(self) -> LoadResult:
        return self._out[0]


def diff(after: dict[str, int], before: dict[str, int]) -> dict[str, int]:
    return {k: v - before.get(k, 0) for k, v in after.items() if v - before.get(k, 0)}


class Events:
    """A supervisor's events; wait for one."""

    def __init__(self, sup: Supervisor) -> None:
        self.events: list[Event] = []
        self._cond = threading.Condition()
        sup.subscribe(self._on)

    def _on(self, e: Event) -> None:
        with self._cond:
            self.events.append(e)
            self._cond.notify_all()

    def wait(self, pred: Callable[[Event], bool], timeout: float = 30) -> Event:
        deadline = time.monotonic() + timeout
        with self._cond:
            while True:
                for e in self.events:
                    if pred(e):
                        return e
                left = deadline - time.monotonic()
                if left <= 0:
                    raise TimeoutError(f"event not seen in {timeout} s")
                self._cond.wait(left)


def state_after(node: str, state: NodeState, after: float) -> Callable[[Event], bool]:
    return lambda e: isinstance(e, NodeStateChanged) and e.node == node and e.state == state and e.at > after


# ---------------------------------------------------------------------------------- handoff

HANDOFF_CASES = (("nginx-uvicorn", "app"), ("nginx-gunicorn-uvicorn", "app"), ("nginx-uvicorn", "web"),
                 ("uvicorn-workers", "app"))


def handoff_rep(profile_name: str, node: str, handoff: bool, root: Path, listen: str = "auto") -> dict[str, float]:
    profile = listening(builtin(profile_name), listen)
    sup = Supervisor(render_stack(profile, root / f"{profile_name}-{time.monotonic_ns()}"), socket_handoff=handoff)
    events = Events(sup)
    try:
        sup.start()
        with Load(profile.entry_url + "api/hello") as load:
            before = load.errors()
            pid = sup.snapshot().node(node).pid
            assert pid is not None
            killed = time.time()
            os.kill(pid, signal.SIGKILL)
            ready = events.wait(state_after(node, NodeState.READY, killed))
            load.wait_ok(load.ok() + 500)
            failed = diff(load.errors(), before)
    finally:
        sup.close()
    return {"recovery_s": ready.at - killed, **{k: float(v) for k, v in failed.items()}}


def cmd_handoff(args: argparse.Namespace) -> None:
    kinds = ("connect_refused", "http_5xx", "reset", "timeout", "connect")
    with tempfile.TemporaryDirectory() as tmp:
        for profile_name, node in HANDOFF_CASES:
            if args.case and f"{profile_name}:{node}" not in args.case:
                continue
            runs: dict[bool, list[dict[str, float]]] = {True: [], False: []}
            for _ in range(args.reps):
                for handoff in (False, True):  # alternating pairs
                    runs[handoff].append(handoff_rep(profile_name, node, handoff, Path(tmp), args.listen))
            print(f"\n## {profile_name} (app servers on listen: {args.listen}): kill -9 of the {node} master "
                  f"under load ({args.reps} pairs, medians)\n")
            print("| handoff | recovery (kill → ready) | " + " | ".join(kinds) + " |")
            print("|---|---|" + "---|" * len(kinds))
            for handoff in (False, True):
                reps = runs[handoff]
                cells = [f"{median([r.get(k, 0.0) for r in reps]):.0f} ({min(r.get(k, 0.0) for r in reps):.0f}–"
                         f"{max(r.get(k, 0.0) for r in reps):.0f})" for k in kinds]
                rec = [r["recovery_s"] for r in reps]
                print(f"| {'on' if handoff else 'off'} | {median(rec):.2f} s ({min(rec):.2f}–{max(rec):.2f}) | "
                      + " | ".join(cells) + " |")


# ----------------------------------------------------------------------------------- faults

FAULTS = ("kill app master", "kill app worker", "kill web master", "kill web worker",
          "stop/cont app worker", "stop/cont web master", "stop/cont app master")


def settled(sup: Supervisor, workers: dict[str, int]) -> bool:
    snap = sup.snapshot()
    return all(n.state == NodeState.READY and len(n.worker_pids) >= workers[n.name] for n in snap.nodes)


def fault_trial(sup: Supervisor, load: Load, kind: str, rng: random.Random, workers: dict[str, int]) -> dict:
    deadline = time.monotonic() + 30
    while not settled(sup, workers) and time.monotonic() < deadline:
        time.sleep(0.02)
    snap = sup.snapshot()
    node = snap.node("app" if "app" in kind else "web")
    if node.pid is None or not node.worker_pids:
        raise RuntimeError(f"{node.name} did not come back within 30 s: {node.state} ({node.reason})")
    target = node.pid if "master" in kind else rng.choice(node.worker_pids)
    before, ok_before = load.errors(), load.ok()
    t0 = time.monotonic()
    try:
        if kind.startswith("kill"):
            os.kill(target, signal.SIGKILL)
        else:
            os.kill(target, signal.SIGSTOP)
            time.sleep(rng.uniform(0.1, 1.0))
            os.kill(target, signal.SIGCONT)
    except ProcessLookupError:  # a worker that was just being replaced
        return {"kind": "target gone", "recovered_s": 0.0, "failed": {}}
    time.sleep(0.25)  # give the supervisor's worker poll (5 Hz) a chance to see a dead worker
    while time.monotonic() - t0 < 30:
        if settled(sup, workers) and load.ok() > ok_before:
            mark = load.ok()
            if load.wait_ok(mark + 100, timeout=10):
                break
        time.sleep(0.02)
    return {"kind": kind, "recovered_s": time.monotonic() - t0, "failed": diff(load.errors(), before)}


def listening(profile: Profile, listen: str) -> Profile:
    """Every app server with `listen: LISTEN` (auto: a Unix socket behind nginx, TCP otherwise)."""
    return profile.model_copy(update={"nodes": {
        name: node.model_copy(update={"listen": listen}) if isinstance(node, AppServerNode) else node
        for name, node in profile.nodes.items()}})


def unlimited_restarts(profile: Profile) -> Profile:
    """The profile with a restart budget no schedule uses up: a schedule that kills a master more
    than 5 times in 300 s would otherwise (rightly) leave it failed for good."""
    budget = {"max_restarts": 1000}
    return profile.model_copy(update={"nodes": {
        name: node.model_copy(update={"availability": node.availability.model_copy(update=budget)})
        for name, node in profile.nodes.items()}})


def run_faults(trials: int, seed: int, root: Path, quiet: bool = False, listen: str = "auto") -> list[dict]:
    rng = random.Random(seed)
    profile = listening(unlimited_restarts(builtin("nginx-gunicorn-uvicorn")), listen)
    sup = Supervisor(render_stack(profile, root / f"faults-{time.monotonic_ns()}"))
    results = []
    try:
        sup.start()
        workers = {"web": len(sup.snapshot().node("web").worker_pids), "app": 4}
        with Load(profile.entry_url + "api/hello") as load:
            for i in range(trials):
                r = fault_trial(sup, load, rng.choice(FAULTS), rng, workers)
                results.append(r)
                if not quiet:
                    print(f"  {i + 1:3d} {r['kind']:<22} recovered {r['recovered_s']:.2f} s  failed {r['failed']}",
                          flush=True)
    finally:
        sup.close()
    results.append({"kind": "end", "held_ports": held_ports(profile)})
    return results


def cmd_faults(args: argparse.Namespace) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        results = run_faults(args.trials, args.seed, Path(tmp), listen=args.listen)
    end = results.pop()
    print(f"\n## faults: {args.trials} trials, seed {args.seed}, nginx → gunicorn (4 uvicorn workers), 16 conns\n")
    print("| fault | trials | recovered (median, max) | refused | 5xx | reset | timeout | other |")
    print("|---|---|---|---|---|---|---|---|")
    for kind in FAULTS:
        rs = [r for r in results if r["kind"] == kind]
        if not rs:
            continue
        tot = {k: sum(r["failed"].get(k, 0) for r in rs) for k in ("connect_refused", "http_5xx", "reset", "timeout")}
        other = sum(sum(r["failed"].values()) for r in rs) - sum(tot.values())
        rec = [r["recovered_s"] for r in rs]
        print(f"| {kind} | {len(rs)} | {median(rec):.2f} s, {max(rec):.2f} s | {tot['connect_refused']} | "
              f"{tot['http_5xx']} | {tot['reset']} | {tot['timeout']} | {other} |")
    print(f"\nports still held after stop: {end['held_ports'] or 'none'}")


# -------------------------------------------------------------------------- kill stackpanel


def up(profile_name: str, offset: int, run_dir: Path) -> subprocess.Popen[str]:
    return subprocess.Popen([PY, "-m", "stackpanel", "up", profile_name, "--port-offset", str(offset),
                             "--run-dir", str(run_dir)], stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True, cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT)})


def read_until(proc: subprocess.Popen[str], needle: str, timeout: float = 30) -> bool:
    """Wait for a line of proc's output that contains needle. The thread reads on to the end: an
    undrained pipe would block stackpanel's next print, and with it its event thread."""
    found = threading.Event()

    def reader() -> None:
        assert proc.stdout is not None
        for line in proc.stdout:
            if needle in line:
                found.set()

    threading.Thread(target=reader, daemon=True).start()
    return found.wait(timeout)


def run_processes(run_dir: Path) -> list[psutil.Process]:
    """Processes of a run: its directory in their command line, environment or working directory
    (uvicorn's spawned workers name it only in their environment, nginx workers only in their cwd)."""
    mark = str(run_dir)
    found = []
    for p in psutil.process_iter(["cmdline", "environ", "cwd"]):
        try:
            text = " ".join(p.info["cmdline"] or []) + " ".join((p.info["environ"] or {}).values())
            text += " " + (p.info["cwd"] or "")
        except (TypeError, psutil.Error):
            continue
        if mark in text:
            found.append(p)
    return found


def orphans_after(run_dir: Path, grace: float = 5.0) -> list[int]:
    _, alive = psutil.wait_procs(run_processes(run_dir), timeout=grace)
    return [p.pid for p in alive if p.is_running() and p.status() != psutil.STATUS_ZOMBIE]


def kill_trial(phase: str, rng: random.Random, root: Path, profile_name: str = "nginx-uvicorn") -> dict:
    offset = offset_for(profile_name)
    profile = builtin(profile_name, offset)
    run_dir = root / f"k{time.monotonic_ns()}"
    proc = up(profile_name, offset, run_dir)
    try:
        if phase == "start":
            if not read_until(proc, "started pid"):  # the first server is spawned: the start is under way
                return {"phase": phase, "error": "never started a server"}
            time.sleep(rng.uniform(0, 0.5))
        else:
            if not read_until(proc, "is up: open"):
                return {"phase": phase, "error": "never came up"}
            if phase == "run":
                time.sleep(rng.uniform(0, 0.5))
            else:
                proc.send_signal(signal.SIGINT)
                time.sleep(rng.uniform(0, 0.4))  # the stop takes ~0.4 s
        proc.kill()
        proc.wait()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    orphans = orphans_after(run_dir)
    for pid in orphans:  # leave the machine clean for the next trial
        try:
            os.killpg(os.getpgid(pid), signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass
    return {"phase": phase, "orphans": orphans, "held": held_ports(profile)}


def run_kills(trials: int, seed: int, root: Path, quiet: bool = False, minutes: float | None = None) -> list[dict]:
    """`trials` kills, or as many as fit in `minutes`."""
    rng = random.Random(seed)
    out: list[dict] = []
    deadline = time.monotonic() + minutes * 60 if minutes else float("inf")
    for i in range(trials):
        if time.monotonic() > deadline:
            break
        r = kill_trial(("start", "run", "stop")[i % 3], rng, root)
        out.append(r)
        if not quiet and (r.get("orphans") or r.get("held") or r.get("error") or (i + 1) % 25 == 0):
            print(f"  {i + 1:4d} {r}", flush=True)
    return out


def cmd_kill(args: argparse.Namespace) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        results = run_kills(args.trials, args.seed, Path(tmp), minutes=args.minutes)
    print(f"\n## kill -9 of stackpanel up (nginx-uvicorn), {len(results)} trials, seed {args.seed}\n")
    print("| phase | trials | with orphans | orphan processes | with held ports | never came up |")
    print("|---|---|---|---|---|---|")
    for phase in ("start", "run", "stop"):
        rs = [r for r in results if r["phase"] == phase]
        print(f"| {phase} | {len(rs)} | {sum(bool(r.get('orphans')) for r in rs)} | "
              f"{sum(len(r.get('orphans', [])) for r in rs)} | {sum(bool(r.get('held')) for r in rs)} | "
              f"{sum('error' in r for r in rs)} |")


# ----------------------------------------------------------------------------- double start


def double_pair(root: Path, profile_name: str = "uvicorn-workers") -> dict:
    offset = offset_for(profile_name)
    run_dir = root / f"d{time.monotonic_ns()}"
    a, b = up(profile_name, offset, run_dir), up(profile_name, offset, run_dir)
    outputs: dict[int, list[str]] = {a.pid: [], b.pid: []}
    up_seen = threading.Semaphore(0)

    def reader(p: subprocess.Popen[str]) -> None:
        assert p.stdout is not None
        for line in p.stdout:
            outputs[p.pid].append(line)
            if "is up: open" in line:
                up_seen.release()

    threads = [threading.Thread(target=reader, args=(p,), daemon=True) for p in (a, b)]
    for t in threads:
        t.start()
    try:
        up_seen.acquire(timeout=60)  # the first one up (or none)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and a.poll() is None and b.poll() is None:
            time.sleep(0.05)  # the refused one exits within a second
        running = [p for p in (a, b) if p.poll() is None]
        refused = [p for p in (a, b) if p.poll() == 1
                   and any("already running" in line for line in outputs[p.pid])]
        return {"running": len(running), "refused_with_message": len(refused)}
    finally:
        for p in (a, b):
            if p.poll() is None:
                p.send_signal(signal.SIGINT)
        for p in (a, b):
            try:
                p.wait(30)
            except subprocess.TimeoutExpired:
                p.kill()


def run_doubles(pairs: int, root: Path, quiet: bool = False, minutes: float | None = None) -> list[dict]:
    """`pairs` double starts, or as many as fit in `minutes`."""
    out: list[dict] = []
    deadline = time.monotonic() + minutes * 60 if minutes else float("inf")
    for i in range(pairs):
        if time.monotonic() > deadline:
            break
        out.append(double_pair(root))
        if not quiet and (out[-1] != {"running": 1, "refused_with_message": 1} or (i + 1) % 10 == 0):
            print(f"  {i + 1:3d} {out[-1]}", flush=True)
    return out


def cmd_double(args: argparse.Namespace) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        results = run_doubles(args.pairs, Path(tmp), minutes=args.minutes)
    good = sum(r == {"running": 1, "refused_with_message": 1} for r in results)
    print(f"\n## double starts (uvicorn-workers, same run dir and offset): {good} of {len(results)} pairs: "
          f"exactly one ran, the other was refused with a message; both ran: "
          f"{sum(r['running'] == 2 for r in results)}, none ran: {sum(r['running'] == 0 for r in results)}")


# ------------------------------------------------------------------------------------- hung

HUNG_PROFILE = """\
version: 1
name: hung
nodes:
  app:
    kind: uvicorn
    port: 8000
    app: {{module: "stackpanel.apps.fastapi_demo:app"}}
    readiness_probe: {{http_get: {{path: /healthz}}, period_seconds: 0.05}}
    liveness_probe: {{http_get: {{path: /healthz}}, period_seconds: {period}, timeout_seconds: {timeout},
                     failure_threshold: {threshold}}}
"""


def hung_trial(root: Path, period: float = 0.5, timeout: float = 0.5, threshold: int = 3) -> dict:
    text = HUNG_PROFILE.format(period=period, timeout=timeout, threshold=threshold)
    profile = load_profile_text(text, ROOT / "hung.yaml", port_offset=free_port_offset([8000]))
    sup = Supervisor(render_stack(profile, root / f"h{time.monotonic_ns()}"))
    events = Events(sup)
    try:
        sup.start()
        pid = sup.snapshot().node("app").pid
        assert pid is not None
        stopped = time.time()
        os.kill(pid, signal.SIGSTOP)
        found = events.wait(lambda e: isinstance(e, StackMessage) and "is unhealthy" in e.text, timeout=30)
        ready = events.wait(state_after("app", NodeState.READY, stopped), timeout=30)
    finally:
        sup.close()
    # worst case: the stop lands just after a passed probe, then `threshold` probes each time out
    bound = period * threshold + timeout
    return {"detected_s": found.at - stopped, "bound_s": bound, "ready_again_s": ready.at - stopped}


def cmd_hung(args: argparse.Namespace) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        rs = [hung_trial(Path(tmp)) for _ in range(args.trials)]
    within = sum(r["detected_s"] <= r["bound_s"] for r in rs)
    d = [r["detected_s"] for r in rs]
    print(f"\n## hung backend (SIGSTOP of uvicorn; liveness period 0.5 s, timeout 0.5 s, threshold 3: bound "
          f"{rs[0]['bound_s']:.1f} s): detected within the bound {within} of {len(rs)}; detection median "
          f"{median(d):.2f} s (min {min(d):.2f}, max {max(d):.2f}); ready again median "
          f"{median([r['ready_again_s'] for r in rs]):.2f} s")


# ------------------------------------------------------------------------------------- soak


@dataclasses.dataclass
class SoakSample:
    at_s: float
    rss_mb: float


def cmd_soak(args: argparse.Namespace) -> None:
    rng = random.Random(args.seed)
    name = "nginx-gunicorn-uvicorn"
    offset = offset_for(name)
    profile = builtin(name, offset)
    samples: list[SoakSample] = []
    faults = 0
    with tempfile.TemporaryDirectory() as tmp:
        run_dir = Path(tmp) / "soak"
        proc = up(name, offset, run_dir)
        if not read_until(proc, "is up: open"):
            raise SystemExit("the stack never came up")
        me = psutil.Process(proc.pid)
        t0 = time.monotonic()
        try:
            with Load(profile.entry_url + "api/hello", connections=8, rate=args.rate) as load:
                last_master = t0
                while time.monotonic() - t0 < args.minutes * 60 and proc.poll() is None:
                    time.sleep(rng.uniform(2, 6))
                    leaders = [p for p in me.children() if str(run_dir) in " ".join(p.cmdline())]
                    workers = [w for p in leaders for w in p.children()]
                    # a master at most every 90 s: the default budget is 5 restarts in 300 s
                    master = time.monotonic() - last_master > 90
                    pool = leaders if master else workers
                    if pool:
                        victim = rng.choice(pool)
                        try:
                            if master or rng.random() < 0.7:
                                victim.send_signal(signal.SIGKILL)
                            else:
                                victim.suspend()
                                time.sleep(0.5)
                                victim.resume()
                            faults += 1
                            last_master = time.monotonic() if master else last_master
                        except psutil.Error:
                            pass
                    samples.append(SoakSample(time.monotonic() - t0, me.memory_info().rss / 2**20))
                result_errors = load.errors()
                ok = load.ok()
        finally:
            proc.send_signal(signal.SIGINT)
            proc.wait(60)
        orphans = orphans_after(run_dir)
    warm = [s for s in samples if s.at_s >= 60] or samples
    pace = f"{args.rate:g} req/s" if args.rate else "as fast as it goes"
    print(f"\n## soak: {args.minutes} min of nginx → gunicorn under load (8 conns, {pace}), {faults} faults "
          f"every 2–6 s: kill -9 (70 %) or SIGSTOP 0.5 s + SIGCONT of a random worker, kill -9 of a random "
          f"master every 90 s; stackpanel up {'still ran' if proc.returncode in (0, -2) else 'exited'} "
          f"at the end: exit status {proc.returncode})\n")
    peak = max(s.rss_mb for s in warm)
    print(f"stackpanel up RSS: {warm[0].rss_mb:.1f} MB at {warm[0].at_s:.0f} s, max {peak:.1f} MB, "
          f"{warm[-1].rss_mb:.1f} MB at the end ({warm[-1].at_s:.0f} s); requests ok {ok}, failed {result_errors}; "
          f"orphans after stop: {orphans or 'none'}; ports held: {held_ports(profile) or 'none'}")
    marks, curve = 300.0, []  # the RSS once per 5 minutes: a plateau and a slow leak differ in shape
    for sample in warm:
        if sample.at_s >= marks:
            curve.append(f"{sample.at_s / 60:.0f} min {sample.rss_mb:.1f}")
            marks += 300
    print("RSS (MB) by time: " + ", ".join([f"1 min {warm[0].rss_mb:.1f}", *curve]))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="cmd", required=True)
    p = sub.add_parser("handoff")
    p.add_argument("--reps", type=int, default=5)
    p.add_argument("--case", action="append", help="PROFILE:NODE, e.g. uvicorn-workers:app (default: every case)")
    p.add_argument("--listen", choices=("auto", "tcp", "unix"), default="auto", help="the app servers' listen key")
    p = sub.add_parser("faults")
    p.add_argument("--trials", type=int, default=60)
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--listen", choices=("auto", "tcp", "unix"), default="auto", help="the app servers' listen key")
    p = sub.add_parser("kill-stackpanel")
    p.add_argument("--trials", type=int, default=1000)
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--minutes", type=float, help="stop after this long, whatever the trial count")
    p = sub.add_parser("double-start")
    p.add_argument("--pairs", type=int, default=100)
    p.add_argument("--minutes", type=float, help="stop after this long, whatever the pair count")
    sub.add_parser("hung").add_argument("--trials", type=int, default=20)
    p = sub.add_parser("soak")
    p.add_argument("--minutes", type=float, default=30)
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--rate", type=float, help="total requests/s of the load (default: as fast as it goes)")
    args = parser.parse_args()
    print(f"# machine: {describe_machine()}", flush=True)
    {"handoff": cmd_handoff, "faults": cmd_faults, "kill-stackpanel": cmd_kill, "double-start": cmd_double,
     "hung": cmd_hung, "soak": cmd_soak}[args.cmd](args)


if __name__ == "__main__":
    main()

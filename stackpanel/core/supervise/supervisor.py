"""The supervisor: run a rendered stack for real, watch it, restart it, stop it without orphans.

Threading
---------
* Blocking actions (start, stop, restart, reload) are serialized by one lock and run on the
  caller's thread; never call them from a GUI thread.
* Exits arrive on the exit-watcher thread (pidfd: within a millisecond); the handler only
  updates state, emits events and arms a restart timer.
* A poller thread (5 Hz) keeps each node's worker set current and rotates logs.
* Events go to subscribers on whichever of these threads produced them; subscribers must be cheap.
"""
from __future__ import annotations

import http.client
import logging
import os
import re
import signal
import socket
import subprocess
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import psutil

from stackpanel.core.errors import StackpanelError
from stackpanel.core.profiles.schema import AppServerNode, Availability, LivenessProbe, NodeBase, ReadinessProbe
from stackpanel.core.pubsub import Subscribers
from stackpanel.core.render import RenderedNode, RenderedStack
from stackpanel.core.supervise.events import (
    Event,
    NodeSnapshot,
    NodeState,
    NodeStateChanged,
    StackMessage,
    StackSnapshot,
    StackState,
    StackStateChanged,
    WorkersChanged,
)
from stackpanel.core.supervise.guardian import Guardian
from stackpanel.core.supervise.logfiles import LogRotator, tail_lines
from stackpanel.core.supervise.ports import PortConflict, check_ports_free, clear_stale_socket, wait_ports_free
from stackpanel.core.supervise.process import ManagedProcess
from stackpanel.core.supervise.reloadplan import ReloadStep, plan_node
from stackpanel.core.supervise.rundirs import archive_logs
from stackpanel.core.supervise.runlock import RunLock
from stackpanel.core.supervise.runrecord import (
    RunInUseError,
    RunRecord,
    RunRecordError,
    clean_leftovers,
    find_leftovers,
    record_path,
)
from stackpanel.core.supervise.sockets import Address, ListeningSockets, SocketPathError, listener_owner_problem

log = logging.getLogger("stackpanel.supervise")

POLL_INTERVAL = 0.2  # worker discovery
ROTATE_EVERY = 5.0  # log size checks
PROBE_IO_TIMEOUT = 2.0
MAX_BACKOFF = 30.0
LAST_LINES = 20


class StartError(StackpanelError):
    """A stack could not come up. Nothing it started is left running."""

    def __init__(self, node: str, reason: str, last_lines: list[str] | None = None):
        self.node = node
        self.reason = reason
        self.last_lines = last_lines or []
        text = f"node {node!r} did not start: {reason}"
        if self.last_lines:
            text += "\n  last log lines:\n" + "\n".join(f"    {line}" for line in self.last_lines)
        super().__init__(text)


class PortConflictError(StackpanelError):
    def __init__(self, conflicts: list[PortConflict]):
        self.conflicts = conflicts
        super().__init__("\n".join(str(c) for c in conflicts))


class ReloadError(StackpanelError):
    """A new config failed the server's own test; the running stack was left as it was."""


class _Cancelled(Exception):
    pass


@dataclass
class _Node:
    name: str
    rendered: RenderedNode
    spec: NodeBase
    state: NodeState = NodeState.STOPPED
    proc: ManagedProcess | None = None
    companion: ManagedProcess | None = None  # the rendered node's companion (an apache node's php-fpm)
    restarts: int = 0  # over the node's life, for people; decisions use `crashes`
    crashes: deque[float] = field(default_factory=deque)  # monotonic times, within the restart window
    workers: tuple[int, ...] = ()
    reason: str = ""
    timer: threading.Timer | None = None
    helper_pids: set[int] = field(default_factory=set)  # e.g. multiprocessing's resource tracker
    liveness_failures: int = 0
    liveness_due: float = 0.0

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.returncode is None

    @property
    def listen_addresses(self) -> list[tuple[str, int]]:
        """The TCP addresses it binds: none on a Unix socket (its file is checked at spawn)."""
        return [] if self.rendered.unix_socket else self.spec.listen_addresses

    @property
    def sockets(self) -> list[Address]:
        """What it listens on, as the supervisor holds it: its TCP addresses, or its socket file."""
        if self.rendered.unix_socket is not None:
            return [self.rendered.unix_socket]
        return list(self.spec.listen_addresses)

    @property
    def address(self) -> str:
        return f"unix:{self.rendered.unix_socket}" if self.rendered.unix_socket else self.spec.address

    def probe(self, probe: ReadinessProbe | LivenessProbe, timeout: float = PROBE_IO_TIMEOUT) -> tuple[bool, str]:
        if probe.tcp_socket is not None:
            return probe_tcp(self.spec.host, self.spec.port, timeout)
        return probe_http(self.spec.host, self.spec.port, probe.http_get.path, timeout, self.rendered.unix_socket)

    @property
    def companion_kind(self) -> str:
        return self.rendered.companion.kind if self.rendered.companion is not None else "companion"


def _describe_exit(code: int) -> str:
    if code < 0:
        try:
            return f"killed by {signal.Signals(-code).name}"
        except ValueError:
            return f"killed by signal {-code}"
    return f"exited with status {code}"


#: What a server logs when the app's interface is not the one it speaks: (pattern, the interface
#: the app really has). A WSGI app called as ASGI gets one argument too many; an ASGI app called
#: as WSGI misses `send`, or returns a coroutine where an iterable belongs.
_INTERFACE_SIGNS: tuple[tuple[re.Pattern[str], str], ...] = (
    (re.compile(r"takes [23] positional arguments but [34] were given"), "wsgi"),
    (re.compile(r"missing 1 required positional argument: 'send'"), "asgi"),
    (re.compile(r"'coroutine' object is not iterable|coroutine '.*' was never awaited"), "asgi"),
)


def interface_mismatch(lines: list[str], declared: str) -> str | None:
    """The interface the app seems to have, when its server's log shows it is not `declared`."""
    text = "\n".join(lines)
    for pattern, actual in _INTERFACE_SIGNS:
        if actual != declared and pattern.search(text):
            return actual
    return None


def restart_plan(crashes: deque[float], now: float, policy: Availability) -> float | None:
    """Record a crash at `now` and say how long to wait before restarting (None: give up).

    Only crashes within the last `restart_window_seconds` count: `max_restarts` of them there and
    the node has failed for good; older ones are forgotten, and with them the backoff."""
    crashes.append(now)
    while crashes and crashes[0] < now - policy.restart_window_seconds:
        crashes.popleft()
    if len(crashes) > policy.max_restarts:
        return None
    return restart_delay(policy.backoff_seconds, len(crashes) - 1)


def restart_delay(backoff_seconds: float, restarts: int) -> float:
    """Seconds to wait before restart number ``restarts + 1`` of a crashed node: the first restart
    is immediate, then ``backoff_seconds × (2^n − 1)`` (0, b, 3b, 7b, ...), capped at MAX_BACKOFF."""
    return min(MAX_BACKOFF, backoff_seconds * (2 ** restarts - 1))


class UnixHTTPConnection(http.client.HTTPConnection):
    """http.client over a Unix socket (the Host header says localhost)."""

    def __init__(self, path: Path, timeout: float) -> None:
        super().__init__("localhost", timeout=timeout)
        self.socket_path = path

    def connect(self) -> None:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.settimeout(self.timeout)
        try:
            sock.connect(str(self.socket_path))
        except OSError:
            sock.close()
            raise
        self.sock = sock


def probe_http(host: str, port: int, path: str, timeout: float = PROBE_IO_TIMEOUT,
               unix_socket: Path | None = None) -> tuple[bool, str]:
    """Ready = connect (TCP, or the Unix socket when given), then GET path answered with a status below 500."""
    try:
        conn = (UnixHTTPConnection(unix_socket, timeout) if unix_socket is not None
                else http.client.HTTPConnection(host, port, timeout=timeout))
        try:
            conn.request("GET", path, headers={"Connection": "close", "User-Agent": "stackpanel-probe"})
            status = conn.getresponse().status
        finally:
            conn.close()
    except (OSError, http.client.HTTPException) as exc:
        return False, f"{type(exc).__name__}: {exc}"
    return status < 500, f"HTTP {status}"


def probe_tcp(host: str, port: int, timeout: float = PROBE_IO_TIMEOUT) -> tuple[bool, str]:
    """Ready = a TCP connect is accepted (a server that speaks no HTTP)."""
    try:
        socket.create_connection((host, port), timeout=timeout).close()
    except OSError as exc:
        return False, f"{type(exc).__name__}: {exc}"
    return True, "TCP connect accepted"


def _socket_accepts(path: Path | None) -> bool:
    """A Unix socket a server listens on accepts a connection (None: nothing to wait for)."""
    if path is None:
        return True
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.settimeout(PROBE_IO_TIMEOUT)
        try:
            sock.connect(str(path))
        except OSError:
            return False
    return True


class Supervisor:
    def __init__(self, stack: RenderedStack, *, use_guardian: bool = True, socket_handoff: bool = True) -> None:
        """``socket_handoff=False``: every server binds its own port, as before #18.4 (benchmarks)."""
        self.stack = stack
        self._lock = threading.RLock()  # node state
        self._action_lock = threading.Lock()  # one blocking action at a time
        # A stop was requested: abort a start in progress, or one that has not got the action lock
        # yet. Set by request_stop()/stop(), cleared only by the stop() that honours it: cleared by
        # a stop that began after the last request (``_cancel_epoch`` counts the requests).
        self._cancel = threading.Event()
        # re-entrant: request_stop() runs in signal handlers, which may interrupt the main thread
        # inside this lock (a plain Lock would deadlock there)
        self._cancel_lock = threading.RLock()
        self._cancel_epoch = 0
        self._closed = threading.Event()
        self._subscribers: Subscribers[Event] = Subscribers()
        self._stack_state = StackState.STOPPED
        self._nodes = {
            name: _Node(name, rendered, stack.profile.nodes[name]) for name, rendered in stack.nodes.items()
        }
        self._use_guardian = use_guardian
        self._guardian: Guardian | None = None
        self._record = RunRecord(stack.paths.root)
        self._run_lock = RunLock(stack.paths.root)
        self._sockets = ListeningSockets(enabled=socket_handoff)
        self._rotator = LogRotator()
        self._poller: threading.Thread | None = None
        self._liveness: threading.Thread | None = None

    # ------------------------------------------------------------------ observing

    def subscribe(self, callback: Callable[[Event], None]) -> Callable[[], None]:
        """Events arrive on supervisor threads; returns the function that unsubscribes."""
        return self._subscribers.add(callback)

    def snapshot(self) -> StackSnapshot:
        with self._lock:
            nodes = tuple(
                NodeSnapshot(
                    name=n.name, kind=n.rendered.kind, state=n.state,
                    pid=n.proc.pid if n.proc is not None and n.proc.is_running else None,
                    worker_pids=n.workers, restarts=n.restarts, address=n.address, reason=n.reason,
                )
                for n in self._nodes.values()
            )
            return StackSnapshot(self._stack_state, nodes, self.stack.profile.entry_url)

    @property
    def state(self) -> StackState:
        return self._stack_state

    def last_lines(self, node: str, n: int = LAST_LINES) -> list[str]:
        """The node's most recent output and error-log lines (error log last: most telling)."""
        lines: list[str] = []
        for rendered in self._nodes[node].rendered.processes:
            lines += tail_lines(rendered.output_log, n)
            if rendered.error_log is not None:
                lines += tail_lines(rendered.error_log, n)
        return [line for line in lines if line.strip()][-n:]

    # ------------------------------------------------------------------ state

    def _set_state(self, node: _Node, state: NodeState, reason: str = "") -> None:
        with self._lock:
            previous = node.state
            node.state = state
            node.reason = reason
            pid = node.proc.pid if node.proc is not None else None
            self._subscribers.publish(NodeStateChanged(node.name, state, previous, pid, reason))
            if self._stack_state in (StackState.RUNNING, StackState.DEGRADED):
                healthy = all(n.state == NodeState.READY for n in self._nodes.values())
                self._set_stack_state(StackState.RUNNING if healthy else StackState.DEGRADED)

    def _set_stack_state(self, state: StackState, reason: str = "") -> None:
        with self._lock:
            if state == self._stack_state:
                return
            self._stack_state = state
            self._subscribers.publish(StackStateChanged(state, reason))

    def _message(self, level: str, text: str) -> None:
        log.info("%s: %s", level, text)  # subscribers show it to people; the log keeps a trace
        self._subscribers.publish(StackMessage(level, text))

    # ------------------------------------------------------------------ start

    def start(self) -> None:
        """Bring the whole stack up, backends first; return when every node is ready.

        Raises PortConflictError (nothing started), StartError (everything started is stopped
        again) or another StackpanelError.
        """
        with self._action_lock:
            if self._stack_state in (StackState.RUNNING, StackState.DEGRADED):
                missing = [n for n in self._nodes.values() if not n.running]
                for node in missing:  # some nodes were started alone: the rest join them
                    self._join(node)
                if missing:
                    self._set_stack_state(StackState.RUNNING, f"ready at {self.stack.profile.entry_url}")
                return
            self._set_stack_state(StackState.STARTING)
            try:
                self._check_cancel()  # a stop requested before this start got the lock wins
                self._prepare()
                for name in self.stack.nodes:
                    self._check_cancel()
                    self._start_node(self._nodes[name])
            except _Cancelled:
                self._stop_all(StackState.STOPPED, "start cancelled by a stop request")
                return
            except StackpanelError as exc:
                self._stop_all(StackState.FAILED, str(exc).splitlines()[0])
                raise
            except BaseException:
                self._stop_all(StackState.FAILED, "internal error during start")
                raise
            self._set_stack_state(StackState.RUNNING, f"ready at {self.stack.profile.entry_url}")
            self._ensure_poller()

    def _prepare(self, only: _Node | None = None) -> None:
        """Leftovers of a crashed run, free ports, configs written and tested (of `only`'s, when one
        node starts a run by itself). Starts nothing."""
        self.stack.paths.root.mkdir(parents=True, exist_ok=True)
        self._run_lock.acquire()  # before anything else: a second start of this run stops here
        try:
            leftovers = find_leftovers(record_path(self.stack.paths.root))
        except RunInUseError as exc:
            raise StackpanelError(f"{exc}; stop that stackpanel first, or use another --port-offset") from None
        except RunRecordError as exc:
            self._message("warning", f"ignoring a damaged process record: {exc}")
            leftovers = []
        if leftovers:
            result = clean_leftovers(leftovers)
            self._message("warning", str(result))
        else:
            self._message("info", "clean slate: no processes left over from an earlier run")
        self._record.clear()
        # A killed run leaves pid files behind; gunicorn refuses to start over one whose pid still
        # exists (a zombie not yet reaped by init counts). Nothing of ours is running now.
        for pid_file in self.stack.paths.state_dir.glob("*.pid"):
            pid_file.unlink(missing_ok=True)
        for stale in self.stack.paths.state_dir.glob("ready-*/*"):  # workers of a killed run
            stale.unlink(missing_ok=True)

        nodes = list(self._nodes.values()) if only is None else [only]
        self._bind_sockets(nodes)

        archive_logs(self.stack.paths.logs_dir)  # a new run starts from empty logs; the last one is logs.1
        self.stack.write()
        for node in nodes:
            for rendered in node.rendered.processes:
                self._test_config(rendered, rendered.config_test_argv)
        if self._use_guardian and self._guardian is None:
            self._guardian = Guardian()

    def _bind_sockets(self, nodes: list[_Node]) -> None:
        """Our listening sockets for the nodes that take one, a port check for the others."""
        try:
            conflicts = self._sockets.bind(((n.rendered, n.sockets) for n in nodes),
                                           offset=self.stack.profile.port_offset)
        except SocketPathError as exc:
            raise StartError(exc.node, str(exc)) from None
        if conflicts:
            raise PortConflictError(conflicts)

    def _test_config(self, rendered: RenderedNode, argv: tuple[str, ...] | None) -> None:
        if argv is None:
            return
        result = subprocess.run(argv, capture_output=True, text=True, timeout=30, cwd=rendered.cwd)
        if result.returncode != 0:
            lines = (result.stdout + result.stderr).strip().splitlines()[-LAST_LINES:]
            raise StartError(rendered.name, f"its config fails {Path(argv[0]).name}'s own test", lines)

    def _spawn(self, r: RenderedNode, addresses: list[Address] | None = None) -> ManagedProcess:
        """``addresses``: the listeners whose sockets we hold for it (none: it binds its own)."""
        if r.unix_socket is not None and not self._sockets.holds(r.unix_socket):
            problem = clear_stale_socket(r.unix_socket)
            if problem is not None:
                raise StackpanelError(problem)
        launch = self._sockets.launch(r, addresses or [], r.environment(os.environ))
        proc = ManagedProcess.start(
            r.name, list(launch.argv), log_path=r.output_log, env=launch.env, cwd=r.cwd,
            stop_signal=r.stop_signal, on_exit=self._on_exit, pass_fds=launch.pass_fds,
        )
        if self._guardian is not None:
            self._guardian.watch(proc.pgid)
        self._record.add_process(r.name, proc)
        self._rotator.add_all([p for p in (r.output_log, r.error_log, r.access_log) if p is not None])
        return proc

    def _start_node(self, node: _Node) -> None:
        """Spawn one node and wait until its probe passes (caller holds the action lock)."""
        with self._lock:
            node.workers = ()
            node.helper_pids = set()
        probe = node.spec.readiness_probe
        deadline = time.monotonic() + probe.timeout_seconds
        if node.rendered.companion is not None:
            self._start_companion(node, node.rendered.companion, deadline)
        with self._lock:
            try:
                node.proc = self._spawn(node.rendered, node.sockets)
            except StackpanelError as exc:
                raise StartError(node.name, str(exc)) from None
            self._set_state(node, NodeState.STARTING, f"started pid {node.proc.pid}")
        proc = node.proc
        if probe.initial_delay_seconds:
            self._sleep(probe.initial_delay_seconds)
        last = "no answer yet"
        while True:
            if proc.returncode is not None:
                self._discard(node)
                raise StartError(node.name, f"{_describe_exit(proc.returncode)} while starting",
                                 self.last_lines(node.name))
            if node.companion is not None and node.companion.returncode is not None:
                self._discard(node)
                raise StartError(node.name, f"its {node.companion_kind} {_describe_exit(node.companion.returncode)} "
                                 "while starting",
                                 self.last_lines(node.name))
            ok, last = node.probe(probe)
            if ok and node.listen_addresses and not self._sockets.hands_off(node.rendered):
                # its own bind: the answer counts only from its own socket, never another program's
                foreign = listener_owner_problem(node.spec.host, node.spec.port, proc.pid)
                if foreign is not None:
                    raise StartError(node.name, foreign)
            if ok:
                break
            if last.startswith("HTTP 5") and isinstance(node.spec, AppServerNode):
                # a wrong interface answers 500 to every probe: say so now, not after the timeout
                lines = self.last_lines(node.name)
                actual = interface_mismatch(lines, node.spec.app.interface)
                if actual is not None:
                    an = "an" if actual == "asgi" else "a"
                    raise StartError(node.name, f"{node.spec.app.module} looks like {an} {actual.upper()} app, "
                                     f"but the profile says interface: {node.spec.app.interface}; write "
                                     f"`interface: {actual}` under app", lines)
            if time.monotonic() > deadline:
                raise StartError(node.name, f"not ready after {probe.timeout_seconds:g} s "
                                 f"({probe.what}: {last})", self.last_lines(node.name))
            self._sleep(probe.period_seconds)
        self._refresh_workers(node)
        where = node.address + ("" if probe.tcp_socket is not None else probe.http_get.path)
        self._set_state(node, NodeState.READY, f"{last} from {where}")

    def _start_companion(self, node: _Node, rendered: RenderedNode, deadline: float) -> None:
        """Spawn the node's companion and wait until its socket accepts (before the node itself starts)."""
        with self._lock:
            try:
                node.companion = self._spawn(rendered)
            except StackpanelError as exc:
                raise StartError(node.name, f"{rendered.kind}: {exc}") from None
            self._set_state(node, NodeState.STARTING, f"started {rendered.kind} pid {node.companion.pid}")
        companion = node.companion
        while not _socket_accepts(rendered.ready_socket):
            if companion.returncode is not None:
                self._discard(node)
                raise StartError(node.name, f"its {rendered.kind} {_describe_exit(companion.returncode)} while "
                                 "starting", self.last_lines(node.name))
            if time.monotonic() > deadline:
                raise StartError(node.name, f"its {rendered.kind} did not listen on {rendered.ready_socket} within "
                                 f"{node.spec.readiness_probe.timeout_seconds:g} s", self.last_lines(node.name))
            self._sleep(node.spec.readiness_probe.period_seconds)

    def _sleep(self, seconds: float) -> None:
        if self._cancel.wait(seconds):
            raise _Cancelled

    def _check_cancel(self) -> None:
        if self._cancel.is_set():
            raise _Cancelled

    # ------------------------------------------------------------------ exits and restarts

    def _on_exit(self, proc: ManagedProcess, returncode: int, at: float) -> None:
        """Exit-watcher thread: a child's leader exited. Cheap: state, event, timer."""
        with self._lock:
            node = next((n for n in self._nodes.values() if n.proc is proc), None)
            owner = next((n for n in self._nodes.values() if n.companion is proc), None)
            if owner is not None and not proc.stop_requested and owner.state == NodeState.READY and owner.proc:
                # The node cannot serve without its companion: end the node's own group so that its
                # crash path (restart policy, backoff) restarts both.
                self._message("warning", f"{owner.name}: its {owner.companion_kind} {_describe_exit(returncode)}; "
                              "restarting the node")
                try:
                    os.killpg(owner.proc.pgid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
                return
            if node is None or proc.stop_requested or node.state in (NodeState.STOPPING, NodeState.STOPPED):
                return
            if node.state == NodeState.STARTING:
                return  # the start loop sees the exit and reports it
            reason = _describe_exit(returncode)
            self._set_state(node, NodeState.CRASHED, reason)
            policy = node.spec.availability
            wants_restart = policy.restart == "always" or (policy.restart == "on-failure" and returncode != 0)
            if self._closed.is_set() or not wants_restart:
                self._set_state(node, NodeState.FAILED if returncode != 0 else NodeState.STOPPED,
                                f"{reason}; restart policy is {policy.restart!r}")
                threading.Thread(target=self._discard, args=(node,), daemon=True).start()
                return
            delay = restart_plan(node.crashes, time.monotonic(), policy)
            if delay is None:
                self._set_state(node, NodeState.FAILED, f"{reason}; gave up after {policy.max_restarts} restarts "
                                f"within {policy.restart_window_seconds:g} s")
                threading.Thread(target=self._discard, args=(node,), daemon=True).start()
                return
            self._set_state(node, NodeState.BACKING_OFF, f"{reason}; restarting in {delay:.1f} s "
                            f"(restart {len(node.crashes)} of {policy.max_restarts} "
                            f"within {policy.restart_window_seconds:g} s)")
            node.timer = threading.Timer(delay, self._restart_after_crash, args=(node, proc))
            node.timer.daemon = True
            node.timer.start()

    def _discard(self, node: _Node) -> None:
        """Stop what is left of a dead leader's group (nginx workers outlive a killed master), and
        the node's companion."""
        for proc in (node.proc, node.companion):
            if proc is None:
                continue
            proc.stop(timeout=1.0)
            if self._guardian is not None:
                self._guardian.forget(proc.pgid)
            self._record.remove(proc.pid)

    def _restart_after_crash(self, node: _Node, crashed: ManagedProcess) -> None:
        with self._action_lock:
            with self._lock:
                if node.proc is not crashed or node.state != NodeState.BACKING_OFF or self._cancel.is_set():
                    return
                node.restarts += 1
                node.timer = None
            self._discard(node)
            try:
                self._start_node(node)
            except _Cancelled:
                return
            except StackpanelError as exc:
                self._message("error", str(exc))
                self._discard(node)
                if node.proc is not None and node.proc.returncode is None:
                    return
                # The new process died or never got ready: treat it as another crash.
                with self._lock:
                    policy = node.spec.availability
                    delay = restart_plan(node.crashes, time.monotonic(), policy)
                    if delay is None:
                        self._set_state(node, NodeState.FAILED, f"gave up after {policy.max_restarts} restarts "
                                        f"within {policy.restart_window_seconds:g} s")
                    else:
                        self._set_state(node, NodeState.BACKING_OFF, "restart failed; trying again")
                        node.timer = threading.Timer(delay, self._restart_after_crash, args=(node, node.proc))
                        node.timer.daemon = True
                        node.timer.start()

    # ------------------------------------------------------------------ workers

    def _ensure_poller(self) -> None:
        if self._poller is None or not self._poller.is_alive():
            self._poller = threading.Thread(target=self._poll_loop, name="stackpanel-workers", daemon=True)
            self._poller.start()
        if any(n.spec.liveness_probe for n in self._nodes.values()) and (
                self._liveness is None or not self._liveness.is_alive()):
            # its own thread: a probe of a hung node waits its timeout without delaying worker discovery
            self._liveness = threading.Thread(target=self._liveness_loop, name="stackpanel-liveness", daemon=True)
            self._liveness.start()

    def _liveness_loop(self) -> None:
        while not self._closed.is_set() and self._stack_state in (StackState.RUNNING, StackState.DEGRADED):
            now = time.monotonic()
            for node in list(self._nodes.values()):
                probe = node.spec.liveness_probe
                if probe is None or node.state != NodeState.READY or now < node.liveness_due:
                    continue
                node.liveness_due = now + probe.period_seconds
                ok, detail = node.probe(probe, probe.timeout_seconds)
                self._liveness_result(node, ok, detail, probe)
            self._closed.wait(0.05)

    def _liveness_result(self, node: _Node, ok: bool, detail: str, probe: LivenessProbe) -> None:
        with self._lock:
            proc = node.proc
            if node.state != NodeState.READY or proc is None:
                return
            if ok:
                node.liveness_failures = 0
                return
            node.liveness_failures += 1
            if node.liveness_failures < probe.failure_threshold:
                return
            node.liveness_failures = 0
            self._message("warning", f"{node.name} is unhealthy: {probe.failure_threshold} liveness probes "
                          f"({probe.what}) failed in a row ({detail}); killing it for a restart")
        # SIGKILL to the group also ends stopped (SIGSTOP) processes and hung workers; the leader's
        # exit then takes the crash path: restart per the node's availability policy
        try:
            os.killpg(proc.pgid, signal.SIGKILL)
        except ProcessLookupError:
            pass

    def _poll_loop(self) -> None:
        last_rotate = time.monotonic()
        while not self._closed.is_set() and self._stack_state in (StackState.RUNNING, StackState.DEGRADED,
                                                                    StackState.STARTING):
            for node in list(self._nodes.values()):
                if node.state in (NodeState.READY, NodeState.STARTING):
                    self._refresh_workers(node)
            if time.monotonic() - last_rotate > ROTATE_EVERY:
                last_rotate = time.monotonic()
                self._rotator.check()
            self._closed.wait(POLL_INTERVAL)

    def _refresh_workers(self, node: _Node) -> None:
        proc = node.proc
        if proc is None or proc.returncode is not None:
            return
        workers = []
        for child in proc.descendants():
            if child.pid in node.helper_pids:
                continue
            try:
                if child.ppid() != proc.pid:
                    continue
                if any("resource_tracker" in part for part in child.cmdline()):
                    node.helper_pids.add(child.pid)
                    continue
            except psutil.Error:
                continue
            workers.append(child.pid)
        current = tuple(sorted(workers)) or (proc.pid,)
        with self._lock:
            if node.proc is not proc or current == node.workers:
                return
            before = set(node.workers)
            node.workers = current
            self._subscribers.publish(WorkersChanged(node.name, proc.pid, current,
                                      added=tuple(p for p in current if p not in before),
                                      removed=tuple(sorted(before - set(current)))))

    def workers(self, node: str) -> tuple[int, ...]:
        with self._lock:
            return self._nodes[node].workers

    # ------------------------------------------------------------------ stop

    def request_stop(self) -> None:
        """Make a start in progress (or one about to begin) give up promptly; then call stop().

        Non-blocking, safe from any thread. The request holds until a stop() completes, so a start
        that had not yet taken the action lock when the request came does not start anything.
        """
        self._request_cancel()

    def _request_cancel(self) -> int:
        with self._cancel_lock:
            self._cancel_epoch += 1
            self._cancel.set()
            return self._cancel_epoch

    def stop(self) -> None:
        """Stop every node in reverse order, gracefully, then SIGKILL what is left. Idempotent."""
        epoch = self._request_cancel()
        with self._action_lock:
            self._stop_all(StackState.STOPPED, "stopped")
            with self._cancel_lock:
                if self._cancel_epoch == epoch:  # no stop was requested meanwhile: honoured
                    self._cancel.clear()

    def _stop_all(self, final: StackState, reason: str) -> None:
        with self._lock:
            for node in self._nodes.values():
                if node.timer is not None:
                    node.timer.cancel()
                    node.timer = None
            if any(n.proc is not None for n in self._nodes.values()):
                self._set_stack_state(StackState.STOPPING)
        ours = [a for n in self._nodes.values() if n.proc is not None for a in n.listen_addresses]
        for name in reversed(list(self.stack.nodes)):
            self._stop_node(self._nodes[name])
        self._sockets.close()
        # only the ports our processes held: one taken by someone else before the start is not news
        leftover = wait_ports_free(ours, timeout=2.0) if ours else []
        for conflict in leftover:
            self._message("warning", f"after stop: {conflict}")
        self._run_lock.release()
        self._set_stack_state(final, reason)

    def _stop_node(self, node: _Node) -> None:
        try:
            self._stop_own(node)
        finally:
            self._stop_companion(node)  # after the node's own process: Apache finishes its PHP requests

    def _stop_companion(self, node: _Node) -> None:
        proc = node.companion
        if proc is None:
            return
        result = proc.stop(timeout=node.spec.stop_deadline_seconds)
        if self._guardian is not None:
            self._guardian.forget(proc.pgid)
        self._record.remove(proc.pid)
        with self._lock:
            node.companion = None
        if result.killed:
            self._message("warning", f"{node.name}'s {node.companion_kind}: {result.describe()}")

    def _stop_own(self, node: _Node) -> None:
        proc = node.proc
        if proc is None:
            if node.state != NodeState.STOPPED:
                self._set_state(node, NodeState.STOPPED, "stopped")
            return
        if proc.returncode is None:
            self._set_state(node, NodeState.STOPPING, f"sending {signal.Signals(proc.stop_signal).name}")
        result = proc.stop(timeout=node.spec.stop_deadline_seconds)
        if self._guardian is not None:
            self._guardian.forget(proc.pgid)
        self._record.remove(proc.pid)
        with self._lock:
            node.proc = None
            node.workers = ()
            if result.was_running or node.state != NodeState.FAILED:
                self._set_state(node, NodeState.STOPPED, result.describe())
        if result.killed:
            self._message("warning", f"{node.name}: {result.describe()}")

    # ------------------------------------------------------------------ single nodes

    def stop_node(self, name: str, *, keep_socket: bool = False) -> None:
        """``keep_socket``: hold its listening sockets (a restart: connections wait, none is refused)."""
        with self._action_lock:
            node = self._nodes[name]
            if node.timer is not None:
                node.timer.cancel()
            self._stop_node(node)
            if not keep_socket:
                self._sockets.release(node.sockets)  # stopped: refused, not queued forever
            with self._lock:
                if self._stack_state == StackState.RUNNING:
                    self._set_stack_state(StackState.DEGRADED, f"{name} stopped")

    def start_node(self, name: str) -> None:
        """Start one node (and wait until it is ready). Does nothing while a stop is pending."""
        with self._action_lock:
            if self._cancel.is_set():
                return
            node = self._nodes[name]
            if node.running:
                return
            if not self._join(node):
                return
            with self._lock:
                if self._stack_state in (StackState.STOPPED, StackState.FAILED):
                    self._set_stack_state(StackState.DEGRADED, f"{name} started alone")
                self._set_state(node, NodeState.READY, node.reason)
            self._ensure_poller()

    def _join(self, node: _Node) -> bool:
        """Start one node next to those running (caller holds the action lock): when nothing runs it
        starts a run (lock, files, leftovers), else only its own ports and config are checked.
        False when a stop came while it was starting."""
        self._discard(node)
        if any(n.running for n in self._nodes.values()):
            self._bind_sockets([node])
            for rendered in node.rendered.processes:
                self._test_config(rendered, rendered.config_test_argv)
        else:
            self._prepare(node)
        try:
            self._start_node(node)
        except _Cancelled:
            self._stop_node(node)
            self._sockets.release(node.sockets)
            return False
        except BaseException:
            self._sockets.release(node.sockets)  # not running: refuse, do not queue
            raise
        return True

    def restart_node(self, name: str) -> None:
        self.stop_node(name, keep_socket=True)
        self.start_node(name)

    # ------------------------------------------------------------------ reload

    def reload(self, new_stack: RenderedStack) -> list[str]:
        """Apply a re-rendered stack without failing a request where the servers allow it (the steps
        and their reasons: reloadplan.py). Every changed proxy config first passes the server's own
        test and every new port must be free; if either fails nothing is applied (ReloadError) and
        the stack keeps running. Returns the names of the nodes that were reloaded or restarted."""
        if set(new_stack.nodes) != set(self.stack.nodes):
            raise ReloadError("the new profile has other nodes; stop the stack and start it again")
        with self._action_lock:
            steps = [plan_node(name, self._nodes[name].rendered, self._nodes[name].spec, new,
                               new_stack.profile.nodes[name], self._running(self._nodes[name]))
                     for name, new in new_stack.nodes.items()]
            self._check_new_ports(steps, new_stack)
            self._stage_and_test(new_stack, [s.node for s in steps if s.action != "keep"])
            self.stack = new_stack
            for step in steps:
                node = self._nodes[step.node]
                old_addresses = node.sockets
                node.rendered, node.spec = new_stack.nodes[step.node], new_stack.profile.nodes[step.node]
                self._sockets.release(a for a in old_addresses if a not in node.sockets)  # a moved port
                try:
                    self._apply(node, step)
                except _Cancelled:  # a stop came meanwhile: it stops everything anyway
                    break
            return [s.node for s in steps if s.action in ("signal", "scale", "surge", "restart")]

    def _running(self, node: _Node) -> bool:
        return node.running and node.state == NodeState.READY

    def _check_new_ports(self, steps: list[ReloadStep], new_stack: RenderedStack) -> None:
        ours = {a for n in self._nodes.values() if n.proc is not None for a in n.spec.listen_addresses}
        moved = [a for s in steps if s.action == "restart"
                 for a in new_stack.profile.nodes[s.node].listen_addresses if a not in ours]
        conflicts = check_ports_free(moved, offset=new_stack.profile.port_offset)
        if conflicts:
            raise ReloadError("a new port is taken, stack left running:\n" + "\n".join(str(c) for c in conflicts))

    def _stage_and_test(self, new_stack: RenderedStack, names: list[str]) -> None:
        """Write the new files of `names` beside the old ones, test the proxies' with the server's
        own test, then put them in place; any failure removes the staged files and raises."""
        staged: list[tuple[Path, Path]] = []
        try:
            for new in (p for name in names for p in new_stack.nodes[name].processes):  # a companion's too
                name = new.name
                for d in new.dirs:
                    d.mkdir(parents=True, exist_ok=True)
                for path, text in new.files.items():
                    candidate = path.with_name(path.name + ".new")
                    candidate.write_text(text, encoding="utf-8")
                    staged.append((candidate, path))
                conf = new.config_file
                if new.config_test_argv is not None and conf is not None:
                    staged_conf = str(conf.with_name(conf.name + ".new"))
                    argv = tuple(staged_conf if a == str(conf) else a for a in new.config_test_argv)
                    try:
                        self._test_config(new, argv)
                    except StartError as exc:
                        raise ReloadError(f"new config of {name!r} refused by {Path(argv[0]).name}'s own test, "
                                          "stack left running:\n" + "\n".join(exc.last_lines)) from None
        except BaseException:
            for candidate, _ in staged:
                candidate.unlink(missing_ok=True)
            raise
        for candidate, path in staged:
            os.replace(candidate, path)

    def _apply(self, node: _Node, step: ReloadStep) -> None:
        if step.action in ("keep", "update"):
            if step.action == "update" or step.why != "unchanged":
                self._message("info", step.says)
            return
        proc = node.proc
        assert proc is not None
        self._message("info", step.says)
        try:
            if step.action == "restart":
                self._stop_node(node)
                self._bind_sockets([node])  # a new port's socket (held ones stay: connections wait)
                try:
                    self._start_node(node)
                except StartError as exc:
                    self._set_state(node, NodeState.FAILED, exc.reason)
                    raise
            elif step.action == "scale":
                self._scale(node, proc, step.workers)
            elif step.action == "surge":
                self._refresh_workers(node)
                before = set(node.workers)
                self._scale(node, proc, len(before) + step.workers)
                self._await_workers(node, proc, lambda w: self._serving(node, set(w) - before, step.workers),
                                    f"{step.workers} new workers that have loaded the app")
                self._scale(node, proc, step.workers)  # gunicorn's TTOU retires the oldest worker
            else:
                assert step.signal is not None
                before = set(node.workers)
                proc.signal(step.signal)
                if step.replaces_workers:
                    self._await_workers(node, proc, lambda w: not before & set(w) and self._serving(
                        node, set(w), step.workers), f"every worker replaced by one of {step.workers} new ones")
        except StackpanelError as exc:
            self._message("error", f"{node.name}: reload did not complete: {exc}")

    @staticmethod
    def _serving(node: _Node, pids: set[int], count: int) -> bool:
        """`count` of `pids` are workers that have loaded the app (all of them, where the server
        cannot tell: the rendering has no ready_dir)."""
        ready_dir = node.rendered.ready_dir
        if ready_dir is None:
            return len(pids) == count
        try:
            ready = {int(p.name) for p in ready_dir.iterdir() if p.name.isdigit()}
        except OSError:
            return False
        return len(pids) == count and pids <= ready

    def _scale(self, node: _Node, proc: ManagedProcess, workers: int) -> None:
        """TTIN/TTOU one at a time, each awaited: gunicorn queues at most 5 signals and drops the rest."""
        while True:
            self._refresh_workers(node)
            count = len(node.workers)
            if count == workers:
                return
            proc.signal(signal.SIGTTIN if count < workers else signal.SIGTTOU)
            target = count + (1 if count < workers else -1)
            self._await_workers(node, proc, lambda w, t=target: len(w) == t, f"{target} workers")  # type: ignore[misc]

    def _await_workers(self, node: _Node, proc: ManagedProcess, done: Callable[[tuple[int, ...]], bool],
                       what: str) -> None:
        """Until `done(worker pids)`; bounded by the node's readiness timeout plus its graceful
        timeout (old workers finish their requests first)."""
        deadline = time.monotonic() + node.spec.readiness_probe.timeout_seconds + node.spec.stop_deadline_seconds
        while True:
            if proc.returncode is not None:
                raise StackpanelError(f"it {_describe_exit(proc.returncode)}")
            self._refresh_workers(node)
            if done(node.workers):
                return
            if time.monotonic() > deadline:
                raise StackpanelError(f"still waiting for {what} (now {len(node.workers)})")
            if self._closed.wait(0.05):
                return

    # ------------------------------------------------------------------ teardown

    def close(self) -> None:
        """Stop everything and release the guardian. The supervisor cannot be used afterwards."""
        try:
            self.stop()
        finally:
            self._closed.set()
            if self._guardian is not None:
                self._guardian.close()
                self._guardian = None

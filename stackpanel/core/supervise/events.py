"""What the supervisor tells the world: immutable events and a snapshot of the whole stack.

The CLI prints them, the Qt bridge turns them into signals, tests assert on them. Events are
delivered on supervisor threads; subscribers must be cheap (print, enqueue, emit a signal).
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from enum import StrEnum


class NodeState(StrEnum):
    STOPPED = "stopped"
    STARTING = "starting"
    READY = "ready"
    CRASHED = "crashed"
    BACKING_OFF = "backing off"
    STOPPING = "stopping"
    FAILED = "failed"


class StackState(StrEnum):
    STOPPED = "stopped"
    STARTING = "starting"
    RUNNING = "running"  # every node ready
    DEGRADED = "degraded"  # up, but a node is crashed, restarting or failed
    STOPPING = "stopping"
    FAILED = "failed"  # could not come up; nothing left running


def _now() -> float:
    return time.time()


@dataclass(frozen=True)
class NodeStateChanged:
    node: str
    state: NodeState
    previous: NodeState
    pid: int | None
    reason: str = ""
    at: float = field(default_factory=_now)


@dataclass(frozen=True)
class WorkersChanged:
    """The processes that serve requests for a node: its workers, or the leader itself when it
    has none (single-process uvicorn)."""

    node: str
    master_pid: int
    worker_pids: tuple[int, ...]
    added: tuple[int, ...]
    removed: tuple[int, ...]
    at: float = field(default_factory=_now)


@dataclass(frozen=True)
class StackStateChanged:
    state: StackState
    reason: str = ""
    at: float = field(default_factory=_now)


@dataclass(frozen=True)
class StackMessage:
    """Something a person should read that is not a state change (leftovers cleaned, reloads)."""

    level: str  # "info" | "warning" | "error"
    text: str
    at: float = field(default_factory=_now)


Event = NodeStateChanged | WorkersChanged | StackStateChanged | StackMessage


@dataclass(frozen=True)
class NodeSnapshot:
    name: str
    kind: str
    state: NodeState
    pid: int | None
    worker_pids: tuple[int, ...]
    restarts: int
    address: str
    reason: str = ""


@dataclass(frozen=True)
class StackSnapshot:
    state: StackState
    nodes: tuple[NodeSnapshot, ...]  # in start order: backends first
    entry_url: str

    def node(self, name: str) -> NodeSnapshot:
        return next(n for n in self.nodes if n.name == name)

"""Blocking calls off the GUI thread, completed on it: :class:`Operation` (a typed future whose
callbacks run on the GUI thread) and :class:`OperationQueue` (one worker thread, one call at a time).
"""
from __future__ import annotations

import logging
import sys
from collections.abc import Callable
from concurrent.futures import CancelledError, Future, ThreadPoolExecutor
from typing import Generic, TypeVar

from PySide6.QtCore import QObject, Signal, Slot

log = logging.getLogger("stackpanel.qt")

T = TypeVar("T")


class Operation(Generic[T]):
    """One blocking call off the GUI thread (or a chain of them). ``then(cb)`` runs ``cb(self)`` on
    the GUI thread once it ended (at once if it already has); ``ok``, ``error`` and ``result()``
    say how. An operation cancelled before it ran (the queue shut down) never calls back."""

    def __init__(self, name: str) -> None:
        self.name = name  # for people (the status bar), never parsed
        self.future: Future[T] = Future()
        self._callbacks: list[Callable[[Operation[T]], object]] = []
        self._delivered = False

    def then(self, callback: Callable[[Operation[T]], object]) -> Operation[T]:
        if self._delivered:
            callback(self)
        else:
            self._callbacks.append(callback)
        return self

    def done(self) -> bool:
        """True once it ended and its callbacks ran (GUI-thread view)."""
        return self._delivered

    @property
    def error(self) -> BaseException | None:
        if not self.future.done() or self.future.cancelled():
            return None
        return self.future.exception()

    @property
    def ok(self) -> bool:
        return self.future.done() and not self.future.cancelled() and self.future.exception() is None

    def result(self) -> T:
        """The value (raises the operation's error; call once it is done)."""
        return self.future.result(timeout=0)

    # -- completion (GUI thread) ------------------------------------------------------------------

    def _deliver(self) -> None:
        self._delivered = True
        callbacks, self._callbacks = self._callbacks, []
        for cb in callbacks:
            try:
                cb(self)
            except Exception:  # as for a slot: reported (pytest-qt fails the test), the next one runs
                sys.excepthook(*sys.exc_info())

    def _settle(self, value: T | None = None, error: BaseException | None = None) -> None:
        """End a chained operation from the GUI thread."""
        if error is not None:
            self.future.set_exception(error)
        else:
            self.future.set_result(value)  # type: ignore[arg-type]
        self._deliver()

    def _settle_like(self, other: Operation[T]) -> None:
        try:
            self._settle(other.result())
        except CancelledError:
            self.future.cancel()
        except BaseException as exc:  # the inner operation's error is this one's
            self._settle(error=exc)


class OperationQueue(QObject):
    """Runs blocking calls one after another on a single background thread.

    ``submit(name, fn)`` returns an :class:`Operation` at once; ``started(name)`` and
    ``finished(name)`` are emitted on the GUI thread. ``busy`` is true while anything is queued or
    running; it is already false when the operation's callbacks run (they may submit the next).
    """

    started = Signal(str)
    finished = Signal(str)
    busyChanged = Signal(bool)

    _done = Signal(object)  # Operation, queued from the worker thread to this (GUI) thread
    _began = Signal(str)

    def __init__(self, name: str = "op", parent: QObject | None = None) -> None:
        super().__init__(parent)
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix=f"stackpanel-gui-{name}")
        self._shut_down = False
        self._pending = 0
        self._done.connect(self._on_done)
        self._began.connect(self.started)

    @property
    def busy(self) -> bool:
        return self._pending > 0

    def submit(self, name: str, fn: Callable[[], T]) -> Operation[T]:
        op: Operation[T] = Operation(name)
        if self._shut_down:  # a late timer after the window closed: nothing to do any more
            op.future.cancel()
            return op
        self._pending += 1
        if self._pending == 1:
            self.busyChanged.emit(True)

        def run() -> None:
            if not op.future.set_running_or_notify_cancel():
                return
            self._began.emit(name)
            try:
                op.future.set_result(fn())
            except BaseException as exc:  # reported to the GUI, never lost
                log.info("operation %s failed: %s", name, exc)
                op.future.set_exception(exc)
            self._done.emit(op)

        self._pool.submit(run)
        return op

    @Slot(object)
    def _on_done(self, op: Operation[object]) -> None:
        self._pending -= 1
        self.finished.emit(op.name)
        op._deliver()
        if self._pending == 0:
            self.busyChanged.emit(False)

    def shutdown(self, wait: bool = True) -> None:
        self._shut_down = True
        self._pool.shutdown(wait=wait, cancel_futures=not wait)


__all__ = ["Operation", "OperationQueue"]

"""How each running node takes a re-rendered profile without failing a request.

A pure decision (no processes, no files): the supervisor carries the steps out. Per node:

* nginx ``HUP`` / Apache ``USR1`` (graceful) once the server's own test passed on the new config:
  new workers take the new config, old ones finish their requests;
* gunicorn, the app's code only: a surge, ``TTIN`` until there are twice the workers, and once
  the new ones have loaded the app (its ``post_worker_init`` hook says so) ``TTOU`` retires the
  old ones, oldest first: no moment without a worker that serves. A changed config: ``HUP``, new
  workers with the re-read ``gunicorn.conf.py`` (worker count, timeouts), the old ones finish
  (gunicorn retires them at once: requests wait in the backlog until a new worker serves). A new
  worker count alone is ``TTIN``/``TTOU`` one worker at a time, and nothing else is replaced;
* uvicorn ``--workers N`` (N ≥ 2) ``HUP``: its supervisor starts each replacement and waits until
  it serves before it retires the old worker (uvicorn ≥ 0.54: the renderer sets the node's reload
  signal only then); ``TTIN``/``TTOU`` change the count;
* a single-worker uvicorn has nothing to hand over to: a changed one is restarted (said so), an
  unchanged one keeps running rather than refuse connections while it restarts;
* what the running process cannot take from a signal (its command line, environment, directory,
  kind or port) is a restart of that node, said so.
"""
from __future__ import annotations

import signal
from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Literal

from stackpanel.core.profiles.schema import GunicornNode, NodeBase, UvicornNode
from stackpanel.core.render import RenderedNode

#: keep: nothing to do; signal: one graceful reload signal; scale: TTIN/TTOU until the count is
#: right; surge: as many new workers as there are (TTIN), and once they have loaded the app the
#: old ones retire (TTOU retires the oldest); restart: stop, then start with the new rendering;
#: update: not running, the next start takes the new rendering.
Action = Literal["keep", "signal", "scale", "surge", "restart", "update"]


@dataclass(frozen=True)
class ReloadStep:
    node: str
    action: Action
    why: str
    signal: int | None = None  # the reload signal (action "signal")
    workers: int = 0  # the worker count to reach (actions "scale" and "signal" of an app server)
    replaces_workers: bool = False  # "signal": done when no worker of before is left

    @property
    def says(self) -> str:
        """One line for people."""
        return f"{self.node}: {self.why}"


def _launch(r: RenderedNode) -> tuple[object, ...]:
    """What a running process cannot change without a restart."""
    return (r.kind, r.argv, tuple(sorted(r.env.items())), r.cwd)


def _without_workers(argv: Sequence[str]) -> tuple[str, ...]:
    out: list[str] = []
    skip = False
    for arg in argv:
        if skip:
            skip = False
        elif arg == "--workers":
            skip = True
        else:
            out.append(arg)
    return tuple(out)


def _only_workers_differ(old: NodeBase, new: NodeBase) -> bool:
    return old.workers != new.workers and old.model_copy(update={"workers": new.workers}) == new


def plan_node(name: str, old: RenderedNode, old_spec: NodeBase, new: RenderedNode, new_spec: NodeBase,
              running: bool) -> ReloadStep:
    """The step that applies `new` to the node running `old` (`running`: its process is alive)."""
    changed = new.processes != old.processes or new_spec != old_spec
    if not running:
        return ReloadStep(name, "update" if changed else "keep", "not running: its next start takes the new "
                          "configuration" if changed else "not running")
    if new.companion != old.companion:
        return ReloadStep(name, "restart", f"its {new.companion.kind if new.companion else 'companion'} changed: "
                          "restarted with it")
    if new.kind != old.kind or new_spec.listen_addresses != old_spec.listen_addresses:
        where = ", ".join(f"{h}:{p}" for h, p in new_spec.listen_addresses)
        return ReloadStep(name, "restart", f"its kind or port changed: restarted on {where} (requests to the "
                          "old port fail until the proxies in front are reloaded too)")
    if isinstance(new_spec, GunicornNode) and isinstance(old_spec, GunicornNode):
        return _plan_gunicorn(name, old, old_spec, new, new_spec)
    if isinstance(new_spec, UvicornNode) and isinstance(old_spec, UvicornNode):
        return _plan_uvicorn(name, old, old_spec, new, new_spec, changed)
    if not changed:
        return ReloadStep(name, "keep", "unchanged")
    if _launch(new) == _launch(old) and new.reload_signal is not None:
        sig = signal.Signals(new.reload_signal).name
        return ReloadStep(name, "signal", f"{sig} after its own config test passed: new workers take the new "
                          "config, old ones finish their requests", signal=new.reload_signal)
    return ReloadStep(name, "restart", "its command line or environment changed: restarted (a process "
                      "cannot take those from a signal)")


def _plan_gunicorn(name: str, old: RenderedNode, old_spec: GunicornNode, new: RenderedNode,
                   new_spec: GunicornNode) -> ReloadStep:
    if _launch(new) != _launch(old):
        return ReloadStep(name, "restart", "its command line or environment changed (python, app, preload, "
                          "args, env ...): restarted; a HUP re-reads only the config file")
    if _only_workers_differ(old_spec, new_spec):
        return ReloadStep(name, "scale", f"{old_spec.workers} → {new_spec.workers} workers with "
                          f"{'TTIN' if new_spec.workers > old_spec.workers else 'TTOU'}, the others keep serving",
                          workers=new_spec.workers)
    if new_spec.preload:
        if new.files == old.files:
            return ReloadStep(name, "keep", "unchanged; with preload the app's code is loaded once in the master: "
                              "restart the node to load new code")
        return ReloadStep(name, "signal", "HUP: new workers with the new config (preload: the app's code stays "
                          "as the master loaded it), old ones finish their requests", signal=signal.SIGHUP,
                          workers=new_spec.workers, replaces_workers=True)
    if new.files == old.files and new_spec.reload:
        return ReloadStep(name, "keep", "unchanged; --reload reloads its code on file changes")
    if new.files == old.files:
        return ReloadStep(name, "surge", f"{new_spec.workers} new workers load the app's code (TTIN); once they "
                          "have, the old ones finish their requests and retire (TTOU)", workers=new_spec.workers)
    return ReloadStep(name, "signal", "HUP: new workers with the new config and the app's code; the old ones "
                      "finish their requests (until the new ones have loaded the app, requests wait in the "
                      "listen backlog)", signal=signal.SIGHUP, workers=new_spec.workers, replaces_workers=True)


def _plan_uvicorn(name: str, old: RenderedNode, old_spec: UvicornNode, new: RenderedNode, new_spec: UvicornNode,
                  changed: bool) -> ReloadStep:
    multi = old_spec.workers > 1 and new_spec.workers > 1 and not (old_spec.reload or new_spec.reload)
    same_launch = _launch(new) == _launch(old)
    if multi and same_launch and new.reload_signal is None:
        return ReloadStep(name, "restart" if changed else "keep", "this uvicorn (< 0.54) ends every worker before "
                          "its successor serves: " + ("restarted" if changed else "kept running; upgrade uvicorn "
                                                      "for a reload without a failed request"))
    rescaled = replace(new, argv=_without_workers(new.argv)), replace(old, argv=_without_workers(old.argv))
    if multi and _only_workers_differ(old_spec, new_spec) and _launch(rescaled[0]) == _launch(rescaled[1]):
        return ReloadStep(name, "scale", f"{old_spec.workers} → {new_spec.workers} workers with "
                          f"{'TTIN' if new_spec.workers > old_spec.workers else 'TTOU'}, the others keep serving",
                          workers=new_spec.workers)
    if multi and same_launch:
        return ReloadStep(name, "signal", "HUP: each worker replaced once its successor serves (uvicorn's rolling "
                          "restart), the app's code loaded again", signal=signal.SIGHUP, workers=new_spec.workers,
                          replaces_workers=True)
    if not changed:
        if new_spec.reload:
            return ReloadStep(name, "keep", "unchanged; --reload reloads its code on file changes")
        return ReloadStep(name, "keep", "unchanged; a single uvicorn worker has no graceful reload (a restart "
                          "would refuse connections): set workers: 2 or more, or reload: true")
    why = ("a single uvicorn worker has no graceful reload: restarted (connections are refused until it is "
           "ready; workers: 2 or more reload without that)") if same_launch or new_spec.workers == 1 else (
        "its command line or environment changed: restarted (uvicorn's workers take only the master's settings)")
    return ReloadStep(name, "restart", why)

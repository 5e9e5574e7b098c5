"""The reload plan (#13.4): which signal, scale or restart takes each node to its new rendering.
Pure decisions on real renderings; the servers run in tests/integration/test_reload.py."""
from __future__ import annotations

import signal
from pathlib import Path

from stackpanel.core.profiles.library import builtin_dir
from stackpanel.core.profiles.loader import load_profile
from stackpanel.core.profiles.schema import Profile
from stackpanel.core.render import render_stack
from stackpanel.core.render.appservers import render_uvicorn
from stackpanel.core.render.common import RunPaths
from stackpanel.core.supervise.reloadplan import ReloadStep, plan_node


def _with(profile: Profile, node: str, **update: object) -> Profile:
    return profile.model_copy(update={"nodes": {**profile.nodes, node: profile.nodes[node].model_copy(update=update)}})


def plan(tmp_path: Path, old: Profile, new: Profile, node: str = "app", running: bool = True) -> ReloadStep:
    a, b = render_stack(old, tmp_path / "run"), render_stack(new, tmp_path / "run")
    return plan_node(node, a.nodes[node], old.nodes[node], b.nodes[node], new.nodes[node], running)


def test_gunicorn(tmp_path: Path) -> None:
    base = load_profile(builtin_dir() / "nginx-gunicorn-uvicorn.yaml")
    same = plan(tmp_path, base, base)
    assert same.action == "surge" and same.workers == 4  # the code: new workers first, the old ones retire after
    more = plan(tmp_path, base, _with(base, "app", workers=6))
    assert more.action == "scale" and more.workers == 6 and "TTIN" in more.why
    tuned = plan(tmp_path, base, _with(base, "app", timeout_seconds=12, workers=2))
    assert tuned.action == "signal" and tuned.signal == signal.SIGHUP and tuned.replaces_workers and tuned.workers == 2
    assert plan(tmp_path, base, _with(base, "app", preload=True)).action == "restart"  # on its command line
    preloaded = _with(base, "app", preload=True)
    assert plan(tmp_path, preloaded, preloaded).action == "keep"  # the master holds the code: said so
    app = base.nodes["app"]
    env = _with(base, "app", app=app.app.model_copy(update={"env": {"X": "1"}}))  # type: ignore[union-attr]
    assert plan(tmp_path, base, env).action == "restart"
    moved = plan(tmp_path, base, _with(base, "app", port=8001))
    assert moved.action == "restart" and "port changed" in moved.why


def test_uvicorn(tmp_path: Path) -> None:
    base = load_profile(builtin_dir() / "uvicorn-workers.yaml")  # --workers 4, uvicorn 0.54 here
    same = plan(tmp_path, base, base)
    assert same.action == "signal" and same.signal == signal.SIGHUP and same.replaces_workers  # rolling
    fewer = plan(tmp_path, base, _with(base, "app", workers=2))
    assert fewer.action == "scale" and "TTOU" in fewer.why
    assert plan(tmp_path, base, _with(base, "app", workers=1)).action == "restart"  # no supervisor left
    single = _with(base, "app", workers=1)
    kept = plan(tmp_path, single, single)
    assert kept.action == "keep" and "workers: 2 or more" in kept.why
    assert plan(tmp_path, single, _with(single, "app", limit_concurrency=10)).action == "restart"
    dev = load_profile(builtin_dir() / "uvicorn-dev.yaml")
    assert plan(tmp_path, dev, dev).action == "keep"  # --reload watches the files itself


def test_an_older_uvicorn_is_not_sent_a_hup(tmp_path: Path) -> None:
    base = load_profile(builtin_dir() / "uvicorn-workers.yaml")
    node = base.nodes["app"]
    old = render_uvicorn("app", node, RunPaths(tmp_path), uvicorn_version="0.30.6")  # type: ignore[arg-type]
    assert old.reload_signal is None and "--timeout-worker-healthcheck" not in old.argv
    step = plan_node("app", old, node, old, node, running=True)
    assert step.action == "keep" and "< 0.54" in step.why


def test_proxies_and_stopped_nodes(tmp_path: Path) -> None:
    base = load_profile(builtin_dir() / "nginx-uvicorn.yaml")
    assert plan(tmp_path, base, base, "web").action == "keep"
    wider = plan(tmp_path, base, _with(base, "web", workers=2), "web")
    assert wider.action == "signal" and wider.signal == signal.SIGHUP and "config test" in wider.why
    assert plan(tmp_path, base, _with(base, "web", workers=2), "web", running=False).action == "update"


def test_gunicorn_reload_option_restarts_workers_on_code_changes(tmp_path: Path) -> None:
    import pytest

    from stackpanel.core.errors import ProfileError

    text = (builtin_dir() / "nginx-gunicorn-flask.yaml").read_text().replace(
        "kind: gunicorn", "kind: gunicorn\n    reload: true").replace(
        "module:", f"working_dir: {builtin_dir()}\n      module:")
    path = tmp_path / "dev.yaml"
    path.write_text(text)
    dev = load_profile(path)
    assert "--reload" in render_stack(dev, tmp_path / "run").nodes["app"].argv
    assert plan(tmp_path, dev, dev).action == "keep"  # it reloads itself
    path.write_text(text.replace("reload: true", "reload: true\n    preload: true"))
    with pytest.raises(ProfileError) as info:
        load_profile(path)
    assert f"{path}:" in str(info.value) and "cannot re-import a preloaded app" in str(info.value)


def test_gunicorns_hooks_mark_loaded_workers_and_never_break_a_worker(tmp_path: Path) -> None:
    import os
    import runpy

    stack = render_stack(load_profile(builtin_dir() / "nginx-gunicorn-uvicorn.yaml"), tmp_path / "run")
    app = stack.nodes["app"]
    conf = tmp_path / "gunicorn.conf.py"
    conf.write_text(app.files[stack.paths.conf_dir / "gunicorn-app.conf.py"])
    hooks = runpy.run_path(str(conf))
    assert hooks["READY_DIR"] == str(app.ready_dir) and hooks["workers"] == 4
    assert app.ready_dir is not None and app.ready_dir in app.dirs
    app.ready_dir.mkdir(parents=True)
    hooks["post_worker_init"](None)
    assert (app.ready_dir / str(os.getpid())).exists()
    hooks["worker_exit"](None, type("Worker", (), {"pid": os.getpid()})())
    assert not any(app.ready_dir.iterdir())
    app.ready_dir.rmdir()  # an exported copy of the file, where the directory does not exist
    hooks["post_worker_init"](None)
    hooks["worker_exit"](None, type("Worker", (), {"pid": os.getpid()})())

"""App-server packages of *an* interpreter (the app may run under another venv than stackpanel),
and whether an app module can be found there without importing it."""
from __future__ import annotations

import functools
import importlib.machinery
import importlib.metadata
import json
import logging
import os
import shutil
import sys
from dataclasses import dataclass

from stackpanel.core.discovery.executables import _run
from stackpanel.core.discovery.platform import PYTHON_DISTRIBUTIONS

log = logging.getLogger("stackpanel.discovery")


@dataclass(frozen=True)
class PythonEnv:
    """A Python interpreter and the app-server packages installed for it."""

    python: str  # as given (not symlink-resolved: a venv's python is a symlink)
    found: bool
    version: str  # "3.11.7" ("" when not runnable)
    executable: str  # the interpreter's own sys.executable
    packages: tuple[tuple[str, str | None], ...]  # (kind, version or None), in PYTHON_DISTRIBUTIONS order
    error: str = ""  # why the interpreter could not be queried

    def package_version(self, kind: str) -> str | None:
        return dict(self.packages).get(kind)


_PY_INFO_SCRIPT = """\
import json, sys
from importlib import metadata
out = {"version": "%d.%d.%d" % sys.version_info[:3], "executable": sys.executable, "packages": {}}
for kind, dist in json.loads(sys.argv[1]).items():
    try:
        out["packages"][kind] = metadata.version(dist)
    except metadata.PackageNotFoundError:
        out["packages"][kind] = None
print(json.dumps(out))
"""


def _version_string() -> str:
    return ".".join(str(part) for part in sys.version_info[:3])


def _is_current_python(python: str) -> bool:
    return os.path.abspath(python) == os.path.abspath(sys.executable)


def _resolve_python(python: str | os.PathLike[str] | None) -> str:
    if python is None:
        return sys.executable
    text = os.fspath(python)
    if os.sep not in text and not os.path.exists(text):
        found = shutil.which(text)  # "python3" → /usr/bin/python3
        if found:
            return found
    # Absolute (probes may run in another cwd) but not symlink-resolved: that would leave the venv.
    return os.path.abspath(text)


@functools.cache
def _python_env_cached(python: str) -> PythonEnv:
    if _is_current_python(python):
        packages: list[tuple[str, str | None]] = []
        for kind, dist in PYTHON_DISTRIBUTIONS.items():
            try:
                packages.append((kind, importlib.metadata.version(dist)))
            except importlib.metadata.PackageNotFoundError:
                packages.append((kind, None))
        return PythonEnv(python=python, found=True, version=_version_string(),
                         executable=sys.executable, packages=tuple(packages))
    missing = tuple((kind, None) for kind in PYTHON_DISTRIBUTIONS)
    if not (os.path.isfile(python) and os.access(python, os.X_OK)):
        return PythonEnv(python=python, found=False, version="", executable="", packages=missing,
                         error=f"no executable Python interpreter at {python}")
    rc, out, err = _run([python, "-c", _PY_INFO_SCRIPT, json.dumps(dict(PYTHON_DISTRIBUTIONS))])
    try:
        data = json.loads(out.strip().splitlines()[-1]) if rc == 0 else None
    except (ValueError, IndexError):
        data = None
    if not isinstance(data, dict):
        reason = (err.strip().splitlines() or [f"exit status {rc}"])[-1]
        return PythonEnv(python=python, found=False, version="", executable="", packages=missing,
                         error=f"{python} did not answer the package query: {reason}")
    pkgs = data.get("packages", {})
    return PythonEnv(
        python=python, found=True, version=str(data.get("version", "")),
        executable=str(data.get("executable", "")),
        packages=tuple((kind, pkgs.get(kind)) for kind in PYTHON_DISTRIBUTIONS),
    )


def python_env(python: str | os.PathLike[str] | None = None) -> PythonEnv:
    """gunicorn/uvicorn/uvicorn-worker versions for ``python`` (default: this interpreter).

    Another interpreter is asked in a subprocess (importlib.metadata), so a venv reports its own
    packages; this one is answered in-process.
    """
    return _python_env_cached(_resolve_python(python))


def _spec_found(module: str, search_path: list[str]) -> bool:
    """Locate ``a.b.c`` with PathFinder without executing any package ``__init__``."""
    parts = module.split(".")
    locations: list[str] | None = search_path
    for i, part in enumerate(parts):
        if i == 0 and part in sys.builtin_module_names:
            return len(parts) == 1
        spec = importlib.machinery.PathFinder.find_spec(part, locations)
        if spec is None and i == 0:
            spec = _meta_path_spec(part)
        if spec is None:
            return False
        if i < len(parts) - 1:
            if not spec.submodule_search_locations:
                return False
            locations = list(spec.submodule_search_locations)
    return True


def _meta_path_spec(name: str) -> importlib.machinery.ModuleSpec | None:
    """A top-level package found by a meta-path finder other than PathFinder, e.g. the finder an
    editable install (``pip install -e``) registers; looking it up imports nothing."""
    for finder in sys.meta_path:
        if finder is importlib.machinery.PathFinder or not hasattr(finder, "find_spec"):
            continue
        try:
            spec = finder.find_spec(name, None)
        except Exception as exc:
            log.debug("meta-path finder %r failed on %s: %s", finder, name, exc)
            continue
        if spec is not None and spec.origin not in ("built-in", "frozen"):
            return spec
    return None


# Same walk as _spec_found (meta-path fallback included), for another interpreter
# (which must not import stackpanel).
_FIND_SPEC_SCRIPT = """\
import sys
from importlib.machinery import PathFinder
module, wd = sys.argv[1], sys.argv[2]
locations = [wd] + [p for p in sys.path if p]
parts = module.split(".")
for i, part in enumerate(parts):
    if i == 0 and part in sys.builtin_module_names:
        sys.exit(0 if len(parts) == 1 else 1)
    spec = PathFinder.find_spec(part, locations)
    if spec is None and i == 0:  # e.g. the finder of an editable install (pip install -e)
        for finder in sys.meta_path:
            if finder is PathFinder or not hasattr(finder, "find_spec"):
                continue
            try:
                spec = finder.find_spec(part, None)
            except Exception:
                spec = None
            if spec is not None and spec.origin not in ("built-in", "frozen"):
                break
            spec = None
    if spec is None:
        sys.exit(1)
    if i < len(parts) - 1:
        if not spec.submodule_search_locations:
            sys.exit(1)
        locations = list(spec.submodule_search_locations)
sys.exit(0)
"""


def module_importable(python: str | os.PathLike[str] | None, module: str,
                      working_dir: str | os.PathLike[str]) -> bool:
    """Whether ``python`` started in ``working_dir`` could import ``module``, without importing it.

    ``module`` is a dotted name; an ``app:attr`` suffix (uvicorn/gunicorn style) is ignored.
    ``working_dir`` comes first on the path, as it does for ``python -m uvicorn``/gunicorn.
    In-process for this interpreter, a subprocess for any other. Not cached: the app may change.
    """
    name = module.partition(":")[0].strip()
    if not name or any(not p.isidentifier() for p in name.split(".")):
        return False
    wd = os.path.abspath(os.fspath(working_dir))
    py = _resolve_python(python)
    if _is_current_python(py):
        here = os.getcwd()
        path = [wd] + [p for p in sys.path if p and os.path.abspath(p) != here]
        return _spec_found(name, path)
    if not os.path.isdir(wd):
        return False
    rc, _, err = _run([py, "-c", _FIND_SPEC_SCRIPT, name, wd], cwd=wd)
    if rc not in (0, 1):
        log.warning("module check for %s under %s failed (exit %d): %s", name, py, rc, err.strip())
    return rc == 0

"""What the exporters share: the planned output, relocating rendered paths, packaging an app.

Every exporter renders the profile through the ordinary renderers (``render_stack``), so the
exported configs carry the same routes, pools, timeouts, log format and TLS as a local run. The
renderers write paths under the run directory they are given; the exporters render into a
placeholder root (:data:`RENDER_ROOT`) and then move each path to where the target keeps it
(:func:`relocate`), node by node (a compose container, a systemd unit's /etc, /var/log, /run).
"""
from __future__ import annotations

import ast
import importlib.metadata
import importlib.util
import logging
import re
import shutil
import sys
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

from stackpanel.core.errors import StackpanelError
from stackpanel.core.profiles.schema import AppServerNode, GunicornNode, Profile, UvicornNode

log = logging.getLogger("stackpanel.export")

#: The run directory the exporters render into. It never exists: every path that starts with it
#: is relocated to the target's layout before anything is written.
RENDER_ROOT = Path("/stackpanel-export-root")

_ROOT_PATH_RE = re.compile(re.escape(str(RENDER_ROOT)) + r"(?P<rest>/[^\s\"'(),;]*)?")


class ExportError(StackpanelError):
    """A profile that cannot be exported as asked (the message says what to change)."""


@dataclass
class ExportPlan:
    """What an export writes: text files and copied directory trees, relative to the output."""

    files: dict[str, str] = field(default_factory=dict)
    trees: dict[str, Path] = field(default_factory=dict)  # destination → source directory
    modes: dict[str, int] = field(default_factory=dict)

    def add(self, rel: str, text: str, mode: int | None = None) -> None:
        if rel in self.files and self.files[rel] != text:
            raise ExportError(f"two different files would be written to {rel}")
        self.files[rel] = text
        if mode is not None:
            self.modes[rel] = mode

    def write(self, out: Path) -> list[Path]:
        """Write everything under `out` (created); returns the paths written."""
        out.mkdir(parents=True, exist_ok=True)
        written: list[Path] = []
        for rel, src in self.trees.items():
            dest = out / rel
            if dest.exists():
                shutil.rmtree(dest)
            shutil.copytree(src, dest, symlinks=True, ignore=shutil.ignore_patterns(
                "__pycache__", "*.pyc", ".git", ".venv", "venv", ".mypy_cache", ".pytest_cache", ".ruff_cache"))
            written.append(dest)
        for rel, text in self.files.items():
            dest = out / rel
            dest.parent.mkdir(parents=True, exist_ok=True)
            dest.write_text(text, encoding="utf-8")
            if rel in self.modes:
                dest.chmod(self.modes[rel])
            written.append(dest)
        return written


def relocate(text: str, mapping: Mapping[str, str]) -> str:
    """Rewrite every path under RENDER_ROOT: the longest `mapping` key (a sub-path of the run dir,
    "" for the run dir itself) that is a whole-segment prefix of it gives its new place."""
    keys = sorted(mapping, key=len, reverse=True)

    def move(match: re.Match[str]) -> str:
        rest = match.group("rest") or ""
        for key in keys:
            if rest == key or rest.startswith(key + "/") or key == "":
                return mapping[key] + rest[len(key):]
        raise ExportError(f"no place for {match.group(0)} in the export")  # unreachable with a "" key

    out = _ROOT_PATH_RE.sub(move, text)
    if str(RENDER_ROOT) in out:
        raise ExportError(f"a path under the render root was left in the export: {out[:200]!r}")
    return out


def slug(name: str) -> str:
    """A name usable as a unit, service and directory name: lower case, a-z 0-9 and '-'."""
    text = re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-")
    if not text:
        raise ExportError(f"cannot make a name out of {name!r}: give the export a name (letters and digits)")
    return text[:48]


# ---- packaging an app server's application -------------------------------------------------------

@dataclass(frozen=True)
class AppSource:
    """Where an app server's code comes from, and what it needs installed."""

    tree: Path  # the directory copied to the app's working dir (its contents, not itself)
    subdirs: tuple[tuple[str, Path], ...]  # (relative destination, source) when only parts of a package are copied
    requirements: tuple[str, ...]  # pip requirement lines
    note: str  # how the code was found (for the README)


def server_requirements(node: AppServerNode) -> list[str]:
    """The server packages the node's command line needs, pinned to the versions installed here."""
    names: list[str] = ["gunicorn" if isinstance(node, GunicornNode) else "uvicorn"]
    if isinstance(node, GunicornNode) and node.effective_worker_class == "uvicorn":
        names += ["uvicorn", "uvicorn-worker"]
    if isinstance(node, UvicornNode):
        if node.http == "httptools":
            names.append("httptools")
        if node.loop == "uvloop":
            names.append("uvloop")
    return [_pinned(n) for n in dict.fromkeys(names)]


def _pinned(dist: str) -> str:
    try:
        return f"{dist}=={importlib.metadata.version(dist)}"
    except importlib.metadata.PackageNotFoundError:
        return dist


def app_source(node: AppServerNode) -> AppSource:
    """Find the code of `node.app.module` (its working directory first, then this Python's path)
    and the distributions it imports."""
    module = node.app.module.split(":", 1)[0]
    top = module.split(".", 1)[0]
    workdir = Path(node.app.working_dir) if node.app.working_dir else Path.cwd()
    if (workdir / top).is_dir() or (workdir / f"{top}.py").is_file():
        req = workdir / "requirements.txt"
        lines = _requirement_lines(req) if req.is_file() else _imported_distributions(_python_files(workdir), {top})
        return AppSource(workdir, (), tuple(lines), f"{workdir} (the app's working directory)")
    spec = importlib.util.find_spec(top)
    if spec is None or (not spec.submodule_search_locations and spec.origin is None):
        raise ExportError(f"cannot find the code of {node.app.module}: it is neither in {workdir} nor importable "
                          "here; set app.working_dir to the directory that holds it")
    if spec.submodule_search_locations is None:  # a single-file top-level module
        origin = Path(str(spec.origin))
        return AppSource(origin.parent, (), tuple(_imported_distributions([origin], {top})),
                         f"{origin} (importable here)")
    # A package: its parents' __init__.py and the whole package the module lives in, no more (the
    # demo apps are stackpanel.apps.*: the Qt layer and the core stay out of the image).
    package_root = Path(next(iter(spec.submodule_search_locations)))
    parts = module.split(".")
    inner = parts[1:-1] if (package_root.joinpath(*parts[1:]).with_suffix(".py")).is_file() else parts[1:]
    subdirs: list[tuple[str, Path]] = [(top, package_root)] if not inner else []
    if inner:
        subdirs.append(("/".join([top, *inner]), package_root.joinpath(*inner)))
    parents = [package_root.joinpath(*inner[:i], "__init__.py") for i in range(len(inner))]
    files = parents + [p for _, d in subdirs for p in _python_files(d)]
    return AppSource(package_root.parent, tuple(subdirs), tuple(_imported_distributions(files, {top})),
                     f"{'.'.join([top, *inner])} from {package_root.parent} (importable here)")


def package_files(src: AppSource) -> dict[str, Path]:
    """(relative path → source) of the files an app image holds: parents' __init__.py files are
    single files, the module's package a tree."""
    out: dict[str, Path] = {}
    for rel, directory in src.subdirs:
        parts = rel.split("/")
        for i in range(1, len(parts)):
            init = src.tree.joinpath(*parts[:i], "__init__.py")
            if init.is_file():
                out["/".join([*parts[:i], "__init__.py"])] = init
        out[rel] = directory
    return out


def _requirement_lines(path: Path) -> list[str]:
    return [line.strip() for line in path.read_text(encoding="utf-8").splitlines()
            if line.strip() and not line.lstrip().startswith("#")]


def _python_files(directory: Path) -> list[Path]:
    skip = {".venv", "venv", "__pycache__", ".git", "node_modules"}
    return [p for p in sorted(directory.rglob("*.py")) if not skip & set(p.relative_to(directory).parts)][:2000]


def _imported_distributions(files: Iterable[Path], own: set[str]) -> list[str]:
    """The installed distributions (pinned to their versions here) that these files import."""
    tops: set[str] = set()
    for path in files:
        try:
            tree = ast.parse(path.read_text(encoding="utf-8"))
        except (OSError, SyntaxError, UnicodeDecodeError, ValueError):
            continue
        for item in ast.walk(tree):
            if isinstance(item, ast.Import):
                tops.update(a.name.split(".", 1)[0] for a in item.names)
            elif isinstance(item, ast.ImportFrom) and item.level == 0 and item.module:
                tops.add(item.module.split(".", 1)[0])
    dists = importlib.metadata.packages_distributions()
    out: list[str] = []
    for name in sorted(tops - own - set(sys.stdlib_module_names) - {"__future__"}):
        for dist in dists.get(name, []):
            out.append(_pinned(dist))
    return list(dict.fromkeys(out))


def interpreter_tag() -> str:
    """The python image tag matching this interpreter: 3.11-slim."""
    return f"{sys.version_info.major}.{sys.version_info.minor}-slim"


def profile_with(profile: Profile, **node_updates: dict[str, object]) -> Profile:
    """A copy of `profile` with per-node field updates (no validation: the values come from the
    exporters, e.g. container paths that do not exist on this machine)."""
    nodes = {name: n.model_copy(update=node_updates.get(name, {})) for name, n in profile.nodes.items()}
    return profile.model_copy(update={"nodes": nodes})


def over_tcp(profile: Profile) -> Profile:
    """Every app server on its TCP port: the targets probe ports (and compose puts each node in
    a container of its own, where a Unix socket of another cannot be reached)."""
    tcp: dict[str, object] = {"listen": "tcp"}
    return profile_with(profile, **{name: tcp for name, n in profile.nodes.items() if isinstance(n, AppServerNode)})


def refuse_php(profile: Profile) -> None:
    """compose and systemd have no php-fpm service yet: refuse rather than ship an Apache without its PHP."""
    if "php" in profile.kinds():
        raise ExportError("this export does not carry php-fpm yet (a `php: true` route): it would start Apache "
                          "without its PHP; use `export process-compose` or `stackpanel up`, or remove `php: true`")

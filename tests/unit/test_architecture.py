"""The core is Qt-free (every module under stackpanel.core and the CLI imports with Qt absent), and
every import goes down a floor (the layering contract)."""
from __future__ import annotations

import ast
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path


def test_core_and_cli_import_without_qt() -> None:
    script = textwrap.dedent("""
        import importlib, pkgutil, sys

        class NoQt:
            def find_spec(self, name, path=None, target=None):
                if name.split(".")[0] in ("PySide6", "shiboken6", "pyqtgraph"):
                    raise ImportError(f"{name} imported by the Qt-free core")
                return None

        sys.meta_path.insert(0, NoQt())
        import stackpanel.core
        names = [m.name for m in pkgutil.walk_packages(stackpanel.core.__path__, "stackpanel.core.")]
        # chart.py renders PNGs with Qt on purpose, importing it lazily; its import must not pull Qt.
        for name in names + ["stackpanel.cli"]:
            importlib.import_module(name)
        print(len(names))
    """)
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert int(result.stdout) >= 20  # really walked the package


def test_no_display_means_headless(monkeypatch) -> None:
    from stackpanel.cli import has_display

    monkeypatch.delenv("DISPLAY", raising=False)
    monkeypatch.delenv("WAYLAND_DISPLAY", raising=False)
    monkeypatch.delenv("QT_QPA_PLATFORM", raising=False)
    assert not has_display()
    monkeypatch.setenv("DISPLAY", ":0")
    assert has_display()
    monkeypatch.setenv("QT_QPA_PLATFORM", "offscreen")
    assert not has_display()


# --------------------------------------------------------------------------------------------------
# The layering contract: every import of every module of the package goes down a floor (or stays in
# its own package). Checked on the source with ast, lazy imports inside functions included, so an
# import that runs back up cannot hide in a function body.
# --------------------------------------------------------------------------------------------------

#: Lowest floor first. A module may import from its own floor's packages only as declared below,
#: and from any floor under its own. Packages named on one floor are independent of each other
#: (supervise, metrics and the load generator know nothing of one another).
FLOORS: tuple[tuple[str, ...], ...] = (
    ("stackpanel.core.errors", "stackpanel.core.logformat", "stackpanel.core.pubsub", "stackpanel.core.machine",
     "stackpanel.core.fsutil"),
    ("stackpanel.core.discovery", "stackpanel.core.tls"),
    # One floor for the whole package; the order inside it (schema, sourcemap, loader, validators)
    # is the package's own business.
    ("stackpanel.core.profiles",),
    ("stackpanel.core.render",),
    ("stackpanel.core.supervise", "stackpanel.core.metrics", "stackpanel.core.loadgen", "stackpanel.core.export"),
    ("stackpanel.core.session",),
    ("stackpanel.core.bench", "stackpanel.core.headless", "stackpanel.core.traces", "stackpanel.selftest",
     "stackpanel.trust_command",
     "stackpanel.export_command"),
    ("stackpanel.qt",),
    ("stackpanel.cli",),
    ("stackpanel.__main__",),
)
#: Packages with no floor: importable by anyone, importing nothing of stackpanel but themselves.
FREE = ("stackpanel", "stackpanel.core", "stackpanel.apps")

ROOT = Path(__file__).resolve().parents[2]


def module_name(path: Path, root: Path) -> str:
    parts = list(path.relative_to(root).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def imports_of(path: Path, name: str, known: set[str]) -> set[str]:
    """Every stackpanel module ``path`` imports (``from pkg import mod`` counts as ``pkg.mod``)."""
    tree = ast.parse(path.read_text(encoding="utf-8"), str(path))
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")
                anchor = anchor[: len(anchor) - (node.level - 1)]
                base = ".".join([*anchor, base] if base else anchor)
            for alias in node.names:
                sub = f"{base}.{alias.name}"
                found.add(sub if sub in known else base)
    return {m for m in found if m == "stackpanel" or m.startswith("stackpanel.")}


def floor_of(module: str) -> tuple[int, str] | None:
    """(floor, package) of the most specific declared package containing ``module``."""
    best: tuple[int, str] | None = None
    for i, packages in enumerate(FLOORS):
        for pkg in packages:
            if (module == pkg or module.startswith(pkg + ".")) and (best is None or len(pkg) > len(best[1])):
                best = (i, pkg)
    return best


def layering_violations(root: Path) -> list[str]:
    files = {module_name(p, root): p for p in (root / "stackpanel").rglob("*.py")}
    known = set(files)
    problems = []
    for name, path in sorted(files.items()):
        mine = floor_of(name)
        for target in sorted(imports_of(path, name, known)):
            theirs = floor_of(target)
            if target in FREE or target.startswith("stackpanel.apps."):
                if name.startswith("stackpanel.apps") and not target.startswith("stackpanel.apps"):
                    problems.append(f"{name} imports {target}: the demo apps import nothing of stackpanel")
                continue
            if mine is None:
                if not (name in FREE or name.startswith("stackpanel.apps")):
                    problems.append(f"{name} has no floor: declare it in FLOORS")
                elif theirs is not None:
                    problems.append(f"{name} (no floor) imports {target}")
                continue
            if theirs is None:
                problems.append(f"{name} imports {target}, which has no floor: declare it in FLOORS")
            elif theirs[0] > mine[0]:
                problems.append(f"{name} (floor {mine[0]}, {mine[1]}) imports {target} "
                                f"(floor {theirs[0]}, {theirs[1]}): up a floor")
            elif theirs[0] == mine[0] and theirs[1] != mine[1]:
                problems.append(f"{name} imports {target}: {mine[1]} and {theirs[1]} share a floor and "
                                "must stay independent")
    return problems


def test_every_import_goes_down_a_floor() -> None:
    problems = layering_violations(ROOT)
    assert not problems, "layering contract broken:\n" + "\n".join(problems)


def test_the_contract_catches_an_import_up_a_floor(tmp_path: Path) -> None:
    """The checker itself: a copy of the package with one import running back up is refused."""
    shutil.copytree(ROOT / "stackpanel", tmp_path / "stackpanel",
                    ignore=shutil.ignore_patterns("__pycache__", "*.yaml", "*.j2", "resources", "site"))
    assert layering_violations(tmp_path) == []
    target = tmp_path / "stackpanel" / "core" / "loadgen" / "target.py"
    target.write_text(target.read_text() + "\n\ndef _up():\n    from stackpanel.core.session import StackSession\n"
                      "    return StackSession\n")
    peer = tmp_path / "stackpanel" / "core" / "metrics" / "ringbuffer.py"
    peer.write_text(peer.read_text() + "\nfrom stackpanel.core.supervise import events  # noqa\n")
    problems = layering_violations(tmp_path)
    assert any("loadgen.target" in p and "up a floor" in p for p in problems), problems
    assert any("metrics.ringbuffer" in p and "independent" in p for p in problems), problems

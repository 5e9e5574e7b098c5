"""The core is Qt-free: every module under stackpanel.core (and the CLI) imports with Qt absent."""
from __future__ import annotations

import subprocess
import sys
import textwrap


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
